"""A labelled grid of sample images from an annotation CSV (for docs and eyeballing data)."""

import os

import numpy as np
import pandas as pd
from PIL import Image

LABEL_COLUMNS = ("id", "gender", "age", "physique", "height", "body", "arm", "expression")


def montage(csv_path, out_png, n=16, columns=8, seed=0):
    """Writes a PNG grid of `n` images, each captioned with its labels.

    Picks at most one image per near-duplicate group, so the grid shows `n` scenes.

    Args:
        csv_path: path-like. Annotation CSV; image paths are relative to its folder.
        out_png: path-like. Output PNG.
        n: int. Number of images. Defaults to `16`.
        columns: int. Images per row. Defaults to `8`.
        seed: int. Which images are picked. Defaults to `0`.

    Returns:
        `out_png`.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    if n < 1 or columns < 1:
        raise ValueError(f"`n` and `columns` must be >= 1. Received: n={n}, columns={columns}")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if "group" in table.columns:
        table = table.drop_duplicates("group")
    rows = table.sample(n=min(n, len(table)), random_state=seed)
    root = os.path.dirname(os.path.abspath(csv_path))
    grid_rows = int(np.ceil(len(rows) / columns))
    fig, axes = plt.subplots(grid_rows, columns, figsize=(columns * 1.7, grid_rows * 4.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), rows.iterrows()):
        with Image.open(os.path.join(root, row["path"])) as image:
            ax.imshow(np.asarray(image.convert("RGB")))
        caption = [f"{c}: {row[c] or '?'}" for c in LABEL_COLUMNS if c in row]
        ax.set_title("\n".join(caption), fontsize=6.5, loc="left", family="monospace")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
