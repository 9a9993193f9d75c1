"""CLIP's ViT image tower and text transformer (paper §6.3, Radford et al. 2021) in keras.ops.

Built layer for layer like OpenAI CLIP (`clip/model.py`) and open_clip (`transformer.py`,
`model.py`), so their `state_dict`s convert one tensor to one variable
(`portrait_keras.models.convert_clip`):

- image tower: patch embedding by a conv with kernel = stride = patch size and no bias (`conv1`);
  a class token in front of the patches; a learned position embedding; `ln_pre`; pre-LN residual
  attention blocks; `ln_post` on the class token; a projection to the joint space (`proj`, no bias);
- text tower: token embedding; learned position embedding; the same blocks with a causal mask
  (a token sees itself and the tokens before it); `ln_final`; the feature at the end-of-text
  token, which has the highest id of its row (OpenAI's `text.argmax(dim=-1)`, the first such
  position); a projection (`text_projection`, no bias);
- each block: `x + attn(ln_1(x))`, then `x + c_proj(act(c_fc(ln_2(x))))` with 4× wider `c_fc`;
  attention as `nn.MultiheadAttention`: one fused q/k/v projection (`in_proj`), heads of 64 (image)
  or `width / heads` (text) channels, softmax(q·kᵀ/√d), then `out_proj`; `act` is QuickGELU
  (`x · sigmoid(1.702 x)`, OpenAI's checkpoints, open_clip's `-quickgelu` names) or exact GELU
  (open_clip's own trainings); LayerNorm epsilon 1e-5 as PyTorch's.

Images are `[B, H, W, 3]`, normalised with CLIP's statistics: put
`ImageNormalization(mean=CLIP_MEAN, std=CLIP_STD)` in front for 0..255 pixels. `image_size` is the
size the weights were trained at; the model may take another `input_shape` (e.g. 256×128 person
crops), for which the position embedding is resized bicubically (`bicubic_resize_matrix`, as
open_clip resizes a checkpoint's). Weights: `weights=None` (random); pretrained ones cannot be
downloaded here, convert an open_clip / OpenAI state_dict with `python -m
portrait_keras.models.convert_clip` (its docstring says how to export one).
"""

import math
import os

import keras
import numpy as np
from keras import ops

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LN_EPSILON = 1e-5  # PyTorch's LayerNorm default, so converted weights give the same features
MLP_RATIO = 4
QUICK_GELU_FACTOR = 1.702

# open_clip's model_configs/*.json, flattened; the "-quickgelu" names are OpenAI's released weights.
_VIT_B = dict(
    embed_dim=512,
    image_size=224,
    vision_width=768,
    vision_layers=12,
    vision_heads=12,
    context_length=77,
    vocab_size=49408,
    text_width=512,
    text_layers=12,
    text_heads=8,
)
CLIP_CONFIGS = {
    "ViT-B-32": dict(_VIT_B, patch_size=32, quick_gelu=False),
    "ViT-B-32-quickgelu": dict(_VIT_B, patch_size=32, quick_gelu=True),
    "ViT-B-16": dict(_VIT_B, patch_size=16, quick_gelu=False),
    "ViT-B-16-quickgelu": dict(_VIT_B, patch_size=16, quick_gelu=True),
    # Both towers in miniature, for tests: the same layers and key names.
    "tiny": dict(
        embed_dim=16,
        image_size=32,
        patch_size=8,
        vision_width=32,
        vision_layers=2,
        vision_heads=4,
        context_length=12,
        vocab_size=64,
        text_width=24,
        text_layers=2,
        text_heads=3,
        quick_gelu=True,
    ),
}


def _check_positive_int(**values):
    for arg, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive int. Received: {arg}={value!r}")


def _pair(value, arg):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{arg} must be an int or (height, width). Received: {arg}={value!r}")
    _check_positive_int(**{arg: pair[0]}, **{f"{arg}[1]": pair[1]})
    return pair


