"""The report of a run: figures plus one Markdown and one HTML page, in `RUN_DIR/report/`.

`write_report(run_dir)` draws (`portrait_keras.reporting.plots`, Agg):

- `curves_loss.png`: total and per-task losses per epoch (`history.csv`);
- `curves_uncertainty.png`: the s_i of eq. 6 (runs with uncertainty weighting);
- `curves_scores.png`: PIQ and its four aspects (eq. 2), re-id mAP/rank-1 and per-task Macro F1;
- `f1_bars.png`: the final per-task scores (`metrics.json`);
- `confusion_<task>.png`: for each single-label task, the confusion matrix on the test split
  (query + gallery, images whose label is known), from the run's `model.keras`;

and writes `report.md` (images by relative path) and `report.html` (images embedded as base64
`data:` URIs, so the page shows its figures wherever it is copied) with the final metrics grouped
as `portrait-keras evaluate` prints them (`evaluation.tables`): PIQ, the paper's Macro re-id, the
Market-1501 re-id and mINP, Macro F1, the attribute metrics per task. A figure whose data the run
lacks is left out, and the page says why.

Command line: `python -m portrait_keras report RUN_DIR [--data CSV]`.
"""

import base64
import html
import json
import os

import numpy as np

from portrait_keras.errors import InputError
from portrait_keras.evaluation.tables import Section, format_value, metric_sections
from portrait_keras.reporting import plots
from portrait_keras.schema import SINGLE, Schema

REPORT_FOLDER = "report"
FIGURE_PREFIXES = ("curves_", "f1_bars", "confusion_")


