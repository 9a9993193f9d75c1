"""CLIP's ViT image tower as a Feature Space Split backbone (paper §6.2–6.3; issue #18).

The backbone is `models.clip.clip_image_encoder` without the projection: the class token after
`ln_post`, 768-d for ViT-B/16. That is the feature CLIP-ReID (Li et al. 2023) trains its re-id
losses on and the one TransReID (He et al. 2021) reads; the 512-d projection exists only to meet
the text tower, and the wider vector leaves the Feature Space Split more dims per task.

Person crops are 256×128, not CLIP's 224×224: the position embedding of the 14×14 grid the
weights were trained at is resized bicubically to the crop's grid (16×8 at stride 16). With
`patch_stride < 16` the patches overlap, as TransReID's stride 12 (21×10 grid); the conv kernel
is CLIP's, only its step changes. Inputs are CLIP-normalised (`CLIP_MEAN`, `CLIP_STD`): a
`PortraitModel` with this backbone takes `preprocessing="clip"`, which the training config's
`model.preprocessing="auto"` chooses.

Weights: a `.weights.h5` of a whole `ClipModel` (what `python -m portrait_keras.models.convert_clip`
writes from an open_clip / OpenAI state_dict), whose image tower is taken, or a `.weights.h5`
saved from this backbone. Nothing is downloaded.
"""

import os

import h5py

from portrait_keras.models.clip import CLIP_CONFIGS, MLP_RATIO, clip_image_encoder, clip_model
from portrait_keras.models.utils import load_backbone_weights


def vit(input_shape=(256, 128, 3), weights=None, *, config="ViT-B-16", patch_stride=None, quick_gelu=None, name="vit"):
    """The image tower of the CLIP config `config` to its class token `[B, width]` (no projection).

    Args:
        input_shape: tuple of int. `(height, width, 3)` of the CLIP-normalised images; multiples
            of the patch size unless `patch_stride` differs from it. Defaults to `(256, 128, 3)`.
        weights: str or None. A `ClipModel` `.weights.h5` of this config (its image tower is
            loaded; `convert_clip` writes one) or one saved from this backbone. Defaults to
            `None` (random initialisation).
        config: str. A name of `models.clip.CLIP_CONFIGS` giving the tower's sizes.
            Defaults to `"ViT-B-16"`.
        patch_stride: int or None. Step of the patch embedding; below the patch size the patches
            overlap (TransReID). Defaults to `None` (the patch size).
        quick_gelu: bool or None. QuickGELU (OpenAI's weights) or GELU (open_clip's trainings);
            `None` takes the config's. Defaults to `None`.
        name: str. Model name. Defaults to `"vit"`.

    Returns:
        `keras.Model` mapping images `[B, H, W, 3]` to features `[B, width]`.

    Example:
    >>> vit((64, 32, 3), config="tiny", patch_stride=6).get_layer("conv1").output.shape
    (None, 10, 5, 32)
    """
    if config not in CLIP_CONFIGS:
        raise ValueError(f"Unknown CLIP config. Allowed: {', '.join(CLIP_CONFIGS)}. Received: config={config!r}")
    sizes = CLIP_CONFIGS[config]
    if quick_gelu is None:
        quick_gelu = sizes["quick_gelu"]
    if not isinstance(quick_gelu, bool):
        raise ValueError(f"quick_gelu must be a bool or None. Received: quick_gelu={quick_gelu!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels). Received: input_shape={input_shape}")
    model = clip_image_encoder(
        input_shape,
        image_size=sizes["image_size"],
        patch_size=sizes["patch_size"],
        patch_stride=patch_stride,
        width=sizes["vision_width"],
        layers=sizes["vision_layers"],
        heads=sizes["vision_heads"],
        output_dim=None,
        quick_gelu=quick_gelu,
        name=name,
    )
    if weights is not None:
        load_vit_weights(model, weights, config)
    return model


def vit_b16(input_shape=(256, 128, 3), weights=None, *, patch_stride=16, quick_gelu=True, name="vit_b16"):
    """CLIP ViT-B/16's image tower to its 768-d class token: 85.8 M parameters (module docstring).

    About 22.7 GFLOPs per 256×128 image at stride 16 (129 tokens), 37.7 at stride 12
    (211 tokens): `vit_flops`.

    Args:
        input_shape: tuple of int. `(height, width, 3)`. Defaults to `(256, 128, 3)`.
        weights: str or None. See `vit`. Defaults to `None`.
        patch_stride: int. 16 (CLIP) or less for overlapping patches; TransReID uses 12.
            Defaults to `16`.
        quick_gelu: bool. `True` for OpenAI's released weights (the ones CLIP-ReID fine-tunes),
            `False` for open_clip's own trainings. Defaults to `True`.
        name: str. Model name. Defaults to `"vit_b16"`.

    Returns:
        `keras.Model` mapping images `[B, H, W, 3]` to features `[B, 768]`.
    """
    return vit(input_shape, weights, config="ViT-B-16", patch_stride=patch_stride, quick_gelu=quick_gelu, name=name)


