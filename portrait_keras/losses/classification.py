"""Masked classification losses: unknown labels (`-1`) contribute nothing (design.md, Losses)."""

import keras
from keras import ops

from portrait_keras.losses._masks import as_float, as_keras_loss, masked_mean


def _check_label_smoothing(label_smoothing):
    if not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing!r}")


def masked_sparse_ce(labels, logits, label_smoothing=0.0):
    """Softmax cross-entropy over the labelled samples (the L_cls of paper eq. 5).

    Args:
        labels: int tensor `[B]` (or `[B, 1]`). Class index, `-1` = unknown.
        logits: float tensor `[B, C]`.
        label_smoothing: float in [0, 1). Target `(1 − ε)·onehot + ε/C` (BoT). Defaults to `0.0`.

    Returns:
        Scalar: mean over labelled samples; `0` when none is labelled.

    Example:
    >>> float(masked_sparse_ce([0, -1], [[0.0, 0.0], [5.0, -5.0]]))  # log 2
    0.6931...
    """
    _check_label_smoothing(label_smoothing)
    logits = as_float(logits)
    labels = ops.reshape(ops.cast(ops.convert_to_tensor(labels), "int32"), (-1,))
    valid = labels >= 0
    num_classes = logits.shape[-1]
    target = ops.one_hot(ops.where(valid, labels, 0), num_classes, dtype="float32")
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    per_sample = -ops.sum(target * ops.log_softmax(logits, axis=-1), axis=-1)
    return masked_mean(per_sample, valid)


def masked_multilabel_bce(labels, logits):
    """Sigmoid binary cross-entropy for a multi-label task (expression), rows of `-1` ignored.

    Args:
        labels: float tensor `[B, C]`. Multi-hot; a row containing `-1` = unknown.
        logits: float tensor `[B, C]`.

    Returns:
        Scalar: mean over labelled rows of the mean BCE over the C classes; `0` when no row
        is labelled.
    """
    logits = as_float(logits)
    labels = as_float(labels)
    valid = ops.all(labels >= 0, axis=-1)
    y = ops.where(valid[:, None], labels, ops.zeros_like(labels))
    # Stable form of −y·log σ(x) − (1 − y)·log(1 − σ(x)).
    bce = ops.relu(logits) - logits * y + ops.log1p(ops.exp(-ops.abs(logits)))
    return masked_mean(ops.mean(bce, axis=-1), valid)


def has_labels(labels):
    """Bool scalar: does the batch hold at least one known label? (`present` of eq. 6 weighting).

    Args:
        labels: tensor `[B]` (`-1` unknown) or `[B, C]` (a row with `-1` unknown).
    """
    labels = ops.convert_to_tensor(labels)
    valid = labels >= 0 if len(labels.shape) == 1 else ops.all(labels >= 0, axis=-1)
    return ops.any(valid)


@keras.saving.register_keras_serializable(package="portrait_keras")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `masked_sparse_ce`, for `model.compile`.

    `y_true`: class indices `[B]` or `[B, 1]`, `-1` = unknown; `y_pred`: logits `[B, C]`.
    The value is the mean over the labelled samples (not divided again by the batch size);
    under a multi-replica strategy, the mean of the replicas' values on their own rows.

    Args:
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        name: str. Loss name. Defaults to `"masked_sparse_categorical_crossentropy"`.
        **kwargs: base `Loss` arguments (`reduction`, `dtype`).

    Example:
    >>> float(MaskedSparseCategoricalCrossentropy()([0, -1], [[0.0, 0.0], [5.0, -5.0]]))  # log 2
    0.6931...
    """

    def __init__(self, label_smoothing=0.0, name="masked_sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_label_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        return as_keras_loss(masked_sparse_ce(y_true, y_pred, self.label_smoothing))

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="portrait_keras")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `masked_multilabel_bce`, for `model.compile`.

    `y_true`: multi-hot `[B, C]`, a row with `-1` = unknown; `y_pred`: logits `[B, C]`. The
    value is the mean over the labelled rows (not divided again by the batch size); under a
    multi-replica strategy, the mean of the replicas' values on their own rows.

    Args:
        name: str. Loss name. Defaults to `"masked_binary_crossentropy"`.
        **kwargs: base `Loss` arguments (`reduction`, `dtype`).

    Example:
    >>> float(MaskedBinaryCrossentropy()([[1.0, 0.0], [-1.0, -1.0]], [[0.0, 0.0], [9.0, 9.0]]))  # log 2
    0.6931...
    """

    def __init__(self, name="masked_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return as_keras_loss(masked_multilabel_bce(y_true, y_pred))
