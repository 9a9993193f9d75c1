"""`evaluate_outputs`: an undefined metric is left out with a warning, not a crash."""

import numpy as np
import pytest

from portrait_keras.evaluation.evaluator import evaluate_outputs
from portrait_keras.schema import IDENTITY, MULTI, default_schema

SCHEMA = default_schema()


def _split(rng, ids):
    n = len(ids)
    outputs, labels = {"embedding": rng.normal(size=(n, 8)).astype(np.float32)}, {}
    for t in SCHEMA.tasks:
        if t.kind == IDENTITY:
            labels[t.name] = np.array(ids)
            continue
        outputs[t.name] = rng.normal(size=(n, t.num_classes)).astype(np.float32)
        if t.kind == MULTI:
            labels[t.name] = (rng.random((n, t.num_classes)) < 0.3).astype(np.float32)
        else:
            labels[t.name] = rng.integers(0, t.num_classes, n)
    return outputs, labels


def _data(query_ids=(0, 1, 2, 2), gallery_ids=(0, 0, 1, 1, 2, 2, -1, 3)):
    rng = np.random.default_rng(0)
    (qo, ql), (go, gl) = _split(rng, list(query_ids)), _split(rng, list(gallery_ids))
    return {"query": qo, "gallery": go}, {"query": ql, "gallery": gl}


def test_complete_labels_give_every_metric_and_piq():
    outputs, labels = _data()
    result = evaluate_outputs(outputs, labels, SCHEMA, list(SCHEMA.tasks))
    reid = [f"reid_{k}" for k in ("mAP", "rank1", "rank5", "rank10")]
    micro = [f"reid_micro_{k}" for k in ("mAP", "rank1", "rank5", "rank10")] + ["reid_mINP"]
    tasks = [t.name for t in SCHEMA.classification_tasks]
    par = [f"par_{m}_{t}" for t in tasks for m in ("accuracy", "precision", "recall", "f1")]
    expected = {"piq", "reid", "appearance", "posture", "emotion", *reid, *micro, *(f"f1_{t}" for t in tasks), *par}
    assert expected <= set(result)
    assert set(result) - expected <= {f"par_mA_{t}" for t in tasks}  # mA when a class has a positive and a negative
    assert "par_mA_expression" in result


@pytest.mark.parametrize("task", ["height", "expression"])
def test_a_task_without_known_labels_is_left_out_with_a_warning(task):
    outputs, labels = _data()
    for split in labels.values():
        split[task] = -np.ones_like(split[task])
    with pytest.warns(UserWarning, match=f"Task '{task}' has no known label in the query and gallery"):
        result = evaluate_outputs(outputs, labels, SCHEMA, list(SCHEMA.tasks))
    assert f"f1_{task}" not in result and "piq" not in result
    assert {"reid_mAP", "f1_gender"} <= set(result)


def test_reid_without_any_positive_is_left_out_with_a_warning():
    outputs, labels = _data(query_ids=(5, 6, 7, 7))
    with pytest.warns(UserWarning, match="Re-id left out.*No query has a positive"):
        result = evaluate_outputs(outputs, labels, SCHEMA, list(SCHEMA.tasks))
    assert not any(k.startswith("reid_") for k in result) and "piq" not in result
    assert "f1_height" in result


