"""Re-identification metrics: (Macro) mAP, (Macro) CMC and mINP, paper §4.3.

`evaluate_reid` gives one set of averages; `reid_query_scores` ranks once and gives each
query's AP, first-positive rank and INP, which `average_reid` averages per query (the
Market-1501 protocol) or per identity (the paper's Macro), so both come from one ranking.

Retrieval ranks the gallery by cosine distance to each query (features are
L2-normalised, so the ranking is by decreasing float32 dot product). The
evaluation runs in bounded memory at Portrait250K size (12,361 queries x
86,006 gallery images): queries are processed in chunks, and for each query
only the positions of its positives are computed (one sort of the gallery
items that can outrank a positive, in parallel threads), never a full distance
matrix or a full argsort. With `rerank=True` the gallery is ranked by the k-reciprocal
re-ranked distance (Zhong et al. 2017, `metrics/rerank.py`), in bounded memory too.
"""

import contextlib
import functools
import os
from concurrent import futures
from typing import NamedTuple

import numpy as np

from portrait_keras.metrics.distance import row_keys, unit_rows
from portrait_keras.metrics.rerank import KReciprocal, rerank_dense

# The similarity block of one chunk of queries stays under this many bytes.
_BLOCK_BYTES = 64 << 20
# Above this fraction of candidates a full sort is cheaper than selecting them first.
_FULL_SORT_FRACTION = 0.7
# Threads ranking the rows of a chunk (at most one per CPU).
_MAX_THREADS = 8


class ReidQueryScores(NamedTuple):
    """Per-query retrieval scores of the queries that have a positive (`reid_query_scores`).

    Attributes:
        ids: int64 `[n]`. The identity of each query.
        ap: float64 `[n]`. Average precision.
        first_rank: int64 `[n]`. 1-based rank of the best-ranked positive (CMC).
        inp: float64 `[n]`. Inverse negative penalty: the number of positives over the
            1-based rank of the worst-ranked (hardest) positive (Ye et al. 2021, §4).
    """

    ids: np.ndarray
    ap: np.ndarray
    first_rank: np.ndarray
    inp: np.ndarray