def confusion_counts(y_true, y_pred, num_classes):
    """Confusion matrix int64 `[C, C]` (`[true, predicted]`) of the images whose label is known
    (`y_true != -1`)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    known = y_true >= 0
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (y_true[known], y_pred[known]), 1)
    return counts


def confusion_matrices(model, annotations, batch_size=128, skip_bad_images=False):
    """Confusion matrices of the model's single-label tasks on the test split (query + gallery).

    Args:
        model: the functional portrait model (logits per task).
        annotations: `Annotations` with a query and/or gallery split.
        batch_size: int. Inference batch size. Defaults to `128`.
        skip_bad_images: bool. Leave unreadable images out (as `evaluate` does) instead of
            raising `BadImageError`. Defaults to `False`.

    Returns: dict task name → int64 `[C, C]` counts (`confusion_counts`).
    """
    from portrait_keras.evaluation.evaluator import EVAL_SPLITS, classification_predictions, model_tasks, predict_split

    splits = [s for s in EVAL_SPLITS if s in annotations.splits]
    tasks = [t for t in model_tasks(model, annotations.schema) if t.kind == SINGLE]
    if not splits or not tasks:
        return {}
    outputs, keep = {}, {}
    for s in splits:
        outputs[s], keep[s] = predict_split(model, annotations, s, batch_size, skip_bad_images)
    result = {}
    for task in tasks:
        y_true = np.concatenate([annotations.labels(s)[task.name][keep[s]] for s in splits])
        y_pred = np.concatenate([classification_predictions(task, outputs[s][task.name]) for s in splits])
        result[task.name] = confusion_counts(y_true, y_pred, task.num_classes)
    return result


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_model(run_dir):
    from portrait_keras.serving.export import load_model

    return load_model(os.path.join(run_dir, "model.keras"))


def _confusion_figures(run_dir, schema, config, annotations, model, batch_size, skip_bad_images, notes):
    """`[(title, name, figure)]` of the confusion matrices; reasons for none go to `notes`."""
    if model is None:
        if not os.path.isfile(os.path.join(run_dir, "model.keras")):
            notes.append("Confusion matrices: no model.keras in the run folder.")
            return []
        model = _load_model(run_dir)
    if annotations is None:
        csv = config.get("data_csv")
        if not csv or not os.path.isfile(csv):
            notes.append(f"Confusion matrices: the run's data CSV ({csv}) is not here; pass it with --data.")
            return []
        from portrait_keras.data import read_annotations

        annotations = read_annotations(csv, schema=schema)
    if not {"query", "gallery"} & set(annotations.splits):
        notes.append("Confusion matrices: the data has no query or gallery split.")
        return []
    from portrait_keras.data.pipeline import BadImageError

    # The images as the model was trained and evaluated on them (PortraitModel.background).
    background = getattr(model, "background", None) or config.get("data", {}).get("background", "keep")
    annotations = annotations.with_background(background)
    try:
        counts_by_task = confusion_matrices(model, annotations, batch_size, skip_bad_images)
    except BadImageError as e:  # the rest of the report still stands
        listed = "; ".join(f"{e.csv_path}:{line}: {value} ({why})" for line, _, value, why in e.problems[:5])
        more = f" and {len(e.problems) - 5} more" if len(e.problems) > 5 else ""
        notes.append(
            f"Confusion matrices: unreadable test images: {listed}{more}. "
            f"Rerun with --skip-bad-images to leave them out."
        )
        return []
    figures = []
    for name, counts in counts_by_task.items():
        task = schema.task(name)
        title = f"{name}: test split (query + gallery), {int(counts.sum())} labelled images"
        figures.append(
            (
                f"Confusion matrix: {name}",
                f"confusion_{name}.png",
                plots.confusion_matrix_figure(counts, task.classes, title),
            )
        )
    return figures


def _summary(config):
    if not config:
        return []
    m, loss, train, data = (config.get(k, {}) for k in ("model", "loss", "train", "data"))
    size = "×".join(str(s) for s in data.get("image_size", []))
    tasks = f", tasks {', '.join(m['tasks'])}" if m.get("tasks") else ""
    return [
        ("experiment", config.get("name")),
        ("model", f"{m.get('backbone')} backbone, {m.get('head')} head{tasks}"),
        ("loss", f"metric {loss.get('metric')} (λ={loss.get('lam')}), multi-task {loss.get('multitask')}"),
        (
            "training",
            f"{train.get('epochs')} epochs, batch {data.get('batch_size')}, {data.get('sampler')} sampling, "
            f"{size} images",
        ),
        ("data", config.get("data_csv")),
    ]


def _markdown(title, summary, tables, sections, notes):
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in summary]
    lines += ["", "## Final metrics"]
    if tables:
        for table in tables:
            lines += ["", f"### {table.title}", ""]
            lines += ["| " + " | ".join(table.header) + " |", "|---|" + "---:|" * (len(table.header) - 1)]
            lines += [f"| {row[0]} | " + " | ".join(map(format_value, row[1:])) + " |" for row in table.rows]
    else:
        lines += ["", "No metrics.json in the run folder."]
    for heading, figures in sections:
        if figures:
            lines += ["", f"## {heading}"]
            for t, name, _ in figures:
                lines += ["", f"![{t}]({name})"]
    if notes:
        lines += ["", "## Not drawn", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def _html(title, summary, tables, sections, notes):
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1040px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 8px}"
        "td.v{text-align:right;font-family:monospace}img{max-width:100%;display:block;margin:1em 0}</style>",
        "</head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if summary:
        parts.append("<ul>" + "".join(f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>" for k, v in summary) + "</ul>")
    parts.append("<h2>Final metrics</h2>")
    if tables:
        for table in tables:
            head = "".join(f"<th>{e(h)}</th>" for h in table.header)
            cells = ["".join(f'<td class="v">{format_value(v)}</td>' for v in row[1:]) for row in table.rows]
            rows = "".join(f"<tr><td>{e(row[0])}</td>{c}</tr>" for row, c in zip(table.rows, cells))
            parts.append(f"<h3>{e(table.title)}</h3><table><tr>{head}</tr>{rows}</table>")
    else:
        parts.append("<p>No metrics.json in the run folder.</p>")
    for heading, figures in sections:
        if figures:
            parts.append(f"<h2>{e(heading)}</h2>")
            parts += [f'<img src="{data_uri(path)}" alt="{e(t)}">' for t, _, path in figures]
    if notes:
        parts.append("<h2>Not drawn</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def data_uri(png_path):
    """The PNG file at `png_path` as a `data:image/png;base64,...` URI (the HTML page carries it)."""
    with open(png_path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def write_report(run_dir, annotations=None, *, model=None, batch_size=128, skip_bad_images=None):
    """Writes the figures, `report.md` and `report.html` of a run into `RUN_DIR/report/`.

    Args:
        run_dir: path-like. A run folder (`portrait_keras.training.fit.train`) with whichever of
            `model.keras`, `config.json`, `history.csv`, `metrics.json` it has (`schema.json` when
            there is no model).
        annotations: `Annotations` or None. Data of the confusion matrices; defaults to the
            run's own data CSV (`config.json` `data_csv`).
        model: `PortraitModel` or None. The trained model; defaults to loading `model.keras`
            (which also gives the schema), so passing it at the end of training saves a load.
        batch_size: int. Inference batch size of the confusion matrices. Defaults to `128`.
        skip_bad_images: bool or None. Leave unreadable test images out of the confusion
            matrices; `None` takes the run's `data.skip_bad_images`. Defaults to `None`.

    A relation run (`training.relation`) gets `write_relation_report`'s page instead.

    Returns:
        dict: `"markdown"` and `"html"` page paths, `"figures"` the PNG paths written.

    Raises: `InputError` when `run_dir` is not a run folder.
    """
    run_dir = os.fspath(run_dir)
    from portrait_keras.serving.relation import is_relation_model

    if model is None and is_relation_model(run_dir):
        return write_relation_report(run_dir)
    schema_path = os.path.join(run_dir, "schema.json")
    if model is None and os.path.isfile(os.path.join(run_dir, "model.keras")):
        model = _load_model(run_dir)
    if model is not None and getattr(model, "schema", None) is not None:
        schema = model.schema
    elif os.path.isfile(schema_path):
        schema = Schema.load(schema_path)
    else:
        raise InputError(f"{run_dir}: not a run folder (neither model.keras nor schema.json)")
    config_path = os.path.join(run_dir, "config.json")
    config = _read_json(config_path) if os.path.isfile(config_path) else {}
    metrics_path = os.path.join(run_dir, "metrics.json")
    metrics = _read_json(metrics_path) if os.path.isfile(metrics_path) else {}
    history_path = os.path.join(run_dir, "history.csv")
    history = plots.read_history(history_path) if os.path.isfile(history_path) else None

    if skip_bad_images is None:
        skip_bad_images = bool(config.get("data", {}).get("skip_bad_images", False))

    notes = []
    curves = []
    if history is None:
        notes.append("Training curves: no history.csv in the run folder.")
    else:
        for title, name, draw in (
            ("Losses", "curves_loss.png", plots.loss_curves),
            ("Uncertainty weights s_i", "curves_uncertainty.png", plots.uncertainty_curves),
            ("PIQ, re-id and Macro F1", "curves_scores.png", plots.score_curves),
        ):
            curves.append((title, name, draw(history, schema)))
    bars = [("Final per-task scores", "f1_bars.png", plots.f1_bars(metrics, schema))]
    confusion = _confusion_figures(run_dir, schema, config, annotations, model, batch_size, skip_bad_images, notes)

    # Only now that every figure is drawn: the figures of an earlier report go, so the pages
    # list what exists.
    groups = (("Training curves", curves), ("Per-task scores", bars), ("Confusion matrices", confusion))
    sections, written = _save_figures(os.path.join(run_dir, REPORT_FOLDER), groups, notes)

    tables = metric_sections({k: float(v) for k, v in metrics.items()})
    return _write_pages(run_dir, config, _summary(config), tables, sections, notes, written)


def _write_pages(run_dir, config, summary, tables, sections, notes, figures):
    """`report.md` and `report.html` in `RUN_DIR/report/`; returns `write_report`'s dict."""
    out = os.path.join(run_dir, REPORT_FOLDER)
    title = f"Run report: {config.get('name') or os.path.basename(os.path.abspath(run_dir))}"
    md_path = os.path.join(out, "report.md")
    html_path = os.path.join(out, "report.html")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(_markdown(title, summary, tables, sections, notes))
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(_html(title, summary, tables, sections, notes))
    return {"markdown": md_path, "html": html_path, "figures": figures}


