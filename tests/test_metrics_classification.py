import warnings

import numpy as np
import pytest

from portrait_keras.metrics import balanced_accuracy, macro_f1, par_metrics


def test_macro_f1_single_label_hand_case():
    # Known rows: true [0, 1, 1], pred [0, 1, 0]: F1 = 2/3 for both classes.
    assert macro_f1([0, 1, 1, -1], [0, 1, 0, 2]) == pytest.approx(2 / 3)
    # A class absent from truth and prediction counts only when num_classes says so.
    assert macro_f1([0, 1, 1], [0, 1, 0], num_classes=3) == pytest.approx(4 / 9)


def test_macro_f1_multi_label_hand_case():
    y_true = [[1, 0, 0], [0, 0, 0], [-1, -1, -1], [1, 1, 0]]
    y_pred = [[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]]
    # Columns: F1 = 2/3, 1, 0 (predicted, never true).
    assert macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert macro_f1(np.array([[True, False]]), np.array([[True, True]])) == 0.5


def test_macro_f1_scores_the_same_classes_for_both_kinds():
    # An expression nobody shows and nobody predicts does not cost a perfect model 1/7,
    # as an absent single-label class does not.
    perfect = np.eye(3, 7, dtype=np.int64)
    assert macro_f1(perfect, perfect) == 1.0
    assert macro_f1([0, 1, 2], [0, 1, 2]) == 1.0
    # Predicted but absent from the truth: scored 0 in both.
    assert macro_f1([0, 1], [0, 2]) == pytest.approx((1 + 0 + 0) / 3)
    assert macro_f1([[1, 0, 0], [0, 1, 0]], [[1, 0, 0], [0, 0, 1]]) == pytest.approx((1 + 0 + 0) / 3)
    assert macro_f1([[0, 0]], [[0, 0]]) == 0.0


def test_macro_f1_single_label_equals_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true = rng.integers(-1, 6, 200)
        y_pred = rng.integers(0, 7, 200)
        known = y_true != -1
        expected = metrics.f1_score(y_true[known], y_pred[known], average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred) == pytest.approx(expected, abs=1e-12)
        expected = metrics.f1_score(y_true[known], y_pred[known], labels=np.arange(8), average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred, num_classes=8) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_multi_label_equals_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(20):
        y_true = (rng.random((150, 7)) < 0.2).astype(np.float32)
        y_true[rng.random(150) < 0.2] = -1  # unknown rows
        y_true[:5] = 0  # rows without any label
        y_true[:, 6] = np.where(y_true[:, 6] == -1, -1, 0)  # a class that never occurs
        y_pred = (rng.random((150, 7)) < 0.25).astype(np.int64)
        known = ~(y_true == -1).all(1)
        present = np.flatnonzero((y_true[known] == 1).any(0) | (y_pred[known] == 1).any(0))
        expected = metrics.f1_score(y_true[known], y_pred[known], labels=present, average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "y_true, y_pred, kwargs, message",
    [
        ([0, 1], [0], {}, "same shape"),
        ([-1, -1], [0, 1], {}, "no known rows"),
        ([0, 1], [0, -1], {}, "y_pred must hold class indices >= 0"),
        ([0, -2], [0, 1], {}, "y_true labels must be >= 0"),
        ([0, 3], [0, 1], {"num_classes": 3}, "Labels must be < num_classes=3"),
        ([0, 1], [0, 1], {"num_classes": 0}, "num_classes must be a positive int"),
        (["a", "b"], [0, 1], {}, "integer labels"),
        ([0.5, 1], [0, 1], {}, "integer labels"),
        ([[1, 0]], [[1, 0]], {"num_classes": 2}, "single-label tasks only"),
        ([[1, -1]], [[1, 0]], {}, "must be 0/1"),
        ([[1, 0]], [[2, 0]], {}, "must be 0/1"),
    ],
)
def test_macro_f1_errors(y_true, y_pred, kwargs, message):
    with pytest.raises(ValueError, match=message):
        macro_f1(y_true, y_pred, **kwargs)


