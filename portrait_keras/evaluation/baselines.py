"""The trivial baseline a trained model must beat, scored with the same metrics.

Re-id by nearest neighbour on raw downsampled pixels (cosine distance, near-duplicates
excluded as usual); every classification task predicts its most frequent training class (for a
multi-label task, its most frequent label). `portrait-keras baseline [CSV]` prints it;
a bad input (no such CSV, an invalid table, a missing split, an image that cannot be decoded)
prints `error: ...` naming it and exits with status 2.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

from portrait_keras.data.annotations import AnnotationError
from portrait_keras.data.images import decode_image_file
from portrait_keras.errors import InputError
from portrait_keras.evaluation.evaluator import (
    EVAL_SPLITS,
    eval_splits_needed,
    evaluate_outputs,
    missing_split_problems,
)
from portrait_keras.evaluation.tables import format_table
from portrait_keras.schema import IDENTITY, MULTI


def _pixel_rows(paths, size):
    """Uncentred pixel rows of `paths`, and `(index, path, reason)` of each file not decoded."""
    feats = np.zeros((len(paths), size[0] * size[1] * 3), np.float32)
    bad = []
    for i, p in enumerate(paths):
        try:
            # The model's decoder (16-bit images scaled, not clipped white), then a small resize.
            image = Image.fromarray(decode_image_file(p))
        except InputError as e:
            bad.append((i, p, str(e).removeprefix(f"{p}: ")))
            continue
        feats[i] = np.asarray(image.resize(size[::-1], Image.BILINEAR), np.float32).ravel()
    return feats, bad


def pixel_features(paths, size=(32, 16)):
    """Images → float32 `[n, h·w·3]` of pixels resized to `size` (height, width), centred.

    Images are decoded as the model decodes them (`portrait_keras.data.images.decode_image_file`).
    Raises: `InputError` naming every file that cannot be decoded.
    """
    feats, bad = _pixel_rows(paths, size)
    if bad:
        raise InputError("cannot decode these images:\n" + "\n".join(f"{p}: {reason}" for _, p, reason in bad))
    return feats - feats.mean(axis=1, keepdims=True)


def _split_features(annotations, split, size):
    """`pixel_features` of a split; the error lists the CSV line and path of each bad image."""
    from portrait_keras.data.images import UnreadableImage
    from portrait_keras.data.pipeline import BadImageError

    feats, bad = _pixel_rows(annotations.paths(split), size)
    if bad:
        # No skip option here, unlike training and evaluation: the hint names the check only.
        hint = f"Check the whole table with `portrait-keras validate {annotations.csv_path}`."
        raise BadImageError(annotations, split, [UnreadableImage(*b) for b in bad], hint=hint)
    return feats - feats.mean(axis=1, keepdims=True)


def majority_logits(task, train_labels, n):
    """Logits `[n, C]` that always predict the most frequent training class."""
    if task.kind == MULTI:
        known = train_labels[(train_labels >= 0).all(axis=1)]
        counts = known.sum(axis=0)
    else:
        counts = np.bincount(train_labels[train_labels >= 0], minlength=task.num_classes)
    logits = np.full((n, task.num_classes), -10.0, np.float32)
    logits[:, int(np.argmax(counts))] = 10.0
    return logits


def check_splits(annotations):
    """Raises `AnnotationError` when a split the baseline needs has no rows: `train` for the
    majority classes (when the schema has a classification task), and what
    `evaluation.evaluate` needs."""
    tasks = list(annotations.schema.tasks)
    problems = []
    if any(t.kind != IDENTITY for t in tasks):
        problems += missing_split_problems(annotations, ["train"], "the baseline needs (its majority classes)")
    problems += missing_split_problems(annotations, eval_splits_needed(annotations, tasks), "the evaluation needs")
    if problems:
        raise AnnotationError(annotations.csv_path, problems)


def trivial_baseline(annotations, size=(32, 16)):
    """Metrics of the trivial baseline on the query/gallery splits of `annotations`.

    Raises:
        AnnotationError: a split it needs is empty (`check_splits`).
        BadImageError: images of a split cannot be decoded (each with its CSV line and path).
    """
    check_splits(annotations)
    schema = annotations.schema
    splits = [s for s in EVAL_SPLITS if s in annotations.splits]
    train = annotations.labels("train") if "train" in annotations.splits else {}
    outputs, labels = {}, {}
    for split in splits:
        labels[split] = annotations.labels(split)
        n = annotations.num_images(split)
        out = {"embedding": _split_features(annotations, split, size)}
        for task in schema.tasks:
            if task.kind != IDENTITY:
                out[task.name] = majority_logits(task, train[task.name], n)
        outputs[split] = out
    groups = {s: annotations.groups(s) for s in splits}
    cameras = {s: annotations.cameras(s) for s in splits}
    return evaluate_outputs(outputs, labels, schema, list(schema.tasks), groups, cameras)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="portrait-keras baseline", description=__doc__.split("\n")[0])
    parser.add_argument("csv", nargs="?", help="annotation CSV (default: the embedded SynthPortrait)")
    args = parser.parse_args(argv)
    from portrait_keras.data import default_dataset, read_annotations

    csv = args.csv or default_dataset()
    try:
        if not os.path.isfile(csv):
            raise InputError(f"{csv}: no such annotation CSV file")
        try:
            annotations = read_annotations(csv)
        except OSError as e:
            raise InputError(f"{csv}: cannot read the annotation CSV ({e.strerror or e})") from None
        print(format_table(trivial_baseline(annotations)))
    except (AnnotationError, InputError) as e:  # BadImageError is an AnnotationError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