def _cubic(x, a=-0.5):
    """Keys' cubic convolution kernel; a = -0.5 as PIL and PyTorch's antialiased bicubic."""
    x = abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def bicubic_resize_matrix(in_size, out_size):
    """Matrix that resizes a length-`in_size` signal to `out_size` samples, bicubically.

    The resampling of PIL's `Image.resize(..., BICUBIC)` and PyTorch's
    `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`, which open_clip's
    `resize_pos_embed` uses: output sample i sits at `(i + 0.5) · in/out`; the cubic kernel is
    stretched by `in/out` when shrinking (antialiasing); taps outside the signal are dropped and
    the weights of each row renormalised to sum 1. At `in_size == out_size` it is the identity.

    Args:
        in_size: int. Input length.
        out_size: int. Output length.

    Returns:
        float64 numpy array `[out_size, in_size]`.

    Example:
    >>> bool(np.array_equal(bicubic_resize_matrix(4, 4), np.eye(4)))
    True
    >>> np.round(bicubic_resize_matrix(2, 4), 4)
    array([[ 1.0882, -0.0882],
           [ 0.7929,  0.2071],
           [ 0.2071,  0.7929],
           [-0.0882,  1.0882]])
    """
    _check_positive_int(in_size=in_size, out_size=out_size)
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        # int() truncates toward zero, as the C code of PIL and PyTorch does.
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.array([_cubic((j - center + 0.5) / stretch) for j in range(lo, hi)])
        matrix[i, lo:hi] = taps / taps.sum()
    return matrix


@keras.saving.register_keras_serializable(package="portrait_keras")
class QuickGELU(keras.layers.Layer):
    """OpenAI CLIP's activation `x · sigmoid(1.702 x)`, a cheap approximation of GELU.

    Shapes:
        any → the same.

    Example:
    >>> [round(float(v), 4) for v in QuickGELU()(np.array([-1.0, 0.0, 2.0], "float32"))]
    [-0.1542, 0.0, 1.9357]
    """

    def call(self, inputs):
        return inputs * ops.sigmoid(QUICK_GELU_FACTOR * inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="portrait_keras")