def vit_tiny(input_shape=(256, 128, 3), weights=None, *, patch_stride=8, quick_gelu=True, name="vit_tiny"):
    """The image tower of `clip_model("tiny")` (8-pixel patches, width 32, 2 blocks) to `[B, 32]`.

    For tests and CPU runs; a tiny `ClipModel`'s weights (e.g. `training.toy_clip.train_toy_clip`'s)
    load into it.

    Args:
        input_shape: tuple of int. `(height, width, 3)`. Defaults to `(256, 128, 3)`.
        weights: str or None. See `vit`. Defaults to `None`.
        patch_stride: int. Step of the 8-pixel patches. Defaults to `8`.
        quick_gelu: bool. QuickGELU as the tiny config. Defaults to `True`.
        name: str. Model name. Defaults to `"vit_tiny"`.

    Returns:
        `keras.Model` mapping images `[B, H, W, 3]` to features `[B, 32]`.

    Example:
    >>> vit_tiny((64, 32, 3)).output_shape
    (None, 32)
    """
    return vit(input_shape, weights, config="tiny", patch_stride=patch_stride, quick_gelu=quick_gelu, name=name)


def is_clip_weights_file(path):
    """Whether `path` is a `.weights.h5` of a whole `ClipModel` rather than of a backbone: Keras
    writes a subclassed model's tracked sub-models under their attribute names, so the image tower
    is the top-level group `image_encoder` (a functional backbone's file starts with `layers`)."""
    try:
        with h5py.File(path, "r") as f:
            return "image_encoder" in f
    except OSError:  # not HDF5: load_backbone_weights says what was expected
        return False


def load_vit_weights(model, weights, config):
    """Load `weights` into the backbone `model` of CLIP config `config` (see `vit`).

    A `ClipModel` file is loaded into a `clip_model(config)` first (checking every name and
    shape), then each layer of `model` takes the weights of the image tower's layer of the same
    name; the projection `proj` is left out.

    Raises:
        ValueError: the file is missing or holds weights of another architecture.
    """
    if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights) or not is_clip_weights_file(weights):
        return load_backbone_weights(model, weights)
    try:
        clip = clip_model(config, weights=weights)
    except ValueError as e:
        raise ValueError(f"{os.fspath(weights)} does not hold CLIP {config} weights: {e}") from e
    tower = clip.image_encoder
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(tower.get_layer(layer.name).get_weights())
    return model


def vit_flops(input_shape=(256, 128, 3), *, patch_size=16, patch_stride=None, width=768, layers=12):
    """FLOPs of one image through a ViT's matrix products, 2 per multiply-add.

    With a `gh × gw` patch grid (`gh = (H − p) // s + 1`), `n = gh·gw + 1` tokens (the class
    token too), width `D`, `L` blocks and 4×-wide MLPs:

        patch embedding   gh·gw · 3p² · D
        per block         n·D·3D (q, k, v) + 2·n²·D (q·kᵀ and weights · v) + n·D² (out) + 2·n·D·4D (MLP)
                          = 12·n·D² + 2·n²·D
        FLOPs             2 · (gh·gw·3p²·D + L · (12·n·D² + 2·n²·D))

    LayerNorm, softmax, the activation, biases, additions and the (per-model, not per-image)
    position-embedding resize are left out: well under 1% at ViT-B sizes.

    Args:
        input_shape: tuple of int. `(height, width, 3)`. Defaults to `(256, 128, 3)`.
        patch_size: int. Patch side. Defaults to `16`.
        patch_stride: int or None. Patch step; `None` is `patch_size`. Defaults to `None`.
        width: int. Token width `D`. Defaults to `768`.
        layers: int. Blocks `L`. Defaults to `12`.

    Returns:
        int.

    Example:
    >>> round(vit_flops() / 1e9, 1), round(vit_flops(patch_stride=12) / 1e9, 1)
    (22.7, 37.7)
    """
    stride = patch_size if patch_stride is None else patch_stride
    grid_h = (input_shape[0] - patch_size) // stride + 1
    grid_w = (input_shape[1] - patch_size) // stride + 1
    patches = grid_h * grid_w
    tokens = patches + 1
    patch_embedding = patches * 3 * patch_size**2 * width
    block = (4 + 2 * MLP_RATIO) * tokens * width**2 + 2 * tokens**2 * width
    return 2 * (patch_embedding + layers * block)
