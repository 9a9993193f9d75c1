"""SynthPortrait: determinism, identity consistency, split rules, label statistics, cache."""

import filecmp
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from portrait_keras.data import synthetic
from portrait_keras.data.annotations import read_annotations
from portrait_keras.data.montage import montage
from portrait_keras.schema import Schema, default_schema


def read_table(csv_path):
    return pd.read_csv(csv_path, dtype=str, keep_default_na=False)


def plan_table(identities=120, images_per_identity=12, seed=0):
    """The rows of a dataset without drawing it (fast)."""
    runs = synthetic._plan(identities, images_per_identity, seed)
    return pd.DataFrame([row for run in runs for row in run["rows"]])


def assert_same_tree(a, b):
    comparison = filecmp.dircmp(a, b)
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files
    for sub in comparison.common_dirs:
        assert_same_tree(os.path.join(a, sub), os.path.join(b, sub))


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    first = synthetic.generate(tmp_path / "a", identities=4, seed=3, images_per_identity=4, workers=1)
    second = synthetic.generate(tmp_path / "b", identities=4, seed=3, images_per_identity=4, workers=2)
    assert first.read_bytes() == second.read_bytes()
    for path in read_table(first)["path"]:
        assert filecmp.cmp(tmp_path / "a" / path, tmp_path / "b" / path, shallow=False), path
    assert_same_tree(tmp_path / "a", tmp_path / "b")
    rows = read_table(first).values.tolist()
    assert rows == plan_table(4, 4, seed=3)[list(synthetic.COLUMNS)].values.tolist()
    assert rows != plan_table(4, 4, seed=4)[list(synthetic.COLUMNS)].values.tolist()


def test_files_schema_and_image_format(tiny_synth, tiny_annotations):
    assert Schema.load(tiny_synth.parent / "schema.json") == default_schema()
    table = read_table(tiny_synth)
    assert list(table.columns) == list(synthetic.COLUMNS)
    for path in tiny_annotations.paths("query")[:5]:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (128, 256)


def test_identity_keeps_its_appearance_labels(tiny_synth):
    table = read_table(tiny_synth)
    known = table[table["id"] != "-1"]
    for column in synthetic.ATTRIBUTE_TASKS:
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
    for column in synthetic.ATTRIBUTE_TASKS + synthetic.SCENE_TASKS:
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


def test_cli_and_montage(tmp_path, capsys):
    argv = [str(tmp_path / "cli"), "--identities", "3", "--images-per-identity", "2", "--workers", "1"]
    assert synthetic.main(argv) == 0
    assert "images/s" in capsys.readouterr().out
    csv_path = tmp_path / "cli" / "annotations.csv"
    read_annotations(csv_path)
    out = montage(csv_path, tmp_path / "montage.png", n=4, columns=2)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_default_dataset_is_generated_once(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "DEFAULT_IDENTITIES", 3)
    monkeypatch.setattr(synthetic, "DEFAULT_IMAGES_PER_IDENTITY", 2)
    monkeypatch.setenv("PORTRAIT_KERAS_CACHE", str(tmp_path / "cache"))
    csv_path = synthetic.default_dataset()
    name = f"synthportrait-{synthetic.VERSION}-seed0-3ids-2per"  # another size is another folder
    assert csv_path == tmp_path / "cache" / name / "annotations.csv"
    assert sorted(os.listdir(tmp_path / "cache")) == [name]

    def fail(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(synthetic, "generate", fail)
    assert synthetic.default_dataset() == csv_path
    assert synthetic.default_dataset(tmp_path / "cache") == csv_path


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="Received: identities=1"):
        synthetic.generate(tmp_path, identities=1)
    with pytest.raises(ValueError, match="Received: images_per_identity=1"):
        synthetic.generate(tmp_path, identities=3, images_per_identity=1)
    with pytest.raises(ValueError, match="Received: workers=0"):
        synthetic.generate(tmp_path, identities=3, workers=0)
