"""Convert ImageNet-pretrained HRNet-W32-C weights (official or timm) into a `hrnet_w32` weights file.

The paper starts HRNet-W32 from ImageNet. Those weights come as a PyTorch state_dict, keyed by
the module paths of the official classification network (HRNet/HRNet-Image-Classification,
`cls_hrnet.py`); timm's `hrnet_w32` uses the same keys. Keras 3 `.weights.h5` files are keyed by
layer position instead, so this module maps every official key to our layer of the same role
(`hrnet.py` is built layer for layer like the official network), checks names and shapes,
fills a freshly built `hrnet_w32` and saves it. The result loads with
`hrnet_w32(weights=PATH)`, `build_backbone("hrnet_w32", weights=PATH)` or the config field
`model.backbone_weights`.

Mapping: conv `weight` `[O, I, kh, kw]` → `kernel` `[kh, kw, I, O]`; conv `bias` → `bias`;
BatchNorm `weight`, `bias`, `running_mean`, `running_var` → `gamma`, `beta`, `moving_mean`,
`moving_variance`. Ignored: the ImageNet classifier (`classifier.*`; our backbone ends at the
pooled 2048-d vector) and BatchNorm `num_batches_tracked`. A `module.` prefix (checkpoints
saved from `DataParallel`) is removed.

Torch is not needed here. Export the state_dict to `.npz` once, where torch is installed:

    # official release (e.g. hrnetv2_w32_imagenet_pretrained.pth, a plain state_dict):
    python -c "import numpy as np, torch; \\
    sd = torch.load('hrnetv2_w32_imagenet_pretrained.pth', map_location='cpu'); \\
    np.savez('hrnet_w32.npz', **{k: v.numpy() for k, v in sd.items()})"
    # timm:
    python -c "import numpy as np, timm; \\
    sd = timm.create_model('hrnet_w32', pretrained=True).state_dict(); \\
    np.savez('hrnet_w32.npz', **{k: v.numpy() for k, v in sd.items()})"

(timm's Hugging Face `model.safetensors` also reads without torch:
`np.savez('hrnet_w32.npz', **safetensors.numpy.load_file('model.safetensors'))`.) Then:

    portrait-keras convert-hrnet hrnet_w32.npz hrnet_w32_imagenet.weights.h5
"""

import argparse
import os
import re
import sys
import zipfile

import keras
import numpy as np

from portrait_keras.models.hrnet import hrnet_w32
from portrait_keras.models.state_dict import match_state_dict

IGNORED_PREFIXES = ("classifier.",)  # ImageNet classifier: the backbone stops at the pooled vector
IGNORED_SUFFIXES = (".num_batches_tracked",)  # BN update counter; Keras BN has no such variable

# Our layer name without its `_conv` / `_bn` suffix → official module path. `{kind}` is "conv" or
# "bn" (official blocks name them conv1, bn1, ...); `{seq}` is "0" or "1" (official nn.Sequential
# of conv, BN[, ReLU]).
_MODULE_RULES = (
    (r"stem_(?P<k>\d)", "{kind}{k}"),
    (r"stage1_(?P<b>\d+)_(?P<k>\d)", "layer1.{b}.{kind}{k}"),
    (r"stage1_(?P<b>\d+)_down", "layer1.{b}.downsample.{seq}"),
    (r"transition(?P<t>\d)_(?P<i>\d)", "transition{t}.{i}.{seq}"),
    (r"transition(?P<t>\d)_(?P<i>\d)_(?P<k>\d)", "transition{t}.{i}.{k}.{seq}"),
    (r"stage(?P<s>\d)_(?P<m>\d+)_b(?P<i>\d)_(?P<b>\d+)_(?P<k>\d)", "stage{s}.{m}.branches.{i}.{b}.{kind}{k}"),
    (r"stage(?P<s>\d)_(?P<m>\d+)_b(?P<i>\d)_(?P<b>\d+)_down", "stage{s}.{m}.branches.{i}.{b}.downsample.{seq}"),
    (r"stage(?P<s>\d)_(?P<m>\d+)_fuse_(?P<i>\d)_(?P<j>\d)", "stage{s}.{m}.fuse_layers.{i}.{j}.{seq}"),
    (r"stage(?P<s>\d)_(?P<m>\d+)_fuse_(?P<i>\d)_(?P<j>\d)_(?P<k>\d)", "stage{s}.{m}.fuse_layers.{i}.{j}.{k}.{seq}"),
    (r"head_incre(?P<i>\d)_(?P<k>\d)", "incre_modules.{i}.0.{kind}{k}"),
    (r"head_incre(?P<i>\d)_down", "incre_modules.{i}.0.downsample.{seq}"),
    (r"head_down(?P<i>\d)", "downsamp_modules.{i}.{seq}"),
    (r"head_final", "final_layer.{seq}"),
)

