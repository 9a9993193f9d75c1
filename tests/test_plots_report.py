"""Figures (training curves, scores, confusion matrices, rank lists) and the run report."""

import base64
import io
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from portrait_keras.cli import main
from portrait_keras.reporting import plots
from portrait_keras.reporting.report import confusion_counts, confusion_matrices, write_report
from portrait_keras.schema import SINGLE, Schema


def png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def drawn(path):
    """Whether a PNG shows something: lines or text in more than a few colours, not a blank page."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    return len(colours) > 8 and (pixels != 255).any(axis=1).mean() > 0.01


def line_labels(ax):
    return [line.get_label() for line in ax.get_lines()]


@pytest.fixture(scope="module")
def schema(smoke_run_dir):
    return Schema.load(smoke_run_dir / "schema.json")


@pytest.fixture(scope="module")
def history(smoke_run_dir):
    return plots.read_history(smoke_run_dir / "history.csv")


def test_curves_of_a_real_history(history, schema, tmp_path):
    assert len(history) == 2
    loss = plots.loss_curves(history, schema)
    total, per_task = loss.axes
    assert line_labels(total) == ["total"]
    assert line_labels(per_task) == list(schema.names)  # loss_<task> for every task, schema order
    np.testing.assert_allclose(per_task.get_lines()[0].get_ydata(), history["loss_id"])
    np.testing.assert_array_equal(per_task.get_lines()[0].get_xdata(), [1, 2])  # epochs from 1
    s = plots.uncertainty_curves(history, schema)
    assert line_labels(s.axes[0]) == list(schema.names)
    left, right = plots.score_curves(history, schema).axes
    assert line_labels(left) == ["piq", "reid", "appearance", "posture", "emotion"]
    assert line_labels(right) == ["reid_mAP", "reid_rank1"] + [f"f1_{t.name}" for t in schema.classification_tasks]
    for name, figure in (("loss", loss), ("s", s)):
        path = plots.save(figure, tmp_path / f"{name}.png")
        assert drawn(path) and png_size(path) == (1000, 400)


def test_val_columns_are_drawn_dashed_and_empty_ones_left_out(history, schema):
    # The real history has no val_ column (no validation data, and no all-NA twins): none is drawn.
    assert not [c for c in history.columns if c.startswith("val_")]
    assert not any("(val)" in label for label in line_labels(plots.loss_curves(history, schema).axes[1]))
    with_val = history.copy()
    for task in schema.names:
        with_val[f"val_loss_{task}"] = history[f"loss_{task}"] * 1.5
    with_val["val_piq"] = history["piq"] / 2
    per_task = plots.loss_curves(with_val, schema).axes[1]
    dashed = [line for line in per_task.get_lines() if line.get_label().endswith("(val)")]
    assert len(dashed) == len(schema.names) and all(line.get_linestyle() == "--" for line in dashed)
    np.testing.assert_allclose(dashed[0].get_ydata(), history["loss_id"] * 1.5)
    left = plots.score_curves(with_val, schema).axes[0]
    assert "piq (val)" in line_labels(left)


def test_a_run_without_uncertainty_weighting_has_no_s_curve(history, schema):
    average = history.drop(columns=[c for c in history.columns if c.startswith(("s_", "val_s_"))])
    assert plots.uncertainty_curves(average, schema) is None
    assert plots.loss_curves(average, schema) is not None


def test_f1_bars_show_the_final_metrics(smoke_run_dir, schema, tmp_path):
    metrics = json.loads((smoke_run_dir / "metrics.json").read_text())
    figure = plots.f1_bars(metrics, schema)
    ax = figure.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    expected = [metrics["reid_mAP"], metrics["reid_rank1"]]
    expected += [metrics[f"f1_{t.name}"] for t in schema.classification_tasks]
    np.testing.assert_allclose(heights, expected)
    assert [t.get_text() for t in ax.get_xticklabels()][2:] == [t.name for t in schema.classification_tasks]
    piq_line = [line for line in ax.get_lines() if line.get_label().startswith("PIQ")]
    assert piq_line and piq_line[0].get_ydata()[0] == pytest.approx(metrics["piq"])
    assert png_size(plots.save(figure, tmp_path / "f1.png")) == (800, 400)
    assert plots.f1_bars({}, schema) is None


def test_confusion_counts_skip_unknown_labels():
    counts = confusion_counts([0, 0, 1, 2, -1, 2, 2], [0, 1, 1, 0, 2, 2, 2], 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_confusion_matrices_count_the_model_decisions_on_the_test_split(smoke_run_dir, tiny_annotations):
    from portrait_keras.data.images import decode

    model = keras.models.load_model(smoke_run_dir / "model.keras")
    matrices = confusion_matrices(model, tiny_annotations)
    singles = [t for t in tiny_annotations.schema.tasks if t.kind == SINGLE]
    assert list(matrices) == [t.name for t in singles]
    paths = list(tiny_annotations.paths("query")) + list(tiny_annotations.paths("gallery"))
    images = np.stack([decode(p, (128, 64)).numpy() for p in paths]).astype("float32")
    outputs = model.predict(images, verbose=0)
    for task in singles:
        truth = np.concatenate([tiny_annotations.labels(s)[task.name] for s in ("query", "gallery")])
        pred = np.argmax(outputs[task.name], axis=-1)
        known = truth >= 0
        c = task.num_classes
        expected, _, _ = np.histogram2d(truth[known], pred[known], bins=c, range=[[0, c], [0, c]])
        np.testing.assert_array_equal(matrices[task.name], expected.astype(int), err_msg=task.name)


def test_rank_list_borders_say_whether_the_identity_matches(tiny_annotations, tmp_path):
    paths = list(tiny_annotations.paths("gallery")[:4])
    figure = plots.rank_list(paths[0], paths[1:], [0.1, 0.2, 0.3], [True, False, None], query_id=3, ids=[3, 4, None])
    path = plots.save(figure, tmp_path / "rank.png")
    width, height = png_size(path)
    assert (width, height) == (4 * 140, 340)
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    expected = ["#000000", plots.MATCH_COLORS[True], plots.MATCH_COLORS[False], plots.MATCH_COLORS[None]]
    for ax, color in zip(figure.axes, expected):
        box = ax.get_window_extent()  # display pixels, origin at the bottom
        row = height - int((box.y0 + box.y1) / 2)
        rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
        assert np.abs(pixels[row, int(round(box.x0))] - rgb).max() <= 12, (color, pixels[row, int(box.x0)])
    assert [ax.get_title() for ax in figure.axes] == ["query\nid 3", "#1  0.100\nid 3", "#2  0.200\nid 4", "#3  0.300"]


def referenced_images(text, pattern):
    return set(re.findall(pattern, text))


def test_report_command_writes_pages_that_show_every_figure(smoke_run_dir, schema, capsys):
    assert main(["report", str(smoke_run_dir)]) == 0
    md_path, html_path = capsys.readouterr().out.split()
    folder = smoke_run_dir / "report"
    assert md_path == str(folder / "report.md") and html_path == str(folder / "report.html")
    pngs = {n for n in os.listdir(folder) if n.endswith(".png")}
    singles = [t.name for t in schema.tasks if t.kind == SINGLE]
    assert pngs == {"curves_loss.png", "curves_uncertainty.png", "curves_scores.png", "f1_bars.png"} | {
        f"confusion_{t}.png" for t in singles
    }
    md = (folder / "report.md").read_text()
    html = (folder / "report.html").read_text()
    assert referenced_images(md, r"\]\(([^)]+\.png)\)") == pngs
    for name in pngs:
        assert drawn(folder / name), name
    assert png_size(folder / "confusion_gender.png") == (600, 500)
    # The HTML carries its figures: every image is a data URI of its PNG, none a file reference.
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == len(pngs) and not re.search(r'(?:src|href)="[^"]*\.png', html)
    embedded = [base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True) for src in sources]
    assert sorted(embedded) == sorted((folder / name).read_bytes() for name in pngs)
    with Image.open(io.BytesIO(embedded[0])) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] > 100
    metrics = json.loads((smoke_run_dir / "metrics.json").read_text())
    for key, value in metrics.items():
        if key.startswith("par_"):
            continue
        assert f"| {key} | {value:.4f} |" in md
        assert f'<td>{key}</td><td class="v">{value:.4f}</td>' in html
    # The attribute metrics: one row per task, columns mA, accuracy, precision, recall, F1.
    for task in ("gender", "expression"):
        values = [metrics.get(f"par_{m}_{task}") for m in ("mA", "accuracy", "precision", "recall", "f1")]
        cells = ["-" if v is None else f"{v:.4f}" for v in values]
        assert f"| {task} | {' | '.join(cells)} |" in md
        assert f"<tr><td>{task}</td>" + "".join(f'<td class="v">{c}</td>' for c in cells) + "</tr>" in html
    assert md.index("| piq |") < md.index("| reid_mAP |") < md.index("| reid_micro_mAP |") < md.index("| f1_gender |")
    assert "### Re-id, Market-1501" in md and "<h3>Re-id, paper: Macro" in html


def test_report_of_a_run_without_its_data(smoke_run_dir, tiny_synth, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("schema.json", "metrics.json"):
        shutil.copy(smoke_run_dir / name, run / name)
    config = json.loads((smoke_run_dir / "config.json").read_text())
    config["data_csv"] = str(tmp_path / "moved" / "annotations.csv")
    (run / "config.json").write_text(json.dumps(config))
    history = plots.read_history(smoke_run_dir / "history.csv")
    history.drop(columns=[c for c in history.columns if "s_" in c]).to_csv(run / "history.csv", index=False)
    (run / "report").mkdir()
    (run / "report" / "confusion_old.png").write_bytes(b"stale")

    written = write_report(run)
    pngs = sorted(n for n in os.listdir(run / "report") if n.endswith(".png"))
    assert pngs == ["curves_loss.png", "curves_scores.png", "f1_bars.png"]
    assert sorted(os.path.basename(p) for p in written["figures"]) == pngs
    md = (run / "report" / "report.md").read_text()
    assert referenced_images(md, r"\]\(([^)]+\.png)\)") == set(pngs)
    assert "no model.keras" in md and "curves_uncertainty.png" in md.split("## Not drawn")[1]

    # With the model and the data given on the command line, the confusion matrices come back.
    shutil.copy(smoke_run_dir / "model.keras", run / "model.keras")
    assert main(["report", str(run), "--data", str(tiny_synth)]) == 0
    capsys.readouterr()
    assert "confusion_gender.png" in os.listdir(run / "report")


def test_report_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path) in err and "Traceback" not in err


@pytest.fixture
def run_with_a_bad_test_image(smoke_run_dir, tiny_synth, tmp_path):
    """A copy of the smoke run whose data has one zero-byte gallery image; its line and path."""
    data = tmp_path / "data"
    shutil.copytree(os.path.dirname(tiny_synth), data)
    lines = (data / "annotations.csv").read_text().splitlines()
    line = next(i for i, row in enumerate(lines, 1) if ",gallery," in row)
    path = lines[line - 1].split(",")[0]
    (data / path).write_bytes(b"")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("schema.json", "metrics.json", "model.keras", "history.csv"):
        shutil.copy(smoke_run_dir / name, run / name)
    config = json.loads((smoke_run_dir / "config.json").read_text())
    config["data_csv"] = str(data / "annotations.csv")
    (run / "config.json").write_text(json.dumps(config))
    return run, line, path


def test_a_bad_test_image_leaves_the_report_standing(run_with_a_bad_test_image, capsys):
    run, line, path = run_with_a_bad_test_image
    (run / "report").mkdir()
    (run / "report" / "confusion_gender.png").write_bytes(b"earlier report")
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    md = (run / "report" / "report.md").read_text()
    assert f":{line}:" in md and path in md and "--skip-bad-images" in md
    assert not any(n.startswith("confusion_") for n in os.listdir(run / "report"))
    assert "f1_bars.png" in os.listdir(run / "report")


def test_skip_bad_images_reaches_the_report_and_the_evaluation(run_with_a_bad_test_image, capsys):
    run, line, path = run_with_a_bad_test_image
    assert main(["report", str(run), "--skip-bad-images"]) == 0
    assert "confusion_gender.png" in os.listdir(run / "report")

    # The matrices count every known label of the test split but the unreadable image's.
    from portrait_keras.data import read_annotations

    annotations = read_annotations(json.loads((run / "config.json").read_text())["data_csv"])
    model = keras.models.load_model(run / "model.keras")
    counts = confusion_matrices(model, annotations, skip_bad_images=True)
    known = sum(int((annotations.labels(s)["age"] >= 0).sum()) for s in ("query", "gallery"))
    bad = annotations.table.loc[line, "age"]
    assert counts["age"].sum() == known - (0 if isinstance(bad, float) or bad == "" else 1)

    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert f":{line}:" in err and "--skip-bad-images" in err
    assert main(["evaluate", str(run), "--skip-bad-images", "--json"]) == 0
    assert "piq" in json.loads(capsys.readouterr().out)
    # The run's own setting is the default.
    config = json.loads((run / "config.json").read_text())
    config["data"]["skip_bad_images"] = True
    (run / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(run), "--json"]) == 0


def test_rank_list_tiles_decode_as_the_model_does(tmp_path, monkeypatch):
    from portrait_keras.errors import InputError

    gray = np.add.outer(np.arange(96) * 2, np.arange(48) * 5).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.tiff")  # not clipped to white
    tile16, tile8 = (plots._tile(tmp_path / name, (64, 32)) for name in ("gray16.tiff", "gray8.png"))
    np.testing.assert_array_equal(tile16, tile8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a small TIFF plays a huge one
    with pytest.raises(InputError, match=f"{tmp_path / 'gray16.tiff'}: .*too large"):
        plots.rank_list(str(tmp_path / "gray8.png"), [str(tmp_path / "gray16.tiff")], [0.1])
