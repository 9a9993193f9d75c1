"""The same model and losses under `KERAS_BACKEND=jax`: models/ and losses/ use keras.ops only.

This process (the TensorFlow backend, as usual) builds the tiny FSS model, saves it and
computes every loss; a subprocess with the JAX backend rebuilds the model, loads the weights
(and the `.keras` file), runs the forward pass and the losses on the same inputs and one
training step. Outputs and losses must agree. A SavedModel exported under JAX (jax2tf) serves,
under TensorFlow, what the JAX model computes.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from portrait_keras import losses as L
from portrait_keras.models import build_portrait_model, probabilities
from portrait_keras.schema import default_schema
from portrait_keras.training.trainer import PortraitTrainer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHAPE = (64, 32, 3)
NUM_IDS = 4

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")


def make_model():
    return build_portrait_model(default_schema(), NUM_IDS, input_shape=SHAPE)


def make_inputs():
    """Fixed images and labels: ids with pairs, unknowns (-1) in every task."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, *SHAPE)).astype("float32")
    labels = {
        "id": np.array([0, 0, 1, 1, 2, -1, 3, 3]),
        "gender": np.array([0, 0, 1, 1, 0, 1, -1, 1]),
        "age": np.array([1, 4, -1, 2, 0, 3, 3, 1]),
        "expression": rng.integers(0, 2, (8, 7)).astype("float32"),
    }
    labels["expression"][2] = -1
    return images, labels


def compute_losses(outputs, labels):
    """Every loss of portrait_keras.losses on the model outputs, as floats."""
    return {k: float(v) for k, v in compute_losses_pure(outputs, labels).items()}


def compute_losses_pure(outputs, labels):
    """Every loss of portrait_keras.losses on the model outputs, as scalar tensors."""
    weighting = L.UncertaintyWeighting(["id", "gender", "expression"])
    weighting.log_vars.assign(np.array([0.3, -0.2, 0.1], "float32"))
    values = {
        "ce_id": L.masked_sparse_ce(labels["id"], outputs["id"]),
        "ce_age_smoothed": L.masked_sparse_ce(labels["age"], outputs["age"], label_smoothing=0.1),
        "bce_expression": L.masked_multilabel_bce(labels["expression"], outputs["expression"]),
        "batch_rank_id": L.batch_rank_loss(labels["id"], outputs["id_feature"]),
        "batch_rank_expression": L.batch_rank_loss(labels["expression"], outputs["expression_feature"]),
        "triplet_id": L.batch_hard_triplet_loss(labels["id"], outputs["id_feature"]),
        "hfe_gender": L.hfe_loss(labels["id"], outputs["gender_feature"], labels["gender"]),
        "hfe_weight": L.hfe_weight(30, 100, 1.0),
        "batch_rank_id_loss_object": L.BatchRankLoss()(labels["id"], outputs["id_feature"]),
        "bce_expression_loss_object": L.MaskedBinaryCrossentropy()(labels["expression"], outputs["expression"]),
    }
    values["task_id"] = L.task_loss(values["ce_id"], values["batch_rank_id"])
    per_task = [values["task_id"], values["ce_age_smoothed"], values["bce_expression"]]
    values["uncertainty"] = weighting(per_task, present=[True, True, False])
    values["average"] = L.average_losses(per_task, present=[True, False, True])
    return values


def jax_side(workdir):
    """Runs in the JAX subprocess; writes outputs, losses, gradient checks and fit losses."""
    import jax

    assert keras.backend.backend() == "jax"
    images, labels = make_inputs()
    model = make_model()
    model.load_weights(os.path.join(workdir, "model.weights.h5"))
    outputs = model.predict(images, batch_size=8, verbose=0)
    loaded = keras.models.load_model(os.path.join(workdir, "model.keras"))
    np.savez(os.path.join(workdir, "jax_outputs.npz"), **outputs)
    np.savez(os.path.join(workdir, "jax_reloaded.npz"), **loaded.predict(images, batch_size=8, verbose=0))
    losses = jax.jit(lambda out: compute_losses_pure(out, labels))(outputs)

    # Gradients at the edge cases: duplicated features, a lone labelled sample, unknowns.
    f = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]], "float32")
    finite = {}
    for ids in ([0, 0, 1, 1], [3, -1, -1, -1], [-1, -1, -1, -1]):
        ids = np.array(ids)
        for name, fn in (
            ("batch_rank", lambda x: L.batch_rank_loss(ids, x)),
            ("triplet", lambda x: L.batch_hard_triplet_loss(ids, x)),
            ("hfe", lambda x: L.hfe_loss(ids, x, ids % 2)),
        ):
            finite[f"{name}{ids.tolist()}"] = bool(np.isfinite(np.asarray(jax.grad(fn)(f))).all())

    # Plain functions and the Loss classes alike, keyed by output name.
    model.compile(
        optimizer="adam",
        loss={
            "id": L.masked_sparse_ce,
            "gender": L.MaskedSparseCategoricalCrossentropy(label_smoothing=0.1),
            "expression": L.MaskedBinaryCrossentropy(),
            "id_feature": L.BatchRankLoss(),
        },
        jit_compile=True,
    )
    y = {k: labels[k] for k in ("id", "gender", "expression")}
    y["id_feature"] = labels["id"]
    history = model.fit(images, y, epochs=2, batch_size=8, verbose=0).history

    # The package's trainer with the HFE schedule and learnable uncertainty (its own state).
    schema = default_schema()
    hfe_tasks = [t for t in schema.aspect_tasks("appearance") if t.kind == "single"]
    trainer = PortraitTrainer(
        make_model(), list(schema.tasks), metric="hfe", multitask="uncertainty", hfe_tasks=hfe_tasks, total_steps=4
    )
    trainer.compile(optimizer="adam", jit_compile=True)
    rng = np.random.default_rng(1)
    full = {t.name: labels.get(t.name, rng.integers(0, max(t.num_classes, 1), 8)) for t in schema.tasks}
    trainer_history = trainer.fit(images, full, epochs=2, batch_size=4, verbose=0).history
    result = {
        "losses": {k: float(v) for k, v in losses.items()},
        "finite_gradients": finite,
        "fit_loss": history["loss"],
        "trainer_loss": trainer_history["loss"],
        "hfe_step": float(keras.ops.convert_to_numpy(trainer.hfe_step)),
        "s": trainer.uncertainties(),
    }
    with open(os.path.join(workdir, "jax.json"), "w") as f:
        json.dump(result, f)


