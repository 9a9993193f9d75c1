"""The trivial baseline a trained model must beat, scored with the same metrics.

Re-id by nearest neighbour on raw downsampled pixels (cosine distance, near-duplicates
excluded as usual); every classification task predicts its most frequent training class (for a
multi-label task, its most frequent label). `python -m portrait_keras.baselines [CSV]` prints it.
"""

import argparse
import sys

import numpy as np
from PIL import Image

from portrait_keras.evaluation import EVAL_SPLITS, evaluate_outputs, format_table
from portrait_keras.schema import IDENTITY, MULTI


def pixel_features(paths, size=(32, 16)):
    """Images → float32 `[n, h·w·3]` of pixels resized to `size` (height, width), centred."""
    feats = np.empty((len(paths), size[0] * size[1] * 3), np.float32)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            feats[i] = np.asarray(im.convert("RGB").resize(size[::-1], Image.BILINEAR), np.float32).ravel()
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


def trivial_baseline(annotations, size=(32, 16)):
    """Metrics of the trivial baseline on the query/gallery splits of `annotations`."""
    schema = annotations.schema
    splits = [s for s in EVAL_SPLITS if s in annotations.splits]
    train = annotations.labels("train")
    outputs, labels = {}, {}
    for split in splits:
        labels[split] = annotations.labels(split)
        n = annotations.num_images(split)
        out = {"embedding": pixel_features(annotations.paths(split), size)}
        for task in schema.tasks:
            if task.kind != IDENTITY:
                out[task.name] = majority_logits(task, train[task.name], n)
        outputs[split] = out
    groups = {s: annotations.groups(s) for s in splits}
    cameras = {s: annotations.cameras(s) for s in splits}
    return evaluate_outputs(outputs, labels, schema, list(schema.tasks), groups, cameras)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m portrait_keras.baselines", description=__doc__.split("\n")[0])
    parser.add_argument("csv", nargs="?", help="annotation CSV (default: the embedded SynthPortrait)")
    args = parser.parse_args(argv)
    from portrait_keras.data import default_dataset, read_annotations

    print(format_table(trivial_baseline(read_annotations(args.csv or default_dataset()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
