"""End to end: named experiments build, `smoke` trains and writes its run folder, export."""

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from portrait_keras import experiments as configs
from portrait_keras.commands.overrides import override
from portrait_keras.training.fit import build_trainer
from portrait_keras.training.run_dir import RunDir, RunDirError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(config, csv_path, epochs=1):
    """`config` on the tiny test data with the tiny backbone and small images."""
    c = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, csv=str(csv_path), image_size=(64, 32), batch_size=16, p=4, k=4),
        model=dataclasses.replace(config.model, backbone="tiny"),
    )
    return override(c, "train.epochs", epochs)


# `relation` builds a RelationModel on pairs (tests/test_relation.py).
@pytest.mark.parametrize("name", [n for n in configs.EXPERIMENTS if configs.get(n).model.head != "relation"])
def test_every_named_experiment_builds_its_model(name, tiny_annotations):
    config = configs.get(name)
    if config.model.backbone != "tiny":
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, backbone="tiny"))
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, image_size=(64, 32)))
    model, trainer = build_trainer(config, tiny_annotations.schema, len(tiny_annotations.train_ids), 10)
    expected = config.model.tasks or tiny_annotations.schema.names
    assert {t.name for t in trainer.tasks} == set(expected)
    for task in expected:
        assert task in model.output_names and f"{task}_feature" in model.output_names


@pytest.fixture(scope="module")
def smoke_run(smoke_run_dir):
    """The session's two-epoch `smoke` run (conftest): (run folder, its metrics.json)."""
    return smoke_run_dir, json.loads((smoke_run_dir / "metrics.json").read_text())


def test_smoke_run_writes_a_complete_run_folder(smoke_run):
    run, metrics = smoke_run
    for name in ("config.json", "schema.json", "history.csv", "metrics.json", "model.keras", "saved_model"):
        assert (run / name).exists(), name
    assert not (run / "backup").exists() or not os.listdir(run / "backup")  # removed when finished
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for key in ("loss", "loss_id", "loss_expression", "s_id", "s_expression", "piq", "reid_mAP", "f1_gender"):
        assert key in rows[0], key
    # The uncertainty weights s_i (eq. 6) start at 0 and move during fit.
    assert any(abs(float(rows[-1][f"s_{t}"])) > 1e-4 for t in ("id", "gender", "expression"))
    assert 0.0 <= metrics["piq"] <= 1.0
    # The final metrics are the last epoch's evaluation, as logged.
    for key in ("piq", "reid_mAP", "f1_gender"):
        assert float(rows[-1][key]) == pytest.approx(metrics[key], abs=1e-6), key
    # Every run folder gets its report at the end of training.
    report = run / "report"
    for name in ("report.md", "report.html", "curves_loss.png", "f1_bars.png", "confusion_gender.png"):
        assert (report / name).is_file(), name
    assert "piq" in (report / "report.md").read_text().lower()


def test_saved_model_serves_what_the_keras_model_computes(smoke_run):
    import tensorflow as tf

    run, _ = smoke_run
    model = keras.models.load_model(run / "model.keras")  # safe_mode=True by default
    served = tf.saved_model.load(str(run / "saved_model"))
    images = np.random.default_rng(0).integers(0, 256, (3, *model.input_shape[1:3], 3), dtype=np.uint8)
    out = served.serve(tf.constant(images))
    ref = model(images.astype("float32"), training=False)
    np.testing.assert_allclose(out["embedding"].numpy(), keras.ops.convert_to_numpy(ref["embedding"]), atol=1e-4)
    gender = keras.ops.convert_to_numpy(keras.ops.softmax(ref["gender"]))
    np.testing.assert_allclose(out["gender"].numpy(), gender, atol=1e-5)
    expr = out["expression"].numpy()
    assert expr.shape == (3, 7) and ((expr >= 0) & (expr <= 1)).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match="serve takes uint8 images"):
        served.serve(tf.constant(images.astype("float32")))


