"""Convert an open_clip or OpenAI CLIP (ViT) state_dict into a `ClipModel` `.weights.h5` file.

Pretrained CLIP weights come as a PyTorch state_dict keyed by module path (OpenAI `clip/model.py`,
open_clip `model.py` / `transformer.py`; both name them alike, see
`tests/data/clip_vit_b_32_state_dict_shapes.json`). Keras `.weights.h5` files are keyed by layer,
so this module maps every key to the variable of the same role (`clip.py` is built layer for layer
like those models), checks names and shapes, fills a freshly built `ClipModel` and saves it. The
result loads with `clip_model(CONFIG, weights=PATH)`, at any `input_shape`.

Mapping: `visual.*` → `model.image_encoder`, the text tower's keys (`token_embedding`,
`positional_embedding`, `transformer.*`, `ln_final`, `text_projection`) → `model.text_encoder`,
`logit_scale` → `model.logit_scale`. Linear `weight` `[out, in]` (also `attn.in_proj_weight`,
`attn.out_proj.weight`, `mlp.c_fc`/`c_proj`) → kernel `[in, out]`; conv `weight`
`[O, I, kh, kw]` → kernel `[kh, kw, I, O]`; LayerNorm `weight`, `bias` → `gamma`, `beta`;
`visual.proj` and `text_projection` `[in, out]`, embeddings and `logit_scale` as they are.
Ignored: the integers `input_resolution`, `context_length`, `vocab_size` of OpenAI's JIT archives.
A `module.` prefix (checkpoints saved from `DataParallel`) is removed. Values are cast to float32
(OpenAI's CUDA checkpoints are float16).

Torch is not needed here. Export the state_dict to `.npz` once, where torch is installed:

    # open_clip (OpenAI's weights under the name "openai", or a LAION training):
    python -c "import numpy as np, open_clip; \\
    m = open_clip.create_model('ViT-B-32-quickgelu', pretrained='openai'); \\
    np.savez('clip_vit_b_32.npz', **{k: v.float().numpy() for k, v in m.state_dict().items()})"
    # OpenAI's own package (pip install git+https://github.com/openai/CLIP):
    python -c "import numpy as np, clip; \\
    m, _ = clip.load('ViT-B/32', device='cpu', jit=False); \\
    np.savez('clip_vit_b_32.npz', **{k: v.float().numpy() for k, v in m.state_dict().items()})"

Then:

    python -m portrait_keras.models.convert_clip clip_vit_b_32.npz clip_vit_b_32.weights.h5 --config ViT-B-32

and build with the activation the weights were trained with: OpenAI's weights (and open_clip's
`-quickgelu` names) with `clip_model("ViT-B-32-quickgelu", weights=...)`, open_clip's own trainings
with `clip_model("ViT-B-32", weights=...)`. The weights file is the same for both.
"""

import argparse
import os
import sys

import numpy as np

from portrait_keras.models.clip import CLIP_CONFIGS, MLP_RATIO, clip_model
from portrait_keras.models.convert_hrnet import KERAS_FROM_TORCH, TORCH_FROM_KERAS, load_npz_state_dict
from portrait_keras.models.state_dict import match_state_dict

IGNORED_KEYS = ("input_resolution", "context_length", "vocab_size")  # ints in OpenAI's JIT archives

# How a PyTorch tensor is laid out against its Keras variable.
SAME, LINEAR, CONV = "same", "linear", "conv"


def _block_entries(prefix, i):
    """`(official key, our layer, variable attribute, layout)` of residual block `i` under `prefix`."""
    key, layer = f"{prefix}.resblocks.{i}", f"resblocks_{i}"
    return [
        (f"{key}.ln_1.weight", f"{layer}_ln_1", "gamma", SAME),
        (f"{key}.ln_1.bias", f"{layer}_ln_1", "beta", SAME),
        (f"{key}.attn.in_proj_weight", f"{layer}_attn", "in_proj_kernel", LINEAR),
        (f"{key}.attn.in_proj_bias", f"{layer}_attn", "in_proj_bias", SAME),
        (f"{key}.attn.out_proj.weight", f"{layer}_attn", "out_proj_kernel", LINEAR),
        (f"{key}.attn.out_proj.bias", f"{layer}_attn", "out_proj_bias", SAME),
        (f"{key}.ln_2.weight", f"{layer}_ln_2", "gamma", SAME),
        (f"{key}.ln_2.bias", f"{layer}_ln_2", "beta", SAME),
        (f"{key}.mlp.c_fc.weight", f"{layer}_c_fc", "kernel", LINEAR),
        (f"{key}.mlp.c_fc.bias", f"{layer}_c_fc", "bias", SAME),
        (f"{key}.mlp.c_proj.weight", f"{layer}_c_proj", "kernel", LINEAR),
        (f"{key}.mlp.c_proj.bias", f"{layer}_c_proj", "bias", SAME),
    ]


