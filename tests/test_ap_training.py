"""Alternating attribute propagation and fine-tuning (paper 004, Algorithm 1): config, feature
space, filled tables, and the `fss_ap` / `sim_mtl_ap` smoke runs."""

import dataclasses
import json
import types

import keras
import numpy as np
import pytest

from portrait_keras import experiments as configs
from portrait_keras.commands.overrides import override
from portrait_keras.config import TrainConfig
from portrait_keras.data import read_annotations
from portrait_keras.data.synthportrait import generate
from portrait_keras.models import build_portrait_model
from portrait_keras.propagation import PropagationResult
from portrait_keras.schema import default_schema
from portrait_keras.training import propagation_rounds as pr
from portrait_keras.training.run_dir import RunDir


@pytest.fixture(scope="module")
def sourced(tmp_path_factory):
    """`annotations.csv` of a tiny three-source SynthPortrait (most labels structurally missing)."""
    return generate(tmp_path_factory.mktemp("ap_sources"), identities=16, images_per_identity=8, workers=1, sources=3)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ap_rounds", -1, "train.ap_rounds: expected an int >= 0"),
        ("ap_epochs", 0, "train.ap_epochs: expected an int >= 1"),
        ("ap_threshold", 1.5, r"train.ap_threshold: expected a number in \[0.0, 1.0\]"),
        ("ap_k", 0, "train.ap_k: expected an int >= 1"),
        ("ap_rounds", "3", "train.ap_rounds: expected an int"),
        ("ap_space", "tasks", "train.ap_space: unknown value 'tasks'. Allowed: task, joint .did you mean 'task'"),
    ],
)
def test_bad_propagation_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_named_experiments_add_ten_one_epoch_rounds():
    for name, head in (("fss_ap", "fss"), ("sim_mtl_ap", "sim_mtl")):
        c = configs.get(name)
        assert (c.model.head, c.train.ap_rounds, c.train.ap_epochs) == (head, 10, 1)
        assert pr.total_epochs(c.train) == c.train.epochs + 10
        assert pr.round_of_epoch(c.train, c.train.epochs - 1) == 0
        assert pr.round_of_epoch(c.train, c.train.epochs) == 1
        assert pr.round_of_epoch(c.train, c.train.epochs + 9) == 10


@pytest.mark.parametrize("head", ["fss", "sim_mtl"])
def test_features_times_kernels_are_the_logits(head):
    """The propagation space reproduces each classifier exactly, BNNeck statistics included."""
    schema = default_schema()
    model = build_portrait_model(schema, 5, backbone="tiny", head=head, input_shape=(64, 32, 3))
    rng = np.random.default_rng(0)
    for name in model.tasks:  # statistics and scales far from the identity
        neck = model.get_layer(f"{name}_bnneck")
        d = neck.moving_mean.shape[0]
        mean, var = rng.normal(0, 1, d), rng.uniform(0.5, 2.0, d)
        if head == "sim_mtl":  # every neck sees the same input: the same statistics
            rng_same = np.random.default_rng(1)
            mean, var = rng_same.normal(0, 1, d), rng_same.uniform(0.5, 2.0, d)
        neck.moving_mean.assign(mean)
        neck.moving_variance.assign(var)
        neck.gamma.assign(rng.uniform(0.5, 2.0, d))
        kernel = model.get_layer(f"{name}_classifier").kernel
        kernel.assign(rng.normal(0, 1, kernel.shape))
    images = rng.uniform(0, 255, (6, 64, 32, 3)).astype("float32")
    outputs = {k: keras.ops.convert_to_numpy(v) for k, v in model(images, training=False).items()}
    tasks = [t for t in schema.tasks if t.kind != "identity"]
    features, kernels = pr.feature_space(model, outputs, tasks)
    width = (
        sum(outputs[f"{t.name}_feature"].shape[1] for t in tasks)
        if head == "fss"
        else outputs["gender_feature"].shape[1]
    )
    assert features.shape == (6, width)
    for t in tasks:
        np.testing.assert_allclose(features @ kernels[t.name], outputs[t.name], rtol=1e-3, atol=1e-3)


def _result(labels, posteriors):
    return PropagationResult(labels=labels, posteriors=posteriors, posterior_change={}, converged={})


