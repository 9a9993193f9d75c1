"""Faults during training: a run killed with SIGKILL mid-epoch resumes with the same command to
the weights of an uninterrupted run; the same seed gives the same first-epoch losses; a NaN loss
stops training naming the task and keeps the last good weights; a full disk, a changed config
and unreadable images are reported before training or with the file's CSV line. A kill during
an epoch's end keeps that epoch's row, a resume keeps the best checkpoint, and the global step
counts the batches run (mixed float16 skips updates); history.csv keeps PIQ whatever eval_every."""

import collections
import contextlib
import csv
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from portrait_keras import experiments as configs
from portrait_keras.commands.overrides import override
from portrait_keras.config import rescale_epochs
from portrait_keras.data.pipeline import BadImageError
from portrait_keras.serving.export import load_keras_model
from portrait_keras.training import fit as training
from portrait_keras.training import run_dir as run_dir_lib
from portrait_keras.training.fit import TrainingDiverged, train
from portrait_keras.training.run_dir import RunDirError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH = 5  # 181 train images of tiny_synth, batch 32
BACKUP_EVERY = 3  # backups at global steps 3, 5 (epoch end), 6, 9, 10
KILL_AT = 7  # in epoch 2, after the step-6 backup: the resumed run starts at its second batch

# The command a test runs twice: killed at global step KILL_AT the first time (a marker file
# in the run folder keeps the second run alive), then the same command again.
SCRIPT = """
import os, signal, sys
import keras
import portrait_keras.serving.export
from portrait_keras.training.fit import train
from tests.test_reliability_train import resume_config

portrait_keras.serving.export.export_saved_model = lambda *args: None  # tested by test_training; slow

run_dir, csv_path = sys.argv[1], sys.argv[2]


class KillOnce(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        marker = os.path.join(run_dir, "killed")
        if step == {kill_at} and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


train(resume_config(csv_path), run_dir=run_dir, callbacks=[KillOnce()], backup_every={every}, verbose=0, report=False)
"""


def resume_config(csv_path, epochs=2, name="smoke"):
    """Experiment `name` (default `smoke`: FSS, Batch Rank, uncertainty weighting) on `csv_path`
    with the tiny backbone: 64x32 images, batch 32, `epochs` epochs, no XLA (faster to compile
    for a few steps)."""
    config = configs.get(name)
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, csv=str(csv_path), image_size=(64, 32), batch_size=32, p=8, k=4),
        model=dataclasses.replace(config.model, backbone="tiny"),
        train=dataclasses.replace(rescale_epochs(config.train, epochs), eval_every=0, jit_compile=False),
    )


def train_only_copy(tiny_synth, folder):
    """The train split of `tiny_synth` copied into `folder` (no query/gallery: no evaluation)."""
    source = os.path.dirname(tiny_synth)
    os.makedirs(folder)
    shutil.copy(os.path.join(source, "schema.json"), folder)
    with open(tiny_synth, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if r[1] == "train"]
    for row in kept[1:]:
        os.makedirs(os.path.join(folder, os.path.dirname(row[0])), exist_ok=True)
        shutil.copy(os.path.join(source, row[0]), os.path.join(folder, row[0]))
    path = os.path.join(folder, "annotations.csv")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    return path


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def weights(path):
    return load_keras_model(path).get_weights()  # safe_mode=True