@needs_jax
def test_model_and_losses_agree_under_jax(tmp_path):
    keras.utils.set_random_seed(0)
    model = make_model()
    model.save_weights(tmp_path / "model.weights.h5")
    model.save(tmp_path / "model.keras")
    images, labels = make_inputs()
    expected = {k: np.asarray(v) for k, v in model(images, training=False).items()}
    expected_losses = compute_losses(expected, labels)

    code = f"from tests import test_jax_backend as t; t.jax_side({str(tmp_path)!r})"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    # XLA's backend optimisations cost seconds per small compiled op; none is needed here.
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    for name in ("jax_outputs.npz", "jax_reloaded.npz"):
        got = np.load(tmp_path / name)
        assert set(got.files) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-4, err_msg=f"{name}: {key}")
    result = json.loads((tmp_path / "jax.json").read_text())
    assert result["losses"] == pytest.approx(expected_losses, rel=1e-4, abs=1e-5)
    assert all(result["finite_gradients"].values()), result["finite_gradients"]
    assert np.isfinite(result["fit_loss"]).all() and result["fit_loss"][1] < result["fit_loss"][0]
    assert np.isfinite(result["trainer_loss"]).all() and result["hfe_step"] == 4.0
    assert any(v != 0.0 for v in result["s"].values())  # the s_i of eq. 6 trained under JAX


def jax_export_side(workdir):
    """Runs in the JAX subprocess: exports the model with the saved weights as a SavedModel and
    writes what the JAX model computes for the served images (probabilities, embedding)."""
    from portrait_keras.data.images import resize
    from portrait_keras.serving.export import export_saved_model

    assert keras.backend.backend() == "jax"
    model = make_model()
    model.load_weights(os.path.join(workdir, "model.weights.h5"))
    export_saved_model(model, default_schema(), os.path.join(workdir, "saved_model"))
    rng = np.random.default_rng(0)
    same = rng.integers(0, 256, (4, *SHAPE), dtype=np.uint8)
    odd = rng.integers(0, 256, (2, 101, 47, 3), dtype=np.uint8)  # resized by the pipeline's resize
    reference = {"same": same, "odd": odd}
    for name, images in (("same", same), ("odd", resize(odd, SHAPE[:2]).numpy())):
        outputs = model.predict(images.astype("float32"), verbose=0)
        schema = default_schema()
        served = probabilities({t.name: outputs[t.name] for t in schema.classification_tasks}, schema)
        for key, value in {**served, "embedding": outputs["embedding"]}.items():
            reference[f"{name}/{key}"] = keras.ops.convert_to_numpy(value)
    np.savez(os.path.join(workdir, "jax_served.npz"), **reference)


@needs_jax
def test_a_saved_model_exported_under_jax_serves_the_jax_model_under_tensorflow(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    make_model().save_weights(tmp_path / "model.weights.h5")
    code = f"from tests import test_jax_backend as t; t.jax_export_side({str(tmp_path)!r})"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    reference = np.load(tmp_path / "jax_served.npz")
    for name in ("same", "odd"):
        out = loaded.serve(reference[name])
        assert {f"{name}/{key}" for key in out} == {k for k in reference.files if k.startswith(f"{name}/")}
        assert {"gender", "expression", "embedding"} <= set(out)
        for key, value in out.items():
            np.testing.assert_allclose(value.numpy(), reference[f"{name}/{key}"], atol=1e-4, err_msg=f"{name}/{key}")
    assert json.loads((tmp_path / "saved_model" / "assets" / "signature.json").read_text())["input"] == list(SHAPE)
    with pytest.raises(tf.errors.InvalidArgumentError, match="serve takes uint8 images"):
        loaded.serve(reference["same"] / 255)
