"""`convert_hrnet`: official / timm HRNet-W32-C state_dict → `hrnet_w32` `.weights.h5`.

The state_dict is random, with the official key names and shapes from
`tests/data/hrnet_w32_state_dict_shapes.json` (recorded once from the official `cls_hrnet.py`
model; names and shapes only).
"""

import json
import os
import zipfile

import h5py
import numpy as np
import pytest

from portrait_keras.models.backbones import build_backbone
from portrait_keras.models.convert_hrnet import assign_state_dict, convert_hrnet_w32, main
from portrait_keras.models.hrnet import hrnet_w32

SHAPES = os.path.join(os.path.dirname(__file__), "data", "hrnet_w32_state_dict_shapes.json")
INPUT_SHAPE = (64, 32, 3)  # small and fast; the weights do not depend on it
BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def official_shapes():
    """Official key → shape, every BatchNorm entry expanded to its five tensors."""
    with open(SHAPES, encoding="utf-8") as f:
        recorded = json.load(f)
    shapes = {key: tuple(shape) for key, shape in recorded["params"].items()}
    for module, channels in recorded["batchnorm"].items():
        shapes.update({f"{module}.{p}": (channels,) for p in BN_PARAMS})
        shapes[f"{module}.num_batches_tracked"] = ()
    return shapes