def test_par_metrics_hand_case():
    y_true = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [-1, -1, -1]])
    y_pred = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 0], [1, 1, 1]])
    result = par_metrics(y_true, y_pred)
    # Attributes over the 3 known rows: (TPR + TNR) / 2 = (1 + 1)/2, (1 + 1/2)/2, (0 + 1)/2.
    assert result["mA"] == pytest.approx((1 + 0.75 + 0.5) / 3)
    # Rows: |Y∩Ŷ| = 1, 0, 2; |Y∪Ŷ| = 3, 0, 2; |Ŷ| = 2, 0, 2; |Y| = 2, 0, 2 (0/0 -> 0).
    assert result["accuracy"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert result["precision"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert result["recall"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert result["f1"] == pytest.approx(0.5)  # 2PR/(P+R) with P = R = 1/2


def test_par_metrics_zero_division_is_zero_and_undefined_attributes_leave_ma():
    result = par_metrics([[0, 0]], [[0, 0]])
    assert np.isnan(result.pop("mA"))  # no attribute has a positive: no mA^i is defined
    assert result == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    # Attribute 0 has no positive, attribute 2 no negative: only attribute 1 enters mA.
    y_true = [[0, 1, 1], [0, 0, 1], [0, 0, 1]]
    assert par_metrics(y_true, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])["mA"] == pytest.approx((1 + 1 / 2) / 2)
    with pytest.raises(ValueError, match=r"matrices \[N, L\]"):
        par_metrics([0, 1], [0, 1])


def test_balanced_accuracy_single_label_hand_case():
    # Known rows: class 0 (4 rows) 3 hits, class 1 (1 row) 1 hit, class 2 (1 row) 0 hits;
    # class 3 is only predicted: it has no recall of its own.
    y_true = [0, 0, 0, 0, 1, 2, -1]
    y_pred = [0, 0, 0, 3, 1, 0, 2]
    assert balanced_accuracy(y_true, y_pred) == pytest.approx((3 / 4 + 1 + 0) / 3)
    # Plain accuracy would reward always predicting the majority class; balanced accuracy does not.
    assert balanced_accuracy([0, 0, 0, 0, 1, 2], [0] * 6) == pytest.approx(1 / 3)


def test_balanced_accuracy_multi_label_hand_case():
    y_true = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 1], [-1, -1, -1]])
    y_pred = np.array([[1, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0]])
    # Columns over the 4 known rows, (TPR + TNR) / 2: (1/2 + 1/2) / 2, (1 + 2/3) / 2;
    # the third has no negative, so only its TPR (3/4) counts.
    assert balanced_accuracy(y_true, y_pred) == pytest.approx((0.5 + 5 / 6 + 3 / 4) / 3)
    # Unlike par_metrics' mA, which leaves the third column out (its TNR is 0/0).
    assert par_metrics(y_true, y_pred)["mA"] == pytest.approx((0.5 + 5 / 6) / 2)


def test_balanced_accuracy_two_classes_is_eq_18_for_either_encoding():
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 2, 60)
    y_pred = rng.integers(0, 2, 60)
    tpr = np.mean(y_pred[y_true == 1] == 1)
    tnr = np.mean(y_pred[y_true == 0] == 0)
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(0.5 * (tpr + tnr))
    assert balanced_accuracy(y_true[:, None], y_pred[:, None]) == pytest.approx(0.5 * (tpr + tnr))


def test_balanced_accuracy_equals_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)

    def expected(y_true, y_pred):
        with warnings.catch_warnings():  # sklearn warns of classes it leaves out, as we do
            warnings.simplefilter("ignore")
            return metrics.balanced_accuracy_score(y_true, y_pred)

    for _ in range(10):
        y_true = rng.integers(-1, 5, 120)
        y_pred = rng.integers(0, 6, 120)  # class 5 is only predicted
        known = y_true != -1
        assert balanced_accuracy(y_true, y_pred) == pytest.approx(expected(y_true[known], y_pred[known]), abs=1e-12)
        multi_true = (rng.random((120, 4)) < 0.3).astype(np.int64)
        multi_true[:, 3] = 1  # a column without negatives
        multi_true[rng.random(120) < 0.2] = -1
        multi_pred = (rng.random((120, 4)) < 0.3).astype(np.int64)
        keep = multi_true[:, 0] != -1
        columns = [expected(multi_true[keep, c], multi_pred[keep, c]) for c in range(4)]
        assert balanced_accuracy(multi_true, multi_pred) == pytest.approx(np.mean(columns), abs=1e-12)


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [
        ([0, 1], [0, -1], "y_pred must hold class indices >= 0"),
        ([-1, -1], [0, 1], "no known rows"),
        ([[1, 0]], [[1, 2]], "must be 0/1"),
        ([0, 1], [[0, 1]], "same shape"),
    ],
)
def test_balanced_accuracy_errors(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        balanced_accuracy(y_true, y_pred)