def test_data_without_near_duplicate_groups_is_evaluated_with_a_warning(smoke_run_dir, tiny_synth, tmp_path):
    import warnings

    import keras
    import pandas as pd

    from portrait_keras.data import read_annotations
    from portrait_keras.evaluation.evaluator import evaluate

    model = keras.models.load_model(smoke_run_dir / "model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with groups: no warning
        evaluate(model, read_annotations(tiny_synth), batch_size=64)
    table = pd.read_csv(tiny_synth, dtype=str, keep_default_na=False).drop(columns=["group"])
    csv = tmp_path / "annotations.csv"
    table.to_csv(csv, index=False)
    with pytest.warns(UserWarning, match="no 'group' column.*portrait-keras dedup"):
        result = evaluate(model, read_annotations(csv, root=tiny_synth.parent), batch_size=64)
    assert "reid_mAP" in result


def test_mixed_precision_outputs_give_the_float32_metrics():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    outputs, labels = _data()
    low = {s: {k: v.astype(ml_dtypes.bfloat16) for k, v in out.items()} for s, out in outputs.items()}
    rounded = {s: {k: v.astype(np.float32) for k, v in out.items()} for s, out in low.items()}
    expected = evaluate_outputs(rounded, labels, SCHEMA, list(SCHEMA.tasks))
    assert "piq" in expected
    assert evaluate_outputs(low, labels, SCHEMA, list(SCHEMA.tasks)) == expected


def test_reid_gives_the_papers_macro_and_the_market1501_micro_metrics_with_the_same_exclusions():
    from portrait_keras.metrics import evaluate_reid

    outputs, labels = _data(query_ids=(0, 1, 2, 2, 1), gallery_ids=(0, 0, 1, 1, 2, 2, -1, 3, 1, 2, 1))
    groups = {"query": np.array([-1, 4, -1, 5, -1]), "gallery": np.array([-1, 4, 4, -1, 5, -1, -1, -1, -1, -1, -1])}
    cameras = {"query": np.array([0, 1, 0, 1, 2]), "gallery": np.array([0, 1, 1, 0, 1, 1, 0, 2, 2, 0, 1])}
    result = evaluate_outputs(outputs, labels, SCHEMA, list(SCHEMA.tasks), groups, cameras)
    q, g = outputs["query"], outputs["gallery"]
    args = (q["embedding"], g["embedding"], labels["query"]["id"], labels["gallery"]["id"])
    kwargs = dict(
        query_groups=groups["query"],
        gallery_groups=groups["gallery"],
        query_cams=cameras["query"],
        gallery_cams=cameras["gallery"],
    )
    macro, micro = evaluate_reid(*args, **kwargs), evaluate_reid(*args, **kwargs, macro=False)
    for key in ("mAP", "rank1", "rank5", "rank10"):
        assert result[f"reid_{key}"] == macro[key], key
        assert result[f"reid_micro_{key}"] == micro[key], key
    assert result["reid_mINP"] == micro["mINP"]
    assert macro["mAP"] != micro["mAP"]  # the case tells the two averages apart
    # PIQ still reads the paper's Macro metrics.
    assert result["reid"] == pytest.approx((macro["mAP"] + macro["rank1"]) / 2)


def test_rerank_gives_the_reranked_reid_metrics_and_leaves_the_rest():
    from portrait_keras.metrics import evaluate_reid

    outputs, labels = _data(query_ids=(0, 1, 2, 2, 1), gallery_ids=(0, 0, 1, 1, 2, 2, -1, 3, 1, 2, 1))
    cameras = {"query": np.array([0, 1, 0, 1, 2]), "gallery": np.array([0, 1, 1, 0, 1, 1, 0, 2, 2, 0, 1])}
    plain = evaluate_outputs(outputs, labels, SCHEMA, list(SCHEMA.tasks), cameras=cameras)
    result = evaluate_outputs(
        outputs, labels, SCHEMA, list(SCHEMA.tasks), cameras=cameras, rerank=True, k1=3, k2=2, lambda_value=0.5
    )
    args = (
        outputs["query"]["embedding"],
        outputs["gallery"]["embedding"],
        labels["query"]["id"],
        labels["gallery"]["id"],
    )
    kwargs = dict(
        query_cams=cameras["query"], gallery_cams=cameras["gallery"], rerank=True, k1=3, k2=2, lambda_value=0.5
    )
    macro, micro = evaluate_reid(*args, **kwargs), evaluate_reid(*args, **kwargs, macro=False)
    for key in ("mAP", "rank1", "rank5", "rank10"):
        assert result[f"reid_{key}"] == macro[key], key
        assert result[f"reid_micro_{key}"] == micro[key], key
    assert result["reid_mINP"] == micro["mINP"]
    assert result["reid_mAP"] != plain["reid_mAP"]
    assert {k: v for k, v in result.items() if "reid" not in k and k != "piq"} == {
        k: v for k, v in plain.items() if "reid" not in k and k != "piq"
    }
    with pytest.raises(ValueError, match="k1 must be a positive int"):  # not a warning and no re-id
        evaluate_outputs(outputs, labels, SCHEMA, list(SCHEMA.tasks), rerank=True, k1=0)


def test_par_metrics_of_a_single_label_task_count_each_class_as_an_attribute():
    outputs, labels = _data()
    labels["query"]["gender"] = np.array([0, 0, 1, -1])
    outputs["query"]["gender"] = np.array([[2, 0], [0, 2], [0, 2], [2, 0]], np.float32)
    labels["gallery"]["gender"] = -np.ones(8, np.int64)
    result = evaluate_outputs(outputs, labels, SCHEMA, list(SCHEMA.tasks))
    # Three known rows, predicted 0, 1, 1 for truth 0, 0, 1. Class 0: TPR 1/2, TNR 1/1; class 1:
    # TPR 1/1, TNR 1/2. Instance-based: one-hot rows, so accuracy = precision = recall = 2/3.
    assert result["par_mA_gender"] == pytest.approx(((1 / 2 + 1) / 2 + (1 + 1 / 2) / 2) / 2)
    for key in ("accuracy", "precision", "recall", "f1"):
        assert result[f"par_{key}_gender"] == pytest.approx(2 / 3), key


def test_par_metrics_of_a_multi_label_task_are_those_of_its_decisions():
    from portrait_keras.evaluation.evaluator import classification_predictions
    from portrait_keras.metrics import par_metrics

    outputs, labels = _data()
    task = SCHEMA.task("expression")
    result = evaluate_outputs(outputs, labels, SCHEMA, list(SCHEMA.tasks))
    y_true = np.concatenate([labels[s]["expression"] for s in ("query", "gallery")])
    y_pred = np.concatenate([classification_predictions(task, outputs[s]["expression"]) for s in ("query", "gallery")])
    expected = par_metrics(y_true, y_pred)
    for key, value in expected.items():
        if np.isfinite(value):
            assert result[f"par_{key}_expression"] == pytest.approx(value), key
    assert 0 < result["par_accuracy_expression"] < 1


def test_average_with_mirror_averages_probabilities_and_embeddings():
    from portrait_keras.evaluation.evaluator import average_with_mirror

    rng = np.random.default_rng(1)
    a = {k: rng.normal(size=(5, 4)) * 30 for k in ("gender", "expression", "embedding")}
    b = {k: rng.normal(size=(5, 4)) * 30 for k in ("gender", "expression", "embedding")}
    out = average_with_mirror(a, b, SCHEMA)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    np.testing.assert_allclose(softmax(out["gender"]), (softmax(a["gender"]) + softmax(b["gender"])) / 2, atol=1e-6)
    mean_sigmoid = (sigmoid(a["expression"]) + sigmoid(b["expression"])) / 2
    np.testing.assert_allclose(sigmoid(out["expression"]), mean_sigmoid, atol=1e-6)
    np.testing.assert_allclose(out["embedding"], (a["embedding"] + b["embedding"]) / 2, rtol=1e-6)
    assert all(np.isfinite(v).all() and v.dtype == np.float32 for v in out.values())


def test_flip_runs_the_model_on_the_image_and_its_mirror_and_averages(smoke_run_dir, tiny_annotations):
    import keras

    from portrait_keras.data import make_dataset
    from portrait_keras.evaluation.evaluator import predict_split

    model = keras.models.load_model(smoke_run_dir / "model.keras")
    flipped, keep = predict_split(model, tiny_annotations, "query", batch_size=64, flip=True)
    ds = make_dataset(tiny_annotations, "query", batch_size=64, training=False, image_size=model.input_shape[1:3])
    images = np.concatenate([x.numpy() for x, _ in ds])
    plain, mirror = (model.predict(x, verbose=0) for x in (images, images[:, :, ::-1]))
    assert len(keep) == len(images) == len(flipped["embedding"])
    np.testing.assert_allclose(flipped["embedding"], (plain["embedding"] + mirror["embedding"]) / 2, atol=1e-5)
    assert np.abs(plain["embedding"] - mirror["embedding"]).max() > 1e-3  # the mirror is another input
    for task in model.schema.classification_tasks:
        probability = keras.ops.sigmoid if task.kind == MULTI else keras.ops.softmax
        expected = (np.asarray(probability(plain[task.name])) + np.asarray(probability(mirror[task.name]))) / 2
        np.testing.assert_allclose(np.asarray(probability(flipped[task.name])), expected, atol=1e-5)


def test_the_printed_table_shows_every_metric_once_in_its_group():
    from portrait_keras.evaluation.tables import PAR_COLUMNS, format_table, metric_sections

    outputs, labels = _data()
    result = evaluate_outputs(outputs, labels, SCHEMA, list(SCHEMA.tasks))
    result.update(s_gender=0.25, num_images=12.0)
    sections = metric_sections(result)
    shown = {}
    for section in sections:
        for label, *values in section.rows:
            if len(section.header) == 2:
                shown[label] = (section.title, values[0])
            else:
                keys = [f"par_{column}_{label}" for column, _ in PAR_COLUMNS]
                shown.update({k: (section.title, v) for k, v in zip(keys, values) if v is not None})
    assert {k: v for k, (_, v) in shown.items()} == result
    assert shown["reid_mAP"][0].startswith("Re-id, paper: Macro")
    assert shown["reid_micro_rank1"][0] == shown["reid_mINP"][0] != shown["reid_mAP"][0]
    assert shown["par_f1_age"][0].startswith("Attributes per task") and shown["s_gender"][0].startswith("Uncertainty")
    assert shown["num_images"][0] == "Other"
    text = format_table(result)
    assert text.index("piq") < text.index("reid_mAP") < text.index("reid_micro_mAP") < text.index("f1_gender")
    age = next(line for line in text.splitlines() if line.split()[:1] == ["age"])
    expected = [result.get(f"par_{c}_age") for c, _ in PAR_COLUMNS]
    assert age.split()[1:] == ["-" if v is None else f"{v:.4f}" for v in expected]