@pytest.fixture(scope="module")
def resume_runs(tiny_synth, tmp_path_factory):
    """An uninterrupted run (in this process), and the same run killed with SIGKILL at global
    step KILL_AT in a subprocess, then started again with the same command."""
    base = tmp_path_factory.mktemp("resume")
    data = train_only_copy(tiny_synth, str(base / "data"))
    script = base / "run.py"
    script.write_text(SCRIPT.format(repo=REPO, kill_at=KILL_AT, every=BACKUP_EVERY))
    command = [sys.executable, str(script), str(base / "killed"), data]
    # The run to kill goes on beside the uninterrupted one (two cores).
    env = {**os.environ, "PYTHONPATH": REPO}  # the script imports tests.test_reliability_train
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env
    ) as process:
        reference = base / "reference"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("portrait_keras.serving.export.export_saved_model", lambda *args: None)
            train(resume_config(data), run_dir=reference, backup_every=BACKUP_EVERY, verbose=0, report=False)
        out, err = process.communicate(timeout=600)
    first = subprocess.CompletedProcess(command, process.returncode, out, err)
    assert process.returncode == -signal.SIGKILL, err[-3000:]  # killed, not failed
    after_kill = {
        "history": history(base / "killed"),
        "backup": sorted(os.listdir(base / "killed" / "backup")),
    }
    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    return collections.namedtuple("Runs", "reference killed first second after_kill")(
        reference, base / "killed", first, second, after_kill
    )


@pytest.mark.slow
def test_same_seed_gives_identical_first_epoch_losses(resume_runs):
    # Two runs in two processes: this one, and the one killed during its second epoch.
    (ours,), (theirs,) = history(resume_runs.reference)[:1], resume_runs.after_kill["history"]
    losses = [k for k in ours if k == "loss" or k.startswith("loss_")]
    assert len(losses) == 9 and all(float(ours[k]) > 0 for k in losses)
    assert {k: ours[k] for k in losses} == {k: theirs[k] for k in losses}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_resumes_to_identical_weights(resume_runs):
    runs = resume_runs
    assert runs.first.returncode == -signal.SIGKILL, runs.first.stderr[-2000:]
    assert runs.after_kill["backup"] == ["state.weights.h5"]
    assert runs.second.returncode == 0, runs.second.stderr[-3000:]
    saved = KILL_AT - KILL_AT % BACKUP_EVERY  # the last backup before the kill
    epoch, batch = divmod(saved, STEPS_PER_EPOCH)
    assert batch > 0  # mid-epoch
    assert f"resuming at epoch {epoch + 1}, batch {batch + 1} (global step {saved})" in runs.second.stderr
    assert [row["epoch"] for row in history(runs.killed)] == ["0", "1"]
    assert not (runs.killed / "backup").exists()  # removed once the run finished
    resumed, reference = weights(runs.killed / "model.keras"), weights(runs.reference / "model.keras")
    assert len(resumed) == len(reference) > 50
    for a, b in zip(resumed, reference):
        np.testing.assert_array_equal(a, b)


