"""In-graph image normalisation, so a served model takes raw 0..255 pixels.

Three presets (`PREPROCESSING`): `"imagenet"`, RGB scaled to 0..1 and normalised by the ImageNet
mean and std (torchvision, timm, the paper's HRNet); `"caffe"`, channels reversed to BGR and
the ImageNet mean pixel subtracted with no scaling: the input Keras' own ResNet-50 ImageNet
weights were trained on (`keras.applications.resnet.preprocess_input`); and `"clip"`, RGB
normalised by CLIP's mean and std (`models.clip.CLIP_MEAN`, `CLIP_STD`), the input of CLIP's
towers and so of the `vit_b16` backbone.
"""

import keras
from keras import ops

from portrait_keras.models.clip import CLIP_MEAN, CLIP_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe: x[..., ::-1] − (103.939, 116.779, 123.68), written as (x / 255 − mean) / std on BGR.
PREPROCESSING = {
    "imagenet": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "bgr": False},
    "caffe": {"mean": (103.939 / 255, 116.779 / 255, 123.68 / 255), "std": (1 / 255,) * 3, "bgr": True},
    "clip": {"mean": CLIP_MEAN, "std": CLIP_STD, "bgr": False},
}


@keras.saving.register_keras_serializable(package="portrait_keras")
class ImageNormalization(keras.layers.Layer):
    """Map 0..255 RGB pixels to `(x / 255 − mean) / std` per channel (ImageNet statistics),
    after reversing the channels to BGR when `bgr` (Caffe-style weights; `PREPROCESSING`).

    Args:
        mean: tuple of float. Per-channel mean on the 0..1 scale. Defaults to
            `(0.485, 0.456, 0.406)`.
        std: tuple of float. Per-channel standard deviation on the 0..1 scale, all > 0.
            Defaults to `(0.229, 0.224, 0.225)`.
        bgr: bool. Reverse the channel order first (`mean`/`std` are then in BGR order).
            Defaults to `False`.
        **kwargs: base `Layer` arguments.

    Shapes:
        `[..., C]` → `[..., C]` with `C = len(mean)`.

    Example:
    >>> layer = ImageNormalization()
    >>> [round(float(v), 3) for v in layer(keras.ops.full((1, 3), 255.0))[0]]
    [2.249, 2.429, 2.64]
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, bgr=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(bgr, bool):
            raise ValueError(f"bgr must be a bool. Received: bgr={bgr!r}")
        self.bgr = bgr
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if not mean or len(mean) != len(std):
            raise ValueError(f"mean and std need the same non-zero length. Received: mean={mean}, std={std}")
        if min(std) <= 0:
            raise ValueError(f"std must be > 0. Received: std={std}")
        self.mean, self.std = mean, std

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != len(self.mean):
            raise ValueError(f"Expected {len(self.mean)} channels (one per mean). Received: input_shape={input_shape}")

    def call(self, inputs):
        # One multiply-add: x · 1/(255 std) − mean/std.
        scale = ops.convert_to_tensor([1.0 / (255.0 * s) for s in self.std], dtype=inputs.dtype)
        offset = ops.convert_to_tensor([m / s for m, s in zip(self.mean, self.std)], dtype=inputs.dtype)
        if self.bgr:
            inputs = ops.flip(inputs, axis=-1)
        return inputs * scale - offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std), bgr=self.bgr)
        return config