class ClipAttention(keras.layers.Layer):
    """Multi-head self-attention with one fused q/k/v projection, as PyTorch's `nn.MultiheadAttention`.

    `[q | k | v] = x · in_proj_kernel + in_proj_bias`, each split into `num_heads` heads of
    `width / num_heads` channels (head h = channels `h·d … (h+1)·d`), softmax(q·kᵀ/√d [+ causal
    mask]) · v, heads concatenated, then `out_proj`. The variables are PyTorch's `in_proj_weight`,
    `in_proj_bias`, `out_proj.weight`, `out_proj.bias` with the weights transposed (`[in, out]`).

    Args:
        num_heads: int. Attention heads; must divide the input width.
        causal: bool. Each position attends only to itself and earlier positions (the text
            tower's mask). Defaults to `False`.
        **kwargs: base `Layer` arguments.

    Shapes:
        `[B, L, W]` → `[B, L, W]`.

    Example:
    >>> tuple(ClipAttention(num_heads=2, causal=True)(np.zeros((1, 3, 8), "float32")).shape)
    (1, 3, 8)
    """

    def __init__(self, num_heads, causal=False, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int(num_heads=num_heads)
        if not isinstance(causal, bool):
            raise ValueError(f"causal must be a bool. Received: causal={causal!r}")
        self.num_heads = num_heads
        self.causal = causal

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None or width % self.num_heads:
            raise ValueError(
                f"The input width must be a multiple of num_heads={self.num_heads}. Received: input_shape={input_shape}"
            )
        self.in_proj_kernel = self.add_weight(
            shape=(width, 3 * width), initializer="glorot_uniform", name="in_proj_kernel"
        )
        self.in_proj_bias = self.add_weight(shape=(3 * width,), initializer="zeros", name="in_proj_bias")
        self.out_proj_kernel = self.add_weight(
            shape=(width, width), initializer="glorot_uniform", name="out_proj_kernel"
        )
        self.out_proj_bias = self.add_weight(shape=(width,), initializer="zeros", name="out_proj_bias")

    def call(self, inputs):
        batch, length, width = ops.shape(inputs)
        qkv = ops.matmul(inputs, self.in_proj_kernel) + self.in_proj_bias
        heads = [
            ops.reshape(part, (batch, length, self.num_heads, width // self.num_heads))
            for part in ops.split(qkv, 3, axis=-1)
        ]
        attended = ops.dot_product_attention(*heads, is_causal=self.causal)  # scale 1/√d
        attended = ops.reshape(attended, (batch, length, width))
        return ops.matmul(attended, self.out_proj_kernel) + self.out_proj_bias

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, causal=self.causal)
        return config


@keras.saving.register_keras_serializable(package="portrait_keras")
class ClassTokenPositionEmbedding(keras.layers.Layer):
    """ViT token sequence: a learned class token before the patches, plus learned position embeddings.

    The position embedding has one row for the class token and one per patch of the
    `grid_size` grid the weights were trained at (row-major, like the patches). For another grid
    the patch rows are resized bicubically (`bicubic_resize_matrix` along height and width, open_clip's
    `resize_pos_embed`); the class token's row is kept. The variables are open_clip's
    `class_embedding` `[W]` and `positional_embedding` `[1 + gh·gw, W]`.

    Args:
        grid_size: int or (int, int). Patch grid `(gh, gw)` of the trained weights, e.g. 7 for
            ViT-B/32 at 224 pixels.
        **kwargs: base `Layer` arguments.

    Shapes:
        Patch features `[B, h, w, W]` (static h, w) → tokens `[B, 1 + h·w, W]`.

    Example:
    >>> layer = ClassTokenPositionEmbedding(grid_size=2)
    >>> tuple(layer(np.zeros((1, 4, 2, 8), "float32")).shape)
    (1, 9, 8)
    """

    def __init__(self, grid_size, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = _pair(grid_size, "grid_size")

    def build(self, input_shape):
        width = input_shape[-1]
        if len(input_shape) != 4 or None in tuple(input_shape[1:]):
            raise ValueError(
                f"Expected patch features [B, h, w, W] of known h, w, W. Received: input_shape={input_shape}"
            )
        init = keras.initializers.RandomNormal(stddev=width**-0.5)  # open_clip's scale · randn
        self.class_embedding = self.add_weight(shape=(width,), initializer=init, name="class_embedding")
        rows = 1 + self.grid_size[0] * self.grid_size[1]
        self.position_embedding = self.add_weight(shape=(rows, width), initializer=init, name="position_embedding")

    def positions(self, grid):
        """Position embeddings `[1 + h·w, W]` for a `(h, w)` patch grid (resized if not `grid_size`)."""
        table = self.position_embedding
        if tuple(grid) == self.grid_size:
            return table
        width = table.shape[-1]
        patches = ops.reshape(table[1:], (*self.grid_size, width))
        along_h = ops.convert_to_tensor(bicubic_resize_matrix(self.grid_size[0], grid[0]), dtype=table.dtype)
        along_w = ops.convert_to_tensor(bicubic_resize_matrix(self.grid_size[1], grid[1]), dtype=table.dtype)
        resized = ops.einsum("ih,hwc,jw->ijc", along_h, patches, along_w)
        return ops.concatenate([table[:1], ops.reshape(resized, (grid[0] * grid[1], width))], axis=0)

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        _, h, w, width = inputs.shape
        patches = ops.reshape(inputs, (batch, h * w, width))
        token = ops.cast(ops.reshape(self.class_embedding, (1, 1, width)), inputs.dtype)
        tokens = ops.concatenate([ops.broadcast_to(token, (batch, 1, width)), patches], axis=1)
        return tokens + ops.cast(self.positions((h, w)), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1 + input_shape[1] * input_shape[2], input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=list(self.grid_size))
        return config


@keras.saving.register_keras_serializable(package="portrait_keras")
class PositionEmbedding(keras.layers.Layer):
    """Add a learned position embedding `[sequence_length, W]` (the text tower's `positional_embedding`).

    Args:
        sequence_length: int. Rows of the table; inputs may be shorter (the first rows are added).
        **kwargs: base `Layer` arguments.

    Shapes:
        `[B, L, W]` with `L <= sequence_length` → the same.

    Example:
    >>> tuple(PositionEmbedding(sequence_length=5)(np.zeros((2, 5, 4), "float32")).shape)
    (2, 5, 4)
    """

    def __init__(self, sequence_length, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int(sequence_length=sequence_length)
        self.sequence_length = sequence_length

    def build(self, input_shape):
        length, width = input_shape[-2], input_shape[-1]
        if length is None or length > self.sequence_length:
            raise ValueError(
                f"Expected a known sequence length of at most {self.sequence_length}. "
                f"Received: input_shape={input_shape}"
            )
        init = keras.initializers.RandomNormal(stddev=0.01)  # open_clip's init
        self.embeddings = self.add_weight(shape=(self.sequence_length, width), initializer=init, name="embeddings")

    def call(self, inputs):
        return inputs + ops.cast(self.embeddings[: inputs.shape[-2]], inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(sequence_length=self.sequence_length)
        return config


@keras.saving.register_keras_serializable(package="portrait_keras")
class ClassTokenPooling(keras.layers.Layer):
    """The class token's feature: `[B, L, W]` → `[B, W]` (position 0).

    Example:
    >>> ops.convert_to_numpy(ClassTokenPooling()(np.arange(12.0).reshape(1, 3, 4))).tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    """

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="portrait_keras")
class EndOfTextPooling(keras.layers.Layer):
    """Feature at each row's end-of-text token, the position of its highest token id.

    OpenAI CLIP's `x[arange(B), text.argmax(-1)]`: `<|endoftext|>` has the highest id of the
    vocabulary and padding is 0. With ties (the end token typed inside the text) the first
    position wins, as `torch.argmax`.

    Call:
        `[features, token_ids]`: `[B, L, W]` and int `[B, L]` → `[B, W]`.

    Example:
    >>> features = np.arange(8.0).reshape(1, 4, 2)
    >>> ops.convert_to_numpy(EndOfTextPooling()([features, np.array([[7, 9, 3, 0]])])).tolist()
    [[2.0, 3.0]]
    """

    def call(self, inputs):
        features, token_ids = inputs
        length = ops.shape(token_ids)[1]
        highest = ops.max(token_ids, axis=1, keepdims=True)
        positions = ops.arange(length, dtype="int32")[None, :]
        # The first position holding the row's highest id (argmax leaves ties to the backend).
        first = ops.min(ops.where(ops.equal(token_ids, highest), positions, length), axis=1)
        return ops.take_along_axis(features, ops.reshape(first, (-1, 1, 1)), axis=1)[:, 0]

    def compute_output_shape(self, input_shape):
        features_shape, _ = input_shape
        return (features_shape[0], features_shape[2])


def residual_attention_block(x, num_heads, quick_gelu, name, causal=False):
    """One pre-LN block: `x + attn(ln_1(x))`, then `x + c_proj(act(c_fc(ln_2(x))))`.

    Layer names `{name}_ln_1`, `_attn`, `_ln_2`, `_c_fc`, `_c_proj` follow the PyTorch modules.
    """
    width = x.shape[-1]
    y = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_ln_1")(x)
    y = ClipAttention(num_heads, causal=causal, name=f"{name}_attn")(y)
    x = keras.layers.Add(name=f"{name}_add_1")([x, y])
    y = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_ln_2")(x)
    y = keras.layers.Dense(MLP_RATIO * width, name=f"{name}_c_fc")(y)
    # Keras' "gelu" is the exact (erf) GELU, as PyTorch's nn.GELU().
    y = QuickGELU(name=f"{name}_gelu")(y) if quick_gelu else keras.layers.Activation("gelu", name=f"{name}_gelu")(y)
    y = keras.layers.Dense(width, name=f"{name}_c_proj")(y)
    return keras.layers.Add(name=f"{name}_add_2")([x, y])


def clip_image_encoder(
    input_shape=None,
    *,
    image_size=224,
    patch_size=32,
    patch_stride=None,
    width=768,
    layers=12,
    heads=12,
    output_dim=512,
    quick_gelu=False,
    name="image_encoder",
):
    """CLIP's ViT image tower: normalised images → embeddings in the joint image-text space.

    Paper reference: §6.3 (CLIP ViT-B/16); Dosovitskiy et al. 2021 for the ViT.

    With `patch_stride` below `patch_size` the patch embedding takes overlapping windows
    (TransReID's "overlapping patches", He et al. 2021): the grid is
    `((H − patch_size) // patch_stride + 1, (W − patch_size) // patch_stride + 1)`, e.g. 21×10
    for 256×128 at stride 12 with 16-pixel patches (pixels past the last window are not read, as
    in TransReID), and the position embedding is resized to it. The conv kernel is the same, so
    CLIP's weights load whatever the stride.

    Args:
        input_shape: tuple of int or None. `(height, width, 3)` of the inputs; multiples of
            `patch_size` when `patch_stride == patch_size`, else at least `patch_size`.
            Defaults to `None` (`(image_size, image_size, 3)`).
        image_size: int or (int, int). Image size of the weights (sets the position embedding's
            grid, at stride `patch_size`). Defaults to `224`.
        patch_size: int. Patch side (32 for ViT-B/32). Defaults to `32`.
        patch_stride: int or None. Step between patches; `None` is `patch_size` (CLIP's
            non-overlapping patches). Defaults to `None`.
        width: int. Token width. Defaults to `768`.
        layers: int. Residual attention blocks. Defaults to `12`.
        heads: int. Attention heads; must divide `width`. Defaults to `12`.
        output_dim: int or None. Size of the joint embedding; `None` leaves out the projection
            `proj`, so the output is the class token after `ln_post` `[B, width]` (the feature
            CLIP-ReID and the `vit_b16` backbone use). Defaults to `512`.
        quick_gelu: bool. QuickGELU (OpenAI's weights) instead of GELU. Defaults to `False`.
        name: str. Model name. Defaults to `"image_encoder"`.

    Returns:
        `keras.Model` from images `[B, H, W, 3]` (CLIP-normalised) to `[B, output_dim]`
        (`[B, width]` without the projection).

    Example:
    >>> encoder = clip_image_encoder((64, 32, 3), image_size=32, patch_size=16, width=16, layers=1,
    ...                              heads=2, output_dim=8)
    >>> encoder.output_shape, tuple(encoder.get_layer("embeddings").position_embedding.shape)
    ((None, 8), (5, 16))
    >>> overlapping = clip_image_encoder((256, 128, 3), image_size=32, patch_size=16, patch_stride=12,
    ...                                  width=16, layers=1, heads=2, output_dim=None)
    >>> overlapping.get_layer("conv1").output.shape, overlapping.output_shape
    ((None, 21, 10, 16), (None, 16))
    """
    image_size = _pair(image_size, "image_size")
    patch_stride = patch_size if patch_stride is None else patch_stride
    _check_positive_int(patch_size=patch_size, patch_stride=patch_stride, width=width, layers=layers, heads=heads)
    if output_dim is not None:
        _check_positive_int(output_dim=output_dim)
    input_shape = (*image_size, 3) if input_shape is None else tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3). Received: input_shape={input_shape}")
    sizes = (("image_size", image_size), ("input_shape", input_shape[:2]))
    for arg, size in sizes if patch_stride == patch_size else sizes[:1]:
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"{arg} must be a multiple of patch_size={patch_size}. Received: {arg}={size}")
    if min(input_shape[:2]) < patch_size:
        raise ValueError(f"input_shape must be at least patch_size={patch_size}. Received: input_shape={input_shape}")
    if width % heads:
        raise ValueError(f"heads must divide width. Received: width={width}, heads={heads}")
    grid = (image_size[0] // patch_size, image_size[1] // patch_size)

    images = keras.Input(input_shape, name="images")
    x = keras.layers.Conv2D(width, patch_size, strides=patch_stride, use_bias=False, name="conv1")(images)
    x = ClassTokenPositionEmbedding(grid, name="embeddings")(x)
    x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="ln_pre")(x)
    for i in range(layers):
        x = residual_attention_block(x, heads, quick_gelu, f"resblocks_{i}")
    x = ClassTokenPooling(name="class_token")(x)
    x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="ln_post")(x)
    if output_dim is not None:
        x = keras.layers.Dense(output_dim, use_bias=False, name="proj")(x)
    return keras.Model(images, x, name=name)


def clip_text_encoder(
    *,
    context_length=77,
    vocab_size=49408,
    width=512,
    layers=12,
    heads=8,
    output_dim=512,
    quick_gelu=False,
    name="text_encoder",
):
    """CLIP's text transformer: token ids → embeddings in the joint image-text space.

    Paper reference: §6.3 (text prompts such as "A photo of a man with a black backpack.").

    Args:
        context_length: int. Tokens per text (77 for every released CLIP); the input length.
            Defaults to `77`.
        vocab_size: int. Token ids are below it; the highest marks the end of text.
            Defaults to `49408`.
        width: int. Token width. Defaults to `512`.
        layers: int. Residual attention blocks (causal). Defaults to `12`.
        heads: int. Attention heads; must divide `width`. Defaults to `8`.
        output_dim: int. Size of the joint embedding. Defaults to `512`.
        quick_gelu: bool. QuickGELU (OpenAI's weights) instead of GELU. Defaults to `False`.
        name: str. Model name. Defaults to `"text_encoder"`.

    Returns:
        `keras.Model` from int token ids `[B, context_length]` (`data.clip_tokenizer.ClipTokenizer`)
        to `[B, output_dim]`.

    Example:
    >>> encoder = clip_text_encoder(context_length=6, vocab_size=10, width=8, layers=1, heads=2, output_dim=4)
    >>> tuple(encoder(np.array([[8, 3, 9, 0, 0, 0]])).shape)
    (1, 4)
    """
    _check_positive_int(
        context_length=context_length,
        vocab_size=vocab_size,
        width=width,
        layers=layers,
        heads=heads,
        output_dim=output_dim,
    )
    if width % heads:
        raise ValueError(f"heads must divide width. Received: width={width}, heads={heads}")

    token_ids = keras.Input((context_length,), dtype="int32", name="token_ids")
    init = keras.initializers.RandomNormal(stddev=0.02)  # open_clip's init
    x = keras.layers.Embedding(vocab_size, width, embeddings_initializer=init, name="token_embedding")(token_ids)
    x = PositionEmbedding(context_length, name="positional_embedding")(x)
    for i in range(layers):
        x = residual_attention_block(x, heads, quick_gelu, f"resblocks_{i}", causal=True)
    # Pooling before ln_final: a LayerNorm acts on each token alone, so the order does not matter.
    x = EndOfTextPooling(name="end_of_text")([x, token_ids])
    x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="ln_final")(x)
    embeddings = keras.layers.Dense(output_dim, use_bias=False, name="text_projection")(x)
    return keras.Model(token_ids, embeddings, name=name)