# Conv kernels: PyTorch OIHW → Keras HWIO, and back.
KERAS_FROM_TORCH = (2, 3, 1, 0)
TORCH_FROM_KERAS = (3, 2, 0, 1)

# Keras variable attribute → (official parameter name, is a conv kernel).
_CONV_PARAMS = (("kernel", "weight", True), ("bias", "bias", False))
_BN_PARAMS = (
    ("gamma", "weight", False),
    ("beta", "bias", False),
    ("moving_mean", "running_mean", False),
    ("moving_variance", "running_var", False),
)


def official_module(layer_name):
    """Official module path of our layer `layer_name` (e.g. `"stem_1_conv"` → `"conv1"`), or None."""
    base, _, kind = layer_name.rpartition("_")
    if kind not in ("conv", "bn"):
        return None
    for pattern, template in _MODULE_RULES:
        match = re.fullmatch(pattern, base)
        if match:
            return template.format(kind=kind, seq="0" if kind == "conv" else "1", **match.groupdict())
    return None


def expected_state_dict(model):
    """What an official state_dict must hold to fill `model`.

    Args:
        model: keras.Model. Built by `hrnet` / `hrnet_w32`.

    Returns:
        dict official key → `(variable, is_kernel)`: the Keras variable it fills and whether
        it is a conv kernel (stored `[O, I, kh, kw]` officially, `[kh, kw, I, O]` here).
    """
    expected = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        module = official_module(layer.name)
        if isinstance(layer, keras.layers.Conv2D):
            params = _CONV_PARAMS
        elif isinstance(layer, keras.layers.BatchNormalization):
            params = _BN_PARAMS
        else:
            params = None
        if module is None or params is None:
            raise ValueError(
                "The model has a weighted layer with no official HRNet counterpart (is it built by "
                f"`hrnet`?). Received: layer {layer.name!r} ({type(layer).__name__})"
            )
        for attr, param, is_kernel in params:
            variable = getattr(layer, attr, None)
            if variable is not None:  # None: conv without bias
                expected[f"{module}.{param}"] = (variable, is_kernel)
    covered = {id(v) for v, _ in expected.values()}
    left = [v.path for v in model.weights if id(v) not in covered]
    if left:
        raise ValueError(f"Model variables with no official key. Received: {left}")
    return expected


def official_shape(variable, is_kernel):
    """Shape of the official (PyTorch) tensor for a Keras variable."""
    shape = tuple(variable.shape)
    return tuple(shape[i] for i in TORCH_FROM_KERAS) if is_kernel else shape


