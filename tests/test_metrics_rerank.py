"""k-reciprocal re-ranking: `rerank_dense` by hand, `KReciprocal` equal to it, and re-ranked
`evaluate_reid` equal to `evaluate_reid_reference(rerank=True)`."""

import math

import numpy as np
import pytest

from portrait_keras.metrics import evaluate_reid, evaluate_reid_reference, rerank
from portrait_keras.metrics.distance import unit_rows
from tests.test_metrics_reid import _exact_case, _random_features


def test_dense_hand_computed():
    # Points 0, 0.1, 1, 1.1 on a line; query: point 0. With k1 = 1 every point's reciprocal
    # set is its pair {itself, its neighbour} (k1/2 rounds to 0: no expansion beyond it), and
    # k2 = 1 leaves V as it is. Squared distances are divided by their row's largest.
    points = np.array([0.0, 0.1, 1.0, 1.1])
    dist = np.abs(points[:, None] - points)
    result = rerank.rerank_dense(dist[:1, 1:], dist[:1, :1], dist[1:, 1:], k1=1, k2=1, lambda_value=0.3)

    d01 = 0.1**2 / 1.1**2  # row 0's largest is 1.1^2
    v0 = np.array([1, math.exp(-d01)]) / (1 + math.exp(-d01))  # V of point 0 over points 0, 1
    v1 = np.array([math.exp(-0.01), 1]) / (1 + math.exp(-0.01))  # point 1: its largest is 1.0^2
    shared = np.minimum(v0, v1).sum()
    jaccard = 1 - shared / (2 - shared)
    expected = [0.7 * jaccard + 0.3 * d01, 0.7 + 0.3 * 1.0 / 1.1**2, 0.7 + 0.3 * 1.0]  # d_J = 1: nothing shared
    np.testing.assert_allclose(result, [expected], rtol=0, atol=1e-7)  # float32 weights
    assert result.dtype == np.float32


def test_dense_equals_the_authors_code():
    # The values the authors' re_ranking (as torchreid ships it, utils/rerank.py) gives for 16
    # points on a line, 3 of them queries, with k1 = 6, k2 = 3: here the 2/3 expansion adds
    # 7 items to the reciprocal sets in all. Theirs sums in float32, this one in float64.
    points = np.array([0.19, -0.52, -0.41, -2.44, 1.8, 1.14, -0.33, 0.77])
    points = np.concatenate([points, [4.28, 3.45, 4.98, 3.69, 3.67, 3.21, 4.45, 3.9]])
    dist = np.abs(points[:, None] - points)
    # fmt: off
    expected = [
        [0.291345, 0.250240, 0.228148, 0.103876, 0.056452, 0.918724, 0.838959,
         1.000000, 0.860172, 0.858347, 0.819252, 0.937285, 0.879969],
        [0.186919, 0.325445, 0.299394, 0.000358, 0.160633, 0.928496, 0.856306,
         1.000000, 0.875776, 0.874110, 0.837979, 0.944968, 0.893749],
        [0.192914, 0.322500, 0.296874, 0.000066, 0.158508, 0.927138, 0.853857,
         1.000000, 0.873585, 0.871895, 0.835320, 0.943902, 0.891822],
    ]
    # fmt: on
    result = rerank.rerank_dense(dist[:3, 3:], dist[:3, :3], dist[3:, 3:], k1=6, k2=3, lambda_value=0.3)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)


def _clustered(rng, num_query, num_gallery, dim=16, ids=15, spread=0.8):
    centres = rng.normal(size=(ids, dim))
    q_ids, g_ids = rng.integers(0, ids, num_query), rng.integers(0, ids, num_gallery)
    query = unit_rows(centres[q_ids] + spread * rng.normal(size=(num_query, dim)))
    gallery = unit_rows(centres[g_ids] + spread * rng.normal(size=(num_gallery, dim)))
    return query, gallery, q_ids, g_ids


def _exact(seed):
    """+-1/4 features with frequent exact ties, a duplicated gallery item and a query equal to
    a gallery item."""
    query, gallery, q_ids, g_ids, labels = _exact_case(seed)
    query, gallery = unit_rows(query), unit_rows(gallery)
    gallery[5] = gallery[17]
    query[3] = gallery[40]
    return query, gallery, q_ids, g_ids, labels


def _dense(query, gallery, **params):
    x = np.concatenate([query, gallery])
    dist = np.clip(1 - x @ x.T, 0, 2)
    n = len(query)
    return rerank.rerank_dense(dist[:n, n:], dist[:n, :n], dist[n:, n:], **params)


PARAMS = [dict(k1=20, k2=6, lambda_value=0.3), dict(k1=5, k2=1, lambda_value=0.5), dict(k1=3, k2=2, lambda_value=0.9)]


