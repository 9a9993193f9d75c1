"""Callbacks of a training run: the paper's metrics into Keras `logs`, and its safety nets.

`PIQCallback`, `UncertaintyLogger` and `SkippedImagesLogger` write into `logs`; whatever they
write is seen by callbacks that come after them in the list (ModelCheckpoint, EarlyStopping,
CSVLogger, TensorBoard): put these first. `NaNGuard` stops a diverged run and keeps the last
good weights; `BackupAndResume` lets a killed run go on from the step it had reached.
"""

import csv
import math
import os
import shutil
import sys

import h5py
import keras
import numpy as np

from portrait_keras.evaluation.evaluator import evaluate


class PIQCallback(keras.callbacks.Callback):
    """Evaluates re-id, per-task Macro F1 and PIQ (eq. 2) every `every` epochs.

    Writes every metric of `evaluate` into `logs` (`piq` and the aspect scores, `reid_mAP`,
    `reid_rank1` ..., `f1_<task>`, the micro re-id, mINP and PAR metrics) and prints one summary
    line.

    Args:
        annotations: `portrait_keras.data.Annotations` with query and gallery splits.
        every: int. Evaluate every n epochs; the last epoch is always evaluated when
            `epochs` is given. Defaults to `1`.
        batch_size: int. Inference batch size. Defaults to `128`.
        epochs: int or None. Total epochs of the fit, to evaluate the last one.
        verbose: bool. Print the summary line. Defaults to `True`.
        skip_bad_images: bool. Leave unreadable query/gallery images out (`evaluate`).
        model_fn: callable or None. Returns the model to evaluate (called at each evaluation);
            None evaluates the trained model itself. Training under several replicas passes
            one that averages the BN moving statistics across replicas and copies the weights
            into a one-device model, the model that is saved.

    An epoch whose loss is NaN or infinite is not evaluated (see `NaNGuard`).

    Example:
    >>> model.fit(train_ds, epochs=5, callbacks=[PIQCallback(annotations)])  # doctest: +SKIP
    """

    def __init__(
        self, annotations, every=1, batch_size=128, epochs=None, verbose=True, skip_bad_images=False, model_fn=None
    ):
        super().__init__()
        if every < 0:
            raise ValueError(f"every must be >= 0. Received: every={every}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        self.annotations = annotations
        self.every = int(every)
        self.batch_size = int(batch_size)
        self.epochs = epochs
        self.verbose = verbose
        self.skip_bad_images = skip_bad_images
        self.model_fn = model_fn
        self.last = {}

    def _due(self, epoch):
        last = self.epochs is not None and epoch + 1 == self.epochs
        return last or (self.every > 0 and (epoch + 1) % self.every == 0)

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch) or not _all_finite(logs):
            return
        model = getattr(self.model, "portrait", self.model) if self.model_fn is None else self.model_fn()
        self.last = evaluate(model, self.annotations, batch_size=self.batch_size, skip_bad_images=self.skip_bad_images)
        if logs is not None:
            logs.update(self.last)
        if self.verbose:
            keys = [k for k in ("piq", "reid_mAP", "reid_rank1") if k in self.last]
            keys += sorted(k for k in self.last if k.startswith("f1_"))
            line = " ".join(f"{k}={self.last[k]:.3f}" for k in keys)
            print(f"Epoch {epoch + 1}: {line}", file=sys.stdout, flush=True)


