"""Batch-hard triplet loss on L2-normalised features (Hermans et al. 2017; paper §6.3, Table 4)."""

import keras
from keras import ops

from portrait_keras.losses._masks import as_float, as_keras_loss, l2_normalize, label_masks, masked_mean, not_self


def _check_margin(margin):
    if not isinstance(margin, (int, float)) or margin < 0:
        raise ValueError(f"margin must be a number ≥ 0. Received: margin={margin!r}")


def batch_hard_triplet_loss(labels, embeddings, margin=0.3):
    """Batch-hard triplet loss with the Euclidean distance of normalised features (paper eq. 3).

        L = mean_i [ max_{p: y_p = y_i} d(f_i, f_p) − min_{n: y_n ≠ y_i} d(f_i, f_n) + margin ]_+

    with d(a, b) = ‖a/‖a‖ − b/‖b‖‖ = √(2 − 2 cos(a, b)). Samples labelled `-1` are removed;
    the mean runs over anchors that have both a positive and a negative in the batch.

    Args:
        labels: tensor `[B]` int (`-1` = unknown) or `[B, C]` multi-hot (a row of `-1` = unknown).
        embeddings: float tensor `[B, D]`. Features before the BNNeck (L2-normalised here).
        margin: float ≥ 0. Defaults to `0.3`.

    Returns:
        float32 scalar; `0` when no anchor has both a positive and a negative.

    Example:
    >>> f = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-2.0, 0.0]]
    >>> float(batch_hard_triplet_loss([0, 0, 1, 1], f))  # only anchor 1 violates: (√2 − √2 + 0.3) / 4
    0.075...
    """
    _check_margin(margin)
    f = l2_normalize(as_float(embeddings))
    cos = ops.matmul(f, ops.transpose(f))
    # The floor keeps sqrt's gradient finite for identical features.
    dist = ops.sqrt(ops.maximum(2.0 - 2.0 * cos, 1e-12))
    valid, same = label_masks(labels)
    pairs = not_self(ops.shape(f)[0]) & valid[:, None] & valid[None, :]
    positives = pairs & same
    negatives = pairs & ~same
    hardest_positive = ops.max(ops.where(positives, dist, ops.zeros_like(dist)), axis=-1)
    hardest_negative = ops.min(ops.where(negatives, dist, ops.full_like(dist, 4.0)), axis=-1)
    per_anchor = ops.relu(hardest_positive - hardest_negative + margin)
    return masked_mean(per_anchor, ops.any(positives, axis=-1) & ops.any(negatives, axis=-1))


@keras.saving.register_keras_serializable(package="portrait_keras")
class BatchHardTripletLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `batch_hard_triplet_loss`, for `model.compile`.

    `y_true`: labels `[B]` int (`-1` = unknown) or `[B, C]` multi-hot; `y_pred`: features
    `[B, D]`. The value is the function's on the batch (not divided again by the batch size);
    under a multi-replica strategy, the mean of the replicas' values on their own rows.

    Args:
        margin: float ≥ 0. Defaults to `0.3`.
        name: str. Loss name. Defaults to `"batch_hard_triplet_loss"`.
        **kwargs: base `Loss` arguments (`reduction`, `dtype`).

    Example:
    >>> f = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-2.0, 0.0]]
    >>> float(BatchHardTripletLoss(margin=0.3)([0, 0, 1, 1], f))
    0.075...
    """

    def __init__(self, margin=0.3, name="batch_hard_triplet_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_margin(margin)
        self.margin = margin

    def call(self, y_true, y_pred):
        return as_keras_loss(batch_hard_triplet_loss(y_true, y_pred, self.margin))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
