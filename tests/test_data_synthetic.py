"""SynthPortrait: determinism, identity consistency, split rules, label statistics, figure scaling, cache."""

import dataclasses
import filecmp
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from portrait_keras.data.annotations import read_annotations
from portrait_keras.data.montage import montage
from portrait_keras.data.synthportrait import dataset, draw, plan
from portrait_keras.schema import Schema, default_schema


def read_table(csv_path):
    return pd.read_csv(csv_path, dtype=str, keep_default_na=False)


def plan_table(identities=120, images_per_identity=12, seed=0):
    """The rows of a dataset without drawing it (fast)."""
    runs = plan.plan_runs(identities, images_per_identity, seed)
    assert [run.index for run in runs] == list(range(len(runs)))
    return pd.DataFrame([row for run in runs for row in run.rows])


def assert_same_tree(a, b):
    comparison = filecmp.dircmp(a, b)
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files
    for sub in comparison.common_dirs:
        assert_same_tree(os.path.join(a, sub), os.path.join(b, sub))


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    first = dataset.generate(tmp_path / "a", identities=4, seed=3, images_per_identity=4, workers=1)
    second = dataset.generate(tmp_path / "b", identities=4, seed=3, images_per_identity=4, workers=2)
    assert first.read_bytes() == second.read_bytes()
    for path in read_table(first)["path"]:
        assert filecmp.cmp(tmp_path / "a" / path, tmp_path / "b" / path, shallow=False), path
    assert_same_tree(tmp_path / "a", tmp_path / "b")
    rows = read_table(first).values.tolist()
    assert rows == plan_table(4, 4, seed=3)[list(dataset.COLUMNS)].values.tolist()
    assert rows != plan_table(4, 4, seed=4)[list(dataset.COLUMNS)].values.tolist()


def test_files_schema_and_image_format(tiny_synth, tiny_annotations):
    assert Schema.load(tiny_synth.parent / "schema.json") == default_schema()
    table = read_table(tiny_synth)
    assert list(table.columns) == list(dataset.COLUMNS)
    for path in tiny_annotations.paths("query")[:5]:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (128, 256)


def test_identity_keeps_its_appearance_labels(tiny_synth):
    table = read_table(tiny_synth)
    known = table[table["id"] != "-1"]
    for column in plan.ATTRIBUTE_TASKS:
        values = known[known[column] != ""].groupby("id")[column].nunique()
        assert (values == 1).all(), column


def test_split_rules(tiny_annotations):
    ann = tiny_annotations
    train, query, gallery = (ann.labels(s)["id"] for s in ("train", "query", "gallery"))
    assert not set(train[train >= 0]) & set(gallery[gallery >= 0])
    assert set(query) <= set(gallery[gallery >= 0]) and (query >= 0).all()
    query_groups, gallery_groups = ann.groups("query"), ann.groups("gallery")
    for ident, group in zip(query, query_groups):
        other_run = (gallery == ident) & (gallery_groups != group)
        assert other_run.any(), f"query id {ident} has no gallery positive outside group {group}"
    near_duplicates = [g for g in set(query_groups) if g in set(gallery_groups)]
    assert near_duplicates, "no query has a near-duplicate in the gallery"
    for group in near_duplicates:
        assert set(gallery[gallery_groups == group]) == set(query[query_groups == group])


def test_runs_are_consecutive_frames_of_one_person_and_scene():
    table = plan_table(24, 8)
    for _, run in table.groupby("group"):
        assert run["id"].nunique() == 1 and run["source"].nunique() == 1
        frames = run["frame"].astype(int).to_numpy()
        assert len(set(np.diff(frames))) <= 1 and (np.diff(frames) > 0).all()
    lengths = table.groupby("group").size()
    assert lengths.min() >= 1 and lengths.max() <= 4 and (lengths > 1).mean() > 0.5
    per_id = table[table["id"] != "-1"].groupby("id")["group"].nunique()
    assert (per_id >= 2).all()


