"""Shared by the losses: label masks (which samples are labelled, which pairs agree) and small helpers."""

from keras import ops


def label_masks(labels):
    """Valid samples and same-label pairs of a batch.

    Args:
        labels: tensor. Integer labels `[B]` (`-1` = unknown), or multi-hot `[B, C]`
            (a row of `-1` = unknown; two rows agree when equal).

    Returns:
        `(valid, same)`: bool `[B]` and bool `[B, B]`. `same` is only meaningful where both
        samples are valid.
    """
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 1:
        return labels >= 0, ops.equal(labels[:, None], labels[None, :])
    if len(labels.shape) == 2:
        valid = ops.all(labels >= 0, axis=-1)
        same = ops.all(ops.equal(labels[:, None, :], labels[None, :, :]), axis=-1)
        return valid, same
    raise ValueError(f"labels must be [B] or [B, C]. Received: labels.shape={labels.shape}")


def not_self(batch_size):
    """Bool `[B, B]`, True off the diagonal (pairs i ≠ j)."""
    idx = ops.arange(batch_size)
    return ops.not_equal(idx[:, None], idx[None, :])


def l2_normalize(x, epsilon=1e-12):
    """Rows of `x` `[B, D]` scaled to unit Euclidean norm (zero rows stay zero)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), epsilon))


def masked_mean(values, mask):
    """Mean of `values` where `mask`; 0 where nothing is selected (no NaN, no gradient)."""
    total = ops.sum(ops.where(mask, values, ops.zeros_like(values)))
    return total / ops.maximum(ops.sum(ops.cast(mask, values.dtype)), 1.0)


def as_float(x):
    """`x` as a float32 tensor (losses are computed in float32, also under mixed precision)."""
    return ops.cast(ops.convert_to_tensor(x), "float32")


def as_keras_loss(value):
    """A batch loss (scalar) as the `call` of a `keras.losses.Loss` returns it: shape `[1]`.

    Keras' reduction returns a scalar untouched, so under a multi-replica tf.distribute
    strategy it would not be divided by the replica count (summed gradients and logged loss
    twice too large on two replicas); `[1]` is reduced to the same value and then scaled as
    Keras' own losses are.
    """
    return ops.reshape(as_float(value), (1,))