@pytest.fixture(scope="module")
def state_dict():
    """A random official state_dict (classifier and `num_batches_tracked` included, as saved)."""
    rng = np.random.default_rng(0)
    out = {}
    for key, shape in official_shapes().items():
        if key.endswith("num_batches_tracked"):
            out[key] = np.array(1000, dtype=np.int64)
        elif key.endswith("running_var"):
            out[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            out[key] = rng.standard_normal(shape).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def converted(state_dict, tmp_path_factory):
    path = tmp_path_factory.mktemp("convert_hrnet") / "hrnet_w32_imagenet.weights.h5"
    convert_hrnet_w32(state_dict, path, input_shape=INPUT_SHAPE)
    return path


@pytest.fixture(scope="module")
def loaded(converted):
    """A new backbone loading the converted file the way training does."""
    return build_backbone("hrnet_w32", INPUT_SHAPE, weights=str(converted))


@pytest.fixture(scope="module")
def fresh_model():
    return hrnet_w32(INPUT_SHAPE)


def test_fixture_is_the_official_hrnet_w32(state_dict):
    assert len(state_dict) == 1956
    learned = [v for k, v in state_dict.items() if k.rsplit(".", 1)[1] in ("weight", "bias")]
    classifier = state_dict["classifier.weight"].size + state_dict["classifier.bias"].size
    assert sum(v.size for v in learned) - classifier == 39_183_680  # the official count without the classifier


@pytest.mark.parametrize(
    "module, layer",
    [
        ("conv1", "stem_1_conv"),
        ("bn2", "stem_2_bn"),
        ("layer1.0.downsample.0", "stage1_0_down_conv"),
        ("layer1.3.bn3", "stage1_3_3_bn"),
        ("transition3.3.0.0", "transition3_3_0_conv"),
        ("stage2.0.branches.1.3.conv2", "stage2_0_b1_3_2_conv"),
        ("stage3.1.fuse_layers.0.2.1", "stage3_1_fuse_0_2_bn"),  # upsampling path
        ("stage4.2.fuse_layers.3.0.1.0", "stage4_2_fuse_3_0_1_conv"),  # fuse-down chain, middle conv
        ("stage4.2.fuse_layers.3.0.2.1", "stage4_2_fuse_3_0_2_bn"),  # fuse-down chain, last BN
        ("incre_modules.3.0.bn3", "head_incre3_3_bn"),
        ("downsamp_modules.2.0", "head_down2_conv"),  # conv with bias
        ("final_layer.0", "head_final_conv"),  # conv with bias
        ("final_layer.1", "head_final_bn"),
    ],
)
def test_layer_gets_the_official_values(loaded, state_dict, module, layer):
    got = loaded.get_layer(layer)
    if layer.endswith("_bn"):
        want = [state_dict[f"{module}.{p}"] for p in BN_PARAMS]
        np.testing.assert_array_equal(got.gamma.numpy(), want[0])
        np.testing.assert_array_equal(got.beta.numpy(), want[1])
        np.testing.assert_array_equal(got.moving_mean.numpy(), want[2])
        np.testing.assert_array_equal(got.moving_variance.numpy(), want[3])
        return
    np.testing.assert_array_equal(got.kernel.numpy(), state_dict[f"{module}.weight"].transpose(2, 3, 1, 0))
    if f"{module}.bias" in state_dict:
        np.testing.assert_array_equal(got.bias.numpy(), state_dict[f"{module}.bias"])
    else:
        assert got.bias is None


def test_every_variable_gets_one_official_tensor_in_keras_layout(loaded, state_dict):
    # Random values identify each tensor whatever its layout: sorted values as a fingerprint.
    def fingerprint(a):
        return np.sort(np.asarray(a, np.float32).ravel()).tobytes()

    used = {k: v for k, v in state_dict.items() if not k.startswith("classifier.") and "num_batches" not in k}
    by_fingerprint = {fingerprint(v): k for k, v in used.items()}
    role = {
        "kernel": "weight",
        "bias": "bias",
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
    }
    sources = []
    for variable in loaded.weights:
        key = by_fingerprint.get(fingerprint(variable.numpy()))
        assert key is not None, f"{variable.path} was not assigned from the state_dict"
        assert key.rsplit(".", 1)[1] == role[variable.name], (variable.path, key)
        want = used[key].transpose(2, 3, 1, 0) if variable.name == "kernel" else used[key]
        np.testing.assert_array_equal(variable.numpy(), want, err_msg=f"{variable.path} <- {key}")
        sources.append(key)
    assert len(sources) == len(set(sources)) == len(used)


def test_data_parallel_prefix(fresh_model, loaded, state_dict):
    prefixed = {f"module.{k}": v for k, v in state_dict.items()}
    assign_state_dict(fresh_model, prefixed)
    for got, want in zip(fresh_model.weights, loaded.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)


def _broken(state_dict, problem):
    sd = dict(state_dict)
    if problem == "missing":
        del sd["stage3.2.fuse_layers.2.0.0.0.weight"]
        return sd, "missing (1): stage3.2.fuse_layers.2.0.0.0.weight [32, 32, 3, 3]"
    if problem == "unexpected":
        sd["stage5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
        return sd, "unexpected (1): stage5.0.conv1.weight [1, 1, 1, 1]"
    sd["final_layer.0.bias"] = np.zeros(1000, np.float32)
    return sd, "wrong shape (1): final_layer.0.bias [1000] (expected [2048])"


@pytest.mark.parametrize("problem", ["missing", "unexpected", "wrong_shape"])
def test_mismatch_names_the_key_and_assigns_nothing(fresh_model, state_dict, problem):
    sd, message = _broken(state_dict, problem)
    before = fresh_model.get_layer("stem_1_conv").kernel.numpy()
    with pytest.raises(ValueError, match="Received:") as info:
        assign_state_dict(fresh_model, sd)
    assert message in str(info.value)
    np.testing.assert_array_equal(fresh_model.get_layer("stem_1_conv").kernel.numpy(), before)


def test_all_mismatches_in_one_error(fresh_model, state_dict):
    sd = dict(state_dict)
    for problem in ("missing", "unexpected", "wrong_shape"):
        sd.update(_broken(state_dict, problem)[0])
    del sd["stage3.2.fuse_layers.2.0.0.0.weight"]
    with pytest.raises(ValueError) as info:
        assign_state_dict(fresh_model, sd)
    text = str(info.value)
    assert "stage3.2.fuse_layers.2.0.0.0.weight" in text and "stage5.0.conv1.weight" in text
    assert "final_layer.0.bias [1000]" in text


def test_output_path_must_be_a_keras_weights_file(state_dict, tmp_path):
    with pytest.raises(ValueError, match=r"\.weights\.h5.*Received: output_path="):
        convert_hrnet_w32(state_dict, tmp_path / "hrnet.h5")


def _datasets(path):
    with h5py.File(path) as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return {name: f[name][()] for name in names}


def test_cli_converts_an_npz(state_dict, converted, tmp_path, capsys):
    npz = tmp_path / "hrnet_w32.npz"
    np.savez(npz, **state_dict)
    out = tmp_path / "cli.weights.h5"
    assert main([str(npz), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    got, want = _datasets(out), _datasets(converted)
    assert sorted(got) == sorted(want) and len(want) == 1629  # every official tensor but the classifier and counters
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("kind", ["missing", "text", "npy", "torch_zip", "mismatch"])
def test_cli_bad_input_exits_2(tmp_path, capsys, kind):
    path = tmp_path / "state.npz"
    if kind == "text":
        path.write_text("not an archive\n")
    elif kind == "npy":
        np.save(tmp_path / "state.npy", np.zeros(3))
        path = tmp_path / "state.npy"
    elif kind == "torch_zip":  # PyTorch's .pth is a zip too, of pickles and raw storages
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", b"not numpy")
    elif kind == "mismatch":
        np.savez(path, **{"conv1.weight": np.zeros((64, 3, 3, 3), np.float32)})
    out = tmp_path / "out.weights.h5"
    assert main([str(path), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Received:" in err
    assert ("missing (" in err) if kind == "mismatch" else (str(path) in err)
    assert not out.exists()
