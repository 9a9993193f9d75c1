"""Portrait Interpretation Quality (PIQ), paper eq. 2."""

import math

from portrait_keras import schema as schema_lib


def piq(metrics, schema=None):
    """PIQ: the mean of the re-id, appearance, posture and emotion scores (eq. 2).

    `ReID = (Macro mAP + Macro rank-1) / 2`; each other aspect is the mean Macro
    F1 of its classification tasks, grouped by the schema (default: appearance =
    gender, age, physique, height; posture = body, arm; emotion = expression).
    An aspect without tasks in the schema is left out of the mean and of the
    result, so a dataset without an identity task gets the mean of its
    appearance, posture and emotion scores.

    Args:
        metrics: mapping. `reid_mAP` and `reid_rank1` when the schema has an
            identity task, and the Macro F1 of every classification task under
            the task's name (e.g. `gender`) or as `metrics.json` names it
            (`f1_gender`), so merged single-task runs give the joint PIQ.
            Values in [0, 1]; other keys are ignored.
        schema: `portrait_keras.schema.Schema` or None. Defaults to
            `default_schema()`.

    Returns:
        dict with `piq` and the score of each aspect that has tasks: `reid`,
        `appearance`, `posture`, `emotion`.

    Example:
    >>> scores = {"reid_mAP": 0.4, "reid_rank1": 0.6, "gender": 0.8, "age": 0.7,
    ...           "physique": 0.5, "height": 0.6, "body": 0.6, "arm": 0.6, "expression": 0.2}
    >>> round(piq(scores)["piq"], 4)
    0.4875
    """
    schema = schema_lib.default_schema() if schema is None else schema
    if not isinstance(schema, schema_lib.Schema):
        raise ValueError(f"schema must be a portrait_keras Schema or None. Received: {type(schema).__name__}")
    if not hasattr(metrics, "keys"):
        raise ValueError(f"metrics must be a mapping of metric name to value. Received: {type(metrics).__name__}")

    groups = {}
    if schema.identity_task is not None:
        groups["reid"] = ["reid_mAP", "reid_rank1"]
    for aspect in schema_lib.ASPECTS:
        names = [t.name for t in schema.aspect_tasks(aspect) if t.kind != schema_lib.IDENTITY]
        if names:
            groups[aspect] = names
    metrics = {**{k[3:]: v for k, v in metrics.items() if str(k).startswith("f1_")}, **metrics}
    missing = [key for keys in groups.values() for key in keys if key not in metrics]
    if missing:
        raise ValueError(
            f"PIQ needs the metrics {missing} for the schema's tasks. Received: keys {sorted(map(str, metrics))}"
        )

    result = {}
    for aspect, keys in groups.items():
        values = [_fraction(metrics[key], key) for key in keys]
        result[aspect] = sum(values) / len(values)
    result = {"piq": sum(result.values()) / len(result), **result}
    return result


def _fraction(value, key):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Metric {key!r} must be a number. Received: {value!r}") from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"Metric {key!r} must be in [0, 1]. Received: {value!r}")
    return value
