import numpy as np
import pytest

from portrait_keras.metrics import evaluate_reid, evaluate_reid_reference


def _at(sims):
    """Unit 2-D gallery features whose cosine similarity to the query [1, 0] is `sims`."""
    sims = np.asarray(sims, np.float64)
    return np.stack([sims, np.sqrt(1 - sims**2)], 1)


QUERY = np.array([[1.0, 0.0]])


def _ranks(result, max_rank=10):
    return [result[f"rank{k}"] for k in range(1, max_rank + 1)]


def test_hand_computed_ap_and_cmc():
    # Ranking: neg (0.9), pos (0.8), neg (0.7), pos (0.6) -> positives at ranks 2 and 4.
    result = evaluate_reid(QUERY, _at([0.7, 0.8, 0.9, 0.6]), [5], [1, 5, 2, 5], max_rank=4)
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert _ranks(result, 4) == [0.0, 1.0, 1.0, 1.0]
    assert result["mINP"] == pytest.approx(2 / 4)  # 2 positives, the hardest at rank 4
    assert (result["num_queries"], result["num_ids"]) == (1, 1)
    assert set(result) == {"mAP", "rank1", "rank2", "rank3", "rank4", "mINP", "num_queries", "num_ids"}


# Query: id 1, camera 0, group 3. Gallery, by decreasing similarity:
#   A id 1 cam 0 (same camera: ignored with cameras)   B id 2 group 3 (ignored with groups)
#   C id 1 cam 1 group 3 (ignored with groups)          D id 2, E id 1, F id 0, H id 0, G id 1
INP_GALLERY = _at([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.55, 0.5])
INP_IDS = [1, 2, 1, 2, 1, 0, 0, 1]
INP_CAMS = dict(query_cams=[0], gallery_cams=[0, 1, 1, 1, 1, 1, 1, 2])
INP_GROUPS = dict(query_groups=[3], gallery_groups=[-1, 3, 3, -1, -1, -1, -1, -1])


@pytest.mark.parametrize(
    "exclusions, expected",
    [
        ({}, 4 / 8),  # positives A, C, E, G at ranks 1, 3, 5, 8
        (INP_CAMS, 3 / 7),  # A removed: C, E, G at ranks 2, 4, 7
        (INP_GROUPS, 3 / 6),  # B, C removed: A, E, G at ranks 1, 3, 6
        ({**INP_CAMS, **INP_GROUPS}, 2 / 5),  # A, B, C removed: D, E, F, H, G -> E, G at ranks 2, 5
    ],
    ids=["none", "cameras", "groups", "both"],
)
@pytest.mark.parametrize("method", [evaluate_reid, evaluate_reid_reference])
def test_minp_hand_computed_with_the_exclusions_of_map(method, exclusions, expected):
    result = method(QUERY, INP_GALLERY, [1], INP_IDS, **exclusions)
    assert result["mINP"] == pytest.approx(expected)
    if exclusions == {**INP_CAMS, **INP_GROUPS}:
        assert result["mAP"] == pytest.approx((1 / 2 + 2 / 5) / 2)  # the same ranks give AP
        assert result["rank1"] == 0.0 and result["rank2"] == 1.0