def _image_entries(num_layers):
    entries = [
        ("visual.conv1.weight", "conv1", "kernel", CONV),
        ("visual.class_embedding", "embeddings", "class_embedding", SAME),
        ("visual.positional_embedding", "embeddings", "position_embedding", SAME),
        ("visual.ln_pre.weight", "ln_pre", "gamma", SAME),
        ("visual.ln_pre.bias", "ln_pre", "beta", SAME),
    ]
    for i in range(num_layers):
        entries += _block_entries("visual.transformer", i)
    entries += [
        ("visual.ln_post.weight", "ln_post", "gamma", SAME),
        ("visual.ln_post.bias", "ln_post", "beta", SAME),
        ("visual.proj", "proj", "kernel", SAME),  # a matrix used as x @ proj: already [in, out]
    ]
    return entries


def _text_entries(num_layers):
    entries = [
        ("token_embedding.weight", "token_embedding", "embeddings", SAME),
        ("positional_embedding", "positional_embedding", "embeddings", SAME),
    ]
    for i in range(num_layers):
        entries += _block_entries("transformer", i)
    entries += [
        ("ln_final.weight", "ln_final", "gamma", SAME),
        ("ln_final.bias", "ln_final", "beta", SAME),
        ("text_projection", "text_projection", "kernel", SAME),  # x @ text_projection: [in, out]
    ]
    return entries


