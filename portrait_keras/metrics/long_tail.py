"""Long Tail Score LTS_k of a label distribution, paper eq. 1."""

import numpy as np

# k * total is a float: a relative slack keeps e.g. k=0.2 of 15 samples at 3, not 3.0000000000000004.
_RELATIVE_TOLERANCE = 1e-9


def lts(counts, k=0.2):
    """Long Tail Score: how few of the largest labels hold a fraction `k` of the samples.

    Paper eq. 1: `LTS_k = min ||x||_1 / (k N)` over boolean vectors `x` with
    `x^T y >= k ||y||_1`, where `y` holds the sample count of each of the `N`
    labels. The minimum takes the largest labels first: sort the counts in
    descending order, take the fewest whose sum reaches `k` times the total and
    divide their number by `k N`. Near 1 the distribution is uniform (uniform
    counts give `ceil(k N) / (k N)`, exactly 1 when `k N` is an integer); near
    0 a few labels hold most samples (Portrait250K ids: 0.07-0.09, Market-1501:
    0.40-0.77, paper Table 3).

    Args:
        counts: array-like `[N]` of non-negative numbers. Samples per label;
            labels with no sample still count in `N`.
        k: float in (0, 1). Fraction of the samples. Defaults to `0.2`.

    Returns:
        float, LTS_k.

    Example:
    >>> lts([5, 5, 5, 5, 5])
    1.0
    >>> lts([100] + [1] * 99)
    0.05
    """
    if isinstance(k, bool) or not isinstance(k, (int, float, np.floating)) or not 0 < k < 1:
        raise ValueError(f"k must be a number in (0, 1). Received: k={k!r}")
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0 or not np.issubdtype(counts.dtype, np.number):
        raise ValueError(
            f"counts must be a non-empty 1-D numeric array. Received: shape {counts.shape}, dtype {counts.dtype}"
        )
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(
            f"counts must be finite and non-negative. Received: {counts[~(np.isfinite(counts) & (counts >= 0))][:5]}"
        )
    total = counts.sum()
    if total <= 0:
        raise ValueError(f"counts must hold at least one sample. Received: total {total}")
    covered = np.cumsum(np.sort(counts)[::-1])
    num_labels = int(np.argmax(covered >= k * total * (1 - _RELATIVE_TOLERANCE))) + 1
    return num_labels / (k * len(counts))
