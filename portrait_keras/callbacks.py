"""Callbacks that put the paper's metrics into Keras `logs`.

Whatever they write into `logs` is seen by callbacks that come after them in the list
(ModelCheckpoint, EarlyStopping, CSVLogger, TensorBoard): put these first.
"""

import math
import sys

import keras

from portrait_keras.evaluation import evaluate


class PIQCallback(keras.callbacks.Callback):
    """Evaluates re-id, per-task Macro F1 and PIQ (eq. 2) every `every` epochs.

    Writes `piq`, `reid_mAP`, `reid_rank1`, `reid_rank5`, `reid_rank10`, `f1_<task>` and the
    aspect scores into `logs` and prints one summary line.

    Args:
        annotations: `portrait_keras.data.Annotations` with query and gallery splits.
        every: int. Evaluate every n epochs; the last epoch is always evaluated when
            `epochs` is given. Defaults to `1`.
        batch_size: int. Inference batch size. Defaults to `128`.
        epochs: int or None. Total epochs of the fit, to evaluate the last one.
        verbose: bool. Print the summary line. Defaults to `True`.

    Example:
    >>> model.fit(train_ds, epochs=5, callbacks=[PIQCallback(annotations)])  # doctest: +SKIP
    """

    def __init__(self, annotations, every=1, batch_size=128, epochs=None, verbose=True):
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
        self.last = {}

    def _due(self, epoch):
        last = self.epochs is not None and epoch + 1 == self.epochs
        return last or (self.every > 0 and (epoch + 1) % self.every == 0)

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        self.last = evaluate(self.model, self.annotations, batch_size=self.batch_size)
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


class NaNGuard(keras.callbacks.Callback):
    """Stops training when the loss is NaN or infinite, naming the task(s) that diverged.

    Checked after each batch on the running per-task means (`loss_<task>`).
    """

    def __init__(self):
        super().__init__()
        self.diverged = []

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = [k[5:] for k, v in logs.items() if k.startswith("loss_") and not _finite(v)]
        if not bad and "loss" in logs and not _finite(logs["loss"]):
            bad = ["<total>"]
        if bad:
            self.diverged = bad
            self.model.stop_training = True
            print(
                f"Batch {batch}: loss diverged (NaN/Inf) in task(s) {', '.join(bad)}; training stopped. "
                "The last checkpoint written before this epoch is kept.",
                file=sys.stderr,
                flush=True,
            )


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True