def state_dict_shapes(config="ViT-B-32"):
    """Every key of an open_clip / OpenAI state_dict for `config`, with its shape.

    Args:
        config: str or dict. A name of `CLIP_CONFIGS` or a dict of the same fields.
            Defaults to `"ViT-B-32"`.

    Returns:
        dict key → tuple of int, in the order the converter lists them.

    Example:
    >>> shapes = state_dict_shapes("ViT-B-32")
    >>> len(shapes), shapes["visual.positional_embedding"], shapes["transformer.resblocks.0.attn.in_proj_weight"]
    (302, (50, 768), (1536, 512))
    """
    c = CLIP_CONFIGS[config] if isinstance(config, str) else config
    size = (c["image_size"], c["image_size"]) if isinstance(c["image_size"], int) else tuple(c["image_size"])
    grid = (size[0] // c["patch_size"]) * (size[1] // c["patch_size"])
    dim = c["embed_dim"]

    def block(width):
        return {
            "ln_1.weight": (width,),
            "ln_1.bias": (width,),
            "attn.in_proj_weight": (3 * width, width),
            "attn.in_proj_bias": (3 * width,),
            "attn.out_proj.weight": (width, width),
            "attn.out_proj.bias": (width,),
            "ln_2.weight": (width,),
            "ln_2.bias": (width,),
            "mlp.c_fc.weight": (MLP_RATIO * width, width),
            "mlp.c_fc.bias": (MLP_RATIO * width,),
            "mlp.c_proj.weight": (width, MLP_RATIO * width),
            "mlp.c_proj.bias": (width,),
        }

    vw, tw = c["vision_width"], c["text_width"]
    tower = {
        "visual.conv1.weight": (vw, 3, c["patch_size"], c["patch_size"]),
        "visual.class_embedding": (vw,),
        "visual.positional_embedding": (grid + 1, vw),
        "visual.ln_pre.weight": (vw,),
        "visual.ln_pre.bias": (vw,),
    }
    for i in range(c["vision_layers"]):
        tower.update({f"visual.transformer.resblocks.{i}.{k}": s for k, s in block(vw).items()})
    tower.update({"visual.ln_post.weight": (vw,), "visual.ln_post.bias": (vw,), "visual.proj": (vw, dim)})
    tower.update({"token_embedding.weight": (c["vocab_size"], tw), "positional_embedding": (c["context_length"], tw)})
    for i in range(c["text_layers"]):
        tower.update({f"transformer.resblocks.{i}.{k}": s for k, s in block(tw).items()})
    tower.update({"ln_final.weight": (tw,), "ln_final.bias": (tw,), "text_projection": (tw, dim), "logit_scale": ()})
    return tower


def expected_state_dict(model):
    """What an open_clip / OpenAI state_dict must hold to fill `model`.

    Args:
        model: `ClipModel`.

    Returns:
        dict official key → `(variable, layout)`: the Keras variable it fills and how the
        PyTorch tensor is laid out against it (`"same"`, `"linear"` `[out, in]`, `"conv"` OIHW).
    """
    expected = {}
    for encoder, entries in (
        (model.image_encoder, _image_entries(model.vision_layers)),
        (model.text_encoder, _text_entries(model.text_layers)),
    ):
        for key, layer, attr, layout in entries:
            expected[key] = (getattr(encoder.get_layer(layer), attr), layout)
    expected["logit_scale"] = (model.logit_scale, SAME)
    covered = {id(v) for v, _ in expected.values()}
    left = [v.path for v in model.weights if id(v) not in covered]
    if left:
        raise ValueError(f"Model variables with no state_dict key (is it built by `ClipModel`?). Received: {left}")
    return expected


def official_shape(variable, layout):
    """Shape of the PyTorch tensor for a Keras variable."""
    shape = tuple(variable.shape)
    if layout == LINEAR:
        return shape[::-1]
    if layout == CONV:
        return tuple(shape[i] for i in TORCH_FROM_KERAS)
    return shape


def _to_keras(value, layout):
    value = np.asarray(value, dtype=np.float32)
    if layout == LINEAR:
        return value.T
    if layout == CONV:
        return value.transpose(KERAS_FROM_TORCH)
    return value


def assign_state_dict(model, state_dict, config_name="the model"):
    """Fill `model` from an open_clip / OpenAI state_dict; nothing is assigned if it does not match.

    Args:
        model: `ClipModel`. Built with the checkpoint's sizes (any `input_shape`).
        state_dict: mapping str → array. Official key → value (numpy, or anything `np.asarray` takes).
        config_name: str. Named in the error message. Defaults to `"the model"`.

    Returns:
        `model`, every variable assigned.

    Raises:
        ValueError: listing every missing key, unexpected key and wrong shape at once.
    """
    expected = expected_state_dict(model)
    matched = match_state_dict(
        state_dict,
        expected,
        official_shape=official_shape,
        ignored=lambda name: name in IGNORED_KEYS,
        mismatch=f"The state_dict does not match CLIP {config_name} (open_clip / OpenAI key names; a `module.` "
        f"prefix is removed; only ViT image towers).",
    )
    values = {name: _to_keras(matched[name], layout) for name, (_, layout) in expected.items()}
    for name, (variable, _) in expected.items():
        variable.assign(values[name])
    return model


def convert_clip(state_dict, output_path, config="ViT-B-32"):
    """Write an open_clip / OpenAI CLIP state_dict as a `ClipModel` `.weights.h5` file.

    Args:
        state_dict: mapping str → array. E.g. `dict(np.load("clip_vit_b_32.npz"))`; see the
            module docstring for exporting one from PyTorch.
        output_path: str. Where to save; must end in `.weights.h5`.
        config: str. A name of `CLIP_CONFIGS` with the checkpoint's sizes. Defaults to `"ViT-B-32"`.

    Returns:
        The filled `ClipModel` (also saved to `output_path`).

    Raises:
        ValueError: unknown config, `output_path` not ending in `.weights.h5`, or a state_dict
            that does not match (every missing key, unexpected key and wrong shape listed).

    Example:
    >>> convert_clip(dict(np.load("clip_vit_b_32.npz")), "clip_vit_b_32.weights.h5")  # doctest: +SKIP
    >>> model = clip_model("ViT-B-32-quickgelu", weights="clip_vit_b_32.weights.h5")  # doctest: +SKIP
    """
    output_path = os.fspath(output_path)
    if not output_path.endswith(".weights.h5"):
        raise ValueError(
            f"output_path must end in `.weights.h5` (a Keras weights file). Received: output_path={output_path!r}"
        )
    model = assign_state_dict(clip_model(config), state_dict, config)
    if os.path.dirname(output_path):
        os.makedirs(os.path.dirname(output_path), exist_ok=True)
    model.save_weights(output_path)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m portrait_keras.models.convert_clip",
        description="Convert an open_clip / OpenAI CLIP state_dict (.npz) into a ClipModel .weights.h5 file.",
        epilog=(
            "Export the .npz where torch is installed: np.savez('clip.npz', **{k: v.float().numpy() for k, v in "
            "m.state_dict().items()}) with m = open_clip.create_model('ViT-B-32-quickgelu', pretrained='openai'). "
            "Load OpenAI's weights with clip_model('ViT-B-32-quickgelu', weights=OUT), open_clip's own trainings "
            "with clip_model('ViT-B-32', weights=OUT)."
        ),
    )
    parser.add_argument("state", help="state_dict as .npz (np.savez of name -> array)")
    parser.add_argument("output", help="output path, ending in .weights.h5")
    parser.add_argument(
        "--config",
        default="ViT-B-32",
        choices=list(CLIP_CONFIGS),
        help="sizes of the checkpoint (the -quickgelu names give the same file) (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        state_dict = load_npz_state_dict(args.state, "see `python -m portrait_keras.models.convert_clip --help`")
        model = convert_clip(state_dict, args.output, args.config)
    except (ValueError, OSError) as e:  # OSError: the output could not be written
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.output}: {len(model.weights)} variables ({model.count_params():,} values) of CLIP {args.config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
