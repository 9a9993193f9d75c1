"""Describing images by the paper's three aspects (§3): appearance, posture, emotion.

Example:
>>> predictor = load_predictor("runs/fss_uncert")  # doctest: +SKIP
>>> [result] = interpret(predictor, ["person.jpg"])  # doctest: +SKIP
>>> result["appearance"]["gender"]["label"]  # doctest: +SKIP
'female'
"""

import os

import numpy as np

from portrait_keras.data.images import UnreadableImage
from portrait_keras.schema import ASPECTS, IDENTITY, MULTI
from portrait_keras.serving.predictor import DEFAULT_THRESHOLD, read_image_batches, warn_unmasked


def describe(probabilities, schema, threshold=DEFAULT_THRESHOLD):
    """One image's probabilities as a description grouped by aspect (paper §3).

    Args:
        probabilities: dict task → float `[C]`, one image's class probabilities
            (`Predictor.predict` rows).
        schema: `Schema`. Class names and aspects.
        threshold: float in (0, 1). A multi-label class is named when its probability is
            above it. Defaults to `0.5`.

    Returns:
        dict aspect → dict task → entry, for the aspects and tasks in `probabilities`:
        a single-label entry is `{"label", "probability", "probabilities"}` (the most probable
        class, its probability, and every class's probability); a multi-label entry is
        `{"labels", "fallback", "probabilities"}`, `labels` being the classes above
        `threshold`, most probable first, or, when none is, the most probable class alone with
        `fallback` true: the evaluation's decision (`evaluation.classification_predictions`,
        each annotated image shows at least one expression).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1). Received: threshold={threshold!r}")
    result = {}
    for aspect in ASPECTS:
        entries = {}
        for task in schema.aspect_tasks(aspect):
            if task.kind == IDENTITY or task.name not in probabilities:
                continue
            p = np.asarray(probabilities[task.name], dtype=np.float64)
            if p.shape != (task.num_classes,):
                raise ValueError(
                    f"Task {task.name!r}: expected {task.num_classes} probabilities. Received shape {p.shape}"
                )
            every = {c: round(float(v), 6) for c, v in zip(task.classes, p)}
            order = np.argsort(-p, kind="stable")
            if task.kind == MULTI:
                above = [task.classes[i] for i in order if p[i] > threshold]
                entries[task.name] = {
                    "labels": above or [task.classes[int(order[0])]],
                    "fallback": not above,
                    "probabilities": every,
                }
            else:
                best = int(order[0])
                entries[task.name] = {
                    "label": task.classes[best],
                    "probability": round(float(p[best]), 6),
                    "probabilities": every,
                }
        if entries:
            result[aspect] = entries
    return result


def interpret(predictor, paths, threshold=DEFAULT_THRESHOLD, batch_size=32, on_bad_image=None):
    """Describes each image file: `[{"path": ..., "appearance": ..., "posture": ..., "emotion": ...}]`.

    Args:
        predictor: `Predictor`.
        paths: list of image file paths (`expand_image_paths`).
        threshold: float. Multi-label threshold of `describe`. Defaults to `0.5`.
        batch_size: int. Images decoded and predicted together. Defaults to `32`.
        on_bad_image: callable or None. Called with an `UnreadableImage` (index in `paths`,
            path, reason) for each file that cannot be read or decoded, which then has no
            description. None raises the `ImageFileError` of the first. Defaults to `None`.

    Raises: `ImageFileError` naming the first unreadable file (without `on_bad_image`).
    """
    paths = [os.fspath(p) for p in paths]
    warn_unmasked(predictor, "these images")
    results = []
    # The next batch is read in a background thread while the model runs on this one.
    for positions, images, bad in read_image_batches(paths, predictor.image_size, batch_size):
        for index, error in bad:
            if on_bad_image is None:
                raise error
            on_bad_image(UnreadableImage(index, paths[index], error.reason))
        if not len(images):
            continue
        probs = predictor.predict(images, batch_size=batch_size)
        for row, index in enumerate(positions):
            one = {t.name: probs[t.name][row] for t in predictor.tasks}
            results.append({"path": paths[index], **describe(one, predictor.schema, threshold)})
    return results


def format_description(result, threshold=DEFAULT_THRESHOLD, top=3):
    """A readable multi-line text of one `interpret` result.

    Single-label tasks show their `top` most probable classes with probabilities; multi-label
    tasks their `labels`: the classes above `threshold`, or the most probable one, marked, when
    none is (`describe`).
    """
    lines = [result["path"]]
    width = max((len(name) for aspect in ASPECTS for name in result.get(aspect, {})), default=0)
    for aspect in ASPECTS:
        if aspect not in result:
            continue
        lines.append(f"  {aspect}")
        for name, entry in result[aspect].items():
            ranked = sorted(entry["probabilities"].items(), key=lambda kv: -kv[1])
            if "label" in entry:
                text = "  ".join(f"{c} {p:.2f}" for c, p in ranked[:top])
            elif entry.get("fallback", not entry["labels"]):
                c, p = ranked[0]
                text = f"none above {threshold:g} (most probable: {c} {p:.2f})"
            else:
                text = "  ".join(f"{c} {entry['probabilities'][c]:.2f}" for c in entry["labels"])
            lines.append(f"    {name:<{width}}  {text}")
    return "\n".join(lines)