def evaluate_reid(
    query_features,
    gallery_features,
    query_ids,
    gallery_ids,
    *,
    query_groups=None,
    gallery_groups=None,
    query_cams=None,
    gallery_cams=None,
    macro=True,
    max_rank=10,
    chunk_size=None,
    rerank=False,
    k1=20,
    k2=6,
    lambda_value=0.3,
):
    """Mean average precision, CMC and mINP of gallery retrieval.

    Each query ranks the gallery by cosine distance. A gallery image is a
    positive of a query when it has the query's id; images with id `-1`
    (unknown) are always negatives. Ignored gallery images (removed from the
    query's ranking) are:

    - with cameras: those with the query's id and the query's camera (the
      Market-1501 protocol; camera `-1` means unknown and never matches);
    - with groups: those in the query's near-duplicate group, whatever their id
      (paper §4.3; group `-1` means no group).

    Queries left without any positive are skipped (as torchreid does). With
    `macro=True`, AP, CMC and INP are averaged over the queries of each id first
    and then over ids: the paper's Macro mAP and Macro CMC (§4.3), whose rank-1
    and mAP enter PIQ (eq. 2). With `macro=False` they are averaged over queries,
    which equals torchreid's `eval_market1501` (mAP, CMC) and fast-reid's
    `evaluate_rank` (mINP). The INP of a query is `|positives| / R_hard`, with
    `R_hard` the rank of its hardest positive (Ye et al., "Deep Learning for Person
    Re-identification: A Survey and Outlook", TPAMI 2021, §4); ignored images are
    removed before ranks are counted, as for AP.

    Ties: gallery items are ordered by decreasing float32 similarity, and items
    with equal similarity by increasing gallery index, i.e. the order of a
    stable argsort of the distance (`np.argsort(-sim, kind="stable")`).

    With `rerank=True` the gallery is ranked by the k-reciprocal re-ranked distance
    (Zhong et al., CVPR 2017; `rerank.rerank_dense` of the cosine distances, computed in
    bounded memory by `rerank.KReciprocal`), ties again by gallery index; the exclusions
    apply to that ranking as to the plain one (all items take part in the re-ranking).

    Args:
        query_features: float array `[Q, D]`. Query embeddings (cast to float32).
        gallery_features: float array `[G, D]`. Gallery embeddings.
        query_ids: int array `[Q]`. Identity of each query, `-1` unknown (such a
            query has no positive and is skipped).
        gallery_ids: int array `[G]`. Identity of each gallery image, `-1` unknown.
        query_groups: int array `[Q]` or None. Near-duplicate group, `-1` none.
            Give both group arrays or neither.
        gallery_groups: int array `[G]` or None.
        query_cams: int array `[Q]` or None. Camera, `-1` unknown. Give both
            camera arrays or neither.
        gallery_cams: int array `[G]` or None.
        macro: bool. Average per id first (Macro mAP / Macro CMC). Defaults to
            `True`.
        max_rank: int. Largest CMC rank reported. Defaults to `10`.
        chunk_size: int or None. Queries per chunk; None picks a chunk whose
            similarity block stays under 64 MiB. Results do not depend on it, up to
            float32 rounding: a one-row chunk takes another BLAS path than a block, so
            similarities within ~1e-7 of each other may swap ranks.
        rerank: bool. Rank by the k-reciprocal re-ranked distance. Defaults to `False`.
        k1: int. Re-ranking: neighbourhood size of the k-reciprocal features. Defaults to `20`.
        k2: int. Re-ranking: neighbours of the local query expansion. Defaults to `6`.
        lambda_value: float in [0, 1]. Re-ranking: weight of the original distance.
            Defaults to `0.3`.

    Returns:
        dict with `mAP`, `rank1` ... `rank{max_rank}` and `mINP` as fractions in
        [0, 1], `num_queries` (queries with a positive) and `num_ids` (their
        distinct ids).

    Example:
    >>> rng = np.random.default_rng(0)
    >>> gallery = rng.normal(size=(6, 4))
    >>> result = evaluate_reid(gallery[:2] + 0.01, gallery, [0, 1], [0, 1, 2, 0, 1, 2])
    >>> result["rank1"], result["num_queries"]
    (1.0, 2)
    """
    _check_max_rank(max_rank)
    scores = reid_query_scores(
        query_features,
        gallery_features,
        query_ids,
        gallery_ids,
        query_groups=query_groups,
        gallery_groups=gallery_groups,
        query_cams=query_cams,
        gallery_cams=gallery_cams,
        chunk_size=chunk_size,
        rerank=rerank,
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
    )
    return average_reid(scores, macro=macro, max_rank=max_rank)


