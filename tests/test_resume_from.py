"""`--resume-from RUN`: a finished run continued for more epochs, into a new folder.

A 1-epoch run continued to 2 ends with the weights of a straight 2-epoch run with the same
schedule (the learning rate and the data stream go on at the step it ended on), its history
holds both epochs, and the original is left as it was. The mistakes (an unfinished run, no more
epochs, another model, the same folder) are one `error:` line before TensorFlow starts.
"""

import csv
import dataclasses
import hashlib
import json
import os

import h5py
import numpy as np
import pytest

from portrait_keras.commands import train as train_command
from portrait_keras.commands.overrides import override
from portrait_keras.config import Config
from portrait_keras.serving.export import load_keras_model
from portrait_keras.training.fit import train
from portrait_keras.training.run_dir import RunDir, RunDirError, continued_run_dir
from tests.test_reliability_train import resume_config, train_only_copy


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _digest(folder):
    """A hash of every file in `folder` (names and bytes)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def runs(tiny_synth, tmp_path_factory):
    """A 1-epoch run (the 2-epoch schedule, stopped after epoch 1), the same continued to 2 epochs
    by `portrait-keras train --resume-from`, and a straight 2-epoch run."""
    base = tmp_path_factory.mktemp("resume_from")
    data = train_only_copy(tiny_synth, str(base / "data"))  # no query/gallery: no evaluation
    two = resume_config(data, epochs=2)
    # Warm-up through epoch 1, x0.1 from epoch 2: a schedule started over would show.
    two = dataclasses.replace(two, train=dataclasses.replace(two.train, warmup_epochs=1, decay_epochs=(1,)))
    one = dataclasses.replace(two, train=dataclasses.replace(two.train, epochs=1))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("portrait_keras.training.fit.export_saved_model", lambda *args: None)
        patch.setattr("portrait_keras.training.fit._write_report", lambda *args: None)
        train(one, run_dir=base / "first", verbose=0, report=False)
        before = _digest(base / "first")
        assert train_command.main(["--resume-from", str(base / "first"), "--epochs", "2", "--quiet"]) == 0
        train(two, run_dir=base / "straight", verbose=0, report=False)
    return {"base": base, "first": base / "first", "before": before, "straight": base / "straight", "one": one}


@pytest.mark.slow
def test_continued_run_goes_on_to_the_weights_of_a_straight_run(runs, capfd):
    continued = continued_run_dir(runs["first"], 2)
    assert continued == f"{runs['first']}-2ep" and os.path.exists(os.path.join(continued, "model.keras"))
    ours = load_keras_model(os.path.join(continued, "model.keras")).get_weights()
    straight = load_keras_model(runs["straight"] / "model.keras").get_weights()
    first = load_keras_model(runs["first"] / "model.keras").get_weights()
    assert len(ours) == len(straight) > 50
    moved = [not np.allclose(a, b) for a, b in zip(ours, first)]
    assert sum(moved) > len(ours) // 2  # the second epoch trained
    for a, b in zip(ours, straight):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _optimizer_step(run_dir):
    """The optimizer's `iterations` in `checkpoints/last.weights.h5` (its first variable)."""
    with h5py.File(os.path.join(run_dir, "checkpoints", "last.weights.h5"), "r") as f:
        return int(f["optimizer/vars/0"][()])


@pytest.mark.slow
def test_continued_history_has_both_epochs_and_the_step_goes_on(runs):
    continued = continued_run_dir(runs["first"], 2)
    rows, straight = _history(continued), _history(runs["straight"])
    assert [r["epoch"] for r in rows] == ["0", "1"] == [r["epoch"] for r in straight]
    for ours, theirs in zip(rows, straight):
        assert float(ours["loss"]) == pytest.approx(float(theirs["loss"]), rel=1e-3)
    # The schedule reads the optimizer's step: it went on from the first run's.
    first = _optimizer_step(runs["first"])
    assert first > 0 and _optimizer_step(continued) == 2 * first == _optimizer_step(runs["straight"])
    saved = json.loads(open(os.path.join(continued, "config.json")).read())
    assert saved["train"]["epochs"] == 2 and saved["train"]["decay_epochs"] == list(runs["one"].train.decay_epochs)