def test_label_statistics_are_realistic():
    table = plan_table()
    assert 3000 <= len(table) <= 4000
    assert 0.55 < (table["id"] == "-1").mean() < 0.65
    for column in plan.ATTRIBUTE_TASKS + plan.SCENE_TASKS:
        assert 0.07 < (table[column] == "").mean() < 0.13, column
    expressions = table.loc[table["expression"] != "", "expression"]
    assert 0.1 < expressions.str.contains(";").mean() < 0.2
    for column in ("expression", "body", "arm", "age"):
        counts = table.loc[table[column] != "", column].value_counts(normalize=True)
        assert counts.iloc[0] > 0.3, f"{column} should have a clear majority class"
    per_id = table[table["id"] != "-1"].groupby("id").size().sort_values(ascending=False)
    assert per_id.iloc[0] > 5 * per_id.median(), "ids should be long-tailed"
    splits = table.groupby("split")["id"].apply(lambda s: (s == "-1").mean())
    assert splits["query"] == 0 and splits["train"] > 0.5 and splits["gallery"] > 0.5


FIGURE_ATTRS = {"gender": "female", "age": "elderly", "physique": "heavy", "height": "tall"}


def test_scaled_figure_scales_every_length_and_nothing_else():
    rng = np.random.default_rng(0)
    app = draw.appearance(rng, FIGURE_ATTRS)
    sk = draw.skeleton(app, "walking", "one_arm_raised", rng)
    for figure in (app, sk):
        assert figure.scaled(1) == figure
        double = figure.scaled(2)
        assert double != figure and type(double) is type(figure)
        for field in dataclasses.fields(figure):
            before, after = getattr(figure, field.name), getattr(double, field.name)
            if field.metadata.get("length"):
                assert np.array_equal(np.asarray(after), 2 * np.asarray(before)), field.name
                assert type(after) is type(before), field.name  # points stay tuples in lists
            else:
                assert after == before, field.name
    double = app.scaled(2)
    assert (double.size, double.leg, double.arm_w) == (2 * app.size, 2 * app.leg, 2 * app.arm_w)
    assert double.size == pytest.approx(double.head_h + double.torso_h + double.leg + 0.02 * double.size)
    # Colours, styles and the cloth pattern's pixel period are not lengths of the figure.
    assert (double.skin, double.hair, double.period, double.bag_side) == (app.skin, app.hair, app.period, app.bag_side)
    assert sk.scaled(2).knees == [(2 * x, 2 * y) for x, y in sk.knees] and sk.scaled(2).side == sk.side
    assert app.size == draw.appearance(np.random.default_rng(0), FIGURE_ATTRS).size  # the original is untouched


def test_draw_run_gives_one_image_per_row():
    run = plan.plan_runs(4, 4, seed=1)[0]
    images = draw.draw_run(run, seed=1)
    assert len(images) == len(run.rows)
    assert all(image.mode == "RGB" and image.size == (draw.WIDTH, draw.HEIGHT) == (128, 256) for image in images)
    assert [image.tobytes() for image in images] == [image.tobytes() for image in draw.draw_run(run, seed=1)]


def test_cli_and_montage(tmp_path, capsys):
    argv = [str(tmp_path / "cli"), "--identities", "3", "--images-per-identity", "2", "--workers", "1"]
    assert dataset.main(argv) == 0
    assert "images/s" in capsys.readouterr().out
    csv_path = tmp_path / "cli" / "annotations.csv"
    read_annotations(csv_path)
    out = montage(csv_path, tmp_path / "montage.png", n=4, columns=2)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_default_dataset_is_generated_once(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, "DEFAULT_IDENTITIES", 3)
    monkeypatch.setattr(dataset, "DEFAULT_IMAGES_PER_IDENTITY", 2)
    monkeypatch.setenv("PORTRAIT_KERAS_CACHE", str(tmp_path / "cache"))
    csv_path = dataset.default_dataset()
    name = f"synthportrait-{dataset.VERSION}-seed0-3ids-2per"  # another size is another folder
    assert csv_path == tmp_path / "cache" / name / "annotations.csv"
    assert sorted(os.listdir(tmp_path / "cache")) == [name]

    def fail(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(dataset, "generate", fail)
    assert dataset.default_dataset() == csv_path
    assert dataset.default_dataset(tmp_path / "cache") == csv_path


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="Received: identities=1"):
        dataset.generate(tmp_path, identities=1)
    with pytest.raises(ValueError, match="Received: images_per_identity=1"):
        dataset.generate(tmp_path, identities=3, images_per_identity=1)
    with pytest.raises(ValueError, match="Received: workers=0"):
        dataset.generate(tmp_path, identities=3, workers=0)