def reid_query_scores(
    query_features,
    gallery_features,
    query_ids,
    gallery_ids,
    *,
    query_groups=None,
    gallery_groups=None,
    query_cams=None,
    gallery_cams=None,
    chunk_size=None,
    rerank=False,
    k1=20,
    k2=6,
    lambda_value=0.3,
):
    """Ranks the gallery for every query: AP, first-positive rank and INP per query.

    Args: as `evaluate_reid` (without `macro` and `max_rank`).

    Returns: `ReidQueryScores` of the queries with a positive, in query order.

    Raises: ValueError when no query has a positive (the metrics are undefined).

    Example:
    >>> gallery = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    >>> scores = reid_query_scores([[1.0, 0.0]], gallery, [7], [7, 0, 7])
    >>> scores.first_rank.tolist(), scores.inp.tolist()  # positives at ranks 1 and 3
    ([1], [0.6666666666666666])
    >>> average_reid(scores, macro=False, max_rank=1)["mINP"]
    0.6666666666666666
    """
    query_features = unit_rows(query_features, "query_features")
    gallery_features = unit_rows(gallery_features, "gallery_features")
    if query_features.shape[1] != gallery_features.shape[1]:
        raise ValueError(
            "query_features and gallery_features must have the same feature size. "
            f"Received: shapes {query_features.shape} and {gallery_features.shape}"
        )
    num_query, num_gallery = len(query_features), len(gallery_features)
    query_ids = _labels(query_ids, num_query, "query_ids")
    gallery_ids = _labels(gallery_ids, num_gallery, "gallery_ids")
    query_groups, gallery_groups = _pair(query_groups, gallery_groups, num_query, num_gallery, "groups")
    query_cams, gallery_cams = _pair(query_cams, gallery_cams, num_query, num_gallery, "cams")
    if chunk_size is None:
        chunk_size = max(1, _BLOCK_BYTES // (4 * num_gallery))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None. Received: chunk_size={chunk_size!r}")
    reranked = KReciprocal(query_features, gallery_features, k1, k2, lambda_value) if rerank else None

    by_id = _Index(gallery_ids)
    by_group = _Index(gallery_groups) if gallery_groups is not None else None

    ap = np.zeros(num_query)
    inp = np.zeros(num_query)
    first = np.zeros(num_query, np.int64)  # 1-based rank of the best positive, 0 = skipped
    block = np.empty((min(chunk_size, num_query), num_gallery), np.float32)
    workers = min(os.cpu_count() or 1, _MAX_THREADS, chunk_size)
    with futures.ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as executor:
        for start in range(0, num_query, chunk_size):
            stop = min(start + chunk_size, num_query)
            sims = block[: stop - start]
            np.matmul(query_features[start:stop], gallery_features.T, out=sims)
            if reranked is not None:  # rank by decreasing -distance: the same order
                np.negative(reranked.distances(start, stop, sims, out=sims), out=sims)
            ap[start:stop], first[start:stop], inp[start:stop] = _rank_chunk(
                sims,
                query_ids[start:stop],
                by_id,
                None if query_groups is None else query_groups[start:stop],
                gallery_groups,
                by_group,
                None if query_cams is None else query_cams[start:stop],
                gallery_cams,
                executor,
                workers,
            )

    valid = first > 0
    if not valid.any():
        raise ValueError(
            "No query has a positive in the gallery, so mAP and CMC are undefined. "
            f"Received: {num_query} queries, {num_gallery} gallery images"
        )
    return ReidQueryScores(query_ids[valid], ap[valid], first[valid], inp[valid])


def average_reid(scores, *, macro=True, max_rank=10):
    """mAP, CMC and mINP from per-query scores, averaged over queries or per identity first.

    Args:
        scores: `ReidQueryScores` (`reid_query_scores`).
        macro: bool. Average per id first (the paper's Macro). Defaults to `True`.
        max_rank: int. Largest CMC rank reported. Defaults to `10`.

    Returns: dict as `evaluate_reid`.
    """
    _check_max_rank(max_rank)
    ranks = np.arange(1, max_rank + 1)
    cmc = scores.first_rank[:, None] <= ranks  # [queries, max_rank]
    ids, inverse = np.unique(scores.ids, return_inverse=True)
    if macro:
        per_id = np.bincount(inverse, minlength=len(ids))

        def average(values):
            return np.mean(np.bincount(inverse, weights=values, minlength=len(ids)) / per_id)

    else:
        average = np.mean
    result = {"mAP": float(average(scores.ap))}
    result.update({f"rank{k}": float(average(c)) for k, c in zip(ranks, cmc.T)})
    result["mINP"] = float(average(scores.inp))
    result["num_queries"] = len(scores.ids)
    result["num_ids"] = len(ids)
    return result


def _check_max_rank(max_rank):
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive int. Received: max_rank={max_rank!r}")


class _Index:
    """Gallery positions of each label value, as contiguous runs of one sorted order."""

    def __init__(self, labels):
        self.order = np.argsort(labels, kind="stable")
        self.values, self.starts, self.counts = np.unique(labels[self.order], return_index=True, return_counts=True)

    def expand(self, labels):
        """(row, gallery position) pairs of every gallery item labelled like each entry
        of `labels` (`-1` matches nothing), row-major, positions ascending."""
        loc = np.clip(np.searchsorted(self.values, labels), 0, max(len(self.values) - 1, 0))
        found = (labels != -1) & (self.values[loc] == labels)
        counts = np.where(found, self.counts[loc], 0)
        rows = np.repeat(np.arange(len(labels)), counts)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.order[np.repeat(self.starts[loc], counts) + offsets]


def evaluate_reid_reference(
    query_features,
    gallery_features,
    query_ids,
    gallery_ids,
    *,
    query_groups=None,
    gallery_groups=None,
    query_cams=None,
    gallery_cams=None,
    macro=True,
    max_rank=10,
    rerank=False,
    k1=20,
    k2=6,
    lambda_value=0.3,
):
    """`evaluate_reid` written the straightforward way: the full similarity matrix, one stable
    argsort per query, the exclusions and the averages as their rules read. Kept beside the
    fast path as torchreid and fast-reid keep `eval_market1501` beside their Cython, to read
    and to test against; `[Q, G]` memory (`[Q + G, Q + G]` with `rerank`: `rerank_dense`), so
    for small sets only.

    Args and returns: as `evaluate_reid` (without `chunk_size`).
    """
    q = unit_rows(query_features, "query_features")
    g = unit_rows(gallery_features, "gallery_features")
    q_ids, g_ids = _labels(query_ids, len(q), "query_ids"), _labels(gallery_ids, len(g), "gallery_ids")
    q_groups, g_groups = _pair(query_groups, gallery_groups, len(q), len(g), "groups")
    q_cams, g_cams = _pair(query_cams, gallery_cams, len(q), len(g), "cams")
    if rerank:
        x = np.concatenate([q, g])
        dist = np.clip(1 - x @ x.T, 0, 2)  # cosine distances, as `cosine_distances`
        nq = len(q)
        reranked = rerank_dense(dist[:nq, nq:], dist[:nq, :nq], dist[nq:, nq:], k1, k2, lambda_value)
        order = np.argsort(reranked, axis=1, kind="stable")
    else:
        order = np.argsort(-(q @ g.T), axis=1, kind="stable")
    aps, cmcs, inps, ids = [], [], [], []
    for i, o in enumerate(order):
        removed = np.zeros(len(o), bool)
        if q_groups is not None:
            removed |= (q_groups[i] != -1) & (g_groups[o] == q_groups[i])
        if q_cams is not None:
            removed |= (g_ids[o] == q_ids[i]) & (q_cams[i] != -1) & (g_cams[o] == q_cams[i])
        matches = (g_ids[o][~removed] == q_ids[i]) & (q_ids[i] != -1)
        if not matches.any():
            continue  # no positive left: skipped, as torchreid does
        hits = np.cumsum(matches)
        aps.append(np.mean((hits / np.arange(1, len(hits) + 1))[matches]))
        cmcs.append(np.minimum(np.pad(hits, (0, max(0, max_rank - len(hits))), mode="edge")[:max_rank], 1))
        hardest = np.flatnonzero(matches)[-1] + 1  # rank of the last positive
        inps.append(matches.sum() / hardest)
        ids.append(q_ids[i])
    if not aps:
        raise ValueError("No query has a positive in the gallery, so mAP and CMC are undefined.")
    aps, cmcs, inps, ids = np.array(aps), np.array(cmcs, np.float64), np.array(inps), np.array(ids)
    if macro:
        aps = np.array([aps[ids == i].mean() for i in np.unique(ids)])
        cmcs = np.array([cmcs[ids == i].mean(0) for i in np.unique(ids)])
        inps = np.array([inps[ids == i].mean() for i in np.unique(ids)])
    result = {"mAP": float(aps.mean())}
    result.update({f"rank{r}": float(cmcs[:, r - 1].mean()) for r in range(1, max_rank + 1)})
    result["mINP"] = float(inps.mean())
    result.update(num_queries=len(ids), num_ids=len(np.unique(ids)))
    return result


def _rank_chunk(
    sims, query_ids, by_id, query_groups, gallery_groups, by_group, query_cams, gallery_cams, executor, workers
):
    """AP, 1-based rank of the first positive and INP of each query of a chunk.

    `sims` is the float32 similarity block `[B, G]`; the rows are ranked by the
    `workers` threads of `executor` (inline when it is None). Returns float64 AP `[B]`,
    int64 first-positive rank `[B]` (0 for a query without positives) and float64 INP `[B]`
    (positives over the rank of the last one; 0 without positives).
    """
    rows, cols = by_id.expand(query_ids)
    ignored = np.zeros(len(rows), bool)
    in_group = np.zeros(len(rows), bool)
    if query_cams is not None:
        cam = query_cams[rows]
        ignored |= (cam != -1) & (gallery_cams[cols] == cam)
    if query_groups is not None:
        group = query_groups[rows]
        in_group = (group != -1) & (gallery_groups[cols] == group)
    positive = ~(ignored | in_group)
    # Ignored items: the query's whole group (any id) plus same-camera positives outside it.
    ignored_rows, ignored_cols = rows[ignored & ~in_group], cols[ignored & ~in_group]
    if by_group is not None:
        group_rows, group_cols = by_group.expand(query_groups)
        ignored_rows = np.concatenate([ignored_rows, group_rows])
        ignored_cols = np.concatenate([ignored_cols, group_cols])
    rows, cols = rows[positive], cols[positive]

    num_rows, num_items = sims.shape
    target = sims[rows, cols]
    bounds = np.searchsorted(rows, np.arange(num_rows + 1))
    # Per row, the positives' similarities ascending, and how many items of any kind
    # (valid or ignored) come before each of them in the ranking.
    sorted_target = np.empty_like(target)
    above = np.empty(len(rows), np.int64)
    rank_rows = functools.partial(
        _rank_rows,
        sims=sims,
        target=target,
        cols=cols,
        bounds=bounds,
        ignored_rows=ignored_rows,
        ignored_cols=ignored_cols,
        sorted_target=sorted_target,
        above=above,
    )
    parts = [range(i, num_rows, workers) for i in range(workers)]
    list(executor.map(rank_rows, parts) if executor is not None else map(rank_rows, parts))

    # Remove ignored items that outrank a positive of the same query.
    ignored_keys = np.sort(row_keys(ignored_rows, sims[ignored_rows, ignored_cols]))
    above -= np.searchsorted(ignored_keys, (rows + 1) << 32, side="left") - np.searchsorted(
        ignored_keys, row_keys(rows, sorted_target), side="right"
    )

    rank = np.sort(rows * (num_items + 1) + above + 1) - rows * (num_items + 1)
    hits = np.arange(len(rows)) - bounds[rows] + 1  # positives up to and including this one
    counts = np.diff(bounds)
    ap = np.bincount(rows, weights=hits / rank, minlength=num_rows) / np.maximum(counts, 1)
    first = np.zeros(num_rows, np.int64)
    inp = np.zeros(num_rows)
    has = counts > 0
    first[has] = rank[bounds[:-1][has]]
    inp[has] = counts[has] / rank[bounds[1:][has] - 1]
    return ap, first, inp


def _rank_rows(rows, sims, target, cols, bounds, ignored_rows, ignored_cols, sorted_target, above):
    """Fills `sorted_target` and `above` for the positives of the given rows of `sims`
    (each row's slice `bounds[r]:bounds[r + 1]`; rows write disjoint slices, so
    threads can share the arrays: numpy releases the GIL in the heavy calls)."""
    num_items = sims.shape[1]
    for r in rows:
        lo, hi = bounds[r], bounds[r + 1]
        if lo == hi:
            continue
        row = sims[r]
        t = np.sort(target[lo:hi])
        candidates = np.flatnonzero(row >= t[0])  # items below every positive outrank none
        if len(candidates) > _FULL_SORT_FRACTION * num_items:
            ranked = np.sort(row)
        else:
            ranked = row.take(candidates)
            ranked.sort()
        n = len(ranked)
        left = np.searchsorted(ranked, t, side="left")
        above[lo:hi] = n - 1 - left  # exact unless another item has the same similarity
        sorted_target[lo:hi] = t
        tied = (left + 1 < n) & (ranked.take(np.minimum(left + 1, n - 1)) == t)
        if not tied.any():
            continue
        for value in np.unique(t[tied]):
            above[lo:hi][t == value] = _tied_above(
                row,
                value,
                n - np.searchsorted(ranked, value, "right"),
                cols[lo:hi][target[lo:hi] == value],
                ignored_cols[ignored_rows == r],
            )


def _tied_above(row, value, num_higher, positive_cols, ignored_cols):
    """Items before each positive of similarity `value` in a stable ranking: the
    `num_higher` items (of any kind) with a higher similarity, plus the valid items
    with the same similarity and a lower gallery index. Returns int64 `[len(positive_cols)]`,
    ascending."""
    equal = np.flatnonzero(row == value)
    equal = equal[~np.isin(equal, ignored_cols)]
    return num_higher + np.searchsorted(equal, np.sort(positive_cols))


def _labels(x, n, name):
    x = np.asarray(x)
    if x.shape != (n,) or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must be an int array of shape ({n},). Received: shape {x.shape}, dtype {x.dtype}")
    return x.astype(np.int64, copy=False)


def _pair(query, gallery, num_query, num_gallery, name):
    if (query is None) != (gallery is None):
        raise ValueError(
            f"Give both query_{name} and gallery_{name}, or neither. Received: "
            f"query_{name} is {'None' if query is None else 'set'}, gallery_{name} is "
            f"{'None' if gallery is None else 'set'}"
        )
    if query is None:
        return None, None
    return _labels(query, num_query, f"query_{name}"), _labels(gallery, num_gallery, f"gallery_{name}")
