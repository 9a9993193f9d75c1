"""Classification metrics: Macro F1 (paper §4.3), balanced accuracy and pedestrian-attribute metrics."""

import numpy as np


def macro_f1(y_true, y_pred, num_classes=None):
    """Macro F1-score of a single-label or multi-label task (paper §4.3).

    The F1 of each class is `2 TP / (2 TP + FP + FN)`; the result is their
    unweighted mean over the scored classes. Rows whose truth is unknown are left
    out. Both kinds score the same classes by default: those present in the known
    rows of `y_true` or `y_pred` (a class nobody has and nobody predicts has no
    F1 to average; one predicted but absent from the truth scores 0). Equals
    scikit-learn's `f1_score(y_true, y_pred, labels=<those classes>,
    average="macro", zero_division=0)` on the known rows.

    - Single-label: `y_true` and `y_pred` are int vectors `[N]`; `-1` in
      `y_true` is unknown. Without `num_classes` the classes are those present
      in the known rows of `y_true` or `y_pred` (scikit-learn's default,
      `labels=None`); with it, all of `0 .. num_classes - 1`, so a class absent
      from both counts as F1 = 0 (scikit-learn's `labels=range(num_classes)`).
    - Multi-label: 0/1 matrices `[N, C]`; a row of `-1` in `y_true` is unknown.
      Every column is a class; a row with no label is allowed. A column with no
      positive in `y_true` or `y_pred` is left out (0.0 when every column is).

    Args:
        y_true: int array `[N]` or 0/1 array `[N, C]`. Ground truth, `-1` unknown.
        y_pred: int array `[N]` (class indices `>= 0`) or 0/1 array `[N, C]`.
        num_classes: int or None. Single-label only: score classes
            `0 .. num_classes - 1`. Defaults to `None`.

    Returns:
        float in [0, 1].

    Example:
    >>> macro_f1([0, 1, 1, -1], [0, 1, 0, 1])
    0.6666666666666666
    >>> macro_f1([[1, 0], [0, 0], [-1, -1]], [[1, 1], [0, 0], [0, 1]])
    0.5
    """
    y_true, y_pred = _known_rows(y_true, y_pred)
    if y_true.ndim == 1:
        if (y_pred < 0).any():
            raise ValueError(f"y_pred must hold class indices >= 0. Received: {y_pred[y_pred < 0][:5]}")
        if num_classes is None:
            labels = np.union1d(y_true, y_pred)
        else:
            if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
                raise ValueError(f"num_classes must be a positive int. Received: num_classes={num_classes!r}")
            bad = np.concatenate([y_true, y_pred])
            bad = bad[bad >= num_classes]
            if bad.size:
                raise ValueError(f"Labels must be < num_classes={num_classes}. Received: {np.unique(bad)[:5]}")
            labels = np.arange(num_classes)
        true_count = np.bincount(np.searchsorted(labels, y_true), minlength=len(labels))
        pred_count = np.bincount(np.searchsorted(labels, y_pred), minlength=len(labels))
        hits = y_true[y_true == y_pred]
        tp = np.bincount(np.searchsorted(labels, hits), minlength=len(labels))
    else:
        if num_classes is not None:
            raise ValueError(
                f"num_classes applies to single-label tasks only; a multi-label task has one class "
                f"per column. Received: num_classes={num_classes!r}, y_true shape {y_true.shape}"
            )
        tp = np.sum(y_true & y_pred, axis=0)
        true_count = y_true.sum(0)
        pred_count = y_pred.sum(0)
        present = true_count + pred_count > 0
        if not present.any():
            return 0.0
        tp, true_count, pred_count = tp[present], true_count[present], pred_count[present]
    return float(np.mean(_divide(2 * tp, true_count + pred_count)))


def balanced_accuracy(y_true, y_pred):
    """Balanced accuracy of a single-label or multi-label task (paper 004, eq. 18).

    Eq. 18 scores a binary attribute by `0.5 * (n_p / N_p + n_n / N_n)`, the mean of
    the true-positive and true-negative rates, so that a rare attribute weighs as much
    as a common one. Generalised as the mean over classes of the per-class recall:

    - Single-label: the mean over the classes present in the known rows of `y_true`
      of `hits / count` (a class nobody has has no recall; one only predicted lowers
      the recall of the classes it was predicted for). Equals scikit-learn's
      `balanced_accuracy_score` on the known rows; a 2-class task gives eq. 18.
    - Multi-label: every column is a binary attribute scored by eq. 18,
      `(TPR + TNR) / 2`, and the result is the mean over columns. A column whose
      known rows are all positive (or all negative) scores its one defined rate,
      as the single-label rule does; unlike `par_metrics`' `mA`, which counts the
      undefined rate as 0.

    Rows whose truth is unknown (`-1`, a whole row of `-1` for multi-label) are left out.

    Args:
        y_true: int array `[N]` or 0/1 array `[N, C]`. Ground truth, `-1` unknown.
        y_pred: int array `[N]` (class indices `>= 0`) or 0/1 array `[N, C]`.

    Returns:
        float in [0, 1].

    Example:
    >>> balanced_accuracy([0, 0, 0, 1, -1], [0, 0, 1, 1, 0])  # recalls 2/3 and 1
    0.8333333333333333
    >>> balanced_accuracy([[1, 0], [0, 0], [0, 1], [-1, -1]], [[1, 0], [1, 0], [0, 0], [1, 1]])
    0.625
    """
    y_true, y_pred = _known_rows(y_true, y_pred)
    if y_true.ndim == 1:
        if (y_pred < 0).any():
            raise ValueError(f"y_pred must hold class indices >= 0. Received: {y_pred[y_pred < 0][:5]}")
        classes, count = np.unique(y_true, return_counts=True)
        hits = np.unique(y_true[y_true == y_pred], return_counts=True)
        recall = np.zeros(len(classes))
        recall[np.searchsorted(classes, hits[0])] = hits[1]
        return float(np.mean(recall / count))
    positives = y_true.sum(0)
    negatives = len(y_true) - positives
    tpr = _divide(np.sum(y_true & y_pred, axis=0), positives)
    tnr = _divide(np.sum(~y_true & ~y_pred, axis=0), negatives)
    defined = (positives > 0).astype(np.float64) + (negatives > 0)
    return float(np.mean((tpr + tnr) / defined))


