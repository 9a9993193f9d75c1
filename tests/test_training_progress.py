"""What a person sees while training: short progress lines, a per-task table, one line on Ctrl-C."""

import io
import os
import subprocess
import sys
import textwrap

import pytest

from portrait_keras.training.progress import ProgressPrinter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _epoch(printer, steps, logs):
    printer.on_epoch_begin(0)
    for batch in range(steps):
        printer.on_train_batch_end(batch, {"loss": 10.0 - batch})
    printer.on_epoch_end(0, logs)


LOGS = {
    "loss": 3.25,
    "loss_id": 2.0,
    "loss_gender": 0.5,
    "s_id": 0.1,
    "s_gender": -0.2,
    "f1_gender": 0.75,
    "piq": 0.42,
    "reid_mAP": 0.3,
    "skipped_images": 0,
}


def test_a_file_gets_plain_short_lines_and_a_task_table():
    out = io.StringIO()
    printer = ProgressPrinter(steps_per_epoch=8, batch_size=4, stream=out, tasks=["id", "gender"])
    printer.params = {"epochs": 3}
    printer.on_train_begin()
    _epoch(printer, 8, LOGS)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    steps = [line for line in lines if "step" in line]
    assert [line.split()[3] for line in steps] == ["2/8", "4/8", "6/8"]  # each quarter but the last
    assert all(len(line) < 100 for line in lines)
    assert lines[len(steps)].startswith("Epoch 1/3 done in ") and "loss 3.2500" in lines[len(steps)]
    assert lines[len(steps) + 1].split() == ["piq", "0.4200", "reid_mAP", "0.3000"]
    table = lines[len(steps) + 2 :]
    assert table[0].split() == ["task", "loss", "s", "F1"]
    assert table[1].split() == ["id", "2.0000", "0.1000", "-"]
    assert table[2].split() == ["gender", "0.5000", "-0.2000", "0.7500"]
    assert "skipped_images" not in out.getvalue()


def test_quiet_is_two_lines_an_epoch_and_verbose_adds_the_rest():
    quiet, verbose = io.StringIO(), io.StringIO()
    _epoch(ProgressPrinter(4, 2, level="quiet", stream=quiet), 4, LOGS)
    assert [line.split()[0] for line in quiet.getvalue().splitlines() if "step" not in line] == ["Epoch", "piq"]
    _epoch(ProgressPrinter(4, 2, level="verbose", stream=verbose), 4, LOGS)
    assert "skipped_images" in verbose.getvalue()


def test_a_terminal_gets_one_line_rewritten_in_place():
    out = _Tty()
    printer = ProgressPrinter(steps_per_epoch=5, batch_size=2, stream=out, refresh=0.0)
    _epoch(printer, 5, {"loss": 1.0})
    text = out.getvalue()
    assert text.count("\r") >= 4 and text.count("\n") == 1  # the step line is overwritten, then the epoch line


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="level must be one of"):
        ProgressPrinter(4, 2, level="loud")
    with pytest.raises(ValueError, match="steps_per_epoch and batch_size must be >= 1"):
        ProgressPrinter(0, 2)


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_that_says_how_to_resume(tiny_synth, tmp_path):
    script = textwrap.dedent(
        """
        import os, signal, sys
        import keras
        import portrait_keras.training.fit as fit

        class CtrlC(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if os.path.isdir(os.path.join(sys.argv[1], "backup")) and batch == 1:
                    os.kill(os.getpid(), signal.SIGINT)

        train = fit.train
        fit.train = lambda *args, **kwargs: train(*args, callbacks=[CtrlC()], report=False, **kwargs)
        from portrait_keras.commands.train import main
        sys.exit(main(sys.argv[2:], program=True))  # as the command line runs it
        """
    )
    run_dir = str(tmp_path / "run")
    argv = ["smoke", "--data", tiny_synth, "--epochs", "3", "--run-dir", run_dir, "--quiet"]
    argv += ["--set", "data.image_size=[64,32]", "--set", "train.jit_compile=false", "--set", "train.eval_every=0"]
    result = subprocess.run(
        [sys.executable, "-c", script, run_dir, *argv], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: {run_dir} keeps its last backup; re-run `portrait-keras train smoke")
    assert os.path.isdir(os.path.join(run_dir, "backup"))
