"""Hierarchical Feature Embedding loss (Yang et al., "Hierarchical Feature Embedding for
Attribute Recognition", CVPR 2020, §3.1–3.3, eqs. 4–8, Table 1).

Our reading, for one attribute (the paper sums eqs. 4–6 over its M attribute branches; call
this once per attribute feature). With d the Euclidean distance of the *unnormalised*
features (the paper's d(·) of eq. 3) and, for an anchor a, the quintuplet of Table 1 mined
by batch-hard selection:

| sample | attribute | ID        | selection                 |
|--------|-----------|-----------|---------------------------|
| p1     | same      | same      | farthest (argmax d)       |
| p2     | same      | different | nearest  (argmin d)       |
| p3     | same      | different | farthest (argmax d)       |
| n      | different | different | nearest  (argmin d)       |

    L_inter = mean_a [d(a, p3) − d(a, n) + α1]_+     (eq. 4)
    L_intra = mean_a [d(a, p1) − d(a, p2) + α2]_+    (eq. 5)
    L_ABR   = mean_a [α3 − d(a, n)]_+                (eq. 6)
    L_HFE   = L_inter + L_intra + L_ABR              (eq. 7)

The paper divides by the batch size N; we average each term over the anchors that have the
samples it needs (an anchor whose ID has no other image in the batch has no p1 and is left
out of L_intra), so a term does not shrink with how many anchors happen to qualify.
A sample takes part only when both its attribute and its ID are known (`-1` = unknown):
every role of Table 1 needs the ID relation to the anchor.
"""

import math

from keras import ops

from portrait_keras.losses._masks import as_float, label_masks, masked_mean, not_self


def hfe_terms(id_labels, embeddings, attribute_labels, alpha1=0.3, alpha2=0.1, alpha3=5.0):
    """The three terms of the HFE loss for one attribute (module docstring).

    Args:
        id_labels: int tensor `[B]`. Identity, `-1` = unknown.
        embeddings: float tensor `[B, D]`. The attribute's features (not normalised).
        attribute_labels: tensor `[B]` int (`-1` = unknown) or `[B, C]` multi-hot.
        alpha1: float. Inter-class margin. Defaults to `0.3`.
        alpha2: float. Intra-class margin. Defaults to `0.1`.
        alpha3: float. Absolute boundary of the ABR. Defaults to `5.0`.

    Returns:
        dict `{"inter", "intra", "abr"}` of float32 scalars (each `0` when no anchor qualifies).

    Example:
    >>> terms = hfe_terms([0, 0, 1, 2], [[0.0], [1.0], [3.0], [4.0]], [0, 0, 0, 1])
    >>> {k: round(float(v), 4) for k, v in terms.items()}  # ABR: [5 − d(a, n)]+ = 1, 2, 4, 4
    {'inter': 0.7667, 'intra': 0.0, 'abr': 2.75}
    """
    for arg, value in (("alpha1", alpha1), ("alpha2", alpha2), ("alpha3", alpha3)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{arg} must be a number ≥ 0. Received: {arg}={value!r}")
    f = as_float(embeddings)
    squared = ops.sum(ops.square(f), axis=-1)
    d2 = squared[:, None] + squared[None, :] - 2.0 * ops.matmul(f, ops.transpose(f))
    # The floor keeps sqrt's gradient finite for identical features.
    dist = ops.sqrt(ops.maximum(d2, 1e-12))
    attr_valid, same_attr = label_masks(attribute_labels)
    id_valid, same_id = label_masks(ops.reshape(ops.convert_to_tensor(id_labels), (-1,)))
    valid = attr_valid & id_valid
    pairs = not_self(ops.shape(f)[0]) & valid[:, None] & valid[None, :]
    p1 = pairs & same_attr & same_id
    p23 = pairs & same_attr & ~same_id
    n = pairs & ~same_attr & ~same_id

    # Batch-hard mining; an anchor without a candidate gets a dummy value, masked below.
    beyond = ops.zeros_like(dist) + ops.stop_gradient(ops.max(dist)) + 1.0
    d_p1 = ops.max(ops.where(p1, dist, ops.zeros_like(dist)), axis=-1)
    d_p2 = ops.min(ops.where(p23, dist, beyond), axis=-1)
    d_p3 = ops.max(ops.where(p23, dist, ops.zeros_like(dist)), axis=-1)
    d_n = ops.min(ops.where(n, dist, beyond), axis=-1)
    has_p1, has_p23, has_n = (ops.any(m, axis=-1) for m in (p1, p23, n))
    return {
        "inter": masked_mean(ops.relu(d_p3 - d_n + alpha1), has_p23 & has_n),
        "intra": masked_mean(ops.relu(d_p1 - d_p2 + alpha2), has_p1 & has_p23),
        "abr": masked_mean(ops.relu(alpha3 - d_n), has_n),
    }


def hfe_loss(id_labels, embeddings, attribute_labels, alpha1=0.3, alpha2=0.1, alpha3=5.0):
    """HFE loss L_inter + L_intra + L_ABR (HFE paper eq. 7) for one attribute.

    Args: as `hfe_terms` (`id_labels` `[B]`, `embeddings` `[B, D]`, `attribute_labels` `[B]`
    or `[B, C]`, then the margins).

    Returns:
        float32 scalar; `0` when no sample has both labels.
    """
    terms = hfe_terms(id_labels, embeddings, attribute_labels, alpha1, alpha2, alpha3)
    return terms["inter"] + terms["intra"] + terms["abr"]


def hfe_weight(iteration, total_iterations, w0=1.0):
    """Dynamic HFE loss weight (HFE paper eq. 8), rising from 0 to `w0` along training.

        w = (½·cos((T − iter)/T · π) + ½) · w0

    Args:
        iteration: int or scalar tensor. Current iteration; past `T` the weight stays `w0`.
        total_iterations: int or scalar tensor. T > 0.
        w0: float. Final weight. Defaults to `1.0`.

    Returns:
        float32 scalar tensor.
    """
    if isinstance(total_iterations, (int, float)) and total_iterations <= 0:
        raise ValueError(f"total_iterations must be > 0. Received: total_iterations={total_iterations!r}")
    it = ops.cast(iteration, "float32")
    total = ops.cast(total_iterations, "float32")
    remaining = ops.clip((total - it) / total, 0.0, 1.0)
    return (0.5 * ops.cos(remaining * math.pi) + 0.5) * w0