@pytest.mark.slow
def test_the_original_run_is_left_as_it_was(runs):
    assert _digest(runs["first"]) == runs["before"]
    assert RunDir(runs["first"]).is_finished() and len(_history(runs["first"])) == 1


def _refused(argv, capsys):
    assert train_command.main(argv) == 2
    captured = capsys.readouterr()
    return _one_error_line(captured.err)


@pytest.fixture
def finished(tmp_path):
    """A folder with the files of a finished 1-epoch run of `resume_config` (the refusals read no more)."""
    run = tmp_path / "finished"
    (run / "checkpoints").mkdir(parents=True)
    config = resume_config(tmp_path / "data.csv", epochs=1)
    (run / "config.json").write_text(json.dumps({**config.to_dict(), "data_csv": str(tmp_path / "data.csv")}))
    (run / "metrics.json").write_text("{}")
    (run / "checkpoints" / "last.weights.h5").write_bytes(b"")
    return run


def test_no_more_epochs_is_refused(finished, capsys):
    line = _refused(["--resume-from", str(finished), "--epochs", "1"], capsys)
    assert "that run trained 1 epoch; train.epochs=1 continues nothing" in line and "e.g. --epochs 2" in line


def test_another_model_is_refused_naming_the_change_and_init_from(finished, capsys):
    argv = ["--resume-from", str(finished), "--epochs", "3", "--set", "model.head=sim_mtl"]
    line = _refused(argv, capsys)
    assert 'model.head "fss" -> "sim_mtl"' in line and f"--init-from {finished}" in line
    assert "image_size" in _refused([*argv[:4], "--set", "data.image_size=[32,16]"], capsys)
    assert not os.path.exists(continued_run_dir(finished, 3))  # nothing left behind


def test_training_settings_may_change(finished):
    config = override(resume_config("x", epochs=1), "train.epochs", "3")
    config = override(override(config, "train.lr", "0.001"), "loss.lam", "0.5")
    config = override(config, "data.csv", str(finished.parent / "data.csv"))
    assert RunDir(finished).continued_epochs(config) == 1


def test_the_same_folder_is_refused(finished, capsys):
    argv = ["--resume-from", str(finished), "--epochs", "3", "--run-dir", str(finished)]
    assert "a continued run goes into another folder" in _refused(argv, capsys)


def test_an_unfinished_run_is_refused_advising_the_same_command(finished, tmp_path, capsys):
    (finished / "backup").mkdir()
    line = _refused(["--resume-from", str(finished), "--epochs", "3"], capsys)
    assert "an unfinished run" in line and "Re-run the command that started it" in line
    assert _refused(["--resume-from", str(tmp_path / "nope"), "--epochs", "3"], capsys).endswith("no such run folder")
    (finished / "backup").rmdir()
    (finished / "metrics.json").unlink()  # killed before its first backup, or never finished
    assert "no finished run to continue (no metrics.json in it)" in _refused(
        ["--resume-from", str(finished), "--epochs", "3"], capsys
    )


def test_the_library_refuses_the_same_mistakes(finished, tmp_path):
    config = Config.from_dict(json.loads((finished / "config.json").read_text()))
    with pytest.raises(RunDirError, match="continues nothing"):
        train(config, run_dir=tmp_path / "run", resume_from=finished, verbose=0)
    with pytest.raises(RunDirError, match="another run_dir"):
        train(config, run_dir=finished, resume_from=finished, verbose=0)
    assert not (tmp_path / "run").exists()


def test_resume_from_takes_no_config_or_init_from(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_command.parse_args(["--resume-from", "r", "--init-from", "r"])
    assert exit_info.value.code == 2
    assert "takes no --init-from" in capsys.readouterr().err