def par_metrics(y_true, y_pred):
    """Pedestrian-attribute recognition metrics of binary attributes.

    Label-based: mean accuracy `mA`, the mean over attributes of
    `(TP / P + TN / N) / 2` (PAR review, eqs. 1-2). An attribute without a
    positive or without a negative among the known rows has no such value and
    is left out of the mean (as scikit-learn's balanced accuracy scores only the
    classes present), rather than counted as `TN / N / 2` or `TP / P / 2`;
    `mA` is NaN when no attribute has both. Instance-based (eq. 3, as in the
    HFE paper): `accuracy` `|Y ∩ Ŷ| / |Y ∪ Ŷ|`, `precision` `|Y ∩ Ŷ| / |Ŷ|`
    and `recall` `|Y ∩ Ŷ| / |Y|`, each averaged over samples, and
    `f1 = 2 P R / (P + R)` from the mean precision and recall; there every 0/0
    counts as 0. Rows of `-1` in `y_true` are unknown and left out.

    Args:
        y_true: 0/1 array `[N, L]`. Ground-truth attributes, a row of `-1` unknown.
        y_pred: 0/1 array `[N, L]`. Predicted attributes.

    Returns:
        dict with `mA`, `accuracy`, `precision`, `recall`, `f1` (floats in [0, 1];
        `mA` may be NaN).

    Example:
    >>> result = par_metrics([[1, 1], [0, 1]], [[1, 0], [0, 1]])
    >>> result["accuracy"], result["mA"]  # attribute 1 has no negative: left out of mA
    (0.75, 1.0)
    """
    y_true, y_pred = _known_rows(y_true, y_pred)
    if y_true.ndim != 2:
        raise ValueError(f"par_metrics takes 0/1 matrices [N, L]. Received: y_true shape {y_true.shape}")
    tp = np.sum(y_true & y_pred, axis=0)
    tn = np.sum(~y_true & ~y_pred, axis=0)
    positives = y_true.sum(0)
    negatives = len(y_true) - positives
    defined = (positives > 0) & (negatives > 0)
    per_attribute = (_divide(tp, positives) + _divide(tn, negatives)) / 2
    mean_accuracy = np.mean(per_attribute[defined]) if defined.any() else np.nan
    intersection = np.sum(y_true & y_pred, axis=1)
    union = np.sum(y_true | y_pred, axis=1)
    precision = np.mean(_divide(intersection, y_pred.sum(1)))
    recall = np.mean(_divide(intersection, y_true.sum(1)))
    return {
        "mA": float(mean_accuracy),
        "accuracy": float(np.mean(_divide(intersection, union))),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(_divide(2 * precision * recall, precision + recall)),
    }


def _divide(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def _known_rows(y_true, y_pred):
    """Validated arrays without the unknown rows: int64 vectors, or bool matrices."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim not in (1, 2):
        raise ValueError(
            f"y_true and y_pred must have the same shape, [N] or [N, C]. "
            f"Received: shapes {y_true.shape} and {y_pred.shape}"
        )
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.dtype == bool:
            continue
        if not np.issubdtype(y.dtype, np.number) or (y != np.round(y)).any():
            raise ValueError(f"{name} must hold integer labels. Received: dtype {y.dtype}")
    if y_true.ndim == 1:
        known = y_true != -1
        if (y_true < -1).any():
            raise ValueError(
                f"y_true labels must be >= 0, or -1 for unknown. Received: {np.unique(y_true[y_true < -1])[:5]}"
            )
        y_true, y_pred = y_true[known].astype(np.int64), y_pred[known].astype(np.int64)
    else:
        known = ~(y_true == -1).all(1)
        for name, y in (("y_true", y_true[known]), ("y_pred", y_pred)):
            if not np.isin(y, (0, 1)).all():
                raise ValueError(
                    f"{name} must be 0/1 (y_true: a whole row of -1 when unknown). "
                    f"Received: values {np.unique(y[~np.isin(y, (0, 1))])[:5]}"
                )
        y_true, y_pred = y_true[known].astype(bool), y_pred[known].astype(bool)
    if len(y_true) == 0:
        raise ValueError("Every row of y_true is unknown (-1), so the metric is undefined. Received: no known rows")
    return y_true, y_pred
