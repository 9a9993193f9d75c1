"""HRNet-W32-C, the paper's backbone (§5, Fig. 6), as a Keras functional model.

Written from the official classification network (HRNet/HRNet-Image-Classification,
`lib/models/cls_hrnet.py` with `experiments/cls_hrnet_w32_*.yaml`):

- stem: two 3×3 stride-2 convs (64 channels) with BN + ReLU → 1/4 resolution;
- stage 1: 4 Bottleneck blocks (planes 64, expansion 4 → 256 channels);
- stages 2–4: 1, 4 and 3 modules with 2, 3 and 4 branches of `width · 2^i` channels, each
  branch 4 BasicBlocks per module, then multi-resolution fusion by sum followed by ReLU
  (higher from lower resolution: 1×1 conv + BN + nearest upsampling; lower from higher:
  a chain of 3×3 stride-2 conv + BN, with ReLU between the convs but not after the last);
- classification head: one "incre" Bottleneck per branch (planes 32/64/128/256 → 128/256/512/1024
  channels), merged from high to low resolution by 3×3 stride-2 conv + BN + ReLU and a sum,
  a 1×1 conv to 2048 channels + BN + ReLU, and global average pooling.

The ImageNet classifier (Linear 2048→1000) is left out: the output is the pooled 2048-d vector.
PyTorch pads 3×3 stride-2 convs by 1 on every side, so those use explicit `ZeroPadding2D(1)`
and a valid conv (Keras "same" would pad only bottom/right); BN uses PyTorch's momentum 0.1
(Keras `momentum=0.9`) and epsilon 1e-5, with TensorFlow's fused kernel under that backend
(`batch_norm.BatchNormalization`).
"""

import keras
from keras import layers

from portrait_keras.models.batch_norm import batch_normalization
from portrait_keras.models.utils import BN_EPSILON, BN_MOMENTUM, load_backbone_weights


def _bn(x, name):
    return batch_normalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


def _conv(x, filters, kernel, stride, name, use_bias=False):
    if stride > 1 and kernel > 1:
        # PyTorch-style symmetric padding (see module docstring).
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=use_bias, name=name)(x)