def _save_figures(out, groups, notes):
    """Saves each `(heading, [(title, name, figure or None)])` group's figures into `out`
    (the figures of an earlier report removed first); returns `(sections, written paths)`."""
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.endswith(".png") and name.startswith(FIGURE_PREFIXES):
            os.remove(os.path.join(out, name))
    sections, written = [], []
    for heading, figures in groups:
        kept = []
        for title, name, figure in figures:
            if figure is None:
                notes.append(f"{title}: the run has no data for it ({name}).")
                continue
            written.append(plots.save(figure, os.path.join(out, name)))
            kept.append((title, name, written[-1]))
        sections.append((heading, kept))
    return sections, written


def write_relation_report(run_dir):
    """The report of a relation run (paper 004 §5, `training.relation`): its loss per epoch
    and the per-trait balanced accuracy of `metrics.json`, as `report.md` and `report.html`
    in `RUN_DIR/report/`. Returns `write_report`'s dict."""
    from portrait_keras.traits import TRAITS

    run_dir = os.fspath(run_dir)
    config_path, metrics_path = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "metrics.json")
    history_path = os.path.join(run_dir, "history.csv")
    config = _read_json(config_path) if os.path.isfile(config_path) else {}
    metrics = _read_json(metrics_path) if os.path.isfile(metrics_path) else {}
    history = plots.read_history(history_path) if os.path.isfile(history_path) else None
    traits = config.get("traits") or list(TRAITS)
    notes = [] if history is not None else ["Training curve: no history.csv in the run folder."]
    curve = None if history is None else plots.relation_loss_curve(history)
    groups = [
        ("Training curve", [("Loss", "curves_loss.png", curve)]),
        ("Per-trait scores", [("Balanced accuracy", "f1_bars.png", plots.trait_bars(metrics, traits))]),
    ]
    sections, written = _save_figures(os.path.join(run_dir, REPORT_FOLDER), groups, notes)
    tables = []
    rows = [
        (t, float(metrics[f"balanced_accuracy_{t}"]), float(metrics.get(f"positive_share_{t}", float("nan"))))
        for t in traits
        if f"balanced_accuracy_{t}" in metrics
    ]
    if rows:
        header = ("trait", "balanced acc.", "positives")
        tables.append(Section("Balanced accuracy per trait (paper 004 eq. 18)", header, rows))
        if "balanced_accuracy_mean" in metrics:
            tables.append(Section("Overall", ("metric", "value"), [("mean", float(metrics["balanced_accuracy_mean"]))]))
    m, t, d = (config.get(k, {}) for k in ("model", "train", "data"))
    size = "×".join(str(s) for s in d.get("image_size", []))
    summary = [
        ("experiment", config.get("name")),
        ("model", f"relation (paper 004 §5): {m.get('backbone')} backbone tied across the two people"),
        ("training", f"{t.get('epochs')} epochs, batch {d.get('batch_size')}, {size} crops"),
        ("data", f"{config.get('data_csv')} ({config.get('pair_form')} pairs)"),
    ]
    if "test_pairs" in metrics:
        summary.append(("scored on", f"{int(metrics['test_pairs'])} test pairs"))
    return _write_pages(run_dir, config, summary, tables, sections, notes, written)
