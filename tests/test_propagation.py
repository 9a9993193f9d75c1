"""propagation.py: attribute propagation (paper 004 §4.3) on small synthetic problems with known truth."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from portrait_keras.propagation import _affinity, _ledoit_wolf, nearest_neighbors, propagate_labels
from portrait_keras.schema import Schema, Task, default_schema


def elongated_clusters(n=600, seed=0, hidden=0.7):
    """Three classes apart along 2 directions, hidden under 4 directions of large shared spread.

    Euclidean neighbours mix the classes (the spread dwarfs the gap), while a Gaussian per
    class sees through it: the setting where the MRF should beat its own kNN start. A
    multi-label task of 2 attributes reads 2 further directions the same way.
    """
    rng = np.random.default_rng(seed)
    dim = 12
    truth = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    attributes = (rng.random((n, 2)) < 0.4).astype(np.int64)
    x = rng.normal(0, 0.4, (n, dim))
    x[:, :4] += rng.normal(0, 4.0, (n, 4))  # shared nuisance
    x[:, 4:6] += 2.5 * np.array([[0, 0], [1, 0], [0, 1]])[truth]
    x[:, 6:8] += 2.5 * attributes
    hide = rng.random(n) < hidden
    single = np.where(hide, -1, truth)
    hide = rng.random(n) < hidden
    multi = np.where(hide[:, None], -1, attributes).astype(np.float32)
    kernels = {"body": rng.normal(size=(dim, 3)), "expression": rng.normal(size=(dim, 2))}
    return (
        x.astype(np.float32),
        {"body": truth, "expression": attributes},
        {"body": single, "expression": multi},
        kernels,
    )


def test_fills_hidden_labels_well_above_the_knn_start_and_the_majority():
    x, truth, labels, kernels = elongated_clusters()
    result = propagate_labels(x, labels, kernels)
    start = propagate_labels(x, labels, kernels, rounds=0)

    hidden = labels["body"] == -1
    accuracy = np.mean(result.labels["body"][hidden] == truth["body"][hidden])
    knn = np.mean(start.labels["body"][hidden] == truth["body"][hidden])
    majority = np.mean(truth["body"][hidden] == np.bincount(labels["body"][~hidden]).argmax())
    assert accuracy > knn + 0.15
    assert accuracy > majority + 0.3

    hidden = labels["expression"][:, 0] == -1
    accuracy = np.mean(result.labels["expression"][hidden] == truth["expression"][hidden])
    knn = np.mean(start.labels["expression"][hidden] == truth["expression"][hidden])
    assert accuracy > knn + 0.1
    assert all(result.converged.values())


def test_a_rare_attribute_is_recovered_where_the_knn_vote_misses_it():
    # A 25 % attribute, 2.5 apart along one direction under a shared spread of 6 along four:
    # the vote of the nearest annotated rows mostly says "absent". Gaussians first fitted to the
    # annotations find it; fitted to the votes, the "absent" class would keep the rows they missed.
    rng = np.random.default_rng(11)
    n = 1000
    truth = (rng.random((n, 1)) < 0.25).astype(np.int64)
    x = rng.normal(0, 0.4, (n, 12))
    x[:, :4] += rng.normal(0, 6.0, (n, 4))
    x[:, 4] += 2.5 * truth[:, 0]
    labels = {"expression": np.where(rng.random((n, 1)) < 0.7, -1, truth)}
    kernels = {"expression": rng.normal(size=(12, 1))}
    hidden = labels["expression"][:, 0] == -1
    knn = np.mean(propagate_labels(x, labels, kernels, rounds=0).labels["expression"][hidden] == truth[hidden])
    filled = np.mean(propagate_labels(x, labels, kernels).labels["expression"][hidden] == truth[hidden])
    assert filled > knn + 0.15


def test_where_the_gaussians_cannot_tell_the_classes_apart_the_neighbours_decide():
    # Eight clusters on a circle, alternately of class 0 and 1, each the same 25 points around its
    # centre with the same 70 % hidden: the annotated rows of each class have mean 0 and covariance
    # c I, the same c, so the Gaussians start equal and the pairwise term of eq. 6 decides.
    rng = np.random.default_rng(12)
    offsets = rng.normal(0, 0.3, (25, 2))
    hide = rng.random(25) < 0.7
    angle = np.arange(8) * np.pi / 4
    centres = 5 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    x = (centres[:, None] + offsets).reshape(-1, 2)
    truth = np.repeat(np.arange(8) % 2, 25)
    labels = np.where(np.tile(hide, 8), -1, truth)
    result = propagate_labels(x, {"gender": labels}, {"gender": rng.normal(size=(2, 2))}, rounds=5)
    hidden = labels == -1
    assert np.mean(result.labels["gender"][hidden] == truth[hidden]) > 0.95
    # The neighbours agree, so the posterior is sure, not the Gaussians' 50/50.
    assert np.mean(result.posteriors["gender"][hidden].max(axis=1)) > 0.8


def test_known_labels_never_change_and_none_is_left_unknown():
    rng = np.random.default_rng(1)
    n = 200
    x = rng.normal(size=(n, 5))  # no structure: propagation is unsure everywhere
    single = np.where(rng.random(n) < 0.6, -1, rng.integers(0, 4, n)).astype(np.int32)
    multi = (rng.random((n, 3)) < 0.5).astype(np.float32)
    multi[rng.random(n) < 0.6] = -1
    labels = {"age": single, "expression": multi}
    kernels = {"age": rng.normal(size=(5, 4)), "expression": rng.normal(size=(5, 3))}
    for rounds in (0, 5):
        result = propagate_labels(x, labels, kernels, rounds=rounds)
        out, post = result.labels, result.posteriors
        assert out["age"].dtype == np.int32 and out["expression"].dtype == np.float32
        known = single != -1
        np.testing.assert_array_equal(out["age"][known], single[known])
        assert out["age"].min() >= 0 and out["age"].max() < 4
        known = multi[:, 0] != -1
        np.testing.assert_array_equal(out["expression"][known], multi[known])
        assert set(np.unique(out["expression"])) <= {0.0, 1.0}
        np.testing.assert_allclose(post["age"].sum(axis=1), 1)
        np.testing.assert_array_equal(post["age"][single != -1].argmax(axis=1), single[single != -1])
        np.testing.assert_array_equal(post["expression"][known], multi[known])
        assert ((post["expression"] >= 0) & (post["expression"] <= 1)).all()
        # The filled labels are the most probable values of the returned posterior.
        if rounds:
            np.testing.assert_array_equal(out["age"], post["age"].argmax(axis=1))
            np.testing.assert_array_equal(out["expression"][~known], post["expression"][~known] > 0.5)
        assert len(result.posterior_change["age"]) <= rounds


def test_equal_seeds_give_equal_results_and_the_draws_depend_on_the_seed():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 4))
    labels = {"gender": np.where(rng.random(150) < 0.7, -1, rng.integers(0, 2, 150))}
    kernels = {"gender": rng.normal(size=(4, 2))}
    first, again, other = (propagate_labels(x, labels, kernels, rounds=4, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(first.posteriors["gender"], again.posteriors["gender"])
    np.testing.assert_array_equal(first.labels["gender"], again.labels["gender"])
    assert first.posterior_change == again.posterior_change
    assert not np.allclose(first.posteriors["gender"], other.posteriors["gender"])
    # Nor on the order of the tasks in the dicts.
    two = {"gender": labels["gender"], "age": np.where(rng.random(150) < 0.5, -1, rng.integers(0, 3, 150))}
    kernels["age"] = rng.normal(size=(4, 3))
    forward = propagate_labels(x, two, kernels, rounds=3)
    backward = propagate_labels(x, dict(reversed(two.items())), kernels, rounds=3)
    assert list(backward.labels) == ["age", "gender"]
    for task in two:
        np.testing.assert_array_equal(forward.posteriors[task], backward.posteriors[task])
    # Nothing is drawn before the first round: the kNN start ignores the seed.
    start = [propagate_labels(x, labels, kernels, rounds=0, seed=s).posteriors["gender"] for s in (3, 4)]
    np.testing.assert_array_equal(*start)


@pytest.mark.parametrize("target_kind", ["single", "multi"])
@pytest.mark.parametrize("source_kind", ["single", "multi"])
def test_cooccurrence_prior_makes_an_attribute_follow_its_correlated_one(target_kind, source_kind):
    # Features carry nothing, so the prior of eq. 2 decides: "happy" is hidden on half the rows,
    # "smiling" known on all; their classifier columns are equal (correlation 1) or opposite (-1).
    rng = np.random.default_rng(5)
    n, dim = 300, 64
    x = rng.normal(size=(n, dim))
    smiling = rng.integers(0, 2, n)
    happy = np.where(rng.random(n) < 0.5, -1, rng.integers(0, 2, n))
    hidden = happy == -1
    column = rng.normal(size=dim)
    agreement = {}
    for sign in (1, -1):
        # A 2-class softmax classifier has opposite columns; a multi-label one, unrelated ones.
        if target_kind == "single":
            happy_labels, happy_kernel = happy, np.stack([-sign * column, sign * column], axis=1)
        else:
            happy_labels = np.where(hidden[:, None], -1, np.stack([happy, rng.integers(0, 2, n)], axis=1))
            happy_kernel = np.stack([sign * column, rng.normal(size=dim)], axis=1)
        if source_kind == "single":
            smiling_labels, smiling_kernel = smiling, np.stack([-column, column], axis=1)
        else:
            smiling_labels = np.stack([1 - smiling, smiling], axis=1)  # "not smiling" is a column too
            smiling_kernel = np.stack([rng.normal(size=dim), column], axis=1)
        # 4 principal components: the Gaussians cannot fit much of the noise.
        result = propagate_labels(
            x,
            {"happy": happy_labels, "smiling": smiling_labels},
            {"happy": happy_kernel, "smiling": smiling_kernel},
            rounds=5,
            pca_dim=4,
        )
        filled = result.labels["happy"][hidden]
        present = result.posteriors["happy"][hidden, 1 if target_kind == "single" else 0]
        if target_kind == "multi":
            filled = filled[:, 0]
        agreement[sign] = np.mean(filled == smiling[hidden])
        gap = present[smiling[hidden] == 1].mean() - present[smiling[hidden] == 0].mean()
        assert sign * gap > 0.3
    assert agreement[1] > 0.9
    assert agreement[-1] < 0.1


def test_round_zero_is_the_vote_of_the_nearest_known_rows():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(120, 3))
    labels = np.where(rng.random(120) < 0.5, -1, rng.integers(0, 2, 120))
    result = propagate_labels(x, {"gender": labels}, {"gender": rng.normal(size=(3, 2))}, k=5, rounds=0)
    known = np.flatnonzero(labels != -1)
    hidden = np.flatnonzero(labels == -1)
    nearest = known[np.argsort(cdist(x[hidden], x[known]), axis=1)[:, :5]]
    votes = labels[nearest].mean(axis=1)  # 5 voters of 2 classes: no ties
    np.testing.assert_array_equal(result.labels["gender"][hidden], votes > 0.5)
    np.testing.assert_allclose(result.posteriors["gender"][hidden, 1], votes)
    assert result.posterior_change == {"gender": ()} and result.converged == {"gender": False}


def test_stops_when_the_posterior_settles_and_reports_each_round():
    x, _, labels, kernels = elongated_clusters()
    settled = propagate_labels(x, labels, kernels, rounds=30, tol=1e-2)
    changes = settled.posterior_change["body"]
    assert settled.converged["body"] and len(changes) < 30
    assert changes[-1] <= 1e-2 < min(changes[:-1])
    capped = propagate_labels(x, labels, kernels, rounds=1, tol=0.0)
    assert capped.posterior_change["body"] == changes[:1] and not capped.converged["body"]


@pytest.mark.parametrize("block_bytes", [8 * 7, 8 * 64, 1 << 20])
def test_blocked_knn_equals_a_dense_search(block_bytes):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(90, 5))
    dense = cdist(x, x, "sqeuclidean")
    np.fill_diagonal(dense, np.inf)
    sq, idx = nearest_neighbors(x, 6, block_bytes=block_bytes)
    np.testing.assert_array_equal(idx, np.argsort(dense, axis=1)[:, :6])
    np.testing.assert_allclose(sq, np.sort(dense, axis=1)[:, :6], rtol=1e-9, atol=1e-9)
    queries, base = np.arange(0, 90, 3), np.setdiff1d(np.arange(90), np.arange(0, 90, 3))
    sq, idx = nearest_neighbors(x, 4, queries=queries, base=base, block_bytes=block_bytes)
    expected = base[np.argsort(dense[np.ix_(queries, base)], axis=1)[:, :4]]
    np.testing.assert_array_equal(idx, expected)
    # float32 features are searched in float32: the same neighbours here.
    np.testing.assert_array_equal(
        nearest_neighbors(x.astype(np.float32), 6, block_bytes=block_bytes)[1][:, :3], np.argsort(dense, axis=1)[:, :3]
    )


def test_affinity_is_the_locally_scaled_and_normalised_knn_graph():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, 3))
    h = 4
    dense = cdist(x, x, "sqeuclidean")
    np.fill_diagonal(dense, np.inf)
    sigma = np.sqrt(np.sort(dense, axis=1)[:, h - 1])
    near = np.argsort(dense, axis=1)[:, :h]
    edge = np.zeros_like(dense, dtype=bool)
    edge[np.repeat(np.arange(40), h), near.ravel()] = True
    edge |= edge.T  # an edge when either row is among the other's h nearest
    v = np.where(edge, np.exp(-np.where(edge, dense, 0) / np.outer(sigma, sigma)), 0)
    degree = v.sum(axis=1)
    expected = v / np.sqrt(np.outer(degree, degree))
    np.testing.assert_allclose(_affinity(*nearest_neighbors(x, h)).toarray(), expected, rtol=1e-12)


def test_ledoit_wolf_equals_sklearn():
    covariance = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(9)
    for n, p in ((10, 30), (200, 8)):
        rows = rng.normal(size=(n, p)) @ rng.normal(size=(p, p))
        expected = covariance.LedoitWolf().fit(rows).covariance_
        np.testing.assert_allclose(_ledoit_wolf(rows - rows.mean(axis=0)), expected, rtol=1e-10)


def _problem():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(30, 4))
    labels = {"age": np.r_[np.zeros(10), np.ones(10), -np.ones(10)].astype(int)}
    return x, labels, {"age": rng.normal(size=(4, 5))}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, y, w: (x[:, :, None], y, w, {}), r"features must be a numeric array \[N, D\]"),
        (lambda x, y, w: (np.where(x > 1, np.nan, x), y, w, {}), "features must be finite"),
        (lambda x, y, w: (x, y, w, {"k": 0}), "k must be an int >= 1. Received: k=0"),
        (lambda x, y, w: (x, y, w, {"k": 30}), "k must be below the number of rows"),
        (lambda x, y, w: (x, y, w, {"rounds": -1}), "rounds must be an int >= 0"),
        (lambda x, y, w: (x, y, w, {"tol": -0.1}), "tol must be a finite number"),
        (lambda x, y, w: (x, y, w, {"seed": 1.5}), "seed must be an int"),
        (lambda x, y, w: (x, y, {}, {}), r"No classifier kernel for task 'age'.*Received: classifier_kernels for \[\]"),
        (lambda x, y, w: (x, y, {"age": w["age"][:3]}, {}), r"must be a finite \[D, C\] array with D = 4"),
        (lambda x, y, w: (x, {"age": y["age"][:20]}, w, {}), r"must be \[N\] .* Received: shape \(20,\)"),
        (lambda x, y, w: (x, {"age": y["age"] + 4}, w, {}), r"must be in \[0, 5\) .* Received: \[5\]"),
        (lambda x, y, w: (x, {"age": y["age"] - 1}, w, {}), r"Received: \[-2\]"),
        (lambda x, y, w: (x, {"age": y["age"] * 0.5}, w, {}), "must hold integer labels"),
        (lambda x, y, w: (x, {"age": -np.ones(30, int)}, w, {}), "no known row"),
        (lambda x, y, w: (x, {}, w, {}), "labels must be a non-empty dict"),
        (
            lambda x, y, w: (x, {"mood": np.c_[y["age"].clip(0), -np.ones(30)]}, {"mood": w["age"][:, :2]}, {}),
            "rows must be 0/1, or all -1 when unknown",
        ),
        (lambda x, y, w: (x, {"id": y["age"]}, {"id": w["age"]}, {}), "identity task.*open set"),
        (
            lambda x, y, w: (x, {"ids": y["age"]}, {"ids": w["age"]}, {"schema": _schema_with_ids()}),
            "identity task.*open set",
        ),
        (
            lambda x, y, w: (x, {"gender": y["age"]}, {"gender": w["age"]}, {"schema": default_schema()}),
            "single with 2 classes in the schema",
        ),
        (lambda x, y, w: (x, {"mood": y["age"]}, {"mood": w["age"]}, {"schema": default_schema()}), "Unknown task"),
    ],
)
def test_errors(change, message):
    features, labels, kernels, kwargs = change(*_problem())
    with pytest.raises(ValueError, match=message):
        propagate_labels(features, labels, kernels, **kwargs)


def _schema_with_ids():
    return Schema((Task("ids", "appearance", "identity"), Task("age", "appearance", "single", ("a", "b"))))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 10}, "k must be an int from 1 to 9"),
        ({"k": 3, "queries": [0, 1], "base": [2, 3]}, "k must be an int from 1 to 2"),
        ({"k": 2, "queries": [0, 10]}, r"queries must be distinct row indices in \[0, 10\)"),
        ({"k": 2, "base": [1, 1, 2]}, "base must be distinct"),
        ({"k": 2, "block_bytes": 0}, "block_bytes must be a positive int"),
    ],
)
def test_nearest_neighbors_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nearest_neighbors(np.zeros((10, 2)), **kwargs)
