"""Dataset statistics: LTS of the ids per split (paper Table 3) and label distributions (Figure 3).

    portrait-keras stats ANNOTATIONS.csv OUT_DIR [--root DIR] [--k 0.2]

prints the Long Tail Score (eq. 1) of the images per id in each split and writes
into OUT_DIR:

- `lts.csv`, `lts.md`: that table (split, images, images with a known id, ids, LTS);
- `label_counts.csv`: images per class of every task and split (`unknown` included);
- `labels_<task>.png`: a bar chart per task, images per class and split; for the
  identity task, images per id sorted by count (the long tail).

The CSV is read and validated with `portrait_keras.data.read_annotations` (the task
list comes from the `schema.json` beside it, or the default schema).
"""

import argparse
import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from portrait_keras import schema as schema_lib
from portrait_keras.data.annotations import read_annotations
from portrait_keras.metrics import lts

UNKNOWN = "unknown"


def id_lts_table(annotations, k=0.2):
    """LTS_k of the images per id in each split (paper Table 3).

    Args:
        annotations: `portrait_keras.data.Annotations`.
        k: float in (0, 1). Fraction of the images. Defaults to `0.2`.

    Returns:
        `pandas.DataFrame`, one row per split present: `split`, `images`,
        `images_with_id`, `ids`, `lts` (NaN for a split without known ids).
    """
    identity = annotations.schema.identity_task
    if identity is None:
        raise ValueError(
            f"{annotations.csv_path}: the schema has no identity task. Received: tasks {list(annotations.schema.names)}"
        )
    rows = []
    for split in annotations.splits:
        ids = annotations.labels(split)[identity.name]
        counts = np.unique(ids[ids != -1], return_counts=True)[1]
        rows.append(
            {
                "split": split,
                "images": len(ids),
                "images_with_id": int(counts.sum()),
                "ids": len(counts),
                "lts": lts(counts, k) if len(counts) else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def label_counts(annotations):
    """Images per class of each task and split.

    Returns:
        dict task name -> `pandas.DataFrame` indexed by class (the identity task:
        by id, most images first), one column per split, and an `unknown` row.
    """
    result = {}
    for task in annotations.schema.tasks:
        columns = {}
        for split in annotations.splits:
            labels = annotations.labels(split)[task.name]
            if task.kind == schema_lib.IDENTITY:
                ids, counts = np.unique(labels[labels != -1], return_counts=True)
                column = pd.Series(counts, index=ids.astype(str))
                column[UNKNOWN] = np.count_nonzero(labels == -1)
            elif task.kind == schema_lib.SINGLE:
                counts = np.bincount(labels[labels != -1], minlength=task.num_classes)
                column = pd.Series(
                    np.append(counts, np.count_nonzero(labels == -1)), index=list(task.classes) + [UNKNOWN]
                )
            else:
                known = ~(labels == -1).all(1)
                counts = labels[known].sum(0).astype(np.int64)
                column = pd.Series(np.append(counts, np.count_nonzero(~known)), index=list(task.classes) + [UNKNOWN])
            columns[split] = column
        table = pd.DataFrame(columns).fillna(0).astype(np.int64)
        if task.kind == schema_lib.IDENTITY:
            known = table.drop(index=UNKNOWN)
            table = pd.concat(
                [known.loc[known.sum(axis=1).sort_values(ascending=False, kind="stable").index], table.loc[[UNKNOWN]]]
            )
        table.index.name = "class"
        result[task.name] = table
    return result


def plot_label_counts(task, counts, path):
    """Writes a PNG bar chart of `counts` (a `label_counts` table) for `task`."""
    known = counts.drop(index=UNKNOWN)
    unknown = ", ".join(f"{split} {n}" for split, n in counts.loc[UNKNOWN].items())
    figure = Figure(figsize=(max(6, 0.5 * len(known) + 2), 4) if task.kind != schema_lib.IDENTITY else (8, 4))
    axes = figure.add_subplot()
    if task.kind == schema_lib.IDENTITY:
        for split in known.columns:
            values = np.sort(known[split].to_numpy())[::-1]
            values = values[values > 0]
            axes.bar(np.arange(len(values)), values, width=1.0, alpha=0.6, label=f"{split} ({len(values)} ids)")
        axes.set_xlabel("ids, most images first")
        axes.set_yscale("log")
    else:
        width = 0.8 / len(known.columns)
        x = np.arange(len(known))
        for i, split in enumerate(known.columns):
            axes.bar(x + (i - (len(known.columns) - 1) / 2) * width, known[split], width, label=split)
        axes.set_xticks(x, known.index, rotation=30, ha="right")
    axes.set_ylabel("images")
    axes.set_title(f"{task.name} ({task.aspect}); unknown: {unknown}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _markdown(table):
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule] + body) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="portrait-keras stats",
        description=__doc__.split("\n")[0],
        epilog="examples:\n  portrait-keras stats data/annotations.csv stats/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("annotations", help="annotation CSV")
    parser.add_argument("out_dir", help="folder for the tables and charts")
    parser.add_argument("--root", help="dataset root (default: the CSV's folder)")
    parser.add_argument("--k", type=float, default=0.2, help="fraction of images for LTS_k (default 0.2)")
    args = parser.parse_args(argv)
    annotations = read_annotations(args.annotations, root=args.root)
    os.makedirs(args.out_dir, exist_ok=True)

    written = []
    if annotations.schema.identity_task is None:
        print("no identity task in the schema: LTS (images per identity) left out")
    else:
        table = id_lts_table(annotations, args.k).rename(columns={"lts": f"LTS_{args.k:g}"})
        table.to_csv(os.path.join(args.out_dir, "lts.csv"), index=False)
        with open(os.path.join(args.out_dir, "lts.md"), "w", encoding="utf-8") as f:
            f.write(_markdown(table))
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        written = ["lts.csv", "lts.md"]

    counts = label_counts(annotations)
    long = pd.concat(
        {name: t.reset_index().melt("class", var_name="split", value_name="images") for name, t in counts.items()},
        names=["task"],
    ).reset_index(level="task")
    identity = annotations.schema.identity_task
    if identity is not None:  # ids live in one split each: leave out their zero rows
        long = long[(long["task"] != identity.name) | (long["images"] > 0)]
    long.to_csv(os.path.join(args.out_dir, "label_counts.csv"), index=False)
    for task in annotations.schema.tasks:
        plot_label_counts(task, counts[task.name], os.path.join(args.out_dir, f"labels_{task.name}.png"))
    print(f"wrote {', '.join(written + ['label_counts.csv'])} and {len(counts)} charts to {args.out_dir}")


if __name__ == "__main__":
    main()