def _conv_bn(x, filters, kernel, stride, name, relu=True, use_bias=False):
    x = _conv(x, filters, kernel, stride, f"{name}_conv", use_bias=use_bias)
    x = _bn(x, f"{name}_bn")
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def basic_block(x, planes, name):
    """ResNet BasicBlock (two 3×3 convs, expansion 1); 1×1 projection when channels change."""
    shortcut = x
    if x.shape[-1] != planes:
        shortcut = _conv_bn(x, planes, 1, 1, f"{name}_down", relu=False)
    y = _conv_bn(x, planes, 3, 1, f"{name}_1")
    y = _conv_bn(y, planes, 3, 1, f"{name}_2", relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def bottleneck(x, planes, name, expansion=4):
    """ResNet Bottleneck (1×1, 3×3, 1×1 ×`expansion`); 1×1 projection when channels change."""
    out_channels = planes * expansion
    shortcut = x
    if x.shape[-1] != out_channels:
        shortcut = _conv_bn(x, out_channels, 1, 1, f"{name}_down", relu=False)
    y = _conv_bn(x, planes, 1, 1, f"{name}_1")
    y = _conv_bn(y, planes, 3, 1, f"{name}_2")
    y = _conv_bn(y, out_channels, 1, 1, f"{name}_3", relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _transition(xs, channels, name):
    """Adapt the previous stage's branches to `channels`, adding one lower-resolution branch."""
    out = []
    for i, c in enumerate(channels):
        if i < len(xs):
            x = xs[i]
            out.append(x if x.shape[-1] == c else _conv_bn(x, c, 3, 1, f"{name}_{i}"))
            continue
        x = xs[-1]
        steps = i + 1 - len(xs)
        for k in range(steps):
            filters = c if k == steps - 1 else xs[-1].shape[-1]
            x = _conv_bn(x, filters, 3, 2, f"{name}_{i}_{k}")
        out.append(x)
    return out


def _fuse(xs, name):
    """Multi-resolution fusion by sum (cls_hrnet `_make_fuse_layers`), ReLU after the sum."""
    channels = [x.shape[-1] for x in xs]
    out = []
    for i in range(len(xs)):
        terms = []
        for j, x in enumerate(xs):
            if j == i:
                terms.append(x)
            elif j > i:
                y = _conv_bn(x, channels[i], 1, 1, f"{name}_{i}_{j}", relu=False)
                factor = 2 ** (j - i)
                terms.append(layers.UpSampling2D(factor, interpolation="nearest", name=f"{name}_{i}_{j}_up")(y))
            else:
                y = x
                for k in range(i - j):
                    last = k == i - j - 1
                    y = _conv_bn(y, channels[i] if last else channels[j], 3, 2, f"{name}_{i}_{j}_{k}", relu=not last)
                terms.append(y)
        y = layers.Add(name=f"{name}_{i}_sum")(terms)
        out.append(layers.ReLU(name=f"{name}_{i}_relu")(y))
    return out


def _hr_module(xs, num_blocks, name):
    """One HighResolutionModule: `num_blocks` BasicBlocks per branch, then fusion."""
    branches = []
    for i, x in enumerate(xs):
        for b in range(num_blocks):
            x = basic_block(x, x.shape[-1], f"{name}_b{i}_{b}")
        branches.append(x)
    return _fuse(branches, f"{name}_fuse") if len(branches) > 1 else branches


def hrnet(
    input_shape=(256, 128, 3),
    weights=None,
    *,
    width=32,
    stem_channels=64,
    stage1_blocks=4,
    num_modules=(1, 4, 3),
    num_blocks=4,
    head_channels=(32, 64, 128, 256),
    final_channels=2048,
    name=None,
):
    """HRNet classification backbone (HRNet-W`width`-C) to a pooled feature vector.

    Paper reference: §5 (HRNet-W32 as the unified feature extractor, Fig. 6). The
    defaults give HRNet-W32-C; smaller values build the same structure narrow and fast.

    Args:
        input_shape: tuple of int. `(height, width, channels)` of the normalised images;
            height and width must be multiples of 32. Defaults to `(256, 128, 3)`.
        weights: str or None. Path to saved backbone weights (`.weights.h5`), loaded with
            `load_weights`. For ImageNet-pretrained HRNet-W32-C (official or timm PyTorch
            state_dict) make one with `portrait-keras convert-hrnet`.
            Defaults to `None` (random initialisation).
        width: int. Channels of the highest-resolution branch; branch i has
            `width · 2^i`. Defaults to `32`.
        stem_channels: int. Channels of the two stem convs and planes of the stage-1
            Bottlenecks (which output `4 · stem_channels`). Defaults to `64`.
        stage1_blocks: int. Bottleneck blocks of stage 1. Defaults to `4`.
        num_modules: tuple of 3 int. HighResolutionModules of stages 2, 3, 4.
            Defaults to `(1, 4, 3)`.
        num_blocks: int. BasicBlocks per branch in each module. Defaults to `4`.
        head_channels: tuple of 4 int. Planes of the head's incre Bottlenecks (output
            `4 ·` that). Defaults to `(32, 64, 128, 256)`.
        final_channels: int. Channels of the final 1×1 conv = size of the output vector.
            Defaults to `2048`.
        name: str or None. Model name. Defaults to `f"hrnet_w{width}"`.

    Returns:
        `keras.Model` mapping images `[B, H, W, C]` to features `[B, final_channels]`.

    Example:
    >>> model = hrnet((64, 32, 3), width=4, stem_channels=8, num_modules=(1, 1, 1),
    ...               num_blocks=1, head_channels=(4, 8, 16, 32), final_channels=64)
    >>> model.output_shape
    (None, 64)
    """
    # === Validation ===
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels). Received: input_shape={input_shape}")
    if input_shape[0] % 32 or input_shape[1] % 32:
        raise ValueError(
            "HRNet needs height and width divisible by 32 (four halvings must upsample back "
            f"exactly). Received: input_shape={input_shape}"
        )
    for arg, value in (
        ("width", width),
        ("stem_channels", stem_channels),
        ("stage1_blocks", stage1_blocks),
        ("num_blocks", num_blocks),
        ("final_channels", final_channels),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int. Received: {arg}={value!r}")
    num_modules = tuple(num_modules)
    if len(num_modules) != 3 or any(not isinstance(m, int) or m < 1 for m in num_modules):
        raise ValueError(f"num_modules must be 3 positive ints. Received: num_modules={num_modules}")
    head_channels = tuple(head_channels)
    if len(head_channels) != 4 or any(not isinstance(c, int) or c < 1 for c in head_channels):
        raise ValueError(f"head_channels must be 4 positive ints. Received: head_channels={head_channels}")

    # === Functional Model ===
    images = keras.Input(input_shape, name="images")
    x = _conv_bn(images, stem_channels, 3, 2, "stem_1")
    x = _conv_bn(x, stem_channels, 3, 2, "stem_2")
    for b in range(stage1_blocks):
        x = bottleneck(x, stem_channels, f"stage1_{b}")

    xs = [x]
    for stage, modules in enumerate(num_modules, start=2):
        channels = [width * 2**i for i in range(stage)]
        xs = _transition(xs, channels, f"transition{stage - 1}")
        for m in range(modules):
            xs = _hr_module(xs, num_blocks, f"stage{stage}_{m}")

    y = bottleneck(xs[0], head_channels[0], "head_incre0")
    for i in range(1, len(xs)):
        down = _conv_bn(y, head_channels[i] * 4, 3, 2, f"head_down{i - 1}", use_bias=True)
        incre = bottleneck(xs[i], head_channels[i], f"head_incre{i}")
        y = layers.Add(name=f"head_sum{i}")([incre, down])
    y = _conv_bn(y, final_channels, 1, 1, "head_final", use_bias=True)
    features = layers.GlobalAveragePooling2D(name="pool")(y)

    model = keras.Model(images, features, name=name or f"hrnet_w{width}")
    if weights is not None:
        load_backbone_weights(model, weights)
    return model


def hrnet_w32(input_shape=(256, 128, 3), weights=None, **kwargs):
    """HRNet-W32-C backbone: images `[B, H, W, 3]` → features `[B, 2048]` (see `hrnet`)."""
    return hrnet(input_shape, weights, width=32, **kwargs)
