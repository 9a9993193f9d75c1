"""Evaluate a portrait model on a dataset's query/gallery splits (paper §4.3).

`evaluate(model, annotations)` returns the flat metrics dict the `PIQCallback` logs:
`reid_mAP`, `reid_rank1`, `reid_rank5`, `reid_rank10` (Macro mAP / CMC, near-duplicate groups
excluded), `f1_<task>` (Macro F1 over the query and gallery images) and `piq`, `reid`,
`appearance`, `posture`, `emotion` (eq. 2) when the model covers every aspect.

The command line `python -m portrait_keras.evaluate RUN_DIR` lives in `evaluate.py`.
"""

import numpy as np

from portrait_keras.schema import IDENTITY, MULTI

EVAL_SPLITS = ("query", "gallery")


def model_tasks(model, schema):
    """The schema tasks whose logits the model outputs, in schema order."""
    names = set(model.output_names) if hasattr(model, "output_names") else set()
    return [t for t in schema.tasks if t.name in names]


def predict_split(model, annotations, split, batch_size=128):
    """Runs `model` over one split. Returns numpy outputs: logits per task, `embedding`."""
    from portrait_keras.data import make_dataset

    image_size = tuple(model.input_shape[1:3])
    ds = make_dataset(annotations, split, batch_size=batch_size, training=False, image_size=image_size)
    outputs = model.predict(ds.map(lambda images, labels: images), verbose=0)
    return {k: np.asarray(v) for k, v in outputs.items()}


def classification_predictions(task, logits):
    """Class decisions from logits: argmax for single-label; for multi-label every class with
    probability > 0.5, or the most probable one when none is (each annotated image has at least
    one expression)."""
    if task.kind != MULTI:
        return np.argmax(logits, axis=-1)
    pred = (logits > 0.0).astype(np.int32)  # sigmoid(x) > 0.5
    empty = pred.sum(axis=-1) == 0
    pred[empty, np.argmax(logits[empty], axis=-1)] = 1
    return pred


def evaluate_outputs(outputs, labels, schema, tasks, groups=None, cameras=None):
    """Metrics from model outputs and labels of the query and gallery splits.

    Args:
        outputs: dict split → dict of numpy model outputs.
        labels: dict split → dict task → labels (`Annotations.labels`).
        schema: `Schema`.
        tasks: list of `Task` the model learns.
        groups, cameras: dict split → int array, or None.
    """
    from portrait_keras import metrics

    result = {}
    ident = schema.identity_task
    if ident is not None and any(t.name == ident.name for t in tasks):
        q, g = outputs["query"], outputs["gallery"]
        groups = groups or {}
        cameras = cameras or {}
        reid = metrics.evaluate_reid(
            q["embedding"],
            g["embedding"],
            labels["query"][ident.name],
            labels["gallery"][ident.name],
            query_groups=groups.get("query"),
            gallery_groups=groups.get("gallery"),
            query_cams=cameras.get("query"),
            gallery_cams=cameras.get("gallery"),
        )
        for key in ("mAP", "rank1", "rank5", "rank10"):
            if key in reid:
                result[f"reid_{key}"] = float(reid[key])
    splits = [s for s in EVAL_SPLITS if s in outputs]
    for task in tasks:
        if task.kind == IDENTITY:
            continue
        y_true = np.concatenate([labels[s][task.name] for s in splits])
        y_pred = np.concatenate([classification_predictions(task, outputs[s][task.name]) for s in splits])
        result[f"f1_{task.name}"] = float(metrics.macro_f1(y_true, y_pred))
    piq_input = {k[3:]: v for k, v in result.items() if k.startswith("f1_")}
    piq_input.update({k: v for k, v in result.items() if k.startswith("reid_")})
    try:
        result.update({k: float(v) for k, v in metrics.piq(piq_input, schema).items()})
    except ValueError:
        pass  # a model of a subset of tasks (single-task runs) has no PIQ of its own
    return result


def evaluate(model, annotations, *, batch_size=128):
    """Evaluates `model` on the query and gallery splits of `annotations`.

    Args:
        model: the functional portrait model (or a `PortraitTrainer`: its model is used).
        annotations: `portrait_keras.data.Annotations` with query/gallery splits.
        batch_size: int. Inference batch size.

    Returns: dict of float metrics (module docstring).
    """
    model = getattr(model, "portrait", model)
    schema = annotations.schema
    splits = [s for s in EVAL_SPLITS if s in annotations.splits]
    if not splits:
        raise ValueError(
            f"{annotations.csv_path}: no query or gallery images to evaluate on. "
            f"Received splits: {sorted(annotations.splits)}"
        )
    outputs = {s: predict_split(model, annotations, s, batch_size) for s in splits}
    labels = {s: annotations.labels(s) for s in splits}
    groups = {s: annotations.groups(s) for s in splits}
    cameras = {s: annotations.cameras(s) for s in splits}
    return evaluate_outputs(outputs, labels, schema, model_tasks(model, schema), groups, cameras)


def format_table(metrics_dict):
    """Metrics as an aligned two-column text table."""
    width = max(len(k) for k in metrics_dict)
    return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in metrics_dict.items())
