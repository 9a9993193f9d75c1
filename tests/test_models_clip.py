"""CLIP towers (`models/clip.py`) and their converter (`models/convert_clip.py`).

The in-CI equality check: a random state_dict with open_clip's key names (`state_dict_shapes`,
itself checked against `tests/data/clip_vit_b_32_state_dict_shapes.json`, recorded once from
open_clip 3.3.0's `create_model("ViT-B-32").state_dict()`) is converted, loaded and run on the
tiny config, and must give what a plain NumPy forward pass computes from the PyTorch-layout
tensors. `benchmarks/clip_parity.py` does the same against open_clip itself (needs torch).
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from portrait_keras.models.clip import (
    CLIP_CONFIGS,
    ClassTokenPooling,
    ClassTokenPositionEmbedding,
    ClipAttention,
    ClipModel,
    EndOfTextPooling,
    PositionEmbedding,
    QuickGELU,
    bicubic_resize_matrix,
    clip_image_encoder,
    clip_model,
    clip_text_encoder,
)
from portrait_keras.models.convert_clip import (
    assign_state_dict,
    convert_clip,
    expected_state_dict,
    main,
    official_shape,
    state_dict_shapes,
)

SHAPES = os.path.join(os.path.dirname(__file__), "data", "clip_vit_b_32_state_dict_shapes.json")
TINY = CLIP_CONFIGS["tiny"]
EOT = TINY["vocab_size"] - 1  # the highest id, as <|endoftext|> in CLIP's vocabulary


# === NumPy reference forward, straight from the PyTorch-layout tensors ===


def _ln(x, sd, key):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * sd[f"{key}.weight"] + sd[f"{key}.bias"]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _attention(x, sd, key, heads, causal):
    length, width = x.shape[-2:]
    q, k, v = np.split(x @ sd[f"{key}.in_proj_weight"].T + sd[f"{key}.in_proj_bias"], 3, axis=-1)
    d = width // heads
    out = np.zeros_like(q)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        scores = q[..., s] @ np.swapaxes(k[..., s], -1, -2) / math.sqrt(d)
        if causal:
            scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
        out[..., s] = _softmax(scores) @ v[..., s]
    return out @ sd[f"{key}.out_proj.weight"].T + sd[f"{key}.out_proj.bias"]


def _activation(x, quick_gelu):
    if quick_gelu:
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _transformer(x, sd, prefix, layers, heads, quick_gelu, causal):
    for i in range(layers):
        key = f"{prefix}.resblocks.{i}"
        x = x + _attention(_ln(x, sd, f"{key}.ln_1"), sd, f"{key}.attn", heads, causal)
        h = _ln(x, sd, f"{key}.ln_2") @ sd[f"{key}.mlp.c_fc.weight"].T + sd[f"{key}.mlp.c_fc.bias"]
        x = x + _activation(h, quick_gelu) @ sd[f"{key}.mlp.c_proj.weight"].T + sd[f"{key}.mlp.c_proj.bias"]
    return x


def _pil_resize(grid, size):
    """Each channel of `grid` [h, w, C] resized to `size` by PIL's bicubic (open_clip's resampling)."""
    channels = [Image.fromarray(grid[..., c].astype(np.float32), mode="F") for c in range(grid.shape[-1])]
    return np.stack([np.asarray(ch.resize(size[::-1], Image.BICUBIC)) for ch in channels], axis=-1)


def reference_image(sd, images, config, quick_gelu):
    b, height, width, _ = images.shape
    p, vw = config["patch_size"], config["vision_width"]
    gh, gw = height // p, width // p
    # Patches flattened as the conv weight [O, C, kh, kw] is: channel, then row, then column.
    patches = images.reshape(b, gh, p, gw, p, 3).transpose(0, 1, 3, 5, 2, 4).reshape(b, gh * gw, 3 * p * p)
    x = patches @ sd["visual.conv1.weight"].reshape(vw, -1).T
    table = sd["visual.positional_embedding"]
    native = config["image_size"] // p
    if (gh, gw) != (native, native):
        grid = _pil_resize(table[1:].reshape(native, native, vw), (gh, gw)).reshape(gh * gw, vw)
        table = np.concatenate([table[:1], grid])
    x = np.concatenate([np.broadcast_to(sd["visual.class_embedding"], (b, 1, vw)), x], axis=1) + table
    x = _ln(x, sd, "visual.ln_pre")
    x = _transformer(x, sd, "visual.transformer", config["vision_layers"], config["vision_heads"], quick_gelu, False)
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def reference_text(sd, token_ids, config, quick_gelu):
    x = sd["token_embedding.weight"][token_ids] + sd["positional_embedding"]
    x = _transformer(x, sd, "transformer", config["text_layers"], config["text_heads"], quick_gelu, True)
    x = _ln(x, sd, "ln_final")
    return x[np.arange(len(x)), token_ids.argmax(-1)] @ sd["text_projection"]


# === Fixtures ===


def random_state_dict(config, seed=0):
    """Random values under open_clip's key names; LayerNorms and biases off 1/0 so a mix-up shows."""
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in state_dict_shapes(config).items():
        if key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            sd[key] = (1 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        elif key == "logit_scale":
            sd[key] = np.array(2.5, np.float32)
        else:
            sd[key] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
    return sd


def token_batch():
    """Start token 62, words, end token 63 (the highest id), zero padding; end at different positions."""
    rows = [[62, 5, 17, 33, EOT], [62, 40, EOT], [62] + list(range(1, 10)) + [61, EOT]]
    out = np.zeros((len(rows), TINY["context_length"]), np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


@pytest.fixture(scope="module")
def state_dict():
    return random_state_dict("tiny")


@pytest.fixture(scope="module")
def converted(state_dict, tmp_path_factory):
    path = tmp_path_factory.mktemp("convert_clip") / "clip_tiny.weights.h5"
    convert_clip(state_dict, path, config="tiny")
    return path


# === Key names and shapes ===


def test_state_dict_shapes_are_open_clips_vit_b_32():
    with open(SHAPES, encoding="utf-8") as f:
        recorded = {key: tuple(shape) for key, shape in json.load(f)["params"].items()}
    shapes = state_dict_shapes("ViT-B-32")
    assert shapes == recorded
    assert sum(math.prod(s) for s in shapes.values()) == 151_277_313  # open_clip's count for ViT-B-32


@pytest.mark.parametrize("config", ["tiny", {**TINY, "image_size": (48, 32), "patch_size": 16}], ids=["tiny", "rect"])
def test_model_variables_are_the_state_dict_keys(config):
    model = clip_model("tiny", **({} if config == "tiny" else {"image_size": (48, 32), "patch_size": 16}))
    expected = expected_state_dict(model)
    assert {k: official_shape(*v) for k, v in expected.items()} == state_dict_shapes(config)
    assert len(expected) == len(model.weights)


def test_vit_b_sizes():
    # Parameter counts of open_clip's ViT-B-32 and ViT-B-16 (149.6M, the paper's "149 million" for B/16).
    assert sum(math.prod(s) for s in state_dict_shapes("ViT-B-16").values()) == 149_620_737
    assert state_dict_shapes("ViT-B-16")["visual.positional_embedding"] == (197, 768)
    assert state_dict_shapes("ViT-B-32-quickgelu") == state_dict_shapes("ViT-B-32")


# === Conversion and the NumPy reference ===


@pytest.mark.parametrize("quick_gelu", [True, False], ids=["quick_gelu", "gelu"])
def test_converted_model_equals_the_numpy_reference(state_dict, converted, quick_gelu):
    model = clip_model("tiny", weights=str(converted), quick_gelu=quick_gelu)
    rng = np.random.default_rng(1)
    images = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    tokens = token_batch()
    out = model({"images": images, "token_ids": tokens})

    image_ref = reference_image(state_dict, images.astype(np.float64), TINY, quick_gelu)
    text_ref = reference_text(state_dict, tokens, TINY, quick_gelu)
    np.testing.assert_allclose(out["image_embeddings"], image_ref, rtol=1e-4, atol=1e-4 * np.abs(image_ref).max())
    np.testing.assert_allclose(out["text_embeddings"], text_ref, rtol=1e-4, atol=1e-4 * np.abs(text_ref).max())

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    logits_ref = math.exp(2.5) * unit(image_ref) @ unit(text_ref).T
    np.testing.assert_allclose(out["logits_per_image"], logits_ref, rtol=1e-4, atol=1e-4)


def test_person_crop_input_resizes_the_position_embedding_like_pil(state_dict, converted):
    # 48×24 pixels at patch 8: a 6×3 grid from the 4×4 of the weights (taller, narrower).
    model = clip_model("tiny", input_shape=(48, 24, 3), weights=str(converted))
    images = np.random.default_rng(2).standard_normal((2, 48, 24, 3)).astype(np.float32)
    ref = reference_image(state_dict, images.astype(np.float64), TINY, True)
    np.testing.assert_allclose(model.encode_image(images), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_every_variable_gets_its_tensor_in_keras_layout(state_dict, converted):
    model = clip_model("tiny", weights=str(converted))
    layer = model.image_encoder.get_layer
    np.testing.assert_array_equal(layer("conv1").kernel, state_dict["visual.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer("proj").kernel, state_dict["visual.proj"])
    attn = model.text_encoder.get_layer("resblocks_1_attn")
    np.testing.assert_array_equal(attn.in_proj_kernel, state_dict["transformer.resblocks.1.attn.in_proj_weight"].T)
    np.testing.assert_array_equal(attn.out_proj_bias, state_dict["transformer.resblocks.1.attn.out_proj.bias"])
    np.testing.assert_array_equal(model.logit_scale, state_dict["logit_scale"])
    # Every variable holds exactly one state_dict tensor (random values identify them).
    sources = {np.sort(v.ravel()).tobytes(): k for k, v in state_dict.items()}
    assigned = [sources.get(np.sort(np.asarray(v).ravel()).tobytes()) for v in model.weights]
    assert None not in assigned and sorted(assigned) == sorted(state_dict)


def test_prefix_and_openai_integers(state_dict, converted):
    sd = {f"module.{k}": v for k, v in state_dict.items()}
    sd.update(input_resolution=np.array(32), context_length=np.array(12), vocab_size=np.array(64))
    model = assign_state_dict(clip_model("tiny"), sd)
    reference = clip_model("tiny", weights=str(converted))
    for got, want in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(got, want, err_msg=got.path)


def _broken(state_dict, problem):
    sd = dict(state_dict)
    if problem == "missing":
        del sd["visual.transformer.resblocks.1.mlp.c_fc.bias"]
        return sd, "missing (1): visual.transformer.resblocks.1.mlp.c_fc.bias [128]"
    if problem == "unexpected":
        sd["logit_bias"] = np.zeros((), np.float32)
        return sd, "unexpected (1): logit_bias []"
    sd["text_projection"] = np.zeros((16, 24), np.float32)  # transposed
    return sd, "wrong shape (1): text_projection [16, 24] (expected [24, 16])"


@pytest.mark.parametrize("problem", ["missing", "unexpected", "wrong_shape"])
def test_mismatch_names_the_key_and_assigns_nothing(state_dict, problem):
    model = clip_model("tiny")
    sd, message = _broken(state_dict, problem)
    before = [np.array(v) for v in model.weights]
    with pytest.raises(ValueError, match="Received:") as info:
        assign_state_dict(model, sd, "tiny")
    assert message in str(info.value) and "CLIP tiny" in str(info.value)
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(variable, value)


def test_cli_converts_an_npz(state_dict, converted, tmp_path, capsys):
    npz = tmp_path / "clip.npz"
    np.savez(npz, **state_dict)
    out = tmp_path / "cli.weights.h5"
    assert main([str(npz), str(out), "--config", "tiny"]) == 0
    assert "of CLIP tiny" in capsys.readouterr().out
    got, want = clip_model("tiny", weights=str(out)), clip_model("tiny", weights=str(converted))
    for a, b in zip(got.weights, want.weights):
        np.testing.assert_array_equal(a, b, err_msg=a.path)


@pytest.mark.parametrize("kind", ["missing", "text", "mismatch", "bad_output"])
def test_cli_bad_input_exits_2(state_dict, tmp_path, capsys, kind):
    path, out = tmp_path / "state.npz", tmp_path / "out.weights.h5"
    if kind == "text":
        path.write_text("not an archive\n")
    elif kind == "mismatch":
        np.savez(path, **{"visual.conv1.weight": np.zeros((32, 3, 8, 8), np.float32)})
    elif kind == "bad_output":
        np.savez(path, **state_dict)
        out = tmp_path / "out.h5"
    assert main([str(path), str(out), "--config", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Received:" in err
    assert {"missing": str(path), "text": "convert_clip --help", "mismatch": "missing (", "bad_output": ".weights.h5"}[
        kind
    ] in err
    assert not out.exists()


# === Behaviour of the towers ===


def _hidden_states(text_encoder):
    """The text tower's per-token output before pooling, `[B, L, W]`."""
    last = f"resblocks_{TINY['text_layers'] - 1}_add_2"
    return keras.Model(text_encoder.input, text_encoder.get_layer(last).output)


def test_causal_mask_hides_later_tokens():
    tokens = token_batch()[:1]
    changed = tokens.copy()
    changed[0, 3] = 50
    hidden = _hidden_states(clip_model("tiny").text_encoder)
    a, b = np.asarray(hidden(tokens)), np.asarray(hidden(changed))
    np.testing.assert_array_equal(a[0, :3], b[0, :3])  # positions before the change see nothing of it
    assert np.all(np.abs(a[0, 3:] - b[0, 3:]).max(-1) > 1e-6)  # it and every later position do


def test_attention_without_mask_sees_every_token():
    x = np.random.default_rng(0).standard_normal((1, 5, 8)).astype(np.float32)
    y = x.copy()
    y[0, 4] += 1.0
    for causal, unchanged in ((True, 4), (False, 0)):
        layer = ClipAttention(2, causal=causal)
        layer.build(x.shape)
        a, b = np.asarray(layer(x)), np.asarray(layer(y))
        np.testing.assert_array_equal(a[0, :unchanged], b[0, :unchanged])
        assert np.all(np.abs(a[0, unchanged:] - b[0, unchanged:]).max(-1) > 1e-6)


def test_text_embedding_is_read_at_the_highest_token_id():
    encoder = clip_model("tiny").text_encoder
    tokens = token_batch()
    hidden = np.asarray(_hidden_states(encoder)(tokens))
    ln, proj = encoder.get_layer("ln_final"), encoder.get_layer("text_projection")
    eot = tokens.argmax(-1)
    assert eot.tolist() == [4, 2, 11]
    want = proj(ln(hidden[np.arange(3), eot]))
    np.testing.assert_allclose(encoder(tokens), want, rtol=1e-5, atol=1e-6)
    # Tokens after the end token (padding) change nothing.
    padded = tokens.copy()
    padded[1, 5:] = 7
    np.testing.assert_allclose(encoder(padded)[1], encoder(tokens)[1], rtol=1e-5, atol=1e-6)


def test_end_of_text_pooling_takes_the_first_highest_id():
    features = np.arange(2 * 5 * 2, dtype=np.float32).reshape(2, 5, 2)
    ids = np.array([[3, 9, 1, 9, 0], [1, 2, 3, 4, 5]])  # a tie in row 0: the first wins, as torch.argmax
    np.testing.assert_array_equal(EndOfTextPooling()([features, ids]), features[[0, 1], [1, 4]])


def test_position_embedding_kept_at_its_grid_and_class_row_kept_when_resized():
    layer = ClassTokenPositionEmbedding(grid_size=(3, 2))
    layer.build((None, 3, 2, 4))
    table = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    layer.position_embedding.assign(table)
    layer.class_embedding.assign(np.zeros(4, np.float32))
    np.testing.assert_array_equal(layer.positions((3, 2)), table)
    np.testing.assert_array_equal(layer(np.zeros((1, 3, 2, 4), np.float32))[0], table)

    resized = np.asarray(layer.positions((5, 4)))
    assert resized.shape == (21, 4)
    np.testing.assert_array_equal(resized[0], table[0])
    np.testing.assert_allclose(resized[1:], _pil_resize(table[1:].reshape(3, 2, 4), (5, 4)).reshape(20, 4), atol=1e-5)
    layer.position_embedding.assign(np.full((7, 4), 0.5, np.float32))
    np.testing.assert_allclose(layer.positions((5, 1)), 0.5, rtol=1e-6)  # a constant stays constant


@pytest.mark.parametrize("in_size, out_size", [(7, 16), (14, 8), (14, 16), (3, 3), (5, 2)])
def test_bicubic_resize_matrix_is_pil_bicubic(in_size, out_size):
    signal = np.random.default_rng(in_size * 31 + out_size).standard_normal(in_size)
    pil = Image.fromarray(signal[None, :].astype(np.float32), mode="F").resize((out_size, 1), Image.BICUBIC)
    matrix = bicubic_resize_matrix(in_size, out_size)
    np.testing.assert_allclose(matrix @ signal, np.asarray(pil)[0], atol=1e-5)
    np.testing.assert_allclose(matrix.sum(1), 1.0)
    if in_size == out_size:
        np.testing.assert_array_equal(matrix, np.eye(in_size))


def test_shapes_of_the_tiny_model():
    model = clip_model("tiny", input_shape=(64, 32, 3))
    assert model.image_encoder.get_layer("embeddings").output.shape == (None, 1 + 8 * 4, 32)
    assert model.image_encoder.get_layer("embeddings").position_embedding.shape == (17, 32)
    out = model({"images": np.zeros((3, 64, 32, 3), np.float32), "token_ids": token_batch()[:2]})
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "image_embeddings": (3, 16),
        "text_embeddings": (2, 16),
        "logits_per_image": (3, 2),
    }
    unit = model.encode_image(np.ones((1, 64, 32, 3), np.float32), normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, rtol=1e-5)


JAX_SCRIPT = """
import sys
import numpy as np
from portrait_keras.models.clip import clip_model
weights, inputs, output = sys.argv[1:]
model = clip_model("tiny", input_shape=(48, 24, 3), weights=weights)
data = np.load(inputs)
out = model({"images": data["images"], "token_ids": data["token_ids"]})
np.savez(output, **{k: np.asarray(v) for k, v in out.items()})
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_backend_gives_the_same_outputs(converted, tmp_path):
    inputs = {"images": np.random.default_rng(3).standard_normal((2, 48, 24, 3)).astype(np.float32)}
    inputs["token_ids"] = token_batch()
    np.savez(tmp_path / "inputs.npz", **inputs)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": repo}
    command = [sys.executable, "-c", JAX_SCRIPT, str(converted), str(tmp_path / "inputs.npz"), str(tmp_path / "j.npz")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = clip_model("tiny", input_shape=(48, 24, 3), weights=str(converted))(inputs)
    with np.load(tmp_path / "j.npz") as got:
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5, err_msg=key)


# === Layers: config round trip, .keras with safe_mode=True, a fit step (STYLE.md habit 3) ===


@pytest.mark.parametrize(
    "make_layer, input_shape",
    [
        (lambda: QuickGELU(), (3, 4)),
        (lambda: ClipAttention(2), (3, 4)),
        (lambda: ClipAttention(2, causal=True), (3, 4)),
        (lambda: ClassTokenPositionEmbedding((2, 1)), (3, 2, 4)),  # built at 2×1, run at 3×2
        (lambda: PositionEmbedding(5), (3, 4)),
        (lambda: ClassTokenPooling(), (3, 4)),
    ],
    ids=["quick_gelu", "attention", "causal_attention", "class_token_position", "position", "class_pooling"],
)
def test_layer_round_trip(make_layer, input_shape, tmp_path):
    layer = make_layer()
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config

    inputs = keras.Input(input_shape)
    # A Dense in front, so the fit below shows gradients flow through the layer.
    outputs = layer(keras.layers.Dense(input_shape[-1], name="dense")(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).standard_normal((4, *input_shape)).astype("float32")
    expected = np.asarray(model(x))
    path = tmp_path / "layer.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x), expected, rtol=1e-6)

    kernel = np.array(loaded.get_layer("dense").kernel)
    loaded.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    history = loaded.fit(x, np.ones_like(expected), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(np.array(loaded.get_layer("dense").kernel), kernel)


def test_end_of_text_pooling_round_trip(tmp_path):
    features, ids = keras.Input((4, 3)), keras.Input((4,), dtype="int32")
    model = keras.Model([features, ids], EndOfTextPooling()([features, ids]))
    model.save(tmp_path / "pool.keras")
    loaded = keras.models.load_model(tmp_path / "pool.keras", safe_mode=True)
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype("float32")
    t = np.array([[1, 5, 2, 0], [1, 2, 3, 9]])
    np.testing.assert_array_equal(loaded([x, t]), x[[0, 1], [1, 3]])


def test_clip_model_config_and_keras_file_round_trip(tmp_path):
    model = clip_model("tiny", input_shape=(48, 24, 3), quick_gelu=False)
    config = model.get_config()
    assert ClipModel.from_config(config).get_config() == config
    assert config["input_shape"] == [48, 24, 3] and config["quick_gelu"] is False
    inputs = {"images": np.random.default_rng(0).standard_normal((2, 48, 24, 3)), "token_ids": token_batch()}
    expected = model(inputs)
    model.save(tmp_path / "clip.keras")
    loaded = keras.models.load_model(tmp_path / "clip.keras", safe_mode=True)
    assert isinstance(loaded, ClipModel) and loaded.get_config() == config
    for key, value in loaded(inputs).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-6, err_msg=key)


# === Argument checks ===


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ClipAttention(0), "num_heads must be a positive int"),
        (lambda: ClipAttention(2, causal="yes"), "causal must be a bool"),
        (lambda: ClipAttention(3).build((None, 4, 8)), "multiple of num_heads=3"),
        (lambda: ClassTokenPositionEmbedding((2,)), "grid_size must be an int or"),
        (lambda: ClassTokenPositionEmbedding(0), "grid_size must be a positive int"),
        (lambda: PositionEmbedding(4).build((None, 5, 8)), "at most 4"),
        (lambda: clip_image_encoder((60, 32, 3), image_size=32, patch_size=16), "input_shape must be a multiple"),
        (lambda: clip_image_encoder(image_size=32, patch_size=16, width=10, heads=4), "heads must divide width"),
        (lambda: clip_text_encoder(context_length=0), "context_length must be a positive int"),
        (lambda: clip_model("ViT-L-14"), "Allowed: ViT-B-32, ViT-B-32-quickgelu"),
        (lambda: clip_model("tiny", heads=2), "Unknown ClipModel arguments"),
        (lambda: clip_model("tiny", quick_gelu="yes"), "quick_gelu must be a bool"),
        (lambda: clip_model("tiny", weights="no_such.weights.h5"), "convert_clip"),
    ],
)
def test_arguments_are_checked(build, match):
    with pytest.raises(ValueError, match=match):
        build()
