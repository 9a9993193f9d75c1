"""`RunDir`: a run folder and every file name in it (`portrait_keras.training.fit.train` writes it).

config.json      the config, the data CSV, the number of ids, distribution, versions
schema.json      the dataset's task schema (the model carries it too)
history.csv      per-epoch losses (total and per task), s_i, lr, PIQ metrics
metrics.json     final metrics (`portrait-keras evaluate`)
model.keras      the PortraitModel, schema included (loads with safe_mode=True)
saved_model/     SavedModel with the uint8 `serve` endpoint
checkpoints/     weights of the last good epoch (last.weights.h5) and of the best PIQ (best.weights.h5)
backup/          the training state while a run is unfinished
tensorboard/     TensorBoard logs
.lock            held (flock) by the process training into the folder
report/          training curves, F1 bars, confusion matrices, report.md/.html
propagation/     with train.ap_rounds: round_M.csv (the annotations with the pseudo labels
                 of round M) and round_M.json (its counts and posterior changes)
"""

import contextlib
import csv
import json
import os
import re
import shutil
import socket
import tempfile

import numpy as np

from portrait_keras.errors import InputError

# Room needed beside the model files: TensorBoard logs, history, temporary files.
SPARE_BYTES = 64 * 2**20
# Copies of the model's weights a run keeps on disk at worst: model.keras, the SavedModel,
# and three checkpoints (last, best, backup) of weights plus two Adam moments each, one of
# them twice while it is being replaced.
WEIGHT_COPIES = 2 + 3 * 3 + 3


# What a continued run (`train(resume_from=RUN)`, `--resume-from RUN`) keeps from the run it
# continues: the model (its weights are loaded), the data and the batches its steps are
# counted in (the schedule is a function of the step). Training, loss and evaluation settings
# may change; `model.init_from` and `model.backbone_weights` only matter at a fresh start.
CONTINUE_KEEPS = (
    "model",
    "data.csv",
    "data.extra_csvs",
    "data.image_size",
    "data.sampler",
    "data.batch_size",
    "data.p",
    "data.k",
)
CONTINUE_IGNORES = ("model.init_from", "model.backbone_weights")


class RunDirError(InputError):
    """A run folder that cannot take this run (unwritable, or holding another config's run)."""


