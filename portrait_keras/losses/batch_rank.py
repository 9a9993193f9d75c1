"""Batch Rank loss (paper eq. 4)."""

import keras
from keras import ops

from portrait_keras.losses._masks import as_float, as_keras_loss, l2_normalize, label_masks, not_self


def batch_rank_loss(labels, embeddings):
    """Batch Rank (BR) loss of paper eq. 4, with unlabelled samples removed first.

        L_BR = 1/N Σ_i Σ_{j≠i, y_j = y_i} −log( exp(cos(f_i, f_j)) / Σ_{c≠i} exp(cos(f_i, f_c)) )

    Every labelled sample is an anchor; samples labelled `-1` are removed before anything
    is computed: they are neither anchors, nor positives, nor terms of the denominators,
    and N is the number of labelled samples (masks, not gathers, so shapes stay static).

    Args:
        labels: tensor `[B]` int (`-1` = unknown) or `[B, C]` multi-hot (a row of `-1` =
            unknown; positives are identical rows).
        embeddings: float tensor `[B, D]`. Features before the BNNeck (L2-normalised here).

    Returns:
        float32 scalar; `0` when no sample is labelled or no labelled sample has a positive.

    Example:
    >>> f = [[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]  # cos(f0, f1) = 0, cos(f0, f2) = 1
    >>> float(batch_rank_loss([0, 0, 1], f))  # (log(1 + e) + log 2) / 3
    0.6688...
    """
    f = l2_normalize(as_float(embeddings))
    cos = ops.matmul(f, ops.transpose(f))
    valid, same = label_masks(labels)
    others = not_self(ops.shape(f)[0]) & valid[None, :]  # the c of the denominator
    positives = others & same & valid[:, None]
    denominator = ops.sum(ops.where(others, ops.exp(cos), ops.zeros_like(cos)), axis=-1)
    # An anchor alone in the batch has no positive; keep its log finite (no NaN gradient).
    log_denominator = ops.log(ops.where(denominator > 0, denominator, ops.ones_like(denominator)))
    pair_loss = log_denominator[:, None] - cos
    total = ops.sum(ops.where(positives, pair_loss, ops.zeros_like(pair_loss)))
    return total / ops.maximum(ops.sum(ops.cast(valid, "float32")), 1.0)


@keras.saving.register_keras_serializable(package="portrait_keras")
class BatchRankLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `batch_rank_loss` (paper eq. 4), for `model.compile`.

    `y_true`: labels `[B]` int (`-1` = unknown) or `[B, C]` multi-hot; `y_pred`: features
    `[B, D]`. The value is the function's on the batch (not divided again by the batch size);
    under a multi-replica strategy, the mean of the replicas' values on their own rows
    (`PortraitTrainer` gathers the global batch instead).

    Args:
        name: str. Loss name. Defaults to `"batch_rank_loss"`.
        **kwargs: base `Loss` arguments (`reduction`, `dtype`).

    Example:
    >>> float(BatchRankLoss()([0, 0, 1], [[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]))
    0.6688...
    """

    def __init__(self, name="batch_rank_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return as_keras_loss(batch_rank_loss(y_true, y_pred))
