"""k-reciprocal re-ranking of re-id retrieval (Zhong et al., "Re-ranking Person
Re-identification with k-reciprocal Encoding", CVPR 2017, §3).

The re-ranked distance of query p and gallery item g is

    d*(p, g) = (1 - λ) d_J(p, g) + λ d(p, g)

with d the original distance and d_J the Jaccard distance of their k-reciprocal features:
V_p holds Gaussian weights exp(-d(p, x)), normalised to sum 1, over the k1-reciprocal
neighbours x of p (items among p's k1 + 1 nearest that have p among theirs), expanded by
the k1/2-reciprocal neighbours of each of them that share more than 2/3 of their own
with p's; V_p is then averaged over p's k2 nearest items (local query expansion), and
d_J(p, g) = 1 - Σ min(V_p, V_g) / Σ max(V_p, V_g). Neighbours are searched among the
queries and the gallery together.

`rerank_dense` is the authors' `re_ranking(q_g_dist, q_q_dist, g_g_dist)` (the code
torchreid and fast-reid ship) written plainly on the dense (Q + G)² matrix. `KReciprocal`
gives the same distances a chunk of queries at a time, in memory linear in Q + G (at
Portrait250K size the dense matrix alone would take 38 GB):

- one pass over the similarity matrix, tile by tile and only its upper half (it is
  symmetric), keeps each item's k1 + 1 nearest neighbours and its largest distance;
- V and its query expansion are sparse (a few dozen items per row);
- the Jaccard term of a query needs only the gallery items sharing an item of V with it:
  every other item has d_J = 1, so `KReciprocal.distances` visits those pairs alone, through
  an inverted index of V.

Arithmetic follows the authors' code: distances squared and divided by their row's
largest in float32, neighbours by increasing distance (ties: lower index first, a stable
argsort), float32 weights. V and the Jaccard sums are float64 (the authors' float32 sums
depend on their order; these are added in one fixed order, so both implementations agree
to the bit), and the final distance is float32.
"""

from concurrent import futures

import numpy as np

from portrait_keras.metrics.distance import row_keys

# Rows (and columns) of one similarity tile of the neighbour search: 64 MiB of float32.
_TILE = 4096
# Similarity slack: items further than this below a row's k-th largest similarity cannot
# tie with or pass it once distances are rounded, squared and scaled in float32.
_MARGIN = np.float32(1e-5)
# Rows of the reciprocal-neighbour step at a time.
_ROWS = 2048
# A chunk's Jaccard terms are summed over its whole [rows, G] block when there are more than
# this many per entry of it, else over their sorted distinct (query, item) pairs.
_DENSE_PAIRS = 1 / 8