@keras.saving.register_keras_serializable(package="portrait_keras")
class ClipModel(keras.Model):
    """CLIP: an image tower, a text tower and the learned temperature of their similarity.

    Paper reference: §6.3 (CLIP ViT-B/16 scores how well a text describes a person image).
    `CLIP_CONFIGS` holds the released sizes; `clip_model(name)` builds one by name.

    Args:
        embed_dim: int. Size of the joint embedding.
        image_size: int or (int, int). Image size of the weights (position embedding grid).
        patch_size: int. Patch side.
        vision_width, vision_layers, vision_heads: int. Image tower width, blocks, heads.
        context_length: int. Tokens per text.
        vocab_size: int. Text vocabulary size.
        text_width, text_layers, text_heads: int. Text tower width, blocks, heads.
        quick_gelu: bool. QuickGELU (OpenAI's weights) instead of GELU. Defaults to `False`.
        input_shape: tuple of int or None. `(height, width, 3)` of the images; the position
            embedding is resized when it differs from `image_size`. Defaults to `None`
            (`image_size`).
        name: str. Model name. Defaults to `"clip"`.
        **kwargs: base `Model` arguments.

    Attributes:
        image_encoder, text_encoder: `keras.Model`. The towers (`clip_image_encoder`,
            `clip_text_encoder`).
        logit_scale: variable `[]`. Log of the similarity scale; `log(1 / 0.07)` at init.

    Call:
        A dict `{"images": [B, H, W, 3], "token_ids": int [T, context_length]}` → a dict with
        `"image_embeddings"` `[B, embed_dim]`, `"text_embeddings"` `[T, embed_dim]` and
        `"logits_per_image"` `[B, T]` = `exp(logit_scale)` · cosine similarity (a softmax over
        the texts gives CLIP's zero-shot probabilities).

    Example:
    >>> model = clip_model("tiny")
    >>> out = model({"images": np.zeros((2, 32, 32, 3)), "token_ids": np.array([[62, 5, 63] + [0] * 9])})
    >>> {k: tuple(v.shape) for k, v in out.items()}
    {'image_embeddings': (2, 16), 'text_embeddings': (1, 16), 'logits_per_image': (2, 1)}
    """

    def __init__(
        self,
        embed_dim,
        image_size,
        patch_size,
        vision_width,
        vision_layers,
        vision_heads,
        context_length,
        vocab_size,
        text_width,
        text_layers,
        text_heads,
        quick_gelu=False,
        input_shape=None,
        name="clip",
        **kwargs,
    ):
        if not isinstance(quick_gelu, bool):
            raise ValueError(f"quick_gelu must be a bool. Received: quick_gelu={quick_gelu!r}")
        # === Layers ===
        image_encoder = clip_image_encoder(
            input_shape,
            image_size=image_size,
            patch_size=patch_size,
            width=vision_width,
            layers=vision_layers,
            heads=vision_heads,
            output_dim=embed_dim,
            quick_gelu=quick_gelu,
        )
        text_encoder = clip_text_encoder(
            context_length=context_length,
            vocab_size=vocab_size,
            width=text_width,
            layers=text_layers,
            heads=text_heads,
            output_dim=embed_dim,
            quick_gelu=quick_gelu,
        )
        super().__init__(name=name, **kwargs)
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.logit_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(math.log(1 / 0.07)), name="logit_scale"
        )
        self.built = True  # every variable exists; nothing depends on the first call's shapes

        # === Config ===
        self.embed_dim = embed_dim
        self.image_size = _pair(image_size, "image_size")
        self.patch_size = patch_size
        self.vision_width, self.vision_layers, self.vision_heads = vision_width, vision_layers, vision_heads
        self.context_length, self.vocab_size = context_length, vocab_size
        self.text_width, self.text_layers, self.text_heads = text_width, text_layers, text_heads
        self.quick_gelu = quick_gelu
        self.image_shape = tuple(image_encoder.input_shape[1:])

    def encode_image(self, images, normalize=False):
        """Image embeddings `[B, embed_dim]` of CLIP-normalised images `[B, H, W, 3]` (unit length if `normalize`)."""
        embeddings = self.image_encoder(images)
        return _unit(embeddings) if normalize else embeddings

    def encode_text(self, token_ids, normalize=False):
        """Text embeddings `[T, embed_dim]` of token ids `[T, context_length]` (unit length if `normalize`)."""
        embeddings = self.text_encoder(token_ids)
        return _unit(embeddings) if normalize else embeddings

    def logits(self, image_embeddings, text_embeddings):
        """`exp(logit_scale)` · cosine similarity: `[B, D]`, `[T, D]` → `[B, T]`."""
        scale = ops.exp(ops.cast(self.logit_scale, image_embeddings.dtype))
        return scale * ops.matmul(_unit(image_embeddings), ops.transpose(_unit(text_embeddings)))

    def call(self, inputs):
        image_embeddings = self.encode_image(inputs["images"])
        text_embeddings = self.encode_text(inputs["token_ids"])
        return {
            "image_embeddings": image_embeddings,
            "text_embeddings": text_embeddings,
            "logits_per_image": self.logits(image_embeddings, text_embeddings),
        }

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "embed_dim": self.embed_dim,
            "image_size": list(self.image_size),
            "patch_size": self.patch_size,
            "vision_width": self.vision_width,
            "vision_layers": self.vision_layers,
            "vision_heads": self.vision_heads,
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
            "text_width": self.text_width,
            "text_layers": self.text_layers,
            "text_heads": self.text_heads,
            "quick_gelu": self.quick_gelu,
            "input_shape": list(self.image_shape),
        }