def test_evaluate_command_reproduces_the_run_metrics(smoke_run, capsys):
    from portrait_keras.commands.evaluate import main

    run, metrics = smoke_run
    assert main([str(run), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("piq", "reid_mAP", "reid_rank1", "f1_gender", "f1_expression"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_unwritable_run_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="not writable"):
        RunDir(blocker / "run").check_writable()


def test_mirrored_strategy_on_two_cpu_replicas(tiny_synth, tmp_path):
    script = textwrap.dedent(
        f"""
        import dataclasses
        from portrait_keras import experiments as configs
        from tests.test_training import tiny
        from portrait_keras.training.fit import train
        config = tiny(configs.get("smoke"), {str(tiny_synth)!r}, epochs=1)
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, jit_compile=False))
        import h5py, keras

        class BackupStep(keras.callbacks.Callback):  # runs after the epoch-end backup
            def on_epoch_end(self, epoch, logs=None):
                with h5py.File({str(tmp_path / "run" / "backup" / "state.weights.h5")!r}, "r") as f:
                    print("STEP", int(f.attrs["step"]), "OF", self.params["steps"])

        metrics = train(
            config, run_dir={str(tmp_path / "run")!r}, strategy="mirrored", replicas=2, callbacks=[BackupStep()],
            backup_every=4, verbose=0, report=False,
        )
        print("PIQ", metrics["piq"])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PIQ" in result.stdout
    assert "Distribution: MirroredStrategy (tensorflow), 2 replica(s); global batch 16 = 2 x 8" in result.stderr
    # The backup's global step counts the epoch's global batches (each split over both replicas).
    steps = re.search(r"STEP (\d+) OF (\d+)", result.stdout)
    assert steps and steps[1] == steps[2] and int(steps[1]) > 4, result.stdout


def test_run_py_with_two_replicas_logs_the_one_device_losses_and_saves_what_it_evaluated(
    tiny_synth, smoke_run_dir, tmp_path
):
    from portrait_keras.data import read_annotations
    from portrait_keras.evaluation.evaluator import evaluate

    run = tmp_path / "two"
    args = ["smoke", "--data", str(tiny_synth), "--epochs", "2", "--replicas", "2", "--run-dir", str(run)]
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "experiments", "run.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run / "config.json").read_text())["distribution"]
    assert info["strategy"] == "MirroredStrategy" and info["replicas"] == 2, info
    assert info["per_replica_batch"] * 2 == info["global_batch"] and info["sync_batch_norm"], info
    # The same global batches as the one-device smoke run (conftest): the same losses.
    one = list(csv.DictReader(open(smoke_run_dir / "history.csv")))
    two = list(csv.DictReader(open(run / "history.csv")))
    assert len(two) == len(one) == 2
    for key in [k for k in one[0] if k.startswith("loss")]:
        a, b = float(one[0][key]), float(two[0][key])
        assert abs(a - b) <= 1e-4 * abs(a), (key, a, b)
    # What the run logged as final metrics is what its model.keras gives on one device.
    logged = json.loads((run / "metrics.json").read_text())
    model = keras.models.load_model(run / "model.keras", safe_mode=True)
    again = evaluate(model, read_annotations(tiny_synth), batch_size=32)
    for key in ("piq", "reid_mAP", "reid_rank1", "f1_gender", "f1_expression"):
        assert again[key] == pytest.approx(logged[key], abs=1e-6), key


def test_a_failing_report_warns_with_the_retry_command_and_keeps_the_run(tmp_path, monkeypatch, capsys):
    from portrait_keras.reporting import report
    from portrait_keras.training import fit as training

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(report, "write_report", broken)
    with pytest.warns(UserWarning, match=r"run: the training finished, but its report failed \(RuntimeError: no "):
        training._write_report(str(tmp_path / "run"), None, None, 8)
    with pytest.warns(UserWarning, match=re.escape(f"python -m portrait_keras report {tmp_path / 'run'}")):
        training._write_report(str(tmp_path / "run"), None, None, 8)
    monkeypatch.setattr(report, "write_report", lambda *a, **k: {"html": "R/report.html"})
    training._write_report(str(tmp_path / "run"), None, None, 8)
    assert "Report: R/report.html" in capsys.readouterr().err
