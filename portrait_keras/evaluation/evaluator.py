"""Evaluate a portrait model on a dataset's query/gallery splits (paper §4.3).

`evaluate(model, annotations)` returns the flat metrics dict the `PIQCallback` logs
(`metrics.json`, `history.csv`):

- `reid_mAP`, `reid_rank1`, `reid_rank5`, `reid_rank10`: the paper's Macro mAP / CMC (§4.3),
  averaged per identity, then over identities;
- `reid_micro_mAP`, `reid_micro_rank1`, `reid_micro_rank5`, `reid_micro_rank10`: the same
  averaged over queries (the Market-1501 protocol of torchreid and fast-reid), and `reid_mINP`,
  the mean inverse negative penalty over queries (Ye et al. 2021); every re-id metric leaves out
  a query's near-duplicate group and its same-camera positives, and with `rerank=True` ranks the
  gallery by the k-reciprocal re-ranked distance (Zhong et al. 2017) instead of the cosine one;
- `f1_<task>`: Macro F1 over the query and gallery images (§4.3);
- `par_mA_<task>` (label-based mean accuracy), `par_accuracy_<task>`, `par_precision_<task>`,
  `par_recall_<task>`, `par_f1_<task>` (instance-based): the pedestrian-attribute metrics of
  every classification task (`metrics.par_metrics`; a single-label task counts each class as an
  attribute, one-hot);
- `piq`, `reid`, `appearance`, `posture`, `emotion` (eq. 2) when the model covers every aspect.

The command line `python -m portrait_keras evaluate RUN_DIR` lives in `evaluate.py`.
"""

import warnings

import numpy as np

from portrait_keras.schema import IDENTITY, MULTI

EVAL_SPLITS = ("query", "gallery")
REID_KEYS = ("mAP", "rank1", "rank5", "rank10")  # of `reid_` (Macro) and `reid_micro_`


class SchemaMismatchError(ValueError):
    """A model and a dataset (or two schemas) disagree on tasks or classes; the message says where."""


def schema_differences(a, b, a_name="the first", b_name="the second"):
    """What differs between schemas `a` and `b`, as a list of short sentences (empty when equal)."""
    out = task_differences(a.tasks, b.tasks, a_name, b_name)
    if not out and a.names != b.names:
        out.append(f"task order {', '.join(a.names)} in {a_name}, {', '.join(b.names)} in {b_name}")
    return out


def task_differences(a_tasks, b_tasks, a_name="the first", b_name="the second"):
    """`schema_differences` of two sequences of `Task`, whatever their order."""
    a_tasks, b_tasks = {t.name: t for t in a_tasks}, {t.name: t for t in b_tasks}
    out = []
    for t in a_tasks.values():
        u = b_tasks.get(t.name)
        if u is None:
            out.append(f"task {t.name!r} only in {a_name}")
        elif (t.kind, t.aspect) != (u.kind, u.aspect):
            out.append(f"task {t.name!r} is {t.kind}/{t.aspect} in {a_name}, {u.kind}/{u.aspect} in {b_name}")
        elif t.classes != u.classes:
            out.append(
                f"task {t.name!r} has classes ({', '.join(t.classes)}) in {a_name}, "
                f"({', '.join(u.classes)}) in {b_name}"
            )
    out += [f"task {u.name!r} only in {b_name}" for u in b_tasks.values() if u.name not in a_tasks]
    return out


def shared_tasks(model_schema, data_schema, model_outputs):
    """The tasks a model can be evaluated on with data labelled by another schema.

    Re-id compares embeddings, whoever the identities are, so the data's identity task is
    evaluated when both schemas have one and the model outputs an `embedding`; every other task
    the model outputs is evaluated when it has the same kind, aspect and class list in both.

    Args:
        model_schema: `Schema` the model was trained with.
        data_schema: `Schema` of the data.
        model_outputs: iterable of str. The model's output names.

    Returns: `(names, left_out)`: the names of the `data_schema` tasks to evaluate, and the
        `task_differences` of the two schemas' other tasks (what is left out, and why).

    Example:
    >>> from portrait_keras.schema import Schema, Task
    >>> ident = Task("id", "appearance", "identity")
    >>> gender = Task("gender", "appearance", "single", ("f", "m"))
    >>> other = Task("gender", "appearance", "single", ("f", "m", "x"))
    >>> shared_tasks(Schema((ident, gender)), Schema((ident, other)), ["id", "gender", "embedding"])
    (['id'], ["task 'gender' has classes (f, m) in the model, (f, m, x) in the data"])
    """
    outputs = set(model_outputs)
    names = []
    if "embedding" in outputs and model_schema.identity_task is not None and data_schema.identity_task is not None:
        names.append(data_schema.identity_task.name)
    names += [
        t.name
        for t in data_schema.tasks
        if t.kind != IDENTITY and t.name in outputs and t.name in model_schema.names and model_schema.task(t.name) == t
    ]
    attributes = [[t for t in s.tasks if t.kind != IDENTITY] for s in (model_schema, data_schema)]
    return names, task_differences(*attributes, "the model", "the data")