def test_ties_follow_a_stable_argsort_of_the_distance():
    # Gallery 0 and 1 have the same feature: the lower index ranks first.
    negative_first = evaluate_reid(QUERY, _at([0.5, 0.5, 0.1]), [3], [0, 3, 0])
    assert negative_first["mAP"] == pytest.approx(0.5)
    assert negative_first["rank1"] == 0.0
    positive_first = evaluate_reid(QUERY, _at([0.5, 0.5, 0.1]), [3], [3, 0, 0])
    assert positive_first["mAP"] == 1.0
    # Two tied positives behind a tied negative: ranks 2 and 3.
    both = evaluate_reid(QUERY, _at([0.5, 0.5, 0.5]), [3], [0, 3, 3])
    assert both["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_tie_with_an_ignored_item_does_not_count():
    # The tied lower-index item is in the query's group, so it is removed.
    result = evaluate_reid(QUERY, _at([0.5, 0.5]), [3], [0, 3], query_groups=[7], gallery_groups=[7, -1])
    assert result["mAP"] == 1.0


def test_unknown_gallery_ids_are_negatives_and_unknown_queries_skipped():
    gallery = _at([0.9, 0.8, 0.1])
    result = evaluate_reid(np.repeat(QUERY, 2, 0), gallery, [-1, 4], [-1, 4, -1])
    assert result["num_queries"] == 1  # the query with id -1 has no positive
    assert result["mAP"] == pytest.approx(0.5)  # the unknown item at 0.9 outranks the positive
    assert result["num_ids"] == 1


def test_ids_only_in_the_gallery_are_negatives():
    result = evaluate_reid(QUERY, _at([0.9, 0.5]), [1], [8, 1])
    assert result["mAP"] == pytest.approx(0.5)
    assert result["num_ids"] == 1


def test_query_losing_all_positives_is_skipped():
    queries = np.repeat(QUERY, 2, 0)
    gallery = _at([0.9, 0.5, 0.3])
    result = evaluate_reid(queries, gallery, [1, 2], [1, 2, 0], query_groups=[4, -1], gallery_groups=[4, -1, -1])
    assert result["num_queries"] == 1  # query 0's only positive is in its group
    assert result["mAP"] == pytest.approx(0.5)  # query 1 is not in group 4: gallery 0 outranks its positive
    assert result["num_ids"] == 1
    with pytest.raises(ValueError, match="No query has a positive"):
        evaluate_reid(QUERY, gallery, [1], [1, 2, 0], query_groups=[4], gallery_groups=[4, -1, -1])


def test_camera_exclusion_market1501():
    # Gallery: same id same camera (ignored), other id same camera (negative), same id other camera.
    gallery = _at([0.9, 0.8, 0.7])
    kwargs = dict(query_cams=[0], gallery_cams=[0, 0, 1])
    result = evaluate_reid(QUERY, gallery, [1], [1, 2, 1], **kwargs)
    assert result["mAP"] == pytest.approx(0.5)
    assert result["rank1"] == 0.0
    # Camera -1 is unknown: it never matches, so nothing is ignored.
    unknown = evaluate_reid(QUERY, gallery, [1], [1, 2, 1], query_cams=[-1], gallery_cams=[-1, -1, -1])
    assert unknown["mAP"] == pytest.approx((1 + 2 / 3) / 2)


def test_group_exclusion_removes_members_of_any_id():
    gallery = _at([0.9, 0.8, 0.7, 0.6])
    ids = [2, 1, -1, 1]
    plain = evaluate_reid(QUERY, gallery, [1], ids)
    assert plain["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    grouped = evaluate_reid(QUERY, gallery, [1], ids, query_groups=[3], gallery_groups=[3, 3, 3, -1])
    assert grouped["mAP"] == 1.0  # only gallery 3 is left, at rank 1
    assert grouped["rank1"] == 1.0


def test_macro_averages_per_id_first():
    # Id 1 has three queries with AP 1, id 2 one query with AP 1/2.
    queries = np.repeat(QUERY, 4, 0)
    gallery = _at([0.9, 0.8, 0.7])
    ids_q, ids_g = [1, 1, 1, 2], [1, 2, 0]
    macro = evaluate_reid(queries, gallery, ids_q, ids_g)
    micro = evaluate_reid(queries, gallery, ids_q, ids_g, macro=False)
    assert macro["mAP"] == pytest.approx((1 + 0.5) / 2)
    assert micro["mAP"] == pytest.approx((3 + 0.5) / 4)
    assert macro["rank1"] == pytest.approx(0.5)
    assert micro["rank1"] == pytest.approx(0.75)
    # INP: 1 for the id-1 queries (one positive at rank 1), 1/2 for the id-2 query.
    assert macro["mINP"] == pytest.approx((1 + 0.5) / 2)
    assert micro["mINP"] == pytest.approx((3 + 0.5) / 4)
    assert macro["num_queries"] == micro["num_queries"] == 4
    assert macro["num_ids"] == 2


def eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, kind="quicksort"):
    """torchreid's `eval_market1501` (torchreid/metrics/rank.py), with the mINP lines of
    fast-reid's (fastreid/evaluation/rank.py), as a reference."""
    indices = np.argsort(distmat, axis=1, kind=kind)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(distmat.shape[0]):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        max_pos_idx = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        tmp_cmc = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0) * raw_cmc
        all_ap.append(tmp_cmc.sum() / raw_cmc.sum())
    return np.asarray(all_cmc, np.float32).mean(0), np.mean(all_ap), np.mean(all_inp)


