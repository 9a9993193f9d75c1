"""Evaluate a portrait model on a dataset's query/gallery splits (paper §4.3).

`evaluate(model, annotations)` returns the flat metrics dict the `PIQCallback` logs:
`reid_mAP`, `reid_rank1`, `reid_rank5`, `reid_rank10` (Macro mAP / CMC, near-duplicate groups
excluded), `f1_<task>` (Macro F1 over the query and gallery images) and `piq`, `reid`,
`appearance`, `posture`, `emotion` (eq. 2) when the model covers every aspect.

The command line `python -m portrait_keras evaluate RUN_DIR` lives in `evaluate.py`.
"""

import warnings

import numpy as np

from portrait_keras.schema import IDENTITY, MULTI

EVAL_SPLITS = ("query", "gallery")


class SchemaMismatchError(ValueError):
    """A model and a dataset (or two schemas) disagree on tasks or classes; the message says where."""


def schema_differences(a, b, a_name="the first", b_name="the second"):
    """What differs between schemas `a` and `b`, as a list of short sentences (empty when equal)."""
    out = []
    for t in a.tasks:
        if t.name not in b.names:
            out.append(f"task {t.name!r} only in {a_name}")
            continue
        u = b.task(t.name)
        if (t.kind, t.aspect) != (u.kind, u.aspect):
            out.append(f"task {t.name!r} is {t.kind}/{t.aspect} in {a_name}, {u.kind}/{u.aspect} in {b_name}")
        elif t.classes != u.classes:
            out.append(
                f"task {t.name!r} has classes ({', '.join(t.classes)}) in {a_name}, "
                f"({', '.join(u.classes)}) in {b_name}"
            )
    out += [f"task {u.name!r} only in {b_name}" for u in b.tasks if u.name not in a.names]
    if not out and a.names != b.names:
        out.append(f"task order {', '.join(a.names)} in {a_name}, {', '.join(b.names)} in {b_name}")
    return out


def model_tasks(model, schema):
    """The schema tasks whose logits the model outputs, in schema order."""
    names = set(model.output_names) if hasattr(model, "output_names") else set()
    return [t for t in schema.tasks if t.name in names]


def check_model_fits_schema(model, schema, where="the dataset"):
    """Raises `SchemaMismatchError` when `model` has no output of `schema` or a class count
    other than the schema's (a model trained on another class list).

    Args:
        model: the functional portrait model.
        schema: `Schema` of the data the model is run on.
        where: str. Names the schema's source in the message (e.g. the CSV path).
    """
    tasks = model_tasks(model, schema)
    if not tasks:
        raise SchemaMismatchError(
            f"The model's outputs ({', '.join(sorted(model.output_names))}) share no task with the "
            f"schema of {where} ({', '.join(schema.names)})."
        )
    wrong = []
    for task in tasks:
        if task.kind == IDENTITY:
            continue
        size = model.output[task.name].shape[-1]
        if size != task.num_classes:
            wrong.append(f"{task.name!r}: model {size} classes, schema {task.num_classes} ({', '.join(task.classes)})")
    if wrong:
        raise SchemaMismatchError(
            f"The model was trained with other class lists than the schema of {where}: " + "; ".join(wrong)
        )


def predict_split(model, annotations, split, batch_size=128, skip_bad_images=False):
    """Runs `model` over one split.

    Returns `(outputs, positions)`: numpy float32 outputs (logits per task, `embedding`) and
    the positions in the split (int `[n]`) of the images they belong to. An unreadable image
    raises `BadImageError` naming its CSV line and file, unless `skip_bad_images` leaves it out.
    """
    from portrait_keras.data import make_dataset
    from portrait_keras.data.pipeline import naming_bad_images

    image_size = tuple(model.input_shape[1:3])
    ds = make_dataset(
        annotations,
        split,
        batch_size=batch_size,
        training=False,
        image_size=image_size,
        skip_bad_images=skip_bad_images,
    )
    keep = np.setdiff1d(np.arange(annotations.num_images(split)), [b.index for b in ds.skipped_images])
    ds = ds.map(lambda images, labels: images)
    shards = _data_parallel_shards()
    if shards > 1:
        ds = ds.map(lambda images: _pad_rows(images, shards))
    with naming_bad_images(annotations, split):
        outputs = model.predict(ds, verbose=0)
    if shards > 1:  # only the last batch was padded
        outputs = {k: v[: len(keep)] for k, v in outputs.items()}
    # Mixed precision gives bfloat16/float16 outputs: the metrics rank and argmax in float32.
    return {k: np.asarray(v, np.float32) for k, v in outputs.items()}, keep


def _data_parallel_shards():
    """Devices a batch is split across by a JAX `keras.distribution` (1 otherwise): their
    predict needs batches they divide."""
    import keras

    if keras.backend.backend() != "jax":
        return 1
    from portrait_keras.training.distribute import num_replicas

    return num_replicas()


