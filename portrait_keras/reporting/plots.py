"""Figures of a run: training curves, per-task scores, confusion matrices, re-id rank lists.

Every function returns a matplotlib `Figure` drawn on the Agg canvas (no pyplot, so nothing
changes the backend of a notebook or a server); `save(figure, path)` writes it as a PNG of
exactly `figure size × DPI` pixels. The history is the run's `history.csv` (Keras `CSVLogger`):
`loss`, `loss_<task>`, `s_<task>` (eq. 6), `piq` and its aspects `reid`, `appearance`,
`posture`, `emotion` (eq. 2), `reid_mAP`, `reid_rank1`, `f1_<task>`, and the `val_` variants of
each when the fit had validation data (columns of `NA` are left out).

Example:
>>> history = read_history("runs/fss_uncert/history.csv")  # doctest: +SKIP
>>> save(loss_curves(history), "losses.png")  # doctest: +SKIP
"""

import os
import zlib

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from portrait_keras.schema import ASPECTS, default_schema

DPI = 100
CURVES_SIZE = (10.0, 4.0)  # inches: 1000 x 400 pixels at DPI
BARS_SIZE = (8.0, 4.0)
CONFUSION_SIZE = (6.0, 5.0)
RANK_TILE_SIZE = (1.4, 3.4)  # inches per image of a rank list (width, height)
ASPECT_SCORES = ("reid", *ASPECTS)
ASPECT_COLORS = {"appearance": "#1f77b4", "posture": "#ff7f0e", "emotion": "#9467bd", "reid": "#2ca02c"}
MATCH_COLORS = {True: "#2ca02c", False: "#d62728", None: "#9e9e9e"}


def _figure(size):
    figure = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save(figure, path):
    """Writes `figure` as a PNG at `path` (folders created). Returns `path`."""
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


# === Training curves ===


def read_history(path):
    """The run's `history.csv` as a `pandas.DataFrame` of floats (`NA` → NaN), one row per epoch."""
    import pandas as pd

    table = pd.read_csv(path)
    return table.apply(pd.to_numeric, errors="coerce")


def _epochs(history):
    if "epoch" in history:
        return history["epoch"].to_numpy() + 1  # CSVLogger counts from 0
    return np.arange(1, len(history) + 1)


def _series(history, column):
    """The finite values of a column, or None when it is missing or all NaN."""
    if column not in history:
        return None
    values = history[column].to_numpy(dtype=float)
    return values if np.isfinite(values).any() else None


def _task_names(history, prefix, schema):
    """Task names of the columns `<prefix><task>`, in schema order, then any others sorted."""
    present = [c[len(prefix) :] for c in history.columns if c.startswith(prefix) and not c.startswith("val_")]
    order = [t.name for t in schema.tasks]
    return [t for t in order if t in present] + sorted(t for t in present if t not in order)


def _task_color(schema, name):
    """The same colour for a task in every figure: its place in the schema."""
    names = [t.name for t in schema.tasks]
    index = names.index(name) if name in names else zlib.crc32(name.encode())
    return f"C{index % 10}"


def _plot_columns(ax, history, columns, labels=None, colors=None, ylabel=None, title=None):
    """Plots each column (solid) and its `val_` column (dashed). Returns how many lines it drew."""
    x = _epochs(history)
    marker = "o" if len(x) <= 30 else None
    drawn = 0
    for i, column in enumerate(columns):
        label = labels[i] if labels else column
        color = colors[i] if colors else f"C{i % 10}"
        for name, style, suffix in ((column, "-", ""), (f"val_{column}", "--", " (val)")):
            y = _series(history, name)
            if y is not None:
                ax.plot(x, y, style, color=color, marker=marker, markersize=3, label=label + suffix)
                drawn += 1
    if drawn:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        if ylabel:
            ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return drawn


def loss_curves(history, schema=None):
    """Total loss and per-task losses `loss_<task>` (with `val_` dashed) per epoch, or None."""
    schema = schema or default_schema()
    tasks = _task_names(history, "loss_", schema)
    if _series(history, "loss") is None and not tasks:
        return None
    figure = _figure(CURVES_SIZE)
    total, per_task = figure.subplots(1, 2)
    _plot_columns(total, history, ["loss"], ["total"], ["black"], "loss", "total loss")
    _plot_columns(
        per_task,
        history,
        [f"loss_{t}" for t in tasks],
        tasks,
        [_task_color(schema, t) for t in tasks],
        "loss",
        "per-task loss L_i (eq. 5)",
    )
    figure.tight_layout()
    return figure


