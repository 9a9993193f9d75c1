"""Metric-learning losses: Batch Rank (paper eq. 4), batch-hard triplet, HFE, against numpy."""

import math

import keras
import numpy as np
import pytest

from portrait_keras.losses import (
    batch_hard_triplet_loss,
    batch_rank_loss,
    hfe_loss,
    hfe_terms,
    hfe_weight,
)


def _random(seed, n=12, d=8, classes=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(-1, classes, n)


# === Batch Rank ===


def batch_rank_reference(f, y):
    """Eq. 4 written as a double loop, after dropping the samples labelled -1."""
    keep = y >= 0
    f, y = f[keep].astype(np.float64), y[keep]
    n = len(y)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    total = 0.0
    for i in range(n):
        denominator = sum(math.exp(f[i] @ f[c]) for c in range(n) if c != i)
        for j in range(n):
            if j != i and y[j] == y[i]:
                total += -math.log(math.exp(f[i] @ f[j]) / denominator)
    return total / n if n else 0.0


def test_batch_rank_hand_computed():
    f = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], "float32")  # cos: (0,1)=0, (0,2)=1, (1,2)=0
    # Anchor 0: −log(e⁰/(e⁰+e¹)); anchor 1: −log(e⁰/(e⁰+e⁰)); anchor 2 has no positive. N = 3.
    expected = (math.log(1 + math.e) + math.log(2)) / 3
    assert float(batch_rank_loss([0, 0, 1], f)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_batch_rank_equals_the_double_loop_of_eq_4(seed):
    f, y = _random(seed)
    assert float(batch_rank_loss(y, f)) == pytest.approx(batch_rank_reference(f, y), rel=1e-5)


def test_batch_rank_removes_unlabelled_samples_before_anything_is_computed():
    f, y = _random(7)
    y[y < 0] = 0
    base = float(batch_rank_loss(y, f))
    extra = np.concatenate([f, f[:1] * 2.0, -f[1:2]])  # would be a positive / change denominators
    assert float(batch_rank_loss(np.concatenate([y, [-1, -1]]), extra)) == pytest.approx(base, rel=1e-6)


@pytest.mark.parametrize("labels", [[-1, -1, -1, -1], [0, 1, 2, 3], [5, -1, -1, -1]])
def test_batch_rank_is_zero_without_labels_or_positives(labels):
    f, _ = _random(0, n=4)
    assert float(batch_rank_loss(np.array(labels), f)) == 0.0


def test_batch_rank_multi_hot_positives_are_equal_rows():
    f, _ = _random(3, n=6)
    rows = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 0], [-1, -1, -1], [0, 1, 0], [1, 1, 1]], "float32")
    codes = np.array([0, 0, 1, -1, 1, 2])
    assert float(batch_rank_loss(rows, f)) == pytest.approx(float(batch_rank_loss(codes, f)), rel=1e-6)


def test_batch_rank_is_scale_invariant():
    f, y = _random(4)
    assert float(batch_rank_loss(y, 3.0 * f)) == pytest.approx(float(batch_rank_loss(y, f)), rel=1e-5)


# === Batch-hard triplet ===


def triplet_reference(f, y, margin):
    keep = y >= 0
    f, y = f[keep].astype(np.float64), y[keep]
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    d = np.linalg.norm(f[:, None] - f[None], axis=-1)
    losses = []
    for i in range(len(y)):
        pos = [d[i, j] for j in range(len(y)) if j != i and y[j] == y[i]]
        neg = [d[i, j] for j in range(len(y)) if y[j] != y[i]]
        if pos and neg:
            losses.append(max(max(pos) - min(neg) + margin, 0.0))
    return float(np.mean(losses)) if losses else 0.0