def model_tasks(model, schema):
    """The schema tasks the model predicts, in schema order: those whose logits it outputs, and
    the identity task when it outputs the re-id `embedding` (whatever the task's name there)."""
    names = set(model.output_names) if hasattr(model, "output_names") else set()
    return [t for t in schema.tasks if t.name in names or (t.kind == IDENTITY and "embedding" in names)]


def check_model_fits_schema(model, schema, where="the dataset", tasks=None):
    """Raises `SchemaMismatchError` when `model` has no output of `schema` or a class count
    other than the schema's (a model trained on another class list).

    Args:
        model: the functional portrait model.
        schema: `Schema` of the data the model is run on.
        where: str. Names the schema's source in the message (e.g. the CSV path).
        tasks: list of `Task` or None. Check only these; defaults to `model_tasks`.
    """
    tasks = model_tasks(model, schema) if tasks is None else tasks
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


def predict_split(model, annotations, split, batch_size=128, skip_bad_images=False, flip=False):
    """Runs `model` over one split.

    Returns `(outputs, positions)`: numpy float32 outputs (logits per task, `embedding`) and
    the positions in the split (int `[n]`) of the images they belong to. An unreadable image
    raises `BadImageError` naming its CSV line and file, unless `skip_bad_images` leaves it out.
    With `flip`, each image and its horizontal mirror are run and the outputs averaged
    (`average_with_mirror`).
    """
    from portrait_keras.data import make_dataset

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
    outputs = _predict(model, ds, annotations, split, len(keep))
    if flip:
        import tensorflow as tf

        mirrored = _predict(model, ds.map(lambda images: tf.reverse(images, axis=[2])), annotations, split, len(keep))
        outputs = average_with_mirror(outputs, mirrored, getattr(model, "schema", None) or annotations.schema)
    return outputs, keep


def _predict(model, ds, annotations, split, num_images):
    """`model.predict` over the image batches `ds`: float32 numpy outputs of `num_images` rows."""
    from portrait_keras.data.pipeline import naming_bad_images

    shards = _data_parallel_shards()
    if shards > 1:
        ds = ds.map(lambda images: _pad_rows(images, shards))
    with naming_bad_images(annotations, split):
        outputs = model.predict(ds, verbose=0)
    if shards > 1:  # only the last batch was padded
        outputs = {k: v[:num_images] for k, v in outputs.items()}
    # Mixed precision gives bfloat16/float16 outputs: the metrics rank and argmax in float32.
    return {k: np.asarray(v, np.float32) for k, v in outputs.items()}


