"""Cosine distance between embeddings: the one definition of re-id retrieval (evaluation and search)."""

import numpy as np


def unit_rows(x, name="features"):
    """Validated float32 `[N, D]` array with each row scaled to unit L2 norm (zero rows stay 0)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} must be a non-empty numeric [N, D] array. Received: shape {x.shape}, dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    squared = np.einsum("ij,ij->i", x, x)
    if not np.isfinite(squared).all():  # a NaN/inf entry, or squares beyond float32
        if not np.isfinite(x).all():
            raise ValueError(f"{name} must be finite. Received: {np.count_nonzero(~np.isfinite(x))} NaN/inf entries")
        squared = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    scale = (1 / np.maximum(np.sqrt(squared), 1e-12)).astype(np.float32)
    return x * scale[:, None]


def row_keys(rows, values):
    """int64 keys ordering (row, float32 value) pairs: row first, then value (rows in
    [0, 2^31)); one sort of the keys orders many rows at once."""
    bits = (values.astype(np.float32) + np.float32(0)).view(np.int32)  # + 0 turns -0.0 into 0.0
    monotone = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64) + (1 << 31)
    return (rows.astype(np.int64) << 32) | monotone


def cosine_distances(queries, gallery):
    """`1 - cos(q, g)` for every pair: float32 `[Q, N]` in [0, 2].

    Args:
        queries: float `[Q, D]`.
        gallery: float `[N, D]`.

    Example:
    >>> cosine_distances([[1.0, 0.0]], [[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]).tolist()
    [[0.0, 1.0, 2.0]]
    """
    q = unit_rows(queries, "queries")
    g = unit_rows(gallery, "gallery")
    return np.clip(1.0 - q @ g.T, 0.0, 2.0)