def uncertainty_curves(history, schema=None):
    """The learnable task weights `s_<task>` of eq. 6 per epoch, or None (no uncertainty weighting)."""
    schema = schema or default_schema()
    tasks = [t for t in _task_names(history, "s_", schema) if _series(history, f"s_{t}") is not None]
    if not tasks:
        return None
    figure = _figure(CURVES_SIZE)
    ax = figure.subplots()
    _plot_columns(
        ax,
        history,
        [f"s_{t}" for t in tasks],
        tasks,
        [_task_color(schema, t) for t in tasks],
        "s_i",
        "uncertainty weights s_i (eq. 6): task weight exp(-s_i)",
    )
    figure.tight_layout()
    return figure


def score_curves(history, schema=None):
    """PIQ with its four aspects (eq. 2), and re-id mAP/rank-1 with per-task Macro F1, or None."""
    schema = schema or default_schema()
    aspects = [c for c in ("piq", *ASPECT_SCORES) if _series(history, c) is not None]
    tasks = _task_names(history, "f1_", schema)
    reid = [c for c in ("reid_mAP", "reid_rank1") if _series(history, c) is not None]
    if not aspects and not tasks and not reid:
        return None
    figure = _figure(CURVES_SIZE)
    left, right = figure.subplots(1, 2)
    colors = ["black" if c == "piq" else ASPECT_COLORS[c] for c in aspects]
    _plot_columns(left, history, aspects, None, colors, "score", "PIQ and its aspects (eq. 2)")
    columns = reid + [f"f1_{t}" for t in tasks]
    # Re-id has no F1 curve, so rank-1 takes the identity task's colour (gray is expression's).
    colors = ["black", _task_color(schema, "id")][: len(reid)] + [_task_color(schema, t) for t in tasks]
    _plot_columns(right, history, columns, None, colors, "score", "re-id and per-task Macro F1")
    for ax in (left, right):
        ax.set_ylim(0.0, 1.0)
    figure.tight_layout()
    return figure


# === Final scores ===


def f1_bars(metrics, schema=None):
    """Bars of each task's final score: Macro F1 per classification task and the re-id mAP
    and rank-1, coloured by aspect, with PIQ as a line. None when `metrics` has none of them."""
    schema = schema or default_schema()
    names, values, colors = [], [], []
    for key, label in (("reid_mAP", "id mAP"), ("reid_rank1", "id rank-1")):
        if key in metrics:
            names.append(label)
            values.append(float(metrics[key]))
            colors.append(ASPECT_COLORS["reid"])
    for task in schema.classification_tasks:
        if f"f1_{task.name}" in metrics:
            names.append(task.name)
            values.append(float(metrics[f"f1_{task.name}"]))
            colors.append(ASPECT_COLORS[task.aspect])
    if not names:
        return None
    lines = [(float(metrics["piq"]), "--", "black", f"PIQ {metrics['piq']:.3f}")] if "piq" in metrics else []
    title = "final scores: re-id (green), appearance (blue), posture (orange), emotion (purple)"
    return _score_bars(names, values, colors, "score", title, lines)


def _score_bars(names, values, colors, ylabel, title, lines=()):
    """Labelled bars of scores in [0, 1], with horizontal `(y, style, color, label)` lines."""
    figure = _figure(BARS_SIZE)
    ax = figure.subplots()
    bars = ax.bar(names, values, color=colors)
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    for y, style, color, label in lines:
        ax.axhline(y, color=color, linestyle=style, linewidth=1, label=label)
    if lines:
        ax.legend(fontsize=8)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    return figure


def relation_loss_curve(history):
    """A relation run's loss per epoch (masked trait BCE + weight decay, paper 004 eq. 17), or None."""
    if _series(history, "loss") is None:
        return None
    figure = _figure(BARS_SIZE)
    _plot_columns(figure.subplots(), history, ["loss"], ["loss"], ["black"], "loss", "relation loss (eq. 17)")
    figure.tight_layout()
    return figure