def assign_state_dict(model, state_dict):
    """Fill `model` from an official / timm HRNet state_dict; nothing is assigned if it does not match.

    Args:
        model: keras.Model. Built by `hrnet_w32` (or `hrnet` with the same widths as the
            checkpoint).
        state_dict: mapping str → array. Official key → value (numpy, or anything `np.asarray`
            takes); conv weights `[O, I, kh, kw]`.

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
        ignored=lambda name: name.startswith(IGNORED_PREFIXES) or name.endswith(IGNORED_SUFFIXES),
        mismatch="The state_dict does not match HRNet-W32-C (official / timm key names; `classifier.*` "
        "and `num_batches_tracked` are ignored, a `module.` prefix is removed).",
    )
    values = {}
    for name, (_, is_kernel) in expected.items():
        value = np.asarray(matched[name], dtype=np.float32)
        values[name] = value.transpose(KERAS_FROM_TORCH) if is_kernel else value
    for name, (variable, _) in expected.items():
        variable.assign(values[name])
    return model


def convert_hrnet_w32(state_dict, output_path, input_shape=(256, 128, 3)):
    """Write an official / timm HRNet-W32-C state_dict as a `hrnet_w32` `.weights.h5` file.

    Args:
        state_dict: mapping str → array. E.g. `dict(np.load("hrnet_w32.npz"))`; see the module
            docstring for exporting one from PyTorch.
        output_path: str. Where to save; must end in `.weights.h5`.
        input_shape: tuple of int. Input shape of the model built to hold the weights; the
            weights do not depend on it. Defaults to `(256, 128, 3)`.

    Returns:
        The filled `hrnet_w32` `keras.Model` (also saved to `output_path`).

    Raises:
        ValueError: `output_path` does not end in `.weights.h5`, or the state_dict does not
            match (every missing key, unexpected key and wrong shape listed).

    Example:
    >>> convert_hrnet_w32(dict(np.load("hrnet_w32.npz")), "hrnet_w32.weights.h5")  # doctest: +SKIP
    >>> backbone = hrnet_w32(weights="hrnet_w32.weights.h5")  # doctest: +SKIP
    """
    output_path = os.fspath(output_path)
    if not output_path.endswith(".weights.h5"):
        raise ValueError(
            f"output_path must end in `.weights.h5` (a Keras weights file). Received: output_path={output_path!r}"
        )
    model = assign_state_dict(hrnet_w32(input_shape), state_dict)
    if os.path.dirname(output_path):
        os.makedirs(os.path.dirname(output_path), exist_ok=True)
    model.save_weights(output_path)
    return model


def load_npz_state_dict(path, export_help="see `portrait-keras convert-hrnet --help`"):
    """The arrays of an `np.savez` archive as a dict; ValueError for a missing file or another format.

    `export_help` ends the error message: where to read how to export a PyTorch checkpoint.
    """
    if not os.path.isfile(path):
        raise ValueError(f"No such file. Received: {path!r}")
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a zip archive")
        with zipfile.ZipFile(path) as archive:
            others = [name for name in archive.namelist() if not name.endswith(".npy")]
        if others:  # PyTorch's own .pth is a zip of pickles and raw storages
            raise ValueError(f"it holds more than .npy arrays, e.g. {others[0]!r}; a PyTorch checkpoint?")
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"Expected an .npz archive of the state_dict written by np.savez ({str(e).rstrip('.')}); export a "
            f"PyTorch .pth first, {export_help}. Received: {path!r}"
        ) from None


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="portrait-keras convert-hrnet",
        description="Convert an official / timm HRNet-W32-C state_dict (.npz) into a hrnet_w32 .weights.h5 file.",
        epilog=(
            "Export the .npz where torch is installed: np.savez('hrnet_w32.npz', **{k: v.numpy() for k, v in "
            "sd.items()}) with sd = torch.load('hrnetv2_w32_imagenet_pretrained.pth', map_location='cpu') or "
            "sd = timm.create_model('hrnet_w32', pretrained=True).state_dict()."
        ),
    )
    parser.add_argument("state", help="state_dict as .npz (np.savez of name -> array)")
    parser.add_argument("output", help="output path, ending in .weights.h5")
    args = parser.parse_args(argv)
    try:
        state_dict = load_npz_state_dict(args.state)
        model = convert_hrnet_w32(state_dict, args.output)
    except (ValueError, OSError) as e:  # OSError: the output could not be written
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.output}: {len(model.weights)} variables ({model.count_params():,} values) of {model.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