@pytest.fixture(
    params=[(4096, 1024, 1 / 8), (7, 5, 0.0), (64, 30, np.inf)], ids=["one-tile", "tiles-7-dense", "tiles-64-sorted"]
)
def small_tiles(request, monkeypatch):
    """Tile and row-chunk sizes of the neighbour search (one tile, or many, with pruning), and
    both ways of summing the Jaccard terms."""
    tile, rows, dense_pairs = request.param
    monkeypatch.setattr(rerank, "_TILE", tile)
    monkeypatch.setattr(rerank, "_ROWS", rows)
    monkeypatch.setattr(rerank, "_DENSE_PAIRS", dense_pairs)


@pytest.mark.parametrize("params", PARAMS, ids=["paper", "no-expansion", "small"])
@pytest.mark.usefixtures("small_tiles")
def test_bounded_equals_dense_to_the_bit_with_ties(params):
    query, gallery, *_ = _exact(1)
    dense = _dense(query, gallery, **params)
    bounded = rerank.KReciprocal(query, gallery, **params)
    chunks = [bounded.distances(s, min(s + 7, len(query)), query[s : s + 7] @ gallery.T) for s in range(0, 60, 7)]
    np.testing.assert_array_equal(np.concatenate(chunks), dense)


@pytest.mark.parametrize("params", PARAMS, ids=["paper", "no-expansion", "small"])
def test_bounded_equals_dense_on_clustered_features(params):
    # One tile: the neighbour search multiplies the same matrices as the dense version, so
    # no two neighbours can swap on another machine's rounding (the tiles are tested above).
    query, gallery, *_ = _clustered(np.random.default_rng(0), 40, 300)
    dense = _dense(query, gallery, **params)
    bounded = rerank.KReciprocal(query, gallery, **params).distances(0, 40, query @ gallery.T)
    # The query x gallery product and the weights' dot products round differently: 1 ulp.
    np.testing.assert_allclose(bounded, dense, rtol=0, atol=2.5e-7)
    assert (bounded < 0.999).mean() > 0.05  # the Jaccard term is not trivially 1


@pytest.mark.parametrize("macro", [True, False])
@pytest.mark.parametrize("features", ["exact", "clustered"])
def test_reranked_evaluation_equals_the_reference_with_groups_and_cameras(features, macro):
    query, gallery, q_ids, g_ids, labels = _exact(2)
    if features == "clustered":
        rng = np.random.default_rng(4)
        query, gallery = _random_features(rng, len(q_ids), 8, q_ids), _random_features(rng, len(g_ids), 8, g_ids)
    reference = evaluate_reid_reference(query, gallery, q_ids, g_ids, macro=macro, rerank=True, **labels)
    result = evaluate_reid(query, gallery, q_ids, g_ids, macro=macro, rerank=True, **labels)
    assert result == pytest.approx(reference, abs=1e-4)
    plain = evaluate_reid(query, gallery, q_ids, g_ids, macro=macro, **labels)
    assert result["mAP"] != plain["mAP"]
    # The exclusions remove items after re-ranking: the same number of queries keep a positive.
    assert result["num_queries"] == plain["num_queries"]


@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_reranked_evaluation_does_not_depend_on_the_chunk(chunk_size):
    query, gallery, q_ids, g_ids, labels = _exact(3)
    expected = evaluate_reid_reference(query, gallery, q_ids, g_ids, rerank=True, k1=6, k2=3, **labels)
    result = evaluate_reid(query, gallery, q_ids, g_ids, rerank=True, k1=6, k2=3, chunk_size=chunk_size, **labels)
    assert result == pytest.approx(expected, abs=1e-12)


def test_lambda_one_keeps_the_original_ranking():
    # λ = 1: the final distance is the scaled squared original distance, increasing with it
    # (with exact similarities no two round to the same value).
    query, gallery, q_ids, g_ids, labels = _exact(1)
    plain = evaluate_reid(query, gallery, q_ids, g_ids, **labels)
    assert evaluate_reid(query, gallery, q_ids, g_ids, rerank=True, lambda_value=1.0, **labels) == plain


def test_reranking_raises_map_on_clustered_identities():
    # What the paper reports on real data (§4): identities whose images cluster gain.
    query, gallery, q_ids, g_ids = _clustered(np.random.default_rng(1), 60, 600, spread=1.2)
    plain = evaluate_reid(query, gallery, q_ids, g_ids)
    reranked = evaluate_reid(query, gallery, q_ids, g_ids, rerank=True)
    assert reranked["mAP"] > plain["mAP"] + 0.02


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k1=0), "k1 must be a positive int. Received: k1=0"),
        (dict(k2=2.0), "k2 must be a positive int"),
        (dict(lambda_value=1.5), r"lambda_value must be a number in \[0, 1\]. Received: lambda_value=1.5"),
        (dict(lambda_value=True), "lambda_value"),
    ],
)
def test_invalid_parameters(kwargs, message):
    query, gallery, q_ids, g_ids = _clustered(np.random.default_rng(2), 3, 10)
    with pytest.raises(ValueError, match=message):
        evaluate_reid(query, gallery, q_ids, g_ids, rerank=True, **kwargs)
    dist = np.ones((3, 10))
    with pytest.raises(ValueError, match=message):
        rerank.rerank_dense(dist, np.ones((3, 3)), np.ones((10, 10)), **kwargs)
