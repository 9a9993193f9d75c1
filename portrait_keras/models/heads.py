"""Per-task heads: BNNeck then a bias-free classifier (paper §5, Fig. 6; BoT, Luo et al. 2019).

The metric-learning loss reads the feature *before* the BNNeck, the classifier reads it
*after* (fast-reid `EmbeddingHead`); the re-id embedding used for retrieval is the BNNeck output.
"""

import keras
from keras import layers, ops

from portrait_keras.models.utils import BN_EPSILON, BN_MOMENTUM
from portrait_keras.schema import IDENTITY, MULTI


def task_head(feature, num_classes, name):
    """Apply a BNNeck and a classifier to one task's sub-vector.

    The BNNeck is `BatchNormalization(center=False)`: no learned shift, as BoT freezes the
    BN bias. The classifier has no bias and starts with N(0, 0.001²) weights (BoT), so the
    first logits are near zero even with thousands of re-id classes.

    Args:
        feature: tensor `[B, d]`. The task's sub-vector (metric-learning input).
        num_classes: int. Number of classes C (training ids for re-id).
        name: str. Task name; layers are `"<name>_bnneck"` and `"<name>_classifier"`.

    Returns:
        `(neck, logits)`: `[B, d]` BNNeck output and `[B, C]` logits.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"Task {name!r}: num_classes must be a positive int. Received: num_classes={num_classes!r}")
    neck = layers.BatchNormalization(center=False, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bnneck")(
        feature
    )
    logits = layers.Dense(
        num_classes,
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        name=f"{name}_classifier",
    )(neck)
    return neck, logits


def probabilities(outputs, schema):
    """Class probabilities from the model's logits: softmax, or sigmoid for multi-label tasks.

    Args:
        outputs: dict. The model's output dict (`"<task>"` → logits `[B, C]`).
        schema: `Schema`. Says which tasks are multi-label.

    Returns:
        dict task → probabilities `[B, C]`, for each classification task present in
        `outputs` (not the identity task, whose classes are the training ids).
    """
    probs = {}
    for task in schema.tasks:
        if task.kind == IDENTITY or task.name not in outputs:
            continue
        logits = outputs[task.name]
        probs[task.name] = ops.sigmoid(logits) if task.kind == MULTI else ops.softmax(logits, axis=-1)
    return probs
