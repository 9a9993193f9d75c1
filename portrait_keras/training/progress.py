"""`ProgressPrinter`: the training progress a person reads, instead of Keras' progress bar.

Keras' bar puts every logged value on one line: with 8 tasks (a loss and an s_i each) and 16
metrics it is ~250 characters, wraps, and redirected to a file it leaves pages of control
codes. Here:

- during an epoch, one short line: step, total loss, learning rate, images/s and ETA;
  rewritten in place on a terminal (at most every `refresh` seconds), and printed as plain
  lines at each quarter of the epoch when the output is a file or a pipe;
- at each epoch end, one summary line (loss, time, images/s, PIQ and re-id when measured)
  and, unless `level="quiet"`, a compact table of the per-task figures (loss, s_i, Macro F1);
- `level="verbose"` adds every other logged value, one `key value` pair per line.
"""

import math
import sys
import time

import keras

from portrait_keras.data.progress import write_line

LEVELS = ("quiet", "normal", "verbose")
# Logged keys shown in the summary line, in this order, when present.
_SUMMARY = ("piq", "reid_mAP", "reid_rank1", "appearance", "posture", "emotion")


def _clock(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _number(value):
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


class ProgressPrinter(keras.callbacks.Callback):
    """Prints short training progress (module docstring).

    Args:
        steps_per_epoch: int. Batches in one epoch.
        batch_size: int. Images in one (global) batch, for the images/s figure.
        level: str. `"quiet"`, `"normal"` or `"verbose"`. Defaults to `"normal"`.
        stream: file. Where to print. Defaults to `sys.stdout`.
        refresh: float. Seconds between two rewrites of the line on a terminal.
        tasks: sequence of str or None. Task order of the table; None = as logged.
    """

    def __init__(self, steps_per_epoch, batch_size, level="normal", stream=None, refresh=0.5, tasks=None):
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}. Received: level={level!r}")
        if steps_per_epoch < 1 or batch_size < 1:
            raise ValueError(f"steps_per_epoch and batch_size must be >= 1. Received: {steps_per_epoch}, {batch_size}")
        self.steps_per_epoch = int(steps_per_epoch)
        self.batch_size = int(batch_size)
        self.level = level
        self.stream = stream
        self.refresh = float(refresh)
        self.tasks = None if tasks is None else list(tasks)
        self._epochs = None
        self._epoch = 0
        self._start = self._last = 0.0
        self._steps = 0
        self._open_line = False

    # === Output ===
    @property
    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    @property
    def _tty(self):
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    def _write_line(self, text, in_place=False):
        self._open_line = write_line(self._out, self._tty, text, in_place, self._open_line)

    # === Keras hooks ===
    def on_train_begin(self, logs=None):
        self._epochs = self.params.get("epochs") if self.params else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start = self._last = time.perf_counter()
        self._steps = 0
        self._quarter = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        now = time.perf_counter()
        step = batch + 1
        if self._tty:
            if now - self._last < self.refresh and step < self.steps_per_epoch:
                return
        else:
            quarter = 4 * step // self.steps_per_epoch
            if quarter <= self._quarter or step == self.steps_per_epoch:
                return  # the epoch line follows the last step
            self._quarter = quarter
        self._last = now
        self._write_line(self._step_line(step, logs or {}, now), in_place=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        elapsed = time.perf_counter() - self._start
        rate = self._steps * self.batch_size / elapsed if elapsed > 0 else 0.0
        parts = [f"{self._epoch_label(epoch)} done in {_clock(elapsed)} ({rate:.1f} img/s)"]
        if "loss" in logs:
            parts.append(f"loss {_number(logs['loss'])}")
        self._write_line("  ".join(parts))
        measured = [f"{k} {_number(logs[k])}" for k in _SUMMARY if k in logs]
        if measured:
            self._write_line("  " + "  ".join(measured))
        if self.level == "quiet":
            return
        table = self._task_table(logs)
        for line in table:
            self._write_line(line)
        if self.level == "verbose":
            shown = {"loss", *_SUMMARY} | {k for k in logs if self._task_of(k)}
            for key in sorted(set(logs) - shown):
                self._write_line(f"  {key:<22} {_number(logs[key])}")

    # === Lines ===
    def _epoch_label(self, epoch):
        return f"Epoch {epoch + 1}" + (f"/{self._epochs}" if self._epochs else "")

    def _step_line(self, step, logs, now):
        elapsed = now - self._start
        rate = self._steps * self.batch_size / elapsed if elapsed > 0 else 0.0
        left = (self.steps_per_epoch - step) * elapsed / max(self._steps, 1)
        parts = [f"{self._epoch_label(self._epoch)}  step {step}/{self.steps_per_epoch}"]
        if "loss" in logs:
            parts.append(f"loss {_number(logs['loss'])}")
        lr = self._learning_rate()
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        parts += [f"{rate:.1f} img/s", f"ETA {_clock(left)}"]
        return "  ".join(parts)

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        try:
            return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except (TypeError, ValueError, AttributeError):
            return None

    def _task_of(self, key):
        for prefix in ("loss_", "s_", "f1_"):
            if key.startswith(prefix):
                return key[len(prefix) :]
        return None

    def _task_table(self, logs):
        """Rows `task  loss  s  F1` of the tasks in `logs`, or [] when none is logged."""
        tasks = []
        for key in logs:
            task = self._task_of(key)
            if task and task not in tasks:
                tasks.append(task)
        if self.tasks is not None:
            tasks = [t for t in self.tasks if t in tasks] + [t for t in tasks if t not in self.tasks]
        if not tasks:
            return []
        width = max(len(t) for t in tasks + ["task"])
        columns = [(name, prefix) for name, prefix in (("loss", "loss_"), ("s", "s_"), ("F1", "f1_"))]
        columns = [(n, p) for n, p in columns if any(p + t in logs for t in tasks)]
        lines = ["  " + "task".ljust(width) + "".join(f"{n:>10}" for n, _ in columns)]
        for task in tasks:
            cells = "".join(f"{_number(logs[p + task]) if p + task in logs else '-':>10}" for _, p in columns)
            lines.append("  " + task.ljust(width) + cells)
        return lines