def average_with_mirror(outputs, mirrored, schema):
    """Test-time flip: the model outputs of images and of their horizontal mirrors, averaged.

    The re-id `embedding` (the BNNeck feature before the L2 normalisation of the metrics) and
    every other non-task output are averaged as they are, as fast-reid's flip test does. A
    task's logits are replaced by the logits of the mean of the two probabilities (the log of
    the mean softmax; for a multi-label task the logit of the mean sigmoid), so that softmax
    (sigmoid) of the result is the mean probability and decisions are taken on it.

    Args:
        outputs, mirrored: dict output name → float array `[N, ...]` of the two passes.
        schema: `Schema`. Which outputs are task logits, and which of those are multi-label.

    Returns: dict of float32 numpy arrays, same keys and shapes.

    Example:
    >>> from portrait_keras.schema import default_schema
    >>> out = average_with_mirror({"gender": [[0.0, 0.0]], "embedding": [[1.0, 3.0]]},
    ...                           {"gender": [[0.0, np.log(3)]], "embedding": [[3.0, 3.0]]}, default_schema())
    >>> np.exp(out["gender"]).round(3).tolist(), out["embedding"].tolist()  # probabilities (1/2+1/4)/2, (1/2+3/4)/2
    ([[0.375, 0.625]], [[2.0, 3.0]])
    """
    kinds = {t.name: t.kind for t in schema.tasks}
    result = {}
    for key, value in outputs.items():
        a, b = np.asarray(value, np.float64), np.asarray(mirrored[key], np.float64)
        if key not in kinds:
            mean = (a + b) / 2
        elif kinds[key] == MULTI:
            # log p = -softplus(-x), log(1 - p) = -softplus(x); the 1/2 of each mean cancels.
            mean = np.logaddexp(-np.logaddexp(0, -a), -np.logaddexp(0, -b))
            mean -= np.logaddexp(-np.logaddexp(0, a), -np.logaddexp(0, b))
        else:
            mean = np.logaddexp(_log_softmax(a), _log_softmax(b)) - np.log(2)
        result[key] = mean.astype(np.float32)
    return result


def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


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


def evaluate_outputs(
    outputs, labels, schema, tasks, groups=None, cameras=None, *, rerank=False, k1=20, k2=6, lambda_value=0.3
):
    """Metrics from model outputs and labels of the query and gallery splits (module docstring).

    Args:
        outputs: dict split → dict of numpy model outputs.
        labels: dict split → dict task → labels (`Annotations.labels`).
        schema: `Schema`.
        tasks: list of `Task` the model learns.
        groups, cameras: dict split → int array, or None.
        rerank, k1, k2, lambda_value: k-reciprocal re-ranking of the re-id metrics, as
            `metrics.evaluate_reid`. Defaults to no re-ranking.
    """
    from portrait_keras import metrics
    from portrait_keras.metrics.rerank import check_parameters

    if rerank:  # before re-id's ValueErrors become warnings
        check_parameters(k1, k2, lambda_value)
    outputs = {s: {k: np.asarray(v, np.float32) for k, v in out.items()} for s, out in outputs.items()}
    result = {}
    ident = schema.identity_task
    if ident is not None and any(t.name == ident.name for t in tasks):
        rerank_args = dict(rerank=rerank, k1=k1, k2=k2, lambda_value=lambda_value)
        result.update(_reid_metrics(outputs, labels, ident, groups or {}, cameras or {}, rerank_args))
    splits = [s for s in EVAL_SPLITS if s in outputs]
    par = {}
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
        scores = metrics.par_metrics(*attribute_matrices(task, y_true, y_pred))
        par.update({f"par_{k}_{task.name}": float(v) for k, v in scores.items() if np.isfinite(v)})
    result.update(par)
    piq_input = {k[3:]: v for k, v in result.items() if k.startswith("f1_")}
    piq_input.update({k: v for k, v in result.items() if k.startswith("reid_")})
    try:
        result.update({k: float(v) for k, v in metrics.piq(piq_input, schema).items()})
    except ValueError:
        pass  # a model of a subset of tasks (single-task runs) has no PIQ of its own
    return result


def _reid_metrics(outputs, labels, ident, groups, cameras, rerank_args):
    """`reid_*` metrics of the query/gallery embeddings (`rerank_args`: `rerank`, `k1`, `k2`,
    `lambda_value` of `reid_query_scores`); empty (with a warning) when undefined."""
    from portrait_keras import metrics

    try:
        scores = metrics.reid_query_scores(
            outputs["query"]["embedding"],
            outputs["gallery"]["embedding"],
            labels["query"][ident.name],
            labels["gallery"][ident.name],
            query_groups=groups.get("query"),
            gallery_groups=groups.get("gallery"),
            query_cams=cameras.get("query"),
            gallery_cams=cameras.get("gallery"),
            **rerank_args,
        )
    except ValueError as e:
        # E.g. near-duplicate groups or skipped images removed every positive: one
        # undefined metric must not end a training run at its evaluation.
        warnings.warn(f"Re-id left out of the evaluation (and with it PIQ): {e}", stacklevel=3)
        return {}
    macro = metrics.average_reid(scores, macro=True)
    micro = metrics.average_reid(scores, macro=False)
    result = {f"reid_{k}": macro[k] for k in REID_KEYS}
    result.update({f"reid_micro_{k}": micro[k] for k in REID_KEYS})
    result["reid_mINP"] = micro["mINP"]
    return result