def rerank_dense(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranked query-gallery distances, the straightforward way.

    The authors' algorithm on the dense (Q + G) x (Q + G) distance matrix, kept to read
    and to test `KReciprocal` against; `(Q + G)^2` memory, so for small sets only.

    Args:
        q_g_dist: float array `[Q, G]`. Query-gallery distances (non-negative).
        q_q_dist: float array `[Q, Q]`. Query-query distances.
        g_g_dist: float array `[G, G]`. Gallery-gallery distances.
        k1: int. Size of the neighbourhoods whose reciprocity defines V. Defaults to `20`.
        k2: int. Neighbours averaged by the local query expansion (1: none). Defaults to `6`.
        lambda_value: float in [0, 1]. Weight of the original distance. Defaults to `0.3`.

    Returns: float32 `[Q, G]` re-ranked distances.

    Example: two pairs of points on a line; the query is point 0, the gallery the others.
    Points 0 and 1 are each other's reciprocal neighbours (Jaccard distance 0.009, final
    0.7 * 0.009 + 0.3 * 0.1² / 1.1²); points 2 and 3 share none with 0 (Jaccard distance 1).
    >>> points = np.array([0.0, 0.1, 1.0, 1.1])
    >>> dist = np.abs(points[:, None] - points)
    >>> rerank_dense(dist[:1, 1:], dist[:1, :1], dist[1:, 1:], k1=1, k2=1).round(3)
    array([[0.009, 0.948, 1.   ]], dtype=float32)
    """
    check_parameters(k1, k2, lambda_value)
    num_query = len(q_g_dist)
    dist = np.power(np.block([[q_q_dist, q_g_dist], [np.transpose(q_g_dist), g_g_dist]]), 2).astype(np.float32)
    # The authors divide each column by its largest value and transpose: for this
    # symmetric matrix, each row by its largest value.
    dist /= np.maximum(dist.max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    n = len(dist)
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i, k):
        """The k-reciprocal neighbours of i: those of its k + 1 nearest that have i among theirs."""
        forward = rank[i, : k + 1]
        return forward[(rank[forward, : k + 1] == i).any(axis=1)]

    v = np.zeros((n, n))
    for i in range(n):
        neighbours = reciprocal(i, k1)
        expansion = neighbours
        for c in neighbours:
            candidate = reciprocal(c, int(np.around(k1 / 2)))
            if len(np.intersect1d(candidate, neighbours)) > 2 / 3 * len(candidate):
                expansion = np.append(expansion, candidate)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        # float32 weights in [1/e, 1]: their float64 sum is exact, whatever the order.
        v[i, expansion] = weight / weight.sum(dtype=np.float64)
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    shared = np.zeros((num_query, n))  # sum of min(V_p, V_g); the sum of max is 2 - shared
    for i in range(num_query):
        for col in np.flatnonzero(v[i]):
            rows = np.flatnonzero(v[:, col])
            shared[i, rows] += np.minimum(v[i, col], v[rows, col])
    jaccard = 1 - shared / (2 - shared)
    return _final_distance(jaccard, dist[:num_query], lambda_value)[:, num_query:]


class KReciprocal:
    """`rerank_dense` of cosine distances in bounded memory, a chunk of queries at a time.

    The constructor searches the neighbours and builds the sparse k-reciprocal features
    (module docstring); `distances` then gives the re-ranked distances of any chunk of
    queries from the chunk's cosine similarities to the gallery, which the caller computes
    anyway to rank.

    Args:
        query_features: float32 `[Q, D]` with unit rows.
        gallery_features: float32 `[G, D]` with unit rows.
        k1, k2, lambda_value: as `rerank_dense`.

    Example: two pairs of close directions; the query is direction 0.
    >>> angles = np.array([0.0, 0.1, 1.5, 1.6])
    >>> x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    >>> fast = KReciprocal(x[:1], x[1:], k1=1, k2=1).distances(0, 1, x[:1] @ x[1:].T)
    >>> dist = np.clip(1 - x @ x.T, 0, 2)
    >>> fast.round(3), np.array_equal(fast, rerank_dense(dist[:1, 1:], dist[:1, :1], dist[1:, 1:], k1=1, k2=1))
    (array([[0.   , 0.945, 1.   ]], dtype=float32), True)
    """

    def __init__(self, query_features, gallery_features, k1=20, k2=6, lambda_value=0.3):
        check_parameters(k1, k2, lambda_value)
        self.lambda_value = lambda_value
        self.num_query, self.num_gallery = len(query_features), len(gallery_features)
        x = np.concatenate([query_features, gallery_features])
        nearest, max_dist = _nearest(x, max(k1 + 1, k2))
        indptr, cols, vals = _features(x, nearest, max_dist, k1)
        del x
        if k2 != 1:
            indptr, cols, vals = _expand(indptr, cols, vals, nearest[:, :k2])
        self._largest = _largest_squares(max_dist[: self.num_query])
        q = indptr[self.num_query]
        self._query = indptr[: self.num_query + 1], cols[:q], vals[:q]
        # The gallery rows by column (an inverted index), rows ascending within a column.
        rows = np.repeat(np.arange(self.num_query, len(indptr) - 1), np.diff(indptr[self.num_query :]))
        order = np.argsort(cols[q:], kind="stable")
        counts = np.bincount(cols[q:], minlength=len(indptr) - 1)
        self._by_column = np.concatenate([[0], np.cumsum(counts)]), rows[order] - self.num_query, vals[q:][order]

    def distances(self, start, stop, sims, out=None):
        """Re-ranked distances of queries `start:stop` to the gallery.

        Args:
            start, stop: int. The chunk of queries.
            sims: float32 `[stop - start, G]`. Their cosine similarities to the gallery.
            out: float32 array of the same shape, or None. Where to write the result (may be
                `sims`).

        Returns: float32 `[stop - start, G]`.
        """
        out = np.empty(sims.shape, np.float32) if out is None else out
        # The original term of every item, in place: _scaled_squares, then _final_distance
        # with d_J = 1 (items sharing nothing with the query; float64 sum, float32 result).
        np.subtract(1, sims, out=out)
        np.clip(out, 0, 2, out=out)
        np.multiply(out, out, out=out)
        np.divide(out, self._largest[start:stop, None], out=out)
        pairs, jaccard = self._jaccard(start, stop)
        scaled = out.reshape(-1)[pairs]
        np.multiply(out, np.float32(self.lambda_value), out=out)
        np.add(out, 1 - self.lambda_value, out=out, dtype=np.float64)
        out.reshape(-1)[pairs] = _final_distance(jaccard, scaled, self.lambda_value)
        return out

    def _jaccard(self, start, stop):
        """The Jaccard distances below 1 of queries `start:stop`: flat positions in their
        `[stop - start, G]` block (ascending) and float64 distances."""
        q_indptr, q_cols, q_vals = self._query
        owner, pos = _ragged(q_indptr, np.arange(start, stop))
        cols, vals = q_cols[pos], q_vals[pos]
        g_indptr, g_rows, g_vals = self._by_column
        entry, g_pos = _ragged(g_indptr, cols)
        # Pairs ordered by query, then column ascending: the order rerank_dense adds them in.
        keys = owner[entry] * self.num_gallery + g_rows[g_pos]
        terms = np.minimum(vals[entry], g_vals[g_pos])
        if len(keys) > _DENSE_PAIRS * (stop - start) * self.num_gallery:  # adding over the block is cheaper
            shared = np.bincount(keys, weights=terms, minlength=(stop - start) * self.num_gallery)
            pairs = np.flatnonzero(shared)
            shared = shared[pairs]
        else:
            pairs, inverse = np.unique(keys, return_inverse=True)
            shared = np.bincount(inverse, weights=terms)
        return pairs, 1 - shared / (2 - shared)


def check_parameters(k1, k2, lambda_value):
    """Raises ValueError unless k1 and k2 are positive ints and lambda_value is in [0, 1]."""
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
    number = isinstance(lambda_value, (int, float, np.integer, np.floating)) and not isinstance(lambda_value, bool)
    if not number or not 0 <= lambda_value <= 1:
        raise ValueError(f"lambda_value must be a number in [0, 1]. Received: lambda_value={lambda_value!r}")


def _largest_squares(max_dist):
    """Each row's largest squared distance from its largest distance (squaring keeps the
    order), kept above 0."""
    return np.maximum(max_dist * max_dist, np.finfo(np.float32).tiny)


def _scaled_squares(dist, max_dist):
    """float32 squared distances over their row's largest squared distance."""
    return (dist * dist) / _largest_squares(max_dist)


