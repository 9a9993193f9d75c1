"""`portrait-keras train` refuses a user's mistake with one `error:` line and exit 2, before
TensorFlow starts and without leaving a run folder behind."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

from portrait_keras import config as config_lib
from portrait_keras import experiments as configs
from portrait_keras.commands import train as train_command

CASES = {
    # name: (arguments after `smoke`, fragments of the error line)
    "unknown_backbone": (
        ["--set", "model.backbone=resnet18"],
        ["model.backbone: unknown value 'resnet18'", "Allowed: hrnet_w32, hrnet, resnet50, tiny", "'resnet50'?"],
    ),
    "misspelt_metric": (["--set", "loss.metric=triplett"], ["unknown value 'triplett'", "did you mean 'triplet'?"]),
    "unknown_head": (["--set", "model.head=fsss"], ["model.head: unknown value 'fsss'", "did you mean 'fss'?"]),
    "zero_batch": (["--set", "data.batch_size=0"], ["data.batch_size: expected an int >= 1. Received: 0"]),
    "negative_lr": (["--set", "train.lr=-1"], ["train.lr: expected a number > 0. Received: -1.0"]),
    "erasing_above_one": (["--set", "data.erasing_probability=1.5"], ["data.erasing_probability", "[0.0, 1.0]"]),
    "unsorted_decay": (["--set", "train.decay_epochs=[6,2]"], ["train.decay_epochs: expected increasing epochs"]),
    "unknown_task": (["--set", "model.tasks=[id,gendr]"], ["model.tasks: unknown value 'gendr'", "'gender'?"]),
    "missing_weights": (["--set", "model.backbone_weights=/nope/w.weights.h5"], ["no such file: /nope/w.weights.h5"]),
    "missing_csv": (["--data", "/nope/x.csv"], ["--data /nope/x.csv: no such file"]),
}


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mistake_is_one_error_line_and_leaves_no_run_folder(case, tmp_path, capsys):
    argv, fragments = CASES[case]
    run_dir = tmp_path / "runs" / "smoke"
    assert train_command.main(["smoke", *argv, "--run-dir", str(run_dir)]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    for fragment in fragments:
        assert fragment in line, line
    assert captured.out == "" and not (tmp_path / "runs").exists()


def test_a_folder_given_as_data_names_the_csv_inside_it(tmp_path, capsys):
    (tmp_path / "market.csv").write_text("path,split,id\n")
    assert train_command.main(["smoke", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--data {tmp_path}: a folder" in line and f"--data {tmp_path / 'market.csv'}" in line


def test_a_bad_schema_json_beside_the_data_is_named(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("path,split,id\n")
    (tmp_path / "schema.json").write_text('{"tasks": [{"name": "g", "kind": "binary", "aspect": "appearance"}]}')
    assert train_command.main(["smoke", "--data", str(tmp_path / "data.csv"), "--run-dir", str(tmp_path / "r")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(tmp_path / "schema.json") in line and "binary" in line
    assert not (tmp_path / "r").exists()


def test_an_unwritable_run_folder_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train_command.main(["smoke", "--run-dir", str(blocker / "run")]) == 2
    assert "is not writable" in _one_error_line(capsys.readouterr().err)


def test_resuming_with_a_changed_config_is_refused_and_the_backup_kept(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    config = train_command.build_config(train_command.parse_args(["smoke"]))
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    assert train_command.main(["smoke", "--run-dir", str(run_dir), "--set", "train.lr=0.01"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "unfinished run of another config (differs in train.lr)" in line and "--overwrite" in line
    assert (run_dir / "backup").is_dir()


def test_choices_are_case_insensitive_on_the_command_line():
    config = train_command.build_config(
        train_command.parse_args(["smoke", "--set", "data.sampler=PK", "--set", "model.head=FSS"])
    )
    assert (config.data.sampler, config.model.head) == ("pk", "fss")


def test_mistakes_are_refused_before_tensorflow_is_imported(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from portrait_keras.commands.train import main
        cases = {[argv for argv, _ in CASES.values()]!r}
        for argv in cases:
            assert main(["smoke", *argv, "--run-dir", {str(tmp_path / "r")!r}]) == 2, argv
        loaded = [m for m in ("tensorflow", "keras", "jax") if m in sys.modules]
        assert not loaded, loaded
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("error: ") == len(CASES)


@pytest.mark.parametrize(
    "part, field, value, message",
    [
        ("data", "sampler", "pk_sampler", "data.sampler: unknown value 'pk_sampler'"),
        ("data", "batch_size", True, "data.batch_size: expected an int"),
        ("data", "image_size", (8, 8), "data.image_size"),
        ("model", "tasks", (), "model.tasks"),
        ("model", "tasks", ("id", "id"), "model.tasks"),
        ("loss", "label_smoothing", 1.0, "loss.label_smoothing: expected a number in [0, 1)"),
        ("loss", "lam", -0.5, "loss.lam: expected a number >= 0.0"),
        ("train", "jit_compile", "sometimes", "train.jit_compile: unknown value 'sometimes'. Allowed: auto"),
        ("train", "mixed_precision", "yes", "train.mixed_precision: expected a bool"),
        ("train", "seed", -1, "train.seed"),
        ("train", "epochs", 0, "train.epochs: expected an int >= 1"),
    ],
)
def test_config_parts_check_their_values_when_made(part, field, value, message):
    """The checks hold for configs written in Python too, not only for `--set`."""
    section = getattr(configs.base(), part)
    with pytest.raises(ValueError) as e:
        dataclasses.replace(section, **{field: value})
    assert message in str(e.value)


def test_every_experiment_is_a_valid_config():
    for name in configs.EXPERIMENTS:
        for config in (configs.get(name), configs.synthetic_default(configs.get(name))):
            assert config_lib.Config.from_dict(json.loads(config.to_json())) == config


def test_the_config_choices_are_the_names_the_builders_take():
    import typing

    from portrait_keras.data.samplers import SAMPLERS
    from portrait_keras.models.backbones import BACKBONES
    from portrait_keras.models.subspaces import LAYOUTS
    from portrait_keras.training.trainer import METRIC_LOSSES, MULTITASK

    assert set(typing.get_args(config_lib.Backbone)) == set(BACKBONES)
    assert set(typing.get_args(config_lib.Head)) == {*LAYOUTS, "relation"}  # relation: training/relation.py
    assert set(typing.get_args(config_lib.Sampler)) == set(SAMPLERS)
    assert set(typing.get_args(config_lib.Metric)) == set(METRIC_LOSSES)
    assert set(typing.get_args(config_lib.Multitask)) == set(MULTITASK)


def test_checking_a_new_run_folder_leaves_no_folder_behind(tmp_path):
    deep = tmp_path / "a" / "b" / "run"
    train_command.check_run_dir(str(deep), configs.get("smoke"), overwrite=False)
    assert os.listdir(tmp_path) == []
    (tmp_path / "kept").mkdir()
    train_command.check_run_dir(str(tmp_path / "kept"), configs.get("smoke"), overwrite=False)
    assert os.listdir(tmp_path) == ["kept"]  # a folder that was there stays


def test_a_run_folder_in_use_is_refused_naming_the_process(tmp_path, capsys):
    from portrait_keras.training.run_dir import RunDir, RunDirError

    run = RunDir(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunDirError, match=f"in use by process {os.getpid()} on "):
            with run.lock():
                pass
        assert train_command.main(["smoke", "--run-dir", run.path]) == 2
        assert f"in use by process {os.getpid()}" in _one_error_line(capsys.readouterr().err)
    with run.lock():  # released: free again
        pass


def test_a_finished_run_on_other_data_says_so(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"name": "smoke", "data_csv": "/old/data.csv"}))
    (tmp_path / "new.csv").write_text("path,split,id\n")
    argv = ["smoke", "--run-dir", str(tmp_path), "--data", str(tmp_path / "new.csv")]
    assert train_command.main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "finished run of smoke on /old/data.csv (other data than this run's)" in line
    assert "another --run-dir" in line and "--overwrite" in line


def test_runs_on_different_data_get_different_default_folders(tmp_path):
    names = set()
    for csv in ("a/annotations.csv", "b/annotations.csv", "a/market.csv"):
        args = train_command.parse_args(["fss", "--data", str(tmp_path / csv)])
        names.add(config_lib.default_run_dir(train_command.build_config(args)))
    assert names == {"runs/fss-a", "runs/fss-b", "runs/fss-a-market"}
    assert config_lib.default_run_dir(train_command.build_config(train_command.parse_args(["fss"]))) == "runs/fss"


def test_config_relaunches_a_run_with_name_and_set_on_top(tmp_path):
    first = train_command.build_config(train_command.parse_args(["smoke", "--set", "train.lr=0.002"]))
    saved = {**first.to_dict(), "data_csv": "/x.csv", "num_ids": 3, "versions": {}}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    again = train_command.build_config(train_command.parse_args(["--config", str(tmp_path)]))
    assert again == first
    renamed = train_command.build_config(
        train_command.parse_args(["smoke_2", "--config", str(tmp_path / "config.json"), "--set", "train.epochs=3"])
    )
    assert (renamed.name, renamed.train.epochs, renamed.train.lr) == ("smoke_2", 3, 0.002)


@pytest.mark.parametrize("content, message", [(None, "no such file"), ("{nope", "not a run's config.json")])
def test_a_bad_config_file_is_one_error_line(tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    assert train_command.main(["--config", str(tmp_path / "config.json")]) == 2
    assert message in _one_error_line(capsys.readouterr().err)


def test_init_from_copies_every_weight_that_fits_and_keeps_the_id_classifier_fresh(tmp_path, capsys):
    import numpy as np

    from portrait_keras.models import PortraitModel
    from portrait_keras.schema import default_schema
    from portrait_keras.training import fit

    donor = PortraitModel(default_schema(), 10, input_shape=(64, 32, 3))
    donor.save(tmp_path / "model.keras")
    model = PortraitModel(default_schema(), 12, input_shape=(64, 32, 3))
    fresh = {w.path: np.array(w) for w in model.weights}
    fit._init_from(model, str(tmp_path))  # a run folder: its model.keras
    assert "fresh: id_classifier/kernel" in capsys.readouterr().err
    source = {w.path: np.array(w) for w in donor.weights}
    for w in model.weights:
        if w.path == "id_classifier/kernel":
            np.testing.assert_array_equal(np.array(w), fresh[w.path])
        else:
            np.testing.assert_array_equal(np.array(w), source[w.path])
    assert any(not np.array_equal(fresh[p], source[p]) for p in source if p != "id_classifier/kernel")


def test_keras_imagenet_weights_missing_is_one_line_saying_where_to_put_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    argv = ["sim_mtl_r50", "--set", "model.backbone_weights=imagenet", "--run-dir", str(tmp_path / "r")]
    assert train_command.main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"not found at {tmp_path / 'keras' / 'models'}" in line and "Nothing is downloaded" in line


def _partial_dataset(folder, header, rows):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        Image.new("RGB", (4, 8), (10, 20, 30)).save(folder / row.split(",")[0])
    (folder / "data.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder / "data.csv"


def test_without_schema_json_the_csv_columns_decide_the_tasks(tmp_path, capsys):
    from portrait_keras.data import read_annotations

    csv = _partial_dataset(
        tmp_path, "path,split,id,gender,expression", ["a.jpg,train,1,female,happy", "b.jpg,train,2,male,sad;angry"]
    )
    annotations = read_annotations(csv)
    assert annotations.schema.names == ("id", "gender", "expression") and annotations.schema_source == "columns"
    assert (
        train_command.main(["smoke", "--data", str(csv), "--tasks", "id,gendr", "--run-dir", str(tmp_path / "r")]) == 2
    )
    err = capsys.readouterr().err
    assert "note: no schema.json beside" in err and "the tasks are its task columns, id, gender, expression" in err
    assert "error: model.tasks: unknown value 'gendr'" in err and "did you mean 'gender'?" in err


def test_a_class_name_in_another_case_says_so(tmp_path):
    from portrait_keras.data import AnnotationError, read_annotations

    csv = _partial_dataset(tmp_path, "path,split,id,gender", ["a.jpg,train,1,Female", "b.jpg,train,2,mail"])
    with pytest.raises(AnnotationError) as e:
        read_annotations(csv)
    lines = str(e.value).splitlines()
    assert any(":2: column 'gender': value 'Female'" in x and "only the case differs" in x for x in lines)
    assert any(":3: column 'gender': value 'mail'" in x and "case" not in x for x in lines)
