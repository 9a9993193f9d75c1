"""Losses of the portrait model (paper §5, eqs. 4–6): plain functions of tensors, keras.ops only.

Masked entries (`-1`) contribute nothing; an all-masked batch gives 0. Labels come first, as in
Keras' `(y_true, y_pred)`. The `keras.losses.Loss` classes (`BatchRankLoss`,
`BatchHardTripletLoss`, `MaskedSparseCategoricalCrossentropy`, `MaskedBinaryCrossentropy`) wrap
the functions for `model.compile(loss={output_name: ...})`; each returns one loss per batch, so a
`sample_weight` only scales it by the weights' mean.
"""

from portrait_keras.losses.batch_rank import BatchRankLoss, batch_rank_loss
from portrait_keras.losses.classification import (
    MaskedBinaryCrossentropy,
    MaskedSparseCategoricalCrossentropy,
    has_labels,
    masked_multilabel_bce,
    masked_sparse_ce,
)
from portrait_keras.losses.contrastive import ClipContrastiveLoss, clip_contrastive_loss
from portrait_keras.losses.hfe import hfe_loss, hfe_terms, hfe_weight
from portrait_keras.losses.relation import MaskedTraitCrossentropy, masked_trait_bce
from portrait_keras.losses.triplet import BatchHardTripletLoss, batch_hard_triplet_loss
from portrait_keras.losses.uncertainty import UncertaintyWeighting, average_losses, task_loss

__all__ = [
    "BatchHardTripletLoss",
    "BatchRankLoss",
    "ClipContrastiveLoss",
    "MaskedBinaryCrossentropy",
    "MaskedSparseCategoricalCrossentropy",
    "MaskedTraitCrossentropy",
    "UncertaintyWeighting",
    "average_losses",
    "batch_hard_triplet_loss",
    "batch_rank_loss",
    "clip_contrastive_loss",
    "has_labels",
    "hfe_loss",
    "hfe_terms",
    "hfe_weight",
    "masked_multilabel_bce",
    "masked_sparse_ce",
    "masked_trait_bce",
    "task_loss",
]