def test_triplet_hand_computed_with_ties():
    # d(0,1) = √2, d(0,2) = d(0,3) = 2, d(1,2) = d(1,3) = √2, d(2,3) = 0.
    f = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-2.0, 0.0]], "float32")
    # Anchors 0, 2, 3 are satisfied; anchor 1: √2 − √2 + 0.3 (its two negatives tie).
    assert float(batch_hard_triplet_loss([0, 0, 1, 1], f)) == pytest.approx(0.3 / 4, abs=1e-5)
    # Without sample 3, anchor 2 has no positive and leaves the mean.
    assert float(batch_hard_triplet_loss([0, 0, 1], f[:3])) == pytest.approx(0.3 / 2, abs=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_triplet_matches_a_loop_reference_and_ignores_unlabelled(seed):
    f, y = _random(seed)
    assert float(batch_hard_triplet_loss(y, f, margin=0.5)) == pytest.approx(triplet_reference(f, y, 0.5), rel=1e-5)
    extra = np.concatenate([f, f[:2]])
    assert float(batch_hard_triplet_loss(np.concatenate([y, [-1, -1]]), extra, 0.5)) == pytest.approx(
        float(batch_hard_triplet_loss(y, f, 0.5)), rel=1e-6
    )


@pytest.mark.parametrize("labels", [[-1, -1, -1], [2, 2, 2], [0, 1, 2]])
def test_triplet_is_zero_when_no_anchor_has_a_positive_and_a_negative(labels):
    f, _ = _random(1, n=3)
    assert float(batch_hard_triplet_loss(np.array(labels), f)) == 0.0


# === HFE ===


def hfe_reference(f, attr, ids, a1=0.3, a2=0.1, a3=5.0):
    """Table 1 of the HFE paper as loops; each term averaged over the anchors that have its samples."""
    keep = (attr >= 0) & (ids >= 0)
    f, attr, ids = f[keep].astype(np.float64), attr[keep], ids[keep]
    d = np.linalg.norm(f[:, None] - f[None], axis=-1)
    inter, intra, abr = [], [], []
    for a in range(len(f)):
        others = [j for j in range(len(f)) if j != a]
        p1 = [d[a, j] for j in others if attr[j] == attr[a] and ids[j] == ids[a]]
        p23 = [d[a, j] for j in others if attr[j] == attr[a] and ids[j] != ids[a]]
        n = [d[a, j] for j in others if attr[j] != attr[a] and ids[j] != ids[a]]
        if p23 and n:
            inter.append(max(max(p23) - min(n) + a1, 0))
        if p1 and p23:
            intra.append(max(max(p1) - min(p23) + a2, 0))
        if n:
            abr.append(max(a3 - min(n), 0))
    mean = lambda v: float(np.mean(v)) if v else 0.0  # noqa: E731
    return {"inter": mean(inter), "intra": mean(intra), "abr": mean(abr)}


def test_hfe_hand_computed_quintuplets():
    # 1-D features a=0, b=1 (same ID), c=3 (same attribute, other ID), e=4 (other attribute).
    f = np.array([[0.0], [1.0], [3.0], [4.0]], "float32")
    attr, ids = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 2])
    terms = {k: float(v) for k, v in hfe_terms(ids, f, attr).items()}
    # inter over a, b, c: [3−4+.3]+ = 0, [2−3+.3]+ = 0, c: p3 = a (3), n = e (1) → 2.3.
    assert terms["inter"] == pytest.approx(2.3 / 3, rel=1e-5)
    # intra over a, b (c, e have no same-ID sample): [1−3+.1]+ = [1−2+.1]+ = 0.
    assert terms["intra"] == pytest.approx(0.0, abs=1e-6)
    # ABR over all four: n at 4, 3, 1, 1 → [5−d]+ = 1, 2, 4, 4.
    assert terms["abr"] == pytest.approx(11 / 4, rel=1e-5)
    assert float(hfe_loss(ids, f, attr)) == pytest.approx(2.3 / 3 + 11 / 4, rel=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_hfe_matches_a_loop_reference_of_table_1(seed):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(16, 4)).astype("float32") * 2
    ids = rng.integers(-1, 6, 16)
    attr = np.where(ids >= 0, ids % 2, rng.integers(0, 2, 16))  # same ID ⇒ same attribute
    attr[0] = -1
    got = {k: float(v) for k, v in hfe_terms(ids, f, attr, 0.3, 0.2, 3.0).items()}
    want = hfe_reference(f, attr, ids, 0.3, 0.2, 3.0)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_hfe_ignores_samples_with_an_unknown_label_and_is_zero_when_none_is_known():
    f = np.array([[0.0], [1.0], [3.0], [4.0]], "float32")
    attr, ids = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 2])
    base = float(hfe_loss(ids, f, attr))
    more = np.concatenate([f, [[0.5], [3.5]]]).astype("float32")
    assert float(hfe_loss(np.concatenate([ids, [-1, 1]]), more, np.concatenate([attr, [0, -1]]))) == pytest.approx(base)
    assert float(hfe_loss(ids, f, -np.ones(4, int))) == 0.0


def test_hfe_weight_rises_from_zero_to_w0_as_eq_8():
    assert float(hfe_weight(0, 100, 2.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(hfe_weight(50, 100, 2.0)) == pytest.approx(1.0)
    assert float(hfe_weight(25, 100, 1.0)) == pytest.approx(0.5 * math.cos(0.75 * math.pi) + 0.5)
    assert float(hfe_weight(100, 100, 2.0)) == pytest.approx(2.0)
    assert float(hfe_weight(150, 100, 2.0)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="Received: total_iterations=0"):
        hfe_weight(0, 0)


# === Gradients at the edge cases ===


def _gradient(fn, x):
    """d fn / d x with the active backend."""
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(fn)(x))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        x = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = fn(x)
        grad = tape.gradient(y, x)
        return np.zeros(x.shape, "float32") if grad is None else grad.numpy()
    pytest.skip(f"no gradient helper for backend {keras.backend.backend()}")


@pytest.mark.parametrize(
    "loss",
    [
        lambda f, y: batch_rank_loss(y, f),
        lambda f, y: batch_hard_triplet_loss(y, f),
        lambda f, y: hfe_loss(y, f, y % 2),
    ],
    ids=["batch_rank", "triplet", "hfe"],
)
@pytest.mark.parametrize(
    "labels",
    [[-1, -1, -1, -1], [3, -1, -1, -1], [0, 0, 1, 1], [0, 0, 0, 0]],
    ids=["none", "lone", "pairs", "one_class"],
)
def test_gradients_stay_finite_with_duplicates_and_masked_samples(loss, labels):
    f = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]], "float32")  # duplicated features
    grad = _gradient(lambda x: loss(x, np.array(labels)), f)
    assert np.isfinite(grad).all()
    if labels[0] == -1:
        assert not grad.any()
