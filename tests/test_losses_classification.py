"""Masked classification losses against hand-computed values."""

import numpy as np
import pytest

from portrait_keras.losses import has_labels, masked_multilabel_bce, masked_sparse_ce


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    return z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))


def test_sparse_ce_averages_over_known_labels_only():
    logits = np.array([[0.0, 0.0], [5.0, -5.0], [1.0, 3.0]], "float32")
    assert float(masked_sparse_ce([0, -1, 1], logits)) == pytest.approx(
        (np.log(2) + np.log1p(np.exp(-2))) / 2, rel=1e-6
    )
    # [B, 1] labels, as Keras passes them, give the same.
    assert float(masked_sparse_ce(np.array([[0], [-1], [1]]), logits)) == pytest.approx(
        float(masked_sparse_ce([0, -1, 1], logits))
    )


def test_sparse_ce_label_smoothing_mixes_in_the_uniform_target():
    logits = np.array([[2.0, 0.0, -1.0]], "float32")
    eps = 0.1
    target = np.array([1 - eps + eps / 3, eps / 3, eps / 3])
    expected = -(target * _log_softmax(logits)[0]).sum()
    assert float(masked_sparse_ce([0], logits, label_smoothing=eps)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="Received: label_smoothing=1.0"):
        masked_sparse_ce([0], logits, label_smoothing=1.0)


def test_sparse_ce_is_zero_when_nothing_is_labelled_and_ignores_added_unknowns():
    logits = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    assert float(masked_sparse_ce([-1, -1, -1, -1], logits)) == 0.0
    base = float(masked_sparse_ce([1, 4, -1, 0], logits))
    more = np.concatenate([logits, np.full((1, 5), 50.0, "float32")])
    assert float(masked_sparse_ce([1, 4, -1, 0, -1], more)) == pytest.approx(base, rel=1e-6)


def _bce(y, x):
    x = np.asarray(x, np.float64)
    return -(y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))


def test_multilabel_bce_averages_classes_then_known_rows():
    logits = np.array([[1.0, -2.0, 0.5], [3.0, 3.0, 3.0], [-1.0, 0.0, 2.0]], "float32")
    labels = np.array([[1, 0, 1], [-1, -1, -1], [0, 0, 1]], "float32")
    expected = (_bce(labels[0], logits[0]).mean() + _bce(labels[2], logits[2]).mean()) / 2
    assert float(masked_multilabel_bce(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_multilabel_bce_is_stable_and_zero_when_nothing_is_labelled():
    logits = np.array([[100.0, -100.0]], "float32")
    assert float(masked_multilabel_bce([[1.0, 0.0]], logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(masked_multilabel_bce([[0.0, 1.0]], logits)) == pytest.approx(100.0, rel=1e-5)
    assert float(masked_multilabel_bce(-np.ones((2, 2), "float32"), np.ones((2, 2), "float32"))) == 0.0


@pytest.mark.parametrize(
    "labels, expected",
    [([-1, -1], False), ([-1, 2], True), ([[-1.0, -1.0], [-1.0, -1.0]], False), ([[-1.0, -1.0], [0.0, 1.0]], True)],
)
def test_has_labels(labels, expected):
    assert bool(has_labels(np.array(labels))) is expected