def _final_distance(jaccard, dist, lambda_value):
    """(1 - λ) Jaccard + λ original distance, as float32 (the authors' `final_dist`)."""
    return (jaccard * (1 - lambda_value) + dist * np.float32(lambda_value)).astype(np.float32)


def _ragged(indptr, rows):
    """Positions of the entries of `rows` in a CSR array (`indptr`), row after row, and the
    index in `rows` each position belongs to. Returns `(owner, positions)`, int64."""
    starts, counts = indptr[rows], indptr[np.asarray(rows) + 1] - indptr[rows]
    owner = np.repeat(np.arange(len(counts)), counts)
    return owner, np.arange(len(owner)) + np.repeat(starts - (np.cumsum(counts) - counts), counts)


def _nearest(x, k):
    """The k nearest items of every row of `x` (unit float32 `[N, D]`, cosine distance), in
    `rerank_dense`'s order, and each row's largest distance.

    One pass over the upper half of `x @ x.T` in tiles, the diagonal tiles first: a row's
    k-th largest similarity within its own tile bounds its k-th largest overall from below.
    Each row keeps the candidates within `_MARGIN` of that bound, which rises as candidates
    come in; the scaled squared distances then order the candidates exactly.

    Returns: `(nearest, max_dist)`: int64 `[N, min(k, N)]` and float32 `[N]`.
    """
    n = len(x)
    k = min(k, n)
    starts = range(0, n, _TILE)
    bound = np.full(n, -np.inf, np.float32)  # candidates must reach it
    lowest = np.full(n, np.inf, np.float32)  # each row's smallest similarity
    buckets = [_Candidates(k, min(_TILE, n - i)) for i in starts]  # of the rows of each tile row
    # Two tile buffers: the next tile's product runs in a thread while this one is scanned
    # (OpenBLAS's threads would otherwise spin through the scan).
    buffers = [np.empty(min(_TILE, n) ** 2, np.float32) for _ in range(2)]
    scratch = np.empty_like(buffers[0])  # reused: a fresh copy per tile costs page faults
    above = np.empty(len(scratch), bool)
    tiles = [(a, a) for a in range(len(starts))]
    tiles += [(a, b) for a in range(len(starts)) for b in range(a + 1, len(starts))]

    def product(i):
        a, b = tiles[i]
        rows, cols = slice(starts[a], min(starts[a] + _TILE, n)), slice(starts[b], min(starts[b] + _TILE, n))
        shape = rows.stop - rows.start, cols.stop - cols.start
        sims = buffers[i % 2][: shape[0] * shape[1]].reshape(shape)  # contiguous, as matmul's out wants
        np.matmul(x[rows], x[cols].T, out=sims)
        return rows, cols, sims

    with futures.ThreadPoolExecutor(1) as ahead:
        pending = ahead.submit(product, 0)
        for i, (a, b) in enumerate(tiles):
            rows, cols, sims = pending.result()
            if i + 1 < len(tiles):
                pending = ahead.submit(product, i + 1)
            if a == b and sims.shape[1] >= k:
                kth = scratch[: sims.size].reshape(sims.shape)
                np.copyto(kth, sims)
                kth.partition(sims.shape[1] - k, axis=1)
                bound[rows] = kth[:, sims.shape[1] - k] - _MARGIN
            np.minimum(lowest[rows], sims.min(axis=1), out=lowest[rows])
            buckets[a].add(*_above(sims, bound[rows, None], above, rows.start, cols.start), bound)
            if a != b:  # the tile's transpose: rows of `cols` against columns of `rows`
                np.minimum(lowest[cols], sims.min(axis=0), out=lowest[cols])
                r, c, values = _above(sims, bound[None, cols], above, rows.start, cols.start)
                buckets[b].add(c, r, values, bound)
    max_dist = np.clip(1 - lowest, 0, 2)
    nearest = np.empty((n, k), np.int64)
    for bucket in buckets:
        rows, cols, sims = bucket.prune(bound)
        scaled = _scaled_squares(np.clip(1 - sims, 0, 2), max_dist[rows])
        order = np.lexsort((cols, scaled, rows))
        rows, cols = rows[order], cols[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
        nearest[rows[rank < k], rank[rank < k]] = cols[rank < k]
    return nearest, max_dist


def _above(sims, bound, mask, row0, col0):
    """(row, column, similarity) of the entries of the tile `sims` at or above `bound`
    (broadcast against it); `mask` is scratch space; rows and columns offset by `row0`, `col0`."""
    mask = mask[: sims.size].reshape(sims.shape)
    np.greater_equal(sims, bound, out=mask)
    flat = np.flatnonzero(mask)  # faster than a 2-D nonzero
    return flat // sims.shape[1] + row0, flat % sims.shape[1] + col0, sims.reshape(-1)[flat]


class _Candidates:
    """Neighbour candidates (row, column, similarity) of some rows, pruned now and then to
    those within `_MARGIN` of their row's k-th largest similarity."""

    def __init__(self, k, num_rows):
        self.k = k
        self.parts = []
        self.size = 0
        self.kept = k * num_rows  # about what a pruning keeps

    def add(self, rows, cols, sims, bound):
        self.parts.append((rows, cols, sims))
        self.size += len(rows)
        if self.size > 4 * self.kept:
            self.parts = [self.prune(bound)]
            self.size = self.kept = len(self.parts[0][0])

    def prune(self, bound):
        """The candidates left, sorted by row; raises `bound` to each full row's k-th
        largest similarity less the margin."""
        rows, cols, sims = (np.concatenate(a) for a in zip(*self.parts))
        order = np.argsort(row_keys(rows, -sims))  # by row, similarity descending
        rows, cols, sims = rows[order], cols[order], sims[order]
        kth = np.arange(len(rows)) - np.searchsorted(rows, rows) == self.k - 1
        bound[rows[kth]] = np.maximum(bound[rows[kth]], sims[kth] - _MARGIN)
        keep = sims >= bound[rows]
        return rows[keep], cols[keep], sims[keep]


def _reciprocal(nearest, k, rows):
    """bool `[len(rows), k + 1]`: whether each of the k + 1 nearest items of each row has
    the row among its own k + 1 nearest."""
    forward = nearest[rows, : k + 1]
    return (nearest[forward, : k + 1] == rows[:, None, None]).any(axis=2)


def _features(x, nearest, max_dist, k1):
    """The k-reciprocal features V of every item (before query expansion), as CSR
    `(indptr, cols, vals)`: int64, int64 and float64, columns ascending in each row."""
    n = len(x)
    half = int(np.around(k1 / 2))
    half_mask = np.concatenate(
        [_reciprocal(nearest, half, np.arange(i, min(i + _ROWS, n))) for i in range(0, n, _ROWS)]
    )
    half_near = nearest[:, : half + 1]
    counts, all_cols, all_vals = [], [], []
    for start in range(0, n, _ROWS):
        rows = np.arange(start, min(start + _ROWS, n))
        members = np.where(_reciprocal(nearest, k1, rows), nearest[rows, : k1 + 1], -1)  # R(i), -1 elsewhere
        candidates = half_near[np.maximum(members, 0)]  # the k1/2-neighbourhood of each member
        valid = half_mask[np.maximum(members, 0)] & (members >= 0)[:, :, None]  # its reciprocal part
        # Which candidates are members: one search of (row, item) keys for all rows.
        offset = np.arange(len(rows))[:, None] * (n + 1)
        member_keys = np.sort((members + offset).ravel())  # -1 becomes item n of the row before: no item
        keys = candidates + offset[:, :, None]
        found = member_keys[np.minimum(np.searchsorted(member_keys, keys), len(member_keys) - 1)] == keys
        inside = found & valid
        grows = inside.sum(axis=2) > 2 / 3 * valid.sum(axis=2)
        expansion = np.concatenate(
            [members, np.where(valid & grows[:, :, None], candidates, -1).reshape(len(rows), -1)], axis=1
        )
        expansion.sort(axis=1)
        keep = expansion >= 0
        keep[:, 1:] &= expansion[:, 1:] != expansion[:, :-1]
        owner, pos = np.nonzero(keep)
        cols = expansion[owner, pos]
        sims = np.einsum("ij,ij->i", x[rows[owner]], x[cols])
        weight = np.exp(-_scaled_squares(np.clip(1 - sims, 0, 2), max_dist[rows[owner]]))
        counts.append(np.bincount(owner, minlength=len(rows)))
        all_cols.append(cols)
        all_vals.append(weight / np.bincount(owner, weights=weight, minlength=len(rows))[owner])
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    return indptr, np.concatenate(all_cols), np.concatenate(all_vals)


def _expand(indptr, cols, vals, neighbours):
    """Local query expansion: each row of the CSR V replaced by the mean of the rows of its
    `neighbours` (int `[N, k2]`), added in neighbour order as `np.mean` adds them."""
    n, k2 = neighbours.shape
    counts, all_cols, all_vals = [], [], []
    for start in range(0, n, _ROWS):
        block = neighbours[start : start + _ROWS]
        owner, pos = _ragged(indptr, block.T.ravel())  # neighbour 0 of every row, then neighbour 1, ...
        keys, inverse = np.unique(owner % len(block) * n + cols[pos], return_inverse=True)
        counts.append(np.bincount(keys // n, minlength=len(block)))
        all_cols.append(keys % n)
        all_vals.append(np.bincount(inverse, weights=vals[pos]) / k2)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    return indptr, np.concatenate(all_cols), np.concatenate(all_vals)