def attribute_matrices(task, y_true, y_pred):
    """Labels and decisions of a classification task as 0/1 attribute matrices `[N, C]`
    (`metrics.par_metrics`): a multi-label task as it is; a single-label one one-hot, each class
    an attribute (an unknown label, `-1`, a row of `-1`)."""
    if task.kind == MULTI:
        return np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    classes = np.arange(task.num_classes)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    true = (y_true[:, None] == classes).astype(np.int64)
    true[y_true < 0] = -1
    return true, (y_pred[:, None] == classes).astype(np.int64)


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


def evaluate(
    model,
    annotations,
    *,
    tasks=None,
    batch_size=128,
    skip_bad_images=False,
    flip=False,
    rerank=False,
    k1=20,
    k2=6,
    lambda_value=0.3,
):
    """Evaluates `model` on the query and gallery splits of `annotations`.

    Args:
        model: `PortraitModel` (or any functional model with the same outputs).
        annotations: `portrait_keras.data.Annotations` with query/gallery splits.
        tasks: sequence of str or None. Names of the tasks of `annotations.schema` to evaluate
            (the identity task: re-id by the model's embedding); defaults to every task the
            model predicts (`model_tasks`).
        batch_size: int. Inference batch size.
        skip_bad_images: bool. Leave unreadable images out of the evaluation (with a
            warning naming them) instead of failing on the first.
        flip: bool. Test-time flip: average the outputs of each image and its horizontal
            mirror (`average_with_mirror`: the embeddings before L2 normalisation, the class
            probabilities). Defaults to `False`.
        rerank: bool. Rank the gallery of the re-id metrics by the k-reciprocal re-ranked
            distance (`metrics.evaluate_reid`). Defaults to `False`.
        k1, k2, lambda_value: the re-ranking's parameters (the paper's defaults `20`, `6`, `0.3`).

    Returns: dict of float metrics (module docstring).

    Raises:
        SchemaMismatchError: the model's class counts differ from the dataset's schema, or a
            task of `tasks` is not one the model predicts.
        AnnotationError: a split the evaluation needs is empty (re-id: query and gallery;
            otherwise at least one of them).
        BadImageError: an image cannot be decoded (unless `skip_bad_images`).
    """
    from portrait_keras.data.annotations import AnnotationError

    schema = annotations.schema
    available = model_tasks(model, schema)
    if tasks is not None:
        unknown = sorted(set(tasks) - {t.name for t in available})
        if unknown:
            raise SchemaMismatchError(
                f"The model predicts no task {', '.join(map(repr, unknown))} of the schema of "
                f"{annotations.csv_path}. It predicts: {', '.join(t.name for t in available) or 'none'}"
            )
        available = [t for t in available if t.name in tasks]
    check_model_fits_schema(model, schema, annotations.csv_path, available)
    tasks = available
    splits = [s for s in EVAL_SPLITS if s in annotations.splits]
    problems = missing_split_problems(annotations, eval_splits_needed(annotations, tasks), "the evaluation needs")
    if problems:
        raise AnnotationError(annotations.csv_path, problems)
    identity = schema.identity_task
    # Several datasets joined (`data.sources`): each names its own file.
    parts = [a for _, a in getattr(annotations, "sources", None) or [(None, annotations)]]
    for part in parts if identity is not None and identity in tasks else ():
        if "group" in part.table.columns:
            continue
        warnings.warn(
            f"{part.csv_path}: no 'group' column, so near-duplicates of a query stay in its "
            f"gallery (paper §4.3 ignores them); add the column with "
            f"`portrait-keras dedup {part.csv_path}`.",
            stacklevel=2,
        )
    outputs, labels, groups, cameras = {}, {}, {}, {}
    for s in splits:
        outputs[s], keep = predict_split(model, annotations, s, batch_size, skip_bad_images, flip)
        labels[s] = {k: v[keep] for k, v in annotations.labels(s).items()}
        groups[s] = annotations.groups(s)[keep]
        cameras[s] = annotations.cameras(s)[keep]
    return evaluate_outputs(
        outputs, labels, schema, tasks, groups, cameras, rerank=rerank, k1=k1, k2=k2, lambda_value=lambda_value
    )