def test_pseudo_labels_fill_only_unknown_rows_above_the_threshold():
    schema = default_schema()
    age, expression = schema.task("age"), schema.task("expression")
    truth = {
        "age": np.array([2, -1, -1, 0], np.int32),
        "expression": np.array([[1, 0, 0, 0, 0, 0, 0]] + [[-1] * 7] * 3, np.float32),
    }
    probs_age = np.array([[0, 0, 1, 0, 0], [0.1, 0.8, 0.1, 0, 0], [0.4, 0.3, 0.3, 0, 0], [1, 0, 0, 0, 0]])
    probs_expr = np.full((4, 7), 0.02)
    probs_expr[1, 3] = 0.99  # sure: happy
    probs_expr[2, 4] = 0.6  # unsure: sad
    probs_expr[3] = 0.03  # sure that nothing is present: takes the most probable class
    probs_expr[3, 6] = 0.04
    result = _result(
        {"age": np.array([4, 1, 0, 1]), "expression": (probs_expr > 0.5).astype(np.float32)},
        {"age": probs_age, "expression": probs_expr},
    )
    filled, counts = pr.filled_labels([age, expression], truth, result, 0.7)
    np.testing.assert_array_equal(filled["age"], [2, 1, -1, 0])  # known rows kept, 0.4 < 0.7 left out
    assert counts["age"] == {"missing": 2, "filled": 1, "mean_confidence": pytest.approx(0.6)}
    np.testing.assert_array_equal(filled["expression"][0], truth["expression"][0])
    np.testing.assert_array_equal(filled["expression"][1], np.eye(7)[3])
    np.testing.assert_array_equal(filled["expression"][2], -np.ones(7))  # 0.6 is not sure enough
    np.testing.assert_array_equal(filled["expression"][3], np.eye(7)[6])
    everything, _ = pr.filled_labels([age], truth, result, 0.0)
    np.testing.assert_array_equal(everything["age"], [2, 1, 0, 0])


def test_the_filled_table_keeps_ground_truth_and_the_test_splits(sourced, tmp_path):
    given = read_annotations(sourced)
    tasks = [t for t in given.schema.tasks if t.kind in ("single", "multi")]
    labels = given.labels("train")
    n = given.num_images("train")
    rng = np.random.default_rng(0)
    pseudo = {
        t.name: (rng.random((n, t.num_classes)) < 0.3).astype(np.float32)
        if t.kind == "multi"
        else rng.integers(t.num_classes, size=n)
        for t in tasks
    }
    for t in tasks:
        if t.kind == "multi":
            pseudo[t.name][pseudo[t.name].sum(1) == 0, 0] = 1
    probs = {t.name: np.ones((n, t.num_classes)) for t in tasks}
    filled, _ = pr.filled_labels(tasks, labels, _result(pseudo, probs), 0.0)
    back = pr.write_filled_table(given, tasks, filled, str(tmp_path / "round_1.csv"))
    assert back.root == given.root
    for t in tasks:
        got, old = back.labels("train")[t.name], labels[t.name]
        known = ~pr.unknown_rows(old)
        np.testing.assert_array_equal(got[known], old[known])  # ground truth never overwritten
        np.testing.assert_array_equal(got[~known], pseudo[t.name][~known].astype(got.dtype))
        assert not pr.unknown_rows(got).any()
        for split in ("query", "gallery"):
            np.testing.assert_array_equal(back.labels(split)[t.name], given.labels(split)[t.name])
    np.testing.assert_array_equal(back.paths("train"), given.paths("train"))


def test_a_resumed_round_reuses_its_table(sourced, tmp_path):
    given = read_annotations(sourced)
    run = RunDir(tmp_path)
    (tmp_path / "propagation").mkdir()
    table = given.table.copy()
    table.loc[table["split"] == "train", "body"] = "lying"
    table.to_csv(tmp_path / "propagation" / "round_2.csv", index=False)
    state = types.SimpleNamespace(annotations=given, config=configs.get("fss_ap"))
    reused = pr.round_annotations(state, run, run, 2)  # no model needed: nothing is propagated
    assert (reused.labels("train")["body"] == given.schema.task("body").classes.index("lying")).all()


def _tiny(name, csv_path):
    c = configs.get(name)
    c = dataclasses.replace(
        c,
        data=dataclasses.replace(c.data, csv=str(csv_path), image_size=(64, 32), batch_size=16, p=4, k=4),
        model=dataclasses.replace(c.model, backbone="tiny"),
    )
    return override(override(c, "train.epochs", 1), "train.ap_rounds", 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fss_ap", "sim_mtl_ap"])
def test_smoke_form_trains_one_round_on_filled_labels(name, sourced, tmp_path):
    from portrait_keras.training.fit import train

    run = tmp_path / "run"
    train(_tiny(name, sourced), run_dir=run, verbose=0, report=False)
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # stage 1 (1 epoch) + 1 round of 1 epoch
    given = read_annotations(sourced)
    filled = read_annotations(run / "propagation" / "round_1.csv", root=given.root, schema=given.schema)
    info = json.loads((run / "propagation" / "round_1.json").read_text())
    assert set(info["tasks"]) == {"gender", "age", "physique", "height", "body", "arm", "expression"}
    for task, counts in info["tasks"].items():
        old, new = given.labels("train")[task], filled.labels("train")[task]
        known = ~pr.unknown_rows(old)
        np.testing.assert_array_equal(new[known], old[known])
        assert counts["missing"] == (~known).sum() and counts["filled"] == counts["missing"]  # threshold 0
        assert not pr.unknown_rows(new).any()
    assert (run / "model.keras").exists() and json.loads((run / "metrics.json").read_text())
