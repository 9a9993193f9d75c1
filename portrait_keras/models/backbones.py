"""Backbones by name: a plain dict of builders `(input_shape, weights=None, **kwargs) -> keras.Model`.

Every builder maps normalised float images `[B, H, W, 3]` to a pooled vector `[B, D]`.
"""

from portrait_keras.models.hrnet import hrnet, hrnet_w32
from portrait_keras.models.resnet import resnet50
from portrait_keras.models.tiny import tiny
from portrait_keras.models.vit import vit_b16, vit_tiny

BACKBONES = {
    "hrnet": hrnet,
    "hrnet_w32": hrnet_w32,
    "resnet50": resnet50,
    "tiny": tiny,
    "vit_b16": vit_b16,
    "vit_tiny": vit_tiny,
}


def build_backbone(name, input_shape=(256, 128, 3), weights=None, **kwargs):
    """Build the backbone called `name`.

    Args:
        name: str. One of `BACKBONES`: `"hrnet"`, `"hrnet_w32"`, `"resnet50"`, `"tiny"`,
            `"vit_b16"` (CLIP ViT-B/16's image tower), `"vit_tiny"`.
        input_shape: tuple of int. `(height, width, channels)`. Defaults to `(256, 128, 3)`.
        weights: str or None. Path to saved backbone weights (`.weights.h5`). Defaults to `None`.
        **kwargs: passed to the builder (e.g. `last_stride=1` for `"resnet50"`, `patch_stride=12`
            for `"vit_b16"`).

    Returns:
        `keras.Model` from images `[B, H, W, 3]` to features `[B, D]`.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone. Allowed: {', '.join(sorted(BACKBONES))}. Received: name={name!r}")
    return BACKBONES[name](input_shape, weights, **kwargs)
