"""The relation-trait loss of paper 004 eq. 17: binary cross-entropy per trait, missing traits masked.

`losses.classification.MaskedBinaryCrossentropy` does not fit: it drops a whole row as soon
as one value is unknown (an expression row is labelled or not), while a pair may be labelled
for some traits only. Here each (pair, trait) cell counts on its own. The weight-decay terms
of eq. 17 are added by `RelationModel.compute_loss` (`RelationModel.weight_decay`).
"""

import keras
from keras import ops

from portrait_keras.losses._masks import as_float, as_keras_loss


def masked_trait_bce(labels, logits):
    """Eq. 17's data term: `Σ_i −g_i·ln p_i − (1 − g_i)·ln(1 − p_i)` over the known traits of a
    pair, averaged over the pairs with at least one known trait.

    Args:
        labels: float tensor `[B, T]`. 1 = trait present, 0 = absent, `-1` = unknown.
        logits: float tensor `[B, T]`. `wᵀ_gi [x_s; x_g]` of eq. 15.

    Returns:
        Scalar; `0` when no trait of the batch is known.

    Example:
    >>> float(masked_trait_bce([[1.0, -1.0], [-1.0, -1.0]], [[0.0, 9.0], [9.0, 9.0]]))  # log 2
    0.6931...
    """
    logits = as_float(logits)
    labels = as_float(labels)
    known = labels >= 0
    y = ops.where(known, labels, ops.zeros_like(labels))
    # Stable form of −y·log σ(x) − (1 − y)·log(1 − σ(x)).
    bce = ops.relu(logits) - logits * y + ops.log1p(ops.exp(-ops.abs(logits)))
    per_pair = ops.sum(ops.where(known, bce, ops.zeros_like(bce)), axis=-1)
    labelled = ops.cast(ops.any(known, axis=-1), "float32")
    return ops.sum(per_pair * labelled) / ops.maximum(ops.sum(labelled), 1.0)


@keras.saving.register_keras_serializable(package="portrait_keras")
class MaskedTraitCrossentropy(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `masked_trait_bce`, for `model.compile`.

    `y_true`: `[B, T]` of 1/0/`-1` (unknown); `y_pred`: logits `[B, T]`.

    Args:
        name: str. Defaults to `"masked_trait_crossentropy"`.
        **kwargs: base `Loss` arguments (`reduction`, `dtype`).

    Example:
    >>> float(MaskedTraitCrossentropy()([[1.0, -1.0]], [[0.0, 5.0]]))  # log 2
    0.6931...
    """

    def __init__(self, name="masked_trait_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return as_keras_loss(masked_trait_bce(y_true, y_pred))
