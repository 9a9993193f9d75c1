"""SynthPortrait with three label sources (`portrait-keras synth --sources 3`) and its truth table."""

import csv

import pytest

from portrait_keras.data import read_annotations
from portrait_keras.data.synthportrait import generate
from portrait_keras.data.synthportrait.plan import ATTRIBUTE_TASKS, SCENE_TASKS
from portrait_keras.data.synthportrait.sources import SOURCE_COLUMN, SOURCE_TASKS, TRUTH_FILE

TASKS = ATTRIBUTE_TASKS + SCENE_TASKS


@pytest.fixture(scope="module")
def sourced(tmp_path_factory):
    """(annotations.csv, truth.csv) of a tiny three-source SynthPortrait."""
    out = tmp_path_factory.mktemp("sources")
    csv_path = generate(out, identities=16, seed=0, images_per_identity=8, workers=1, sources=3)
    return csv_path, out / TRUTH_FILE


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_each_source_labels_only_its_tasks_and_truth_has_every_label(sourced):
    rows, truth = (_rows(p) for p in sourced)
    assert [r["path"] for r in rows] == [t["path"] for t in truth]
    assert {r[SOURCE_COLUMN] for r in rows} == set(SOURCE_TASKS)
    for row, true in zip(rows, truth):
        assert all(true[t] for t in TASKS)  # the truth has no gap
        for task in TASKS:
            if task not in SOURCE_TASKS[row[SOURCE_COLUMN]]:
                assert row[task] == "", (row["path"], task)
            elif row[task]:
                assert row[task] == true[task]  # a given label is the true one
        assert {k: row[k] for k in ("split", "id", "group")} == {k: true[k] for k in ("split", "id", "group")}


def test_an_identity_keeps_one_source_and_every_task_is_labelled_somewhere(sourced):
    rows = _rows(sourced[0])
    by_id = {}
    for row in rows:
        if row["id"] != "-1":
            by_id.setdefault(row["id"], set()).add(row[SOURCE_COLUMN])
    assert all(len(s) == 1 for s in by_id.values())
    train = [r for r in rows if r["split"] == "train"]
    for task in TASKS:
        share = sum(bool(r[task]) for r in train) / len(train)
        assert 0.05 < share < 0.95, (task, share)  # structured gaps, never all or nothing


def test_the_images_and_plan_are_those_of_the_same_seed_without_sources(sourced, tmp_path):
    plain = _rows(generate(tmp_path, identities=16, seed=0, images_per_identity=8, workers=1))
    truth = _rows(sourced[1])
    assert [r["path"] for r in plain] == [r["path"] for r in truth]
    for p, t in zip(plain, truth):
        assert all(p[k] in ("", t[k]) for k in TASKS)  # the plain labels (with their gaps) are the truth
    assert (tmp_path / "images" / "000" / "000000_0.jpg").read_bytes() == (
        sourced[0].parent / "images" / "000" / "000000_0.jpg"
    ).read_bytes()


def test_both_tables_read_as_annotations(sourced):
    given, truth = (read_annotations(p) for p in sourced)
    assert given.schema == truth.schema
    assert (given.labels("train")["body"] == -1).mean() > 0.5
    assert (truth.labels("train")["body"] >= 0).all()


def test_an_unsupported_source_count_is_one_error_line(tmp_path, capsys):
    from portrait_keras.data.synthportrait.dataset import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "x"), "--sources", "2"])
    assert exit_info.value.code == 2
    assert "--sources: invalid choice: 2 (choose from 0, 3)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Received: sources=2"):
        generate(tmp_path / "y", identities=4, sources=2)
