"""Masked classification losses: unknown labels (`-1`) contribute nothing (design.md, Losses)."""

from keras import ops

from portrait_keras.losses._masks import as_float, masked_mean


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
    if not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing!r}")
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