def trait_bars(metrics, traits):
    """Bars of each trait's balanced accuracy (paper 004 eq. 18), their mean as a line and
    chance (0.5) dotted; None when `metrics` has none."""
    names = [t for t in traits if f"balanced_accuracy_{t}" in metrics]
    if not names:
        return None
    values = [float(metrics[f"balanced_accuracy_{t}"]) for t in names]
    lines = [(0.5, ":", "#9e9e9e", "chance 0.5")]
    if "balanced_accuracy_mean" in metrics:
        mean = float(metrics["balanced_accuracy_mean"])
        lines.insert(0, (mean, "--", "black", f"mean {mean:.3f}"))
    title = "per-trait balanced accuracy on the test pairs"
    return _score_bars(names, values, "#1f77b4", "balanced accuracy", title, lines)


def confusion_matrix_figure(counts, classes, title):
    """A confusion matrix: cells coloured by the row-normalised rate, labelled with counts.

    Args:
        counts: int `[C, C]`; `counts[i, j]` images of true class i predicted as j.
        classes: sequence of C class names.
        title: str.
    """
    counts = np.asarray(counts)
    if counts.shape != (len(classes), len(classes)):
        raise ValueError(f"counts must be [{len(classes)}, {len(classes)}]. Received shape: {counts.shape}")
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = _figure(CONFUSION_SIZE)
    ax = figure.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                str(int(counts[i, j])),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, labels=classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    figure.tight_layout()
    return figure


# === Re-id rank list ===


def _tile(path, size):
    from PIL import Image

    from portrait_keras.data.images import decode_image_file

    # The model's decoder, so a tile shows what the model saw (16-bit images too, not white).
    image = Image.fromarray(decode_image_file(path))
    return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR))


def rank_list(query, paths, distances, same_id=None, query_id=None, ids=None, image_size=(256, 128), score="distance"):
    """The query and its ranked gallery hits side by side, as torchreid's `visualize_ranked_results`.

    Each hit has a green border when it shows the query's identity, red when another, grey when
    either identity is unknown; its title is the rank, the cosine distance and the id if known.

    Args:
        query: str or None. Query image path; None draws the hits alone (an attribute or
            text query).
        paths: list of str. Gallery hits, nearest first.
        distances: float `[k]`. The number in each title (`score` says which).
        same_id: list of True/False/None per hit, or None (all unknown).
        query_id: int or None. Shown under the query.
        ids: list of int/None per hit, or None.
        image_size: (int, int). Display size of every tile. Defaults to `(256, 128)`.
        score: str. `"distance"`, or `"score"` for a ranking score (`search.ScoredResult`).
            Defaults to `"distance"`.

    Returns: `Figure` of `(k + 1) × RANK_TILE_SIZE` inches (`k` without a query).
    Raises: `inference.InputError` naming an image file that cannot be decoded.
    """
    k = len(paths)
    same_id = list(same_id) if same_id is not None else [None] * k
    ids = list(ids) if ids is not None else [None] * k
    if not (len(distances) == len(same_id) == len(ids) == k):
        raise ValueError(
            f"paths, distances, same_id and ids need one entry per hit. Received lengths: "
            f"{k}, {len(distances)}, {len(same_id)}, {len(ids)}"
        )
    tiles = [] if query is None else [(query, "query" + ("" if query_id is None else f"\nid {query_id}"), "black")]
    figure = _figure((RANK_TILE_SIZE[0] * (k + len(tiles)), RANK_TILE_SIZE[1]))
    axes = figure.subplots(1, k + len(tiles), squeeze=False)[0]
    prefix = "" if score == "distance" else "score "
    for r, (p, d, s, i) in enumerate(zip(paths, distances, same_id, ids)):
        tiles.append((p, f"#{r + 1}  {prefix}{d:.3f}" + ("" if i is None else f"\nid {i}"), MATCH_COLORS[s]))
    for ax, (path, title, color) in zip(axes, tiles):
        ax.imshow(_tile(path, image_size), aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(4)
        ax.set_title(title, fontsize=8)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.85, wspace=0.08)
    return figure