def _unit(x):
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))


def clip_model(config="ViT-B-32", input_shape=None, weights=None, **overrides):
    """Build the CLIP model called `config` (a name of `CLIP_CONFIGS`).

    Args:
        config: str. `"ViT-B-32"`, `"ViT-B-16"` (GELU, open_clip's trainings), their
            `"-quickgelu"` variants (OpenAI's released weights) or `"tiny"` (tests).
            Defaults to `"ViT-B-32"`.
        input_shape: tuple of int or None. `(height, width, 3)` of the images, e.g.
            `(256, 128, 3)` for person crops. Defaults to `None` (the config's 224×224).
        weights: str or None. A `.weights.h5` file written by `convert_clip` for this config
            (any `input_shape` loads it). Defaults to `None` (random initialisation; no download
            is attempted).
        **overrides: `ClipModel` arguments that replace the config's, e.g. `quick_gelu=True`.

    Returns:
        `ClipModel`.

    Example:
    >>> model = clip_model("tiny", input_shape=(64, 32, 3))
    >>> model.image_encoder.output_shape, model.text_encoder.input_shape
    ((None, 16), (None, 12))
    """
    if config not in CLIP_CONFIGS:
        raise ValueError(f"Unknown CLIP config. Allowed: {', '.join(CLIP_CONFIGS)}. Received: config={config!r}")
    unknown = sorted(set(overrides) - set(CLIP_CONFIGS[config]) - {"name"})
    if unknown:
        raise ValueError(
            f"Unknown ClipModel arguments. Allowed: {', '.join(CLIP_CONFIGS[config])}. Received: {unknown}"
        )
    model = ClipModel(**{**CLIP_CONFIGS[config], **overrides}, input_shape=input_shape)
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
            raise ValueError(
                "weights must be an existing .weights.h5 file (no download is attempted; make one from an "
                "open_clip / OpenAI state_dict with `python -m portrait_keras.models.convert_clip`). "
                f"Received: weights={weights!r}"
            )
        model.load_weights(weights)
    return model