def test_resuming_with_another_config_is_refused(tiny_synth, tmp_path):
    config = resume_config(tiny_synth)
    os.makedirs(tmp_path / "run" / "backup")
    (tmp_path / "run" / "backup" / "state.weights.h5").write_bytes(b"state")
    (tmp_path / "run" / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(ValueError, match=r"unfinished run of another config \(differs in train\.epochs\)"):
        train(override(config, "train.epochs", 5), run_dir=tmp_path / "run", verbose=0, report=False)


class _RecordEpochEnd(keras.callbacks.Callback):
    """Keeps the trainer's weights as they are at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = [np.array(keras.ops.convert_to_numpy(v)) for v in self.model.weights]


@pytest.fixture(scope="module")
def diverged_run(tiny_synth, tmp_path_factory):
    """Two epochs with data.skip_bad_images on a copy holding one truncated JPEG; from the
    second epoch the expression loss is multiplied by NaN (1.0 before: the same values)."""
    from portrait_keras import losses

    base = tmp_path_factory.mktemp("diverged")
    data = train_only_copy(tiny_synth, str(base / "data"))
    with open(data) as f:
        broken = list(csv.reader(f))[5][0]  # CSV line 6
    path = os.path.join(os.path.dirname(data), broken)
    with open(path, "rb") as f:
        head = f.read(500)
    with open(path, "wb") as f:
        f.write(head)
    scale = keras.Variable(1.0, trainable=False, name="poison")
    original = losses.masked_multilabel_bce

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            scale.assign(float("nan") if epoch == 1 else 1.0)

    record = _RecordEpochEnd()
    config = override(resume_config(data), "data.skip_bad_images", "true")  # as --set does it
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setattr(losses, "masked_multilabel_bce", lambda *a, **k: original(*a, **k) * scale)
        with pytest.raises(TrainingDiverged) as info, pytest.warns(UserWarning, match="skipping 1 unreadable"):
            train(config, run_dir=base / "run", callbacks=[Poison(), record], verbose=0, report=False)
    return collections.namedtuple("Diverged", "run error record broken stderr")(
        base / "run", info.value, record, broken, stderr.getvalue()
    )


@pytest.mark.slow
def test_nan_loss_stops_naming_the_task_and_keeps_the_last_good_weights(diverged_run):
    run, error, record = diverged_run.run, diverged_run.error, diverged_run.record
    last = run / "checkpoints" / "last.weights.h5"
    assert "Loss became NaN/Inf in task(s) expression;" in str(error) and str(last) in str(error)
    assert "Batch 0: loss diverged (NaN/Inf) in task(s) expression; training stopped." in diverged_run.stderr
    assert "loss_expression" in history(run)[-1] and history(run)[-1]["loss_expression"] == "nan"
    trainer = record.model
    now = [keras.ops.convert_to_numpy(v) for v in trainer.weights]
    assert not all(np.isfinite(w).all() for w in now)  # training went on into the NaN step
    trainer.load_weights(last)
    for kept, good in zip(trainer.weights, record.epochs[0]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(kept), good)  # end of epoch 1
    assert (run / "backup" / "state.weights.h5").exists()  # resumable from the last good state
    assert not (run / "model.keras").exists()


@pytest.mark.slow
def test_skip_bad_images_in_training_reports_them_every_epoch(diverged_run):
    assert [row["skipped_images"] for row in history(diverged_run.run)] == ["1", "1"]
    for epoch in (1, 2):
        assert (
            f"Epoch {epoch}: skipped 1 unreadable image this epoch: {diverged_run.broken} "
            "(corrupt or truncated JPEG data" in diverged_run.stderr
        )


def test_full_disk_is_reported_before_training(tiny_synth, tmp_path, monkeypatch):
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(run_dir_lib.shutil, "disk_usage", lambda path: Usage(2**40, 2**40, run_dir_lib.SPARE_BYTES + 1))
    with pytest.raises(RunDirError, match=r"MiB free on its disk, the run needs about [\d,]+ MiB"):
        train(resume_config(tiny_synth), run_dir=tmp_path / "run", verbose=0, report=False)
    assert not (tmp_path / "run").exists()  # a run that never started leaves no folder


def test_run_size_estimate_covers_the_files_a_run_writes(tiny_annotations, tmp_path):
    config = resume_config("unused")
    model, trainer = training.build_trainer(config, tiny_annotations.schema, len(tiny_annotations.train_ids), 5)
    model.save(tmp_path / "model.keras")
    trainer.optimizer.build(trainer.trainable_variables)
    trainer.save_weights(tmp_path / "state.weights.h5")
    # At worst: model.keras, the SavedModel, and four training states (last, best, backup, and
    # a backup being replaced).
    written = os.path.getsize(tmp_path / "model.keras") * 2 + os.path.getsize(tmp_path / "state.weights.h5") * 4
    assert 0.9 * written < run_dir_lib.run_bytes(model) - run_dir_lib.SPARE_BYTES < 1.2 * written
    with pytest.raises(RunDirError, match="only 0 MiB free"):
        Usage = collections.namedtuple("Usage", "total used free")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(run_dir_lib.shutil, "disk_usage", lambda path: Usage(1, 1, 0))
            run_dir_lib.RunDir(tmp_path).check_writable(run_dir_lib.run_bytes(model))


@pytest.mark.slow
def test_unreadable_image_stops_training_naming_its_csv_line(tiny_synth, tmp_path):
    data = train_only_copy(tiny_synth, str(tmp_path / "data"))
    with open(data) as f:
        name = list(csv.reader(f))[9][0]  # CSV line 10
    path = os.path.join(tmp_path, "data", name)
    with open(path, "rb") as f:
        head = f.read(400)
    with open(path, "wb") as f:
        f.write(head)  # truncated: the decoder's own error names no file
    config = resume_config(data, epochs=1, name="single_task_gender")
    with pytest.raises(BadImageError) as info:
        train(config, run_dir=tmp_path / "run", verbose=0, report=False)
    (problem,) = info.value.problems
    assert problem[:3] == (10, "path", name)
    assert f"{data}:10: column 'path': value '{name}': unreadable image: corrupt or truncated JPEG" in str(info.value)


def test_history_gets_a_column_for_every_key_logged_and_resume_keeps_it(tmp_path):
    from portrait_keras.training.callbacks import HistoryLogger

    path = str(tmp_path / "history.csv")
    logger = HistoryLogger(path)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"loss": 2.0})
    logger.on_epoch_end(1, {"loss": 1.5, "piq": 0.25, "f1_gender": 0.5})  # eval_every=2
    logger.on_train_end()
    logger.on_train_begin()  # a second fit (the resumed run) appends under the same header
    logger.on_epoch_end(2, {"loss": 1.0, "piq": 0.75, "reid_mAP": 0.5})
    logger.on_train_end()
    rows = history(tmp_path)
    assert list(rows[0])[0] == "epoch" and {"f1_gender", "loss", "piq", "reid_mAP"} <= set(rows[0])
    assert [(r["epoch"], r["piq"], r["f1_gender"], r["reid_mAP"]) for r in rows] == [
        ("0", "NA", "NA", "NA"),
        ("1", "0.25", "0.5", "NA"),
        ("2", "0.75", "NA", "0.5"),
    ]
    run_dir_lib.trim_history(path, 2)  # a run resumed at epoch 3
    assert [r["epoch"] for r in history(tmp_path)] == ["0", "1"]
    assert run_dir_lib.best_logged(path, "piq") == 0.25


def _counting_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_backup_counts_the_batches_run_not_the_optimizer_updates(tmp_path):
    from portrait_keras.training.callbacks import BackupAndResume

    # A float16 step whose gradients overflow leaves optimizer.iterations where it was; here
    # it never moves (hooks only).
    backup = BackupAndResume(tmp_path / "backup", every=2)
    backup.set_model(_counting_model())
    backup.set_params({"epochs": 2, "steps": 3})
    for epoch in range(2):
        backup.on_epoch_begin(epoch)
        for batch in range(3 if epoch == 0 else 2):
            backup.on_train_batch_end(batch, {"loss": 1.0})
        if epoch == 0:
            backup.on_epoch_end(epoch, {"loss": 1.0})
    model = _counting_model()
    assert BackupAndResume(tmp_path / "backup").restore(model) == 4  # batch 2 of epoch 2
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0


def test_the_last_batch_of_an_epoch_is_backed_up_by_its_epoch_end_only(tmp_path):
    from portrait_keras.training.callbacks import BackupAndResume

    backup = BackupAndResume(tmp_path / "backup", every=1)
    model = _counting_model()
    backup.set_model(model)
    backup.set_params({"epochs": 1, "steps": 3})
    backup.on_epoch_begin(0)
    for batch in range(3):
        model.optimizer.iterations.assign_add(1)  # as a real step does
        backup.on_train_batch_end(batch, {"loss": 1.0})
    # A kill here, among the epoch's end callbacks (PIQ, history row), redoes the last batch.
    assert BackupAndResume(tmp_path / "backup").restore(_counting_model()) == 2
    backup.on_epoch_end(0, {"loss": 1.0})
    assert BackupAndResume(tmp_path / "backup").restore(_counting_model()) == 3


class _Killed(Exception):
    """Stands for a SIGKILL inside `fit` (the files on disk are what a kill leaves)."""


def _train_until_killed(config, run_dir, **kwargs):
    """`train(config)`; returns (its stderr, whether it was killed by `_Killed`)."""
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setattr("portrait_keras.serving.export.export_saved_model", lambda *args: None)
        try:
            train(config, run_dir=run_dir, verbose=0, report=False, **kwargs)
        except _Killed:
            return stderr.getvalue(), True
    return stderr.getvalue(), False


@pytest.mark.slow
def test_kill_during_an_epoch_end_then_resume_keeps_its_row_and_the_best_checkpoint(tiny_synth, tmp_path):
    # 3 epochs of 5 steps, PIQ at epochs 2 and 3 (eval_every=2), a step backup every 5 steps
    # (each epoch's last batch). The evaluation (scripted, in order of the calls) is killed
    # at epoch 2, then at epoch 3; each time the same command resumes.
    outcomes = [_Killed, {"piq": 0.9, "f1_gender": 0.6}, _Killed, {"piq": 0.5, "f1_gender": 0.4}]

    def evaluate(*args, **kwargs):
        outcome = outcomes.pop(0)
        if outcome is _Killed:
            raise _Killed
        return dict(outcome)

    config = override(resume_config(tiny_synth, epochs=3), "train.eval_every", 2)
    run, best = tmp_path / "run", tmp_path / "run" / "checkpoints" / "best.weights.h5"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("portrait_keras.training.callbacks.evaluate", evaluate)
        assert _train_until_killed(config, run, backup_every=5)[1]
        err, killed = _train_until_killed(config, run, backup_every=5)
        assert killed and "resuming at epoch 2, batch 1 (global step 5)" in err  # epoch 2 again
        best_of_epoch_2 = best.read_bytes()
        err, killed = _train_until_killed(config, run, backup_every=5)
        assert not killed and "resuming at epoch 3, batch 1 (global step 10)" in err
    assert not outcomes
    rows = history(run)
    assert [(r["epoch"], r["piq"], r["f1_gender"]) for r in rows] == [
        ("0", "NA", "NA"),
        ("1", "0.9", "0.6"),
        ("2", "0.5", "0.4"),
    ]
    assert best.read_bytes() == best_of_epoch_2  # epoch 3 (PIQ 0.5) is not better than epoch 2
    assert json.loads((run / "metrics.json").read_text())["piq"] == 0.5


@pytest.mark.slow
def test_mixed_float16_resume_counts_the_steps_the_loss_scaler_skipped(tiny_synth, tmp_path):
    # What a GPU run gets: mixed_float16, whose LossScaleOptimizer skips the update of a step
    # whose gradients overflow (the first steps, while its scale comes down).
    iterations = []

    class KillAfterFirstEpoch(keras.callbacks.Callback):  # after the epoch-end backup
        def on_epoch_end(self, epoch, logs=None):
            if not iterations:
                iterations.append(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))
                raise _Killed

    data = train_only_copy(tiny_synth, str(tmp_path / "data"))
    run = tmp_path / "run"
    try:
        with pytest.MonkeyPatch.context() as patch:
            mixed_float16 = lambda mixed: keras.mixed_precision.set_global_policy("mixed_float16")  # noqa: E731
            patch.setattr(training, "set_precision", mixed_float16)
            assert _train_until_killed(resume_config(data), run, callbacks=[KillAfterFirstEpoch()])[1]
            first = history(run)
            err, killed = _train_until_killed(resume_config(data), run, callbacks=[KillAfterFirstEpoch()])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert iterations[0] < STEPS_PER_EPOCH  # some steps were skipped: the case under test
    assert not killed and f"resuming at epoch 2, batch 1 (global step {STEPS_PER_EPOCH})" in err
    rows = history(run)
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[0] == first[0]  # epoch 1 not redone