class UncertaintyLogger(keras.callbacks.Callback):
    """Writes every s_i of eq. 6 into `logs` as `s_<task>` (model: a `PortraitTrainer`)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for name, value in self.model.uncertainties().items():
            logs[f"s_{name}"] = value


class SkippedImagesLogger(keras.callbacks.Callback):
    """Reports, at the end of every epoch, the images the input pipeline left out.

    Writes their number into `logs["skipped_images"]` and prints one line naming them,
    e.g. `Epoch 3: skipped 2 unreadable images this epoch: a.jpg (zero bytes), b.jpg (...)`.

    Args:
        skipped: list of `portrait_keras.data.images.UnreadableImage`, the
            `skipped_images` of the training dataset (`make_dataset(skip_bad_images=True)`).
        root: str or None. Folder the printed paths are made relative to.
        shown: int. Files named on the line; the rest are counted. Defaults to `10`.
    """

    def __init__(self, skipped, root=None, shown=10):
        super().__init__()
        self.skipped = list(skipped)
        self.root = root
        self.shown = int(shown)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["skipped_images"] = len(self.skipped)
        if not self.skipped:
            return
        names = [
            f"{os.path.relpath(b.path, self.root) if self.root else b.path} ({b.reason})"
            for b in self.skipped[: self.shown]
        ]
        more = len(self.skipped) - self.shown
        tail = f", and {more} more" if more > 0 else ""
        count = len(self.skipped)
        print(
            f"Epoch {epoch + 1}: skipped {count} unreadable image{'s' if count != 1 else ''} this epoch: "
            f"{', '.join(names)}{tail}",
            file=sys.stderr,
            flush=True,
        )


class NaNGuard(keras.callbacks.Callback):
    """Stops training when the loss is NaN or infinite, naming the task(s) that diverged,
    and keeps the weights of the last good epoch.

    Checked after each batch on the running per-task means (`loss_<task>`). At the end of
    every epoch whose losses are all finite the model's weights are written to
    `last_good` (atomically: a crash while writing keeps the previous file), so the file
    always holds finite weights; a diverged epoch leaves it as it was.

    Args:
        last_good: str or None. A `.weights.h5` path for the weights of the last good
            epoch; None writes nothing. Defaults to `None`.
    """

    def __init__(self, last_good=None):
        super().__init__()
        self.last_good = last_good
        self.diverged = []

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = [k[5:] for k, v in logs.items() if k.startswith("loss_") and not _finite(v)]
        if not bad and "loss" in logs and not _finite(logs["loss"]):
            bad = ["<total>"]
        if bad:
            self.diverged = bad
            self.model.stop_training = True
            kept = (
                f"The weights of the last good epoch stay in {self.last_good}."
                if self.last_good and os.path.exists(self.last_good)
                else "No epoch finished before it, so there are no good weights to keep."
            )
            print(
                f"Batch {batch}: loss diverged (NaN/Inf) in task(s) {', '.join(bad)}; training stopped. {kept}",
                file=sys.stderr,
                flush=True,
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.last_good and not self.diverged and _all_finite(logs):
            save_weights_atomically(self.model, self.last_good)


class HistoryLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` (appending) whose columns grow with the keys logged.

    Keras picks the columns from the first epoch's logs of each `fit` and drops any key that
    comes later: PIQ, re-id and F1 when `eval_every` leaves the first epoch out. Here a key
    without a column rewrites the file with one more column (earlier rows hold `NA` there,
    Keras' mark of a missing value), and a resumed run (or a second `fit`) keeps the header
    already in the file, so every value stays under its own column.

    Args:
        filename: str. The CSV file (`history.csv`).
    """

    def __init__(self, filename):
        super().__init__(filename, append=True)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if os.path.exists(self.filename) and os.path.getsize(self.filename):
            with open(self.filename, encoding="utf-8", newline="") as f:
                header = next(csv.reader(f, delimiter=self.sep), [])
            if header[:1] == ["epoch"]:
                self.keys = header[1:]

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None:
            # Keras would add a `val_` twin of every column when there is no validation data.
            self.keys = sorted(logs or {})
        else:
            new = set(logs or {}) - set(self.keys)
            if new:
                self._widen(new)
        super().on_epoch_end(epoch, logs)

    def _widen(self, new):
        """Rewrites the file (atomically) with the columns of `new` added, `NA` in earlier rows."""
        self.csv_file.close()
        rows = []
        if os.path.exists(self.filename) and os.path.getsize(self.filename):
            with open(self.filename, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f, delimiter=self.sep))
        self.keys = sorted(set(self.keys) | new)
        temporary = self.filename + ".partial"
        with open(temporary, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, ["epoch", *self.keys], restval="NA", delimiter=self.sep)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, self.filename)
        self.csv_file = open(self.filename, "a", encoding="utf-8")  # noqa: SIM115  (Keras closes it)
        self.writer = None  # made again by Keras with the new columns, without a header
        self.append_header = False


class TestSplitTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that writes the test-split metrics under `test`.

    Keras files every key without a `val_` prefix under `train`; PIQ, re-id and F1 are
    measured on query/gallery, so here they go to `LOG_DIR/test` instead.

    Args:
        log_dir: str. The TensorBoard folder.
        test_keys: callable returning the keys of the latest test-split metrics
            (e.g. `lambda: piq_callback.last`).
        **kwargs: `keras.callbacks.TensorBoard` arguments.
    """

    def __init__(self, log_dir, test_keys, **kwargs):
        super().__init__(log_dir, **kwargs)
        self.test_keys = test_keys
        self._test_writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        keys = set(self.test_keys()) & set(logs)
        test = {k: logs.pop(k) for k in sorted(keys)}
        super().on_epoch_end(epoch, logs)
        if test:
            import tensorflow as tf

            if self._test_writer is None:
                self._test_writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "test"))
            with self._test_writer.as_default():
                for name, value in test.items():
                    tf.summary.scalar(f"epoch_{name}", value, step=epoch)
            self._test_writer.flush()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._test_writer is not None:
            self._test_writer.close()
            self._test_writer = None


class BackupAndResume(keras.callbacks.Callback):
    """Backs up the training state every `every` steps and at every epoch end, so that a
    killed run, started again with the same command, goes on from the step it had reached.

    The state is one file, `backup_dir/state.weights.h5`: the weights of the model and its
    optimizer, the global step (`step`, the train batches run) as an attribute of the file,
    and the states of the model's random seed generators (a `Dropout`'s masks: Keras' weight
    files leave them out, so a resumed run would draw the first epochs' masks again). It is
    written to a temporary file and renamed over the old one, so a kill while writing leaves
    the previous state.

    The step is counted here, on the host, rather than read from `optimizer.iterations`: with
    mixed float16 the `LossScaleOptimizer` skips the update of a batch whose gradients
    overflow, and its `iterations` falls behind the batches the data stream has given.

    Keras' own `BackupAndRestore` (Keras 3.15) restarts an interrupted epoch from its first
    batch with the weights saved in its middle, which trains those batches twice; here
    `restore` returns the global step and the caller rebuilds the data stream from that
    step (`training.train` does), so the resumed run is the uninterrupted one. A state is
    only written while the losses are finite. The last batch of an epoch is backed up by the
    epoch end, after the other callbacks (PIQ, history row, checkpoints): a kill among those
    resumes at that batch's epoch, not after it.

    Under MultiWorkerMirroredStrategy every worker backs up (saving reads distributed
    variables, a collective), each into its own `backup_dir`, and all restore from the
    chief's (`restore_dir`).

    Args:
        backup_dir: str. Folder of the state; it should hold nothing else.
        every: int or None. Back up every n global steps too (None: epoch ends only).
        restore_dir: str or None. Folder of the state to resume from. Defaults to `backup_dir`.

    Example:
    >>> backup = BackupAndResume("run/backup", every=500)  # doctest: +SKIP
    >>> step = backup.restore(trainer)  # 0 on a fresh start  # doctest: +SKIP
    """

    FILE = "state.weights.h5"

    def __init__(self, backup_dir, every=None, restore_dir=None):
        super().__init__()
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive integer or None. Received: every={every!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.every = every
        self.path = os.path.join(self.backup_dir, self.FILE)
        self.restore_path = os.path.join(os.fspath(restore_dir or backup_dir), self.FILE)
        self.step = 0  # train batches run, by every fit of this callback and the restored run
        self._epoch_start = 0
        self._saved_step = None

    def exists(self):
        """Whether a state was backed up (a run to resume)."""
        return os.path.exists(self.restore_path)

    def restore(self, model):
        """Loads the backed-up state into `model` (compiled); returns its global step (0: none).

        Raises ValueError naming the file when it does not fit the model (another config).
        """
        if not self.exists():
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(self.restore_path)
            with h5py.File(self.restore_path, "r") as f:
                step = f.attrs.get("step")
                _restore_seed_states(model, f)
        except (ValueError, OSError) as e:
            raise ValueError(
                f"{self.restore_path}: cannot resume from this backup ({e}). It holds the state of another "
                f"model or a damaged file; delete {self.backup_dir} to start the run over."
            ) from e
        # A state written before the step was kept: the optimizer's count, its best guess.
        self.step = int(step) if step is not None else _iterations(model)
        self._epoch_start = self._saved_step = self.step
        return self.step

    def start_at(self, step):
        """Counts on from global step `step` (a finished run continued: its state was loaded
        from elsewhere, and the first backup comes with the next step)."""
        self.step = self._epoch_start = self._saved_step = int(step)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step

    def on_train_batch_end(self, batch, logs=None):
        # `batch` counts from the first batch of this fit's epoch (steps_per_execution > 1
        # reports every n-th batch).
        before, self.step = self.step, self._epoch_start + batch + 1
        epoch_end = batch + 1 == (self.params or {}).get("steps")  # backed up by on_epoch_end
        if self.every and self.step // self.every > before // self.every and not epoch_end and _all_finite(logs):
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        if _all_finite(logs):
            self._save()

    def _save(self):
        if self.step != self._saved_step:  # else nothing new (an epoch of unknown length: last batch)
            save_weights_atomically(self.model, self.path, step=self.step)
            self._saved_step = self.step

    def remove(self):
        """Deletes the backup (the run finished)."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)


def save_weights_atomically(model, path, step=None):
    """`model.save_weights(path)` through a temporary file renamed over `path`; `step` (an
    int), when given, is stored as the file's `step` attribute. The temporary file is named
    by process, so two writers never share one."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path[: -len(".weights.h5")] + f".partial-{os.getpid()}.weights.h5"
    model.save_weights(temporary, overwrite=True)
    with h5py.File(temporary, "r+") as f:
        if step is not None:
            f.attrs["step"] = int(step)
        for i, state in enumerate(_seed_states(model)):
            f.create_dataset(f"{SEED_GROUP}/{i}", data=keras.ops.convert_to_numpy(state))
    os.replace(temporary, path)


SEED_GROUP = "seed_generator_states"  # in a backup file, beside Keras' own groups


def _seed_states(model):
    """The state variables of the random seed generators of `model`'s layers, in layer order."""
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def _restore_seed_states(model, f):
    """Assigns the seed generator states stored in the open backup file `f` (none in a backup
    written before they were kept: those stay as built)."""
    if SEED_GROUP not in f:
        return
    states = _seed_states(model)
    if len(f[SEED_GROUP]) != len(states):
        raise ValueError(f"it holds {len(f[SEED_GROUP])} random seed states, the model has {len(states)}")
    for i, state in enumerate(states):
        state.assign(np.asarray(f[f"{SEED_GROUP}/{i}"]))


def _iterations(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _all_finite(logs):
    """Whether every loss in `logs` (`loss`, `loss_<task>`) is finite."""
    return all(_finite(v) for k, v in (logs or {}).items() if k == "loss" or k.startswith("loss_"))


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True
