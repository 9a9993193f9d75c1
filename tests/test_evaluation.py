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
    assert {"reid_mAP", "f1_height", "f1_expression", "piq"} <= set(result)


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
