"""ResNet-50 backbone (paper §6.4, "Sim-MTL-R50" of Table 4) with the re-id last-stride option."""

import keras

from portrait_keras.config import keras_imagenet_weights
from portrait_keras.models import batch_norm
from portrait_keras.models.utils import BN_MOMENTUM, load_backbone_weights

# keras.applications puts the stride-2 of a stage on its first block's 1×1 conv and on the
# projection shortcut (ResNet v1 as in Caffe), so both must change together.
_STAGE5_STRIDED = ("conv5_block1_1_conv", "conv5_block1_0_conv")


def resnet50(input_shape=(256, 128, 3), weights=None, *, last_stride=2, name="resnet50"):
    """ResNet-50 to a pooled 2048-d vector, optionally with stage-5 stride 1.

    `last_stride=1` is the re-id trick of BoT (Luo et al. 2019): the first block of
    stage 5 keeps the resolution, so the last feature map is 1/16 instead of 1/32 of the
    input (16×8 instead of 8×4 at 256×128). The model is rebuilt from its config with
    the two strided convs of that block set to stride 1; the parameter count is unchanged.
    Its BatchNormalization layers use momentum 0.9 (PyTorch's 0.1), as the HRNet does, and
    TensorFlow's fused kernel under that backend (`batch_norm.BatchNormalization`).

    Args:
        input_shape: tuple of int. `(height, width, channels)` of the normalised images.
            Defaults to `(256, 128, 3)`.
        weights: str or None. Path to saved weights of this backbone (`.weights.h5`), or
            `"imagenet"`: Keras' own ImageNet file, read from where Keras caches it
            (`keras_imagenet_weights`; nothing is downloaded). Defaults to `None` (random
            initialisation). The layout is keras.applications' ResNet50 (v1: stride on the
            first 1×1 conv), so torchvision's v1.5 weights do not fit. Keras' ImageNet
            weights were trained on Caffe-style input (BGR minus the mean pixel): a
            `PortraitModel` with them takes `preprocessing="caffe"` (the training config's
            `model.preprocessing="auto"` chooses it).
        last_stride: int. Stride of stage 5, `1` or `2`. Defaults to `2`.
        name: str. Model name. Defaults to `"resnet50"`.

    Returns:
        `keras.Model` mapping images `[B, H, W, C]` to features `[B, 2048]`.

    Example:
    >>> model = resnet50((64, 32, 3), last_stride=1)
    >>> model.get_layer("conv5_block3_out").output.shape
    (None, 4, 2, 2048)
    """
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2. Received: last_stride={last_stride!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels). Received: input_shape={input_shape}")
    model = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=input_shape, pooling="avg", name=name
    )
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "BatchNormalization":
            # PyTorch's momentum 0.1 (torchvision, fast-reid, and our HRNet), not Keras' 0.99:
            # the Table 4 backbones then average their BN statistics alike.
            layer["config"]["momentum"] = BN_MOMENTUM
            if batch_norm.fused_by_default():  # same config and weights, TF's fused kernel
                layer.update(batch_norm.FUSED_CLASS_CONFIG)
        if last_stride == 1 and layer["config"]["name"] in _STAGE5_STRIDED:
            layer["config"]["strides"] = [1, 1]
    model = keras.Model.from_config(config)
    if weights == "imagenet":
        model.load_weights(keras_imagenet_weights())  # Keras' legacy .h5, matched layer by layer
    elif weights is not None:
        load_backbone_weights(model, weights)
    return model