def _random_features(rng, n, dim, ids):
    # Features near an id centre, so the metrics are neither 0 nor 1.
    return rng.normal(size=(n, dim)) + 1.5 * np.cos(np.outer(ids + 2, np.arange(1, dim + 1)))


def test_micro_equals_torchreid_eval_market1501():
    rng = np.random.default_rng(0)
    q_ids, g_ids = rng.integers(0, 20, 80), rng.integers(0, 25, 400)
    q_cams, g_cams = rng.integers(0, 4, 80), rng.integers(0, 4, 400)
    query, gallery = _random_features(rng, 80, 16, q_ids), _random_features(rng, 400, 16, g_ids)
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    distmat = 1 - q @ g.T
    # Precondition: no positive is within 1e-6 of a negative, so float32 rounding ranks alike.
    order = np.argsort(distmat, axis=1)
    is_positive = g_ids[order] == q_ids[:, None]
    gaps = np.diff(np.take_along_axis(distmat, order, 1), axis=1)
    assert gaps[is_positive[:, 1:] != is_positive[:, :-1]].min() > 1e-6

    cmc, mean_ap, mean_inp = eval_market1501(distmat, q_ids, g_ids, q_cams, g_cams, 10)
    result = evaluate_reid(query, gallery, q_ids, g_ids, query_cams=q_cams, gallery_cams=g_cams, macro=False)
    assert result["mAP"] == pytest.approx(mean_ap, abs=1e-12)
    assert result["mINP"] == pytest.approx(mean_inp, abs=1e-12)
    assert 0.01 < result["mINP"] < result["mAP"]
    np.testing.assert_allclose(_ranks(result), cmc, atol=1e-6)
    assert 0.05 < result["mAP"] < 0.95
    assert result["num_queries"] == 80


def _exact_features(rng, n, ids, dim=16):
    """+-1 features with id structure: normalised entries are +-1/4, so every float32
    similarity is an exact multiple of 1/16 and ties are frequent and exact."""
    centre = np.where(np.cos(np.outer(np.maximum(ids, 0) + 2, np.arange(1, dim + 1))) > 0, 1.0, -1.0)
    flip = rng.random((n, dim)) < 0.3
    return np.where(flip, -centre, centre)


def _exact_case(seed):
    rng = np.random.default_rng(seed)
    nq, ng = 60, 300
    q_ids = rng.integers(-1, 12, nq)
    g_ids = rng.integers(-1, 15, ng)
    q_groups = np.where(rng.random(nq) < 0.4, rng.integers(0, 20, nq), -1)
    g_groups = np.where(rng.random(ng) < 0.3, rng.integers(0, 20, ng), -1)
    q_cams, g_cams = rng.integers(-1, 3, nq), rng.integers(-1, 3, ng)
    query, gallery = _exact_features(rng, nq, q_ids), _exact_features(rng, ng, g_ids)
    labels = dict(query_groups=q_groups, gallery_groups=g_groups, query_cams=q_cams, gallery_cams=g_cams)
    return query, gallery, q_ids, g_ids, labels


