"""Relation traits of pairs of people with a trained `RelationModel` (paper 004 §5).

`portrait-keras interpret RUN --pair A.jpg B.jpg` (two crops) or `--pairs PAIRS.csv` (a pair
CSV, `data/pairs.py`: one image with two boxes, or two crops) prints the probability of each
of the 8 traits. Images are read by the one decoder (`images.decode_image_file`) and cropped
and resized as in training (`data.pairs.crop_person`).

Two crops carry no spatial cues: for a model trained with them (the SynthPortrait pairs, any
one-image pair CSV) the crops are placed side by side, A left of B, touching, their feet on one
line, in a picture as wide as both and as tall as the taller; the output says so
(`"boxes": "side by side (assumed)"`).
"""

import json
import os
import zipfile

import numpy as np

from portrait_keras.errors import InputError


def is_relation_model(path):
    """Whether `path` (a run folder or `.keras` file) holds a `RelationModel`, read from the
    archive's `config.json` without building the model (False when it cannot be read)."""
    file = os.path.join(path, "model.keras") if os.path.isdir(path) else path
    try:
        with zipfile.ZipFile(file) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return isinstance(config, dict) and config.get("class_name") == "RelationModel"


def load_relation_model(path):
    """The `RelationModel` of a run folder or `.keras` file.

    Raises: `InputError` when `path` holds another kind of model (e.g. a portrait run).
    """
    from portrait_keras.models.relation import RelationModel
    from portrait_keras.serving.export import load_keras_model

    file = os.path.join(path, "model.keras") if os.path.isdir(path) else path
    model = load_keras_model(file)
    if not isinstance(model, RelationModel):
        raise InputError(
            f"{path}: a {type(model).__name__}, not a relation model; --pair/--pairs need a run of "
            f"`portrait-keras train relation`"
        )
    return model


def side_by_side_boxes(shape_a, shape_b):
    """Normalised `[8]` boxes of two crops placed side by side (A left, feet on one line)."""
    (ha, wa), (hb, wb) = shape_a[:2], shape_b[:2]
    width, height = wa + wb, max(ha, hb)
    return np.asarray(
        [
            0,
            (height - ha) / height,
            wa / width,
            ha / height,
            wa / width,
            (height - hb) / height,
            wb / width,
            hb / height,
        ],
        np.float32,
    )


def pair_inputs(model, image_a, image_b, boxes=None):
    """Batch-of-one model inputs of two decoded images.

    Args:
        model: `RelationModel`.
        image_a, image_b: uint8 `[H, W, 3]`: the two crops, or the same image twice.
        boxes: int `[8]` pixel boxes in that image, or None for two crops.

    Returns: `(inputs, boxes_note)`; `boxes_note` says where the spatial cues come from.
    """
    from portrait_keras.data.images import resize
    from portrait_keras.data.pairs import crop_person

    size = tuple(model.image_shape[:2])
    if boxes is not None:
        crop_a, box_a = crop_person(image_a, boxes[:4], size)
        crop_b, box_b = crop_person(image_b, boxes[4:], size)
        cues, note = np.concatenate([box_a, box_b]), "given"
    else:
        crop_a, crop_b = resize(image_a, size), resize(image_b, size)
        cues, note = side_by_side_boxes(image_a.shape, image_b.shape), "side by side (assumed)"
    inputs = {
        "image_a": np.asarray(crop_a, np.float32)[None],
        "image_b": np.asarray(crop_b, np.float32)[None],
    }
    if model.spatial_cues:
        inputs["boxes"] = np.asarray(cues, np.float32)[None]
    else:
        note = "not used by this model"
    return inputs, note


def predict(model, inputs):
    """Trait probabilities `[T]` of one pair."""
    return predict_batch(model, inputs)[0]


def predict_batch(model, inputs):
    """Trait probabilities `[B, T]` of a batch of pairs (`inputs` stacked: `pair_inputs`' arrays)."""
    logits = np.asarray(model.predict_on_batch(inputs)["traits"], np.float64)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def describe(model, probabilities, **fields):
    """A pair's result: `fields`, every trait's probability, and the traits above their
    threshold (`RelationModel.thresholds`: the train split's positive shares)."""
    scores = {t: round(float(p), 4) for t, p in zip(model.traits, probabilities)}
    present = [t for t, p, low in zip(model.traits, probabilities, model.thresholds) if p > low]
    return {**fields, "traits": scores, "thresholds": dict(zip(model.traits, model.thresholds)), "present": present}


def interpret_pair(model, path_a, path_b):
    """The result of two crops (`describe`)."""
    from portrait_keras.data.images import decode_image_file

    inputs, note = pair_inputs(model, decode_image_file(path_a), decode_image_file(path_b))
    return describe(model, predict(model, inputs), a=os.fspath(path_a), b=os.fspath(path_b), boxes=note)


def interpret_pairs_csv(model, csv_path, batch_size=32):
    """The results of every row of a pair CSV, in file order (`describe`, plus `line`); the
    model runs on `batch_size` pairs at a time."""
    from portrait_keras.data.images import decode_image_file
    from portrait_keras.data.pairs import read_pairs

    pairs = read_pairs(csv_path)
    paths_a, paths_b = pairs.paths(None)
    results, pending = [], []

    def run_pending():
        stacked = {key: np.concatenate([x[key] for _, x in pending]) for key in pending[0][1]}
        for (fields, _), probabilities in zip(pending, predict_batch(model, stacked)):
            results.append(describe(model, probabilities, **fields))
        pending.clear()

    for line, a, b, boxes in zip(pairs.lines(None), paths_a, paths_b, pairs.boxes(None)):
        image_a = decode_image_file(a)
        image_b = image_a if pairs.has_boxes else decode_image_file(b)
        inputs, note = pair_inputs(model, image_a, image_b, boxes if pairs.has_boxes else None)
        pending.append(({"line": int(line), "a": a, "b": b, "boxes": note}, inputs))
        if len(pending) == batch_size:
            run_pending()
    if pending:
        run_pending()
    return results


def format_result(result):
    """A result as text: the pair, one line per trait (probability, threshold), the traits called."""
    where = result["a"] if result["a"] == result["b"] else f"{result['a']} + {result['b']}"
    head = f"line {result['line']}: {where}" if "line" in result else where
    lines = [head, f"  spatial cues: {result['boxes']}"]
    lines += [f"  {t:<14} {p:.2f}  (threshold {result['thresholds'][t]:.2f})" for t, p in result["traits"].items()]
    lines.append(f"  relation: {', '.join(result['present']) or 'none'}")
    return "\n".join(lines)
