"""CLIP's symmetric contrastive loss (InfoNCE; Radford et al. 2021, paper §6.3), with repeated texts.

In a batch of B image-text pairs CLIP's logits `[B, B]` score every image against every text;
the loss is the mean of the cross-entropy of each image over the texts and of each text over
the images, the matching pair being the target. Captions written from labels
(`data.captions`) repeat: two images of one caption are no negatives of each other, so the
target of an image is spread evenly over every text equal to its own (and the same for texts),
as in multi-positive contrastive learning. With all captions distinct it is CLIP's loss.
"""

import keras
from keras import ops

from portrait_keras.losses._masks import as_float, as_keras_loss


def clip_contrastive_loss(caption_ids, logits_per_image):
    """Symmetric InfoNCE of CLIP logits, every equal caption a positive.

        T_ij = [c_i = c_j] / Σ_k [c_i = c_k]
        L = ½ · mean_i KL(T_i ‖ softmax_j s_ij) + ½ · mean_j KL(T_j ‖ softmax_i s_ij)

    with `s = logits_per_image` (`exp(logit_scale) · cos`, `ClipModel`'s output) and `c` the
    caption ids (T is symmetric, so one target matrix serves both directions). The KL
    divergence is the cross-entropy `−Σ_j T_ij log softmax_j s_ij` less the entropy of `T_i`, a
    constant that makes 0 the best value; with distinct captions (one-hot T) it is CLIP's loss.

    Args:
        caption_ids: int tensor `[B]`. Equal ids mark equal captions; `arange(B)` for distinct ones.
        logits_per_image: float tensor `[B, B]`. Row i: image i against text j.

    Returns:
        float32 scalar.

    Example:
    >>> import numpy as np
    >>> float(clip_contrastive_loss([0, 1], np.zeros((2, 2))))  # uniform logits: log 2
    0.693...
    >>> float(clip_contrastive_loss([0, 0], np.zeros((2, 2))))  # both texts right: nothing to learn
    0.0
    """
    logits = as_float(logits_per_image)
    ids = ops.convert_to_tensor(caption_ids)
    same = ops.cast(ops.equal(ids[:, None], ids[None, :]), "float32")
    targets = same / ops.sum(same, axis=1, keepdims=True)
    per_image = -ops.sum(targets * ops.log_softmax(logits, axis=1), axis=1)
    per_text = -ops.sum(targets * ops.log_softmax(ops.transpose(logits), axis=1), axis=1)
    entropy = -ops.sum(ops.where(targets > 0, targets * ops.log(ops.maximum(targets, 1e-30)), 0.0), axis=1)
    return 0.5 * (ops.mean(per_image - entropy) + ops.mean(per_text - entropy))


@keras.saving.register_keras_serializable(package="portrait_keras")
class ClipContrastiveLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `clip_contrastive_loss`, for `model.compile`.

    `y_true`: caption ids `[B]`; `y_pred`: `logits_per_image` `[B, B]`. The value is the
    function's on the batch.

    Args:
        name: str. Loss name. Defaults to `"clip_contrastive_loss"`.
        **kwargs: base `Loss` arguments (`reduction`, `dtype`).

    Example:
    >>> import numpy as np
    >>> float(ClipContrastiveLoss()(np.array([0, 1]), np.zeros((2, 2))))
    0.693...
    """

    def __init__(self, name="clip_contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return as_keras_loss(clip_contrastive_loss(y_true, y_pred))