@pytest.mark.parametrize("macro", [True, False])
@pytest.mark.parametrize("seed", [1, 2])
def test_matches_straightforward_method_with_ties_groups_cameras(seed, macro):
    query, gallery, q_ids, g_ids, labels = _exact_case(seed)
    reference = evaluate_reid_reference(query, gallery, q_ids, g_ids, macro=macro, **labels)
    result = evaluate_reid(query, gallery, q_ids, g_ids, macro=macro, **labels)
    assert result["mAP"] == pytest.approx(reference["mAP"], abs=1e-12)
    assert result["mINP"] == pytest.approx(reference["mINP"], abs=1e-12)
    np.testing.assert_allclose(_ranks(result), _ranks(reference), atol=1e-12)
    assert (result["num_queries"], result["num_ids"]) == (reference["num_queries"], reference["num_ids"])


def test_reference_method_on_a_hand_computed_case():
    # Query 0 (id 1): gallery order 2 (id 0), 0 (id 1), 1 (id 1) -> AP (1/2 + 2/3) / 2, first hit at rank 2.
    # Query 1 (id 2): its one positive, gallery 3, is in its near-duplicate group: skipped.
    gallery = np.array([[1.0, 0.2], [1.0, -0.5], [1.0, 0.6], [-1.0, 0.0]])
    query = np.array([[1.0, 0.7], [-1.0, 0.1]])
    result = evaluate_reid_reference(
        query, gallery, [1, 2], [1, 1, 0, 2], query_groups=[-1, 5], gallery_groups=[-1, -1, -1, 5], max_rank=3
    )
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert (result["rank1"], result["rank2"], result["rank3"]) == (0.0, 1.0, 1.0)
    assert (result["num_queries"], result["num_ids"]) == (1, 1)


@pytest.mark.parametrize("features", ["exact", "gaussian"])
def test_chunk_size_does_not_change_results(features):
    query, gallery, q_ids, g_ids, labels = _exact_case(3)
    if features == "gaussian":
        rng = np.random.default_rng(4)
        query, gallery = _random_features(rng, len(q_ids), 8, q_ids), _random_features(rng, len(g_ids), 8, g_ids)
    results = [evaluate_reid(query, gallery, q_ids, g_ids, chunk_size=c, **labels) for c in (None, 1, 7, 64)]
    for other in results[1:]:
        assert other == pytest.approx(results[0], abs=1e-12)


def test_feature_scale_does_not_matter():
    query, gallery, q_ids, g_ids, labels = _exact_case(5)
    expected = evaluate_reid(query, gallery, q_ids, g_ids, **labels)
    # Squares of 1e20 overflow float32; the norms are then taken in float64.
    assert evaluate_reid(query * 1e20, gallery * 0.5, q_ids, g_ids, **labels) == expected
    gallery[0] = 0  # a zero feature is similar (0) to every query
    assert evaluate_reid(query, gallery, q_ids, g_ids, **labels)["num_queries"] == expected["num_queries"]


def test_max_rank_sets_the_cmc_keys():
    result = evaluate_reid(QUERY, _at([0.9, 0.5]), [1], [0, 1], max_rank=3)
    assert [k for k in result if k.startswith("rank")] == ["rank1", "rank2", "rank3"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(query_features=np.ones((1, 3))), "same feature size"),
        (dict(query_features=np.full((1, 2), np.nan)), "finite"),
        (dict(query_ids=[0.5]), "query_ids must be an int array"),
        (dict(gallery_ids=[0]), r"gallery_ids must be an int array of shape \(2,\)"),
        (dict(query_groups=[1]), "Give both query_groups and gallery_groups"),
        (dict(gallery_cams=[1, 1]), "Give both query_cams and gallery_cams"),
        (dict(max_rank=0), "max_rank"),
        (dict(chunk_size=0), "chunk_size"),
    ],
)
def test_invalid_arguments(kwargs, message):
    args = dict(query_features=QUERY, gallery_features=_at([0.9, 0.5]), query_ids=[1], gallery_ids=[0, 1])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate_reid(**args)