def _pad_rows(images, multiple):
    """`images` `[n, ...]` with its last row repeated up to a multiple of `multiple` rows."""
    import tensorflow as tf

    missing = (-tf.shape(images)[0]) % multiple
    return tf.concat([images, tf.repeat(images[-1:], missing, axis=0)], axis=0)


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

    outputs = {s: {k: np.asarray(v, np.float32) for k, v in out.items()} for s, out in outputs.items()}
    result = {}
    ident = schema.identity_task
    if ident is not None and any(t.name == ident.name for t in tasks):
        q, g = outputs["query"], outputs["gallery"]
        groups = groups or {}
        cameras = cameras or {}
        try:
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
        except ValueError as e:
            # E.g. near-duplicate groups or skipped images removed every positive: one
            # undefined metric must not end a training run at its evaluation.
            warnings.warn(f"Re-id left out of the evaluation (and with it PIQ): {e}", stacklevel=2)
            reid = {}
        for key in ("mAP", "rank1", "rank5", "rank10"):
            if key in reid:
                result[f"reid_{key}"] = float(reid[key])
    splits = [s for s in EVAL_SPLITS if s in outputs]
    for task in tasks:
        if task.kind == IDENTITY:
            continue
        y_true = np.concatenate([labels[s][task.name] for s in splits])
        if not (y_true.reshape(len(y_true), -1) >= 0).all(axis=1).any():
            warnings.warn(
                f"Task {task.name!r} has no known label in the {' and '.join(splits)} split(s): its F1 "
                f"(and with it PIQ) is left out of the evaluation.",
                stacklevel=2,
            )
            continue
        y_pred = np.concatenate([classification_predictions(task, outputs[s][task.name]) for s in splits])
        result[f"f1_{task.name}"] = float(metrics.macro_f1(y_true, y_pred))
    piq_input = {k[3:]: v for k, v in result.items() if k.startswith("f1_")}
    piq_input.update({k: v for k, v in result.items() if k.startswith("reid_")})
    try:
        result.update({k: float(v) for k, v in metrics.piq(piq_input, schema).items()})
    except ValueError:
        pass  # a model of a subset of tasks (single-task runs) has no PIQ of its own
    return result


def eval_splits_needed(annotations, tasks):
    """The evaluation splits `tasks` need: re-id ranks the query against the gallery, so both;
    the F1 scores need either (both are named when neither has rows)."""
    identity = annotations.schema.identity_task
    if identity is not None and identity in tasks:
        return EVAL_SPLITS
    return () if any(s in annotations.splits for s in EVAL_SPLITS) else EVAL_SPLITS


def missing_split_problems(annotations, needed, who):
    """`AnnotationError` problems (line 1) for each split of `needed` without rows, saying `who`
    needs it."""
    present = ", ".join(sorted(annotations.splits)) or "none"
    return [
        (1, "split", s, f"no rows in this split, which {who} (splits present: {present})")
        for s in needed
        if s not in annotations.splits
    ]


def evaluate(model, annotations, *, batch_size=128, skip_bad_images=False):
    """Evaluates `model` on the query and gallery splits of `annotations`.

    Args:
        model: `PortraitModel` (or any functional model with the same outputs).
        annotations: `portrait_keras.data.Annotations` with query/gallery splits.
        batch_size: int. Inference batch size.
        skip_bad_images: bool. Leave unreadable images out of the evaluation (with a
            warning naming them) instead of failing on the first.

    Returns: dict of float metrics (module docstring).

    Raises:
        SchemaMismatchError: the model's class counts differ from the dataset's schema.
        AnnotationError: a split the evaluation needs is empty (re-id: query and gallery;
            otherwise at least one of them).
        BadImageError: an image cannot be decoded (unless `skip_bad_images`).
    """
    from portrait_keras.data.annotations import AnnotationError

    schema = annotations.schema
    check_model_fits_schema(model, schema, annotations.csv_path)
    tasks = model_tasks(model, schema)
    splits = [s for s in EVAL_SPLITS if s in annotations.splits]
    problems = missing_split_problems(annotations, eval_splits_needed(annotations, tasks), "the evaluation needs")
    if problems:
        raise AnnotationError(annotations.csv_path, problems)
    identity = schema.identity_task
    if identity is not None and identity in tasks and "group" not in annotations.table.columns:
        warnings.warn(
            f"{annotations.csv_path}: no 'group' column, so near-duplicates of a query stay in its "
            f"gallery (paper §4.3 ignores them); add the column with "
            f"`portrait-keras dedup {annotations.csv_path}`.",
            stacklevel=2,
        )
    outputs, labels, groups, cameras = {}, {}, {}, {}
    for s in splits:
        outputs[s], keep = predict_split(model, annotations, s, batch_size, skip_bad_images)
        labels[s] = {k: v[keep] for k, v in annotations.labels(s).items()}
        groups[s] = annotations.groups(s)[keep]
        cameras[s] = annotations.cameras(s)[keep]
    return evaluate_outputs(outputs, labels, schema, tasks, groups, cameras)


def format_table(metrics_dict):
    """Metrics as an aligned two-column text table."""
    width = max(len(k) for k in metrics_dict)
    return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in metrics_dict.items())