class RunDir:
    """The files of one run folder (module docstring).

    Args:
        path: str or path-like. The folder (created by `check_writable`).

    Example:
    >>> run = RunDir("runs/smoke")
    >>> run.model_file
    'runs/smoke/model.keras'
    >>> run.checkpoint("best")
    'runs/smoke/checkpoints/best.weights.h5'
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        # Set by `train` just before the first step: a run that fails before it leaves no folder.
        self.started = False

    def __repr__(self):
        return f"RunDir({self.path!r})"

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    config_file = property(lambda self: self.file("config.json"))
    schema_file = property(lambda self: self.file("schema.json"))
    history_file = property(lambda self: self.file("history.csv"))
    metrics_file = property(lambda self: self.file("metrics.json"))
    model_file = property(lambda self: self.file("model.keras"))
    saved_model_dir = property(lambda self: self.file("saved_model"))
    checkpoints_dir = property(lambda self: self.file("checkpoints"))
    backup_dir = property(lambda self: self.file("backup"))
    tensorboard_dir = property(lambda self: self.file("tensorboard"))
    report_dir = property(lambda self: self.file("report"))
    propagation_dir = property(lambda self: self.file("propagation"))

    def checkpoint(self, which):
        """`checkpoints/<which>.weights.h5` (`"last"` or `"best"`)."""
        return os.path.join(self.checkpoints_dir, f"{which}.weights.h5")

    def is_finished(self):
        """A run that reached its end: `metrics.json` and no `backup/` left."""
        return os.path.exists(self.metrics_file) and not os.path.isdir(self.backup_dir)

    def check_writable(self, needed_bytes=SPARE_BYTES):
        """Fails before training when the folder cannot be written or its disk lacks `needed_bytes`.

        Raises: OSError naming the folder, with the free and the needed space.
        """
        try:
            os.makedirs(self.path, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".write_test_"):
                pass
        except OSError as e:
            raise RunDirError(f"Run folder {self.path!r} is not writable: {e.strerror or e}") from e
        free = shutil.disk_usage(self.path).free
        if free < needed_bytes:
            raise RunDirError(
                f"Run folder {self.path!r}: only {free / 2**20:,.0f} MiB free on its disk, the run needs about "
                f"{needed_bytes / 2**20:,.0f} MiB (model files, checkpoints, backup, logs). Free some space "
                f"or choose another --run-dir."
            )

    def saved_config(self):
        """`config.json` as a dict (`{}` when missing or unreadable)."""
        try:
            with open(self.config_file, encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    @contextlib.contextmanager
    def lock(self):
        """Holds `.lock` (an exclusive `flock`) while a run trains into this folder.

        Raises: `RunDirError` naming the other process when one holds it. The lock dies with
        its process, so a killed run never leaves a stale one behind.
        """
        try:
            import fcntl
        except ImportError:  # not on Windows: no lock
            yield
            return
        os.makedirs(self.path, exist_ok=True)
        with open(self.file(".lock"), "a+", encoding="utf-8") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise RunDirError(
                    f"Run folder {self.path!r} is in use by {holder}: two runs in one folder would "
                    f"overwrite each other. Wait for it to end, or choose another --run-dir."
                ) from None
            f.seek(0)
            f.truncate()
            f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def check_resumable(self, config):
        """Raises `RunDirError` when `backup/` holds an unfinished run started with another config.

        `train.seed` counts only when `config` fixes one (a null seed takes the saved run's).
        """
        saved = self.saved_config()
        if not saved or not os.path.isdir(self.backup_dir):
            return
        current = json.loads(json.dumps(config.to_dict()))
        changed = sorted(
            f"{part}.{key}"
            for part, values in current.items()
            if isinstance(values, dict)
            for key in values
            if saved.get(part, {}).get(key) != values[key] and not (part, key, values[key]) == ("train", "seed", None)
        )
        if changed:
            raise RunDirError(
                f"Run folder {self.path!r} holds an unfinished run of another config (differs in "
                f"{', '.join(changed)}); resuming it with this one would mix the two. Use another "
                f"--run-dir, pass --overwrite to start over, or drop the changed --set options to resume it."
            )

    def continued_epochs(self, config):
        """The epochs of the finished run in this folder, which `config` continues (`--resume-from`).

        Returns: int, the epochs it trained (`train.epochs` of its `config.json`).

        Raises: `RunDirError` with one line when the folder is no finished run (an unfinished
        one is resumed by re-running the command that started it), when `config.train.epochs`
        is not more than that, or when `config` changes what `CONTINUE_KEEPS` names.
        """
        saved = self.saved_config()
        where = f"--resume-from {self.path}"
        if not saved:
            raise RunDirError(f"{where}: not a run folder (no readable config.json in it)")
        if os.path.isdir(self.backup_dir):
            raise RunDirError(
                f"{where}: an unfinished run (its backup/ holds the step it reached). Re-run the command that "
                f"started it (same --run-dir) to resume it; continue it for more epochs once it has finished."
            )
        if not os.path.exists(self.metrics_file) or not os.path.exists(self.checkpoint("last")):
            missing = "metrics.json" if not os.path.exists(self.metrics_file) else "checkpoints/last.weights.h5"
            raise RunDirError(f"{where}: no finished run to continue (no {missing} in it)")
        done = saved.get("train", {}).get("epochs")
        if not isinstance(done, int):
            raise RunDirError(f"{where}: its config.json names no train.epochs")
        if config.train.epochs <= done:
            raise RunDirError(
                f"{where}: that run trained {done} epoch{'s' if done != 1 else ''}; train.epochs="
                f"{config.train.epochs} continues nothing. Ask for more, e.g. --epochs {done * 2}"
            )
        current = json.loads(json.dumps(config.to_dict()))
        changed = []
        for part, values in current.items():
            for key, value in values.items() if isinstance(values, dict) else ():
                name, old = f"{part}.{key}", saved.get(part, {}).get(key)
                kept = part in CONTINUE_KEEPS or name in CONTINUE_KEEPS
                if kept and name not in CONTINUE_IGNORES and old != value:
                    changed.append(f"{name} {json.dumps(old)} -> {json.dumps(value)}")
        if changed:
            raise RunDirError(
                f"{where}: a continued run keeps that run's model and data, and this config changes "
                f"{', '.join(changed)}. Drop those options, or fine-tune from its weights with --init-from {self.path}"
            )
        return done

    def write_run_info(self, config, csv_path, schema, num_ids, distribution=None, versions=None):
        """Writes `config.json` (the config plus data, ids, distribution, versions) and `schema.json`."""
        info = {
            **config.to_dict(),
            "data_csv": csv_path,
            "num_ids": num_ids,
            "distribution": distribution or {},
            "versions": versions or {},
        }
        with open(self.config_file, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        schema.save(self.schema_file)

    def write_metrics(self, metrics):
        with open(self.metrics_file, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)

    def trim_history(self, epochs):
        """Keeps the rows of the first `epochs` epochs in `history.csv` (a resumed run writes the
        later ones again); a fresh run (`epochs=0`) starts a fresh file."""
        trim_history(self.history_file, epochs)

    def best_logged(self, key):
        """The highest finite value of column `key` in `history.csv`, or None."""
        return best_logged(self.history_file, key)


def continued_run_dir(source, epochs):
    """Default folder of a run continuing the finished run `source` to `epochs` epochs: a new
    one beside it, `SOURCE-<epochs>ep` (a trailing `-<n>ep` of `source` replaced), so the
    original stays as it was.

    Example:
    >>> continued_run_dir("runs/smoke/", 6)
    'runs/smoke-6ep'
    >>> continued_run_dir("runs/smoke-6ep", 12)
    'runs/smoke-12ep'
    """
    source = os.path.normpath(os.fspath(source))
    return re.sub(r"-\d+ep$", "", source) + f"-{int(epochs)}ep"


def run_bytes(model):
    """Disk space a run of `model` needs at worst (see `WEIGHT_COPIES`), in bytes."""
    weights = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    return WEIGHT_COPIES * weights + SPARE_BYTES


def trim_history(history_csv, epochs):
    """Keeps the rows of the first `epochs` epochs of a `history.csv` file (`RunDir.trim_history`)."""
    if not os.path.exists(history_csv):
        return
    with open(history_csv, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    kept = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < epochs]
    if not kept:
        os.remove(history_csv)
        return
    with open(history_csv, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[:1] + kept)


def best_logged(history_csv, key):
    """The highest finite value of column `key` in a `history.csv` file, or None (no such value)."""
    if not os.path.exists(history_csv):
        return None
    with open(history_csv, encoding="utf-8", newline="") as f:
        values = [_float(row.get(key)) for row in csv.DictReader(f)]
    return max((v for v in values if np.isfinite(v)), default=None)


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")
