"""Several datasets trained as one (`portrait_keras.data.sources`, `--data A --data B`)."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from portrait_keras.commands import train as run
from portrait_keras.data.annotations import UNKNOWN, read_annotations
from portrait_keras.data.sources import read_sources, union_schema
from portrait_keras.schema import Schema, SchemaError, Task


@pytest.fixture(scope="module")
def two_datasets(tiny_synth, tmp_path_factory):
    """A/annotations.csv (ids, gender, expression) and B/annotations.csv (ids, age, body), each
    beside a copy of the tiny SynthPortrait's images: A has the first half of its identities,
    B the second half with its ids renumbered to collide with A's, so only namespacing keeps
    them apart. Neither has a schema.json: their columns decide their tasks."""
    with open(tiny_synth, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ids = sorted({int(r["id"]) for r in rows if r["id"] != "-1"})
    half = set(ids[: len(ids) // 2])
    shift = min(ids[len(ids) // 2 :]) - min(ids)
    top = tmp_path_factory.mktemp("two")
    a_rows = [r for r in rows if r["id"] != "-1" and int(r["id"]) in half]
    b_rows = [r for r in rows if r["id"] == "-1" or int(r["id"]) not in half]
    paths = {}
    for name, part, columns in (("A", a_rows, ("gender", "expression")), ("B", b_rows, ("age", "body"))):
        shutil.copytree(os.path.join(os.path.dirname(tiny_synth), "images"), top / name / "images")
        path = os.fspath(top / name / "annotations.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "split", "id", *columns])
            for r in part:
                ident = int(r["id"])
                if name == "B" and ident != -1:
                    ident -= shift
                writer.writerow([r["path"], r["split"], ident, *(r[c] for c in columns)])
        paths[name] = path
    return paths["A"], paths["B"]


def test_tasks_are_the_union_and_each_dataset_keeps_its_labels(two_datasets):
    a_csv, b_csv = two_datasets
    joined = read_sources([a_csv, b_csv])
    a, b = read_annotations(a_csv), read_annotations(b_csv)
    assert joined.schema.names == ("id", "gender", "age", "body", "expression")
    assert [name for name, _ in joined.sources] == ["A", "B"]
    for split in ("train", "query", "gallery"):
        n_a = a.num_images(split)
        assert joined.num_images(split) == n_a + b.num_images(split)
        labels = joined.labels(split)
        np.testing.assert_array_equal(labels["gender"][:n_a], a.labels(split)["gender"])
        assert (labels["gender"][n_a:] == UNKNOWN).all() and (labels["age"][:n_a] == UNKNOWN).all()
        np.testing.assert_array_equal(labels["age"][n_a:], b.labels(split)["age"])
        assert (labels["expression"][n_a:] == UNKNOWN).all()
        np.testing.assert_array_equal(joined.paths(split), np.concatenate([a.paths(split), b.paths(split)]))


def test_identities_are_kept_apart_per_dataset(two_datasets):
    a_csv, b_csv = two_datasets
    joined = read_sources([a_csv, b_csv])
    a, b = read_annotations(a_csv), read_annotations(b_csv)
    assert set(a.train_ids) & set(b.train_ids)  # the fixture makes the raw ids collide
    assert joined.train_ids.size == a.train_ids.size + b.train_ids.size
    for split in ("train", "query", "gallery"):
        n_a = a.num_images(split)
        ids = joined.labels(split)["id"]
        known_a, known_b = ids[:n_a][ids[:n_a] != UNKNOWN], ids[n_a:][ids[n_a:] != UNKNOWN]
        assert not set(known_a) & set(known_b)
        # Same person within a dataset = same new id, and unknown stays unknown.
        raw_b = b.labels(split)["id"]
        assert ((ids[n_a:] == UNKNOWN) == (raw_b == UNKNOWN)).all()
        for value in np.unique(raw_b[raw_b != UNKNOWN]):
            assert np.unique(ids[n_a:][raw_b == value]).size == 1


def test_one_dataset_reads_as_read_annotations(two_datasets):
    a_csv, _ = two_datasets
    one, plain = read_sources([a_csv]), read_annotations(a_csv)
    assert one.schema == plain.schema and one.csv_path == plain.csv_path
    np.testing.assert_array_equal(one.labels("train")["id"], plain.labels("train")["id"])
    assert [n for n, _ in one.sources] == ["A"]


def test_class_lists_are_joined_and_conflicts_are_named():
    red = Task("coat", "appearance", "single", ("red", "blue"))
    green = Task("coat", "appearance", "single", ("blue", "green"))
    joined = union_schema([Schema((red,)), Schema((green,))], ["a.csv", "b.csv"])
    assert joined.task("coat").classes == ("red", "blue", "green")
    multi = Task("coat", "appearance", "multi", ("red", "blue"))
    with pytest.raises(SchemaError, match=r"'coat' is single/appearance in a.csv but multi/appearance in b.csv"):
        union_schema([Schema((red,)), Schema((multi,))], ["a.csv", "b.csv"])
    pid = Task("pid", "appearance", "identity")
    ident = Task("id", "appearance", "identity")
    with pytest.raises(SchemaError, match="identity task differently"):
        union_schema([Schema((ident,)), Schema((pid,))], ["a.csv", "b.csv"])


def test_a_dataset_labelled_with_more_classes_is_read_with_the_joint_list(tmp_path):
    for name, classes, value in (("a", ["red", "blue"], "red"), ("b", ["blue", "green"], "green")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "x.jpg").touch()
        schema = {"tasks": [{"name": "coat", "aspect": "appearance", "kind": "single", "classes": classes}]}
        (folder / "schema.json").write_text(json.dumps(schema))
        (folder / "annotations.csv").write_text(f"path,split,coat\nx.jpg,train,{value}\n")
    joined = read_sources([tmp_path / "a" / "annotations.csv", tmp_path / "b" / "annotations.csv"])
    assert joined.schema.task("coat").classes == ("red", "blue", "green")
    np.testing.assert_array_equal(joined.labels("train")["coat"], [0, 2])
    assert joined.sources[1][1].labels("train")["coat"].tolist() == [2]  # b read with the joint list


def test_the_command_line_names_a_bad_second_dataset_before_anything_starts(two_datasets, tmp_path, capsys):
    a_csv, _ = two_datasets
    bad = tmp_path / "bad.csv"
    bad.write_text("path,split,id,age\nnope.jpg,train,1,ancient\n")
    argv = ["smoke", "--data", a_csv, "--data", str(bad), "--run-dir", str(tmp_path / "run")]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: column 'age': value 'ancient'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert run.main(["smoke", "--data", a_csv, "--data", a_csv, "--run-dir", str(tmp_path / "run")]) == 2
    assert "is given twice" in capsys.readouterr().err


def test_run_dir_is_named_after_every_dataset(two_datasets):
    a_csv, b_csv = two_datasets
    config = run.build_config(run.parse_args(["smoke", "--data", a_csv, "--data", b_csv]))
    assert config.data.csv == a_csv and config.data.extra_csvs == (b_csv,)
    assert run.default_run_dir(config) == os.path.join("runs", "smoke-A+B")


@pytest.mark.slow
def test_training_on_two_datasets_evaluates_each(two_datasets, tmp_path, capsys):
    a_csv, b_csv = two_datasets
    run_dir = tmp_path / "run"
    argv = ["smoke", "--data", a_csv, "--data", b_csv, "--epochs", "1", "--run-dir", str(run_dir), "--quiet"]
    assert run.main(argv) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "Per dataset (metrics_by_source.json" in out and "\n  B " in out
    assert "2 datasets trained as one" in err and "B: tasks id, age, body" in err
    by_source = json.loads((run_dir / "metrics_by_source.json").read_text())
    assert set(by_source) == {"A", "B"}
    assert "f1_gender" in by_source["A"] and "f1_gender" not in by_source["B"]
    assert "f1_age" in by_source["B"] and "reid_mAP" in by_source["B"]
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["data"]["extra_csvs"] == [b_csv] and saved["data_csv"] == a_csv
    # `evaluate RUN` reads both datasets back, as training evaluated them.
    from portrait_keras.commands import evaluate

    assert evaluate.main([str(run_dir), "--json"]) == 0
    joined = json.loads(capsys.readouterr().out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert joined["f1_gender"] == pytest.approx(metrics["f1_gender"], abs=1e-6)


def test_a_joined_table_written_out_reads_back_the_same_rows(two_datasets, tmp_path):
    from portrait_keras.data.sources import portable_table

    joined = read_sources(list(two_datasets))
    path = tmp_path / "joined.csv"
    portable_table(joined).to_csv(path, index=False)
    back = read_annotations(path, root=joined.root, schema=joined.schema)
    for split in ("train", "query", "gallery"):
        np.testing.assert_array_equal(back.paths(split), joined.paths(split))
        for task, labels in joined.labels(split).items():
            np.testing.assert_array_equal(back.labels(split)[task], labels)
