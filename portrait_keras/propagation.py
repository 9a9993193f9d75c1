"""Attribute propagation: fill missing labels in an MRF over deep features (paper 004 §4.3).

`propagate_labels` infers every missing label of single-label and multi-label tasks from
the features of the images (the representation the classifiers read), the known labels and
the classifiers' weights (Algorithm 2):

1. Co-occurrence prior (eq. 2): the Pearson correlation of two classes' weight vectors,
   signed by the *known* label of the other class; an unknown one contributes 0.
2. Initialisation: each missing label starts as the majority vote of the `k` nearest rows
   whose label is known (ties go to the nearer neighbours); the first Gaussians are fitted
   to the annotated rows (see below).
3. Affinity (eq. 6, after Zelnik-Manor and Perona's local scaling): `v_ij = exp(-d_ij^2 /
   (sigma_i sigma_j))` for the `h = k` nearest neighbours, `sigma_i` the distance of row i to
   its h-th neighbour, made symmetric (an edge if either row is among the other's
   neighbours) and normalised `D^-1/2 V D^-1/2`.
4. Rounds (eqs. 8-14): the posterior of each missing label given its neighbours' current
   labels (eq. 11: Gaussian unary x co-occurrence prior x pairwise `exp(v_ij sign)`), a
   pseudo-label drawn from it (eq. 12), and the Gaussians refitted to the known and drawn
   labels (eqs. 13-14), until the posterior moves by at most `tol` (or `rounds` are done).

The paper's attributes are binary. Here every class of every task is a binary attribute:

- a multi-label task of C classes is C binary MRFs, one per column, as in the paper; all
  its columns are known or unknown together (a row of `-1`);
- a single-label task is one MRF whose label takes C values (a categorical variable):
  the pairwise term rewards equal labels and penalises different ones (eq. 7 as is), one
  Gaussian per class. Class `l` is the binary attribute "label = l"; a known label `m`
  makes attribute `m` positive and the task's other classes negative.

The prior of eq. 4 multiplies, over the attributes `a'` of the *other* tasks, `sigmoid(Q)`
for a present attribute and `1 - sigmoid(Q)` for an absent one (eq. 5); as `log sigmoid(q)
- log sigmoid(-q) = q`, it shifts the log-odds of a binary attribute by `sum_a' Q^{a,a'}`.
For a single-label task, the product of the binary factors of "label = l" (attribute `l`
present, the others absent) is proportional to `exp(sum_a' Q^{l,a'})`, so each class's
log-prior is the sum of its own `Q`. Attributes of the same task are left out: the task's
other columns are unknown whenever this one is (multi-label), or they are the same
variable (single-label). The weight vectors are the columns of each task's classifier
kernel `[D, C]` (a softmax classifier's columns for a single-label task).

Covariance: a Gaussian in 1-2k dimensions fitted to a few hundred rows is singular, and
kept invertible it still scores rows badly. The Gaussians live on the top `pca_dim` (64)
principal components of all the features, where each class's covariance is Ledoit-Wolf
shrunk towards a multiple of the identity (a class of one row takes the covariance of all
rows). Measured by `python benchmarks/propagation_knn.py --covariance-study` (3,000 rows,
4 classes of 40/30/20/10 %, class centres plus 20 directions of class-dependent spread,
70 % hidden; the harder of its two separations), filled-label accuracy at 1,024 / 2,048
dims: kNN start 0.71 / 0.68; 64 components with Ledoit-Wolf 1.000 / 1.000, with the plain
sample covariance 0.999 / 0.951; 256 components 0.998 / 0.991; Ledoit-Wolf on all dims
0.31 / 0.16, a diagonal covariance on all dims 0.43 / 0.39 (the majority class is 0.41);
16 components miss the classes (0.72 / 0.63). The PCA costs `N D^2` once; a round costs
`N pca_dim^2` per class. With only tens of annotated rows per class for 64 components
(400 rows in all), the hard assignments drift towards the largest class over the rounds:
keep `pca_dim` well below the annotated count of the rarest class.

The first Gaussians are fitted to the annotated rows only (Algorithm 2 leaves open whether
the kNN labels count): fitted to the kNN labels too, a class absorbs the rows the vote got
wrong and keeps them (on the benchmark's features, a 30 % attribute whose kNN start was
0.77 accurate ended at 0.71, every row absent; from the annotations it ends at 1.00).

Outputs: the filled label is the most probable value of the last posterior (the paper
keeps the last draw, eq. 12, which is wrong as often as the posterior is unsure).

Not for the identity task: re-identification is open set. Its classes are the training
ids, a row without an id is mostly a person of none of them, and the classifier has no
class to give it; propagating would put every unlabelled person into some training
identity and teach the network wrong identities.
"""

import dataclasses

import numpy as np
import scipy.linalg
import scipy.sparse

from portrait_keras.schema import MULTI, SINGLE, Schema, default_schema

# The distance block of the kNN search (and a row block elsewhere) stays under this many bytes.
_BLOCK_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class PropagationResult:
    """What `propagate_labels` returns.

    Attributes:
        labels: dict task → labels in the input's form and dtype: int `[N]` or 0/1
            `[N, C]`, with no `-1` left; the known labels are unchanged.
        posteriors: dict task → float64 `[N, C]`. The last posterior of eq. 11 for
            the rows that were unknown: class probabilities summing to 1 (single-label)
            or each column's probability of being present (multi-label). Known rows
            hold their label (one-hot, or the 0/1 row). After 0 rounds: the kNN vote
            fractions.
        posterior_change: dict task → tuple of float, one per round: the mean over the
            unknown rows (and columns of a multi-label task) of the total variation
            between this round's posterior and the previous one (round 1: the kNN votes).
        converged: dict task → bool. Whether the last change was at most `tol`.
    """

    labels: dict
    posteriors: dict
    posterior_change: dict
    converged: dict


def propagate_labels(
    features,
    labels,
    classifier_kernels,
    *,
    k=10,
    rounds=30,
    tol=1e-2,
    seed=0,
    pca_dim=64,
    schema=None,
):
    """Fill the missing labels of classification tasks by attribute propagation (paper 004 §4.3).

    The MRF of eqs. 3-14 (see the module docstring for the multi-class extension and the
    covariance). Every task is propagated independently given the co-occurrence prior,
    which reads only the known labels of the other tasks; a task stops when its
    posterior changed by at most `tol` in a round.

    Args:
        features: float array `[N, D]`. The representation of each image, as the
            classifiers read it.
        labels: dict task → int array `[N]` (single-label, `-1` unknown) or 0/1 array
            `[N, C]` (multi-label, a row of `-1` unknown). Each task needs a known row.
        classifier_kernels: dict task → float array `[D, C]`. The weights of each task's
            classifier (one column per class), for the co-occurrence prior (eq. 2).
            Every task of `labels` needs one; extra tasks are ignored.
        k: int. Neighbours `h` of the affinity graph and of the kNN initialisation.
            Defaults to `10` (the paper's h).
        rounds: int. At most this many rounds of inference and refit; `0` returns the
            kNN initialisation. Defaults to `30`.
        tol: float. A task has converged when the mean total variation of its posterior
            between two rounds is at most this. The drawn neighbour labels keep the
            posterior of unsure rows moving, so the change settles at a floor set by
            their share (about 0.002-0.01 on the synthetic problems of the tests) rather
            than at 0. Defaults to `1e-2`.
        seed: int. Seeds the drawn pseudo-labels; equal seeds give equal results.
            Defaults to `0`.
        pca_dim: int. The Gaussians live on this many principal components of the
            features; keep it well below the annotated rows of the rarest class.
            Defaults to `64`.
        schema: `Schema` or None. When given, every task must be one of its
            classification tasks, of the kind and class count the labels and kernel say.
            Defaults to `None`: kinds from the label shapes, and a task named as the
            default schema's identity task (`"id"`) is refused.

    Returns:
        `PropagationResult` with `labels`, `posteriors`, `posterior_change`, `converged`.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> features = np.concatenate([rng.normal(0, 1, (60, 4)), rng.normal(6, 1, (60, 4))])
    >>> truth = np.repeat([0, 1], 60)
    >>> gender = np.where(rng.random(120) < 0.7, -1, truth)  # 70 % unknown
    >>> result = propagate_labels(features, {"gender": gender}, {"gender": rng.normal(size=(4, 2))})
    >>> bool((result.labels["gender"] == truth).all())
    True
    >>> result.posteriors["gender"].shape
    (120, 2)
    """
    x, tasks = _check_inputs(features, labels, classifier_kernels, k, rounds, tol, seed, pca_dim, schema)
    n = len(x)
    order = sorted(tasks)  # each variable's draws depend on the seed, not on the dict's order
    correlation, columns = _weight_correlation({t: classifier_kernels[t] for t in order})
    signs = np.zeros((n, correlation.shape[0]))
    for t in order:
        signs[:, columns[t]] = tasks[t].signs()
    variables = []
    for t in order:
        other = np.setdiff1d(np.arange(correlation.shape[0]), columns[t])
        unknown = ~tasks[t].known
        prior = signs[unknown][:, other] @ correlation[np.ix_(other, columns[t])]
        variables += tasks[t].variables(prior)

    _initialise(x, variables, k)
    if rounds:
        sq_dist, neighbors = nearest_neighbors(x, k)
        affinity = _affinity(sq_dist, neighbors)
        z = _principal_components(x, pca_dim)
        fallback = np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])
        shared = {}
        for i, var in enumerate(variables):
            if var.task not in shared:
                shared[var.task] = z[var.unknown], affinity[var.unknown]
            var.start(z, *shared[var.task], fallback, np.random.default_rng([seed, i]))

    change = {t: [] for t in order}
    active = list(order)
    for _ in range(rounds):
        for t in active:
            mine = [var for var in variables if var.task == t]
            change[t].append(float(np.mean([var.step() for var in mine])))
        active = [t for t in active if change[t][-1] > tol]
        if not active:
            break
    return PropagationResult(
        labels={t: tasks[t].filled([v for v in variables if v.task == t], rounds > 0) for t in labels},
        posteriors={t: tasks[t].posterior([v for v in variables if v.task == t]) for t in labels},
        posterior_change={t: tuple(change[t]) for t in labels},
        converged={t: bool(change[t]) and change[t][-1] <= tol for t in labels},
    )


def nearest_neighbors(features, k, *, queries=None, base=None, block_bytes=_BLOCK_BYTES):
    """The `k` nearest rows of each query row by Euclidean distance, found block by block.

    One matrix product per block ranks the base rows of each query by `|b|^2 / 2 - q.b`
    (the squared distance `|q|^2 + |b|^2 - 2 q.b` halved, less the query's constant), and
    only the `k` smallest of each row are kept, so the memory is the features, the `[Q, k]`
    results and a few arrays the size of one block (`block_bytes` of scores, twice that of
    the partition's indices). Computed in float32 for float32 (or narrower) features,
    float64 otherwise. A row is never its own neighbour.

    Args:
        features: float array `[N, D]`.
        k: int. Neighbours per query row.
        queries: int array or None. The rows to find neighbours of. Defaults to all.
        base: int array or None. The rows to search. Defaults to all.
        block_bytes: int. Size of the largest block of distances. Defaults to 64 MiB.

    Returns:
        `(squared_distances, indices)`, each `[Q, k]`, nearest first (equal distances
        by row index); indices are rows of `features`.

    Example:
    >>> sq, idx = nearest_neighbors(np.array([[0.0], [1.0], [3.0], [7.0]]), 2)
    >>> idx.tolist()
    [[1, 2], [0, 2], [1, 0], [2, 1]]
    >>> sq[3].tolist()
    [16.0, 36.0]
    """
    x = np.asarray(features)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"features must be a numeric array [N, D]. Received: shape {x.shape}, dtype {x.dtype}")
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    n = len(x)
    q_rows = _rows(queries, n, "queries")
    b_rows = _rows(base, n, "base")
    q_count = n if q_rows is None else len(q_rows)
    b_count = n if b_rows is None else len(b_rows)
    overlap = q_rows is None or b_rows is None or bool(np.intersect1d(q_rows, b_rows).size)
    eligible = b_count - 1 if overlap else b_count
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= eligible:
        raise ValueError(f"k must be an int from 1 to {eligible} (the rows to search). Received: k={k!r}")
    if isinstance(block_bytes, bool) or not isinstance(block_bytes, (int, np.integer)) or block_bytes < 1:
        raise ValueError(f"block_bytes must be a positive int. Received: block_bytes={block_bytes!r}")
    norms = np.einsum("ij,ij->i", x, x)
    half_norms = norms / 2
    cells = max(block_bytes // x.itemsize, 1)
    b_step = min(b_count, max(int(np.sqrt(cells)), 1))
    q_step = max(cells // b_step, 1)
    best = np.full((q_count, k), np.inf, x.dtype)
    best_idx = np.full((q_count, k), -1, np.int64)
    for b0 in range(0, b_count, b_step):
        b_idx = np.arange(b0, min(b0 + b_step, b_count)) if b_rows is None else b_rows[b0 : b0 + b_step]
        block_base = x[b0 : b0 + b_step] if b_rows is None else x[b_idx]
        for q0 in range(0, q_count, q_step):
            q_idx = np.arange(q0, min(q0 + q_step, q_count)) if q_rows is None else q_rows[q0 : q0 + q_step]
            block_query = x[q0 : q0 + q_step] if q_rows is None else x[q_idx]
            score = block_query @ block_base.T
            np.subtract(half_norms[b_idx], score, out=score)
            if overlap:
                _, at_query, at_base = np.intersect1d(q_idx, b_idx, assume_unique=True, return_indices=True)
                score[at_query, at_base] = np.inf
            # The block's k best, then merged with the k best so far.
            if score.shape[1] > k:
                top = np.argpartition(score, k - 1, axis=1)[:, :k]
                score, cand_idx = np.take_along_axis(score, top, axis=1), b_idx[top]
            else:
                cand_idx = np.broadcast_to(b_idx, score.shape)
            rows = slice(q0, q0 + len(q_idx))
            merged = np.concatenate([best[rows], score], axis=1)
            merged_idx = np.concatenate([best_idx[rows], cand_idx], axis=1)
            top = np.argpartition(merged, k - 1, axis=1)[:, :k]
            best[rows] = np.take_along_axis(merged, top, axis=1)
            best_idx[rows] = np.take_along_axis(merged_idx, top, axis=1)
    best_sq = np.maximum(2 * best + (norms if q_rows is None else norms[q_rows])[:, None], 0)
    order = np.lexsort((best_idx, best_sq), axis=-1)
    return np.take_along_axis(best_sq, order, axis=1), np.take_along_axis(best_idx, order, axis=1)


def _rows(rows, n, name):
    if rows is None:
        return None
    rows = np.asarray(rows)
    if (
        rows.ndim != 1
        or not np.issubdtype(rows.dtype, np.integer)
        or (rows < 0).any()
        or (rows >= n).any()
        or len(np.unique(rows)) != len(rows)
    ):
        raise ValueError(f"{name} must be distinct row indices in [0, {n}). Received: {rows!r:.200}")
    return rows.astype(np.int64)


def _affinity(sq_dist, neighbors):
    """Normalised affinity `D^-1/2 V D^-1/2` (eq. 6) of the kNN graph, a sparse `[N, N]`."""
    n, h = neighbors.shape
    sq_dist = sq_dist.astype(np.float64)
    sigma = np.sqrt(sq_dist[:, -1])
    # Duplicated rows have sigma 0: a floor keeps their mutual weight exp(-0/eps) = 1.
    sigma = np.maximum(sigma, 1e-12 * max(sigma.max(), 1e-300))
    weight = np.exp(-sq_dist / (sigma[:, None] * sigma[neighbors]))
    v = scipy.sparse.csr_array((weight.ravel(), (np.repeat(np.arange(n), h), neighbors.ravel())), shape=(n, n))
    v = v.maximum(v.T).tocsr()
    degree = np.asarray(v.sum(axis=1)).ravel()
    scale = np.divide(1.0, np.sqrt(degree), out=np.zeros(n), where=degree > 0)
    return (
        scipy.sparse.dia_array((scale, 0), shape=(n, n)) @ v @ scipy.sparse.dia_array((scale, 0), shape=(n, n))
    ).tocsr()


def _weight_correlation(kernels):
    """Pearson correlation of every pair of classifier columns (eq. 2) and each task's columns."""
    stacked = np.concatenate([np.asarray(kernel, np.float64) for kernel in kernels.values()], axis=1)
    centred = stacked - stacked.mean(axis=0)
    norm = np.linalg.norm(centred, axis=0)
    # A constant column has no correlation with anything (0, not NaN).
    unit = np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)
    ends = np.cumsum([np.shape(kernel)[1] for kernel in kernels.values()])
    columns = {t: np.arange(end - np.shape(kernel)[1], end) for (t, kernel), end in zip(kernels.items(), ends)}
    return np.clip(unit.T @ unit, -1.0, 1.0), columns


def _principal_components(x, dim):
    """Rows of `x` on their `dim` principal components, float64 `[N, min(dim, D)]`."""
    n, d = x.shape
    mean = x.mean(axis=0, dtype=np.float64)
    step = max(_BLOCK_BYTES // (8 * d), 1)
    if d <= dim:
        return x.astype(np.float64) - mean
    gram = np.zeros((d, d))
    for start in range(0, n, step):
        block = x[start : start + step] - mean.astype(x.dtype)
        gram += block.T @ block
    top = np.linalg.eigh(gram)[1][:, ::-1][:, :dim]
    z = np.empty((n, dim))
    for start in range(0, n, step):
        z[start : start + step] = (x[start : start + step] - mean) @ top
    return z


def _ledoit_wolf(centred):
    """Ledoit-Wolf shrunk covariance of centred rows `[n, p]` (as scikit-learn's `LedoitWolf`).

    `(1 - s) S + s mu I` with `mu = tr(S) / p` and the shrinkage `s` that minimises the
    expected squared error to the true covariance (Ledoit and Wolf 2004).
    """
    n, p = centred.shape
    cov = centred.T @ centred / n
    mu = np.trace(cov) / p
    delta = (np.sum(cov**2) - 2 * mu * np.trace(cov) + p * mu**2) / p
    beta = (np.sum(np.sum(centred**2, axis=1) ** 2) / n - np.sum(cov**2)) / (p * n)
    shrinkage = 0.0 if beta <= 0 or delta <= 0 else min(beta, delta) / delta
    shrunk = (1 - shrinkage) * cov
    shrunk.flat[:: p + 1] += shrinkage * mu
    return shrunk


class _Variable:
    """One categorical label of the MRF: a single-label task, or one column of a multi-label task."""

    def __init__(self, task, states, values, known, prior):
        self.task = task
        self.states = states
        self.y = values.copy()
        self.unknown = np.flatnonzero(~known)
        self.prior = prior
        self.init = None
        self.post = None

    def start(self, z, z_unknown, pairwise, fallback, rng):
        self.z, self.z_unknown, self.pairwise, self.fallback, self.rng = z, z_unknown, pairwise, fallback, rng
        # The first Gaussians come from the annotations alone: fitted to the kNN labels too, a
        # class absorbs the rows the vote got wrong and keeps them in later rounds.
        annotated = self.y.copy()
        annotated[self.unknown] = -1
        self._fit(annotated)

    def step(self):
        """One round: posterior (eq. 11), drawn pseudo-labels (eq. 12), refit (eqs. 13-14)."""
        if not len(self.unknown):
            return 0.0
        same = np.zeros((len(self.y), self.states))
        same[np.arange(len(self.y)), self.y] = 1
        # log Psi summed over the neighbours: sum_j v_ij (+1 same, -1 different) = 2 (V 1[y=l])_i - const.
        logits = self._log_unary() + self.prior + 2 * (self.pairwise @ same)
        logits -= logits.max(axis=1, keepdims=True)
        post = np.exp(logits)
        post /= post.sum(axis=1, keepdims=True)
        change = 0.5 * np.abs(post - self.post).sum(axis=1).mean()
        self.post = post
        cumulative = np.cumsum(post, axis=1)
        draw = self.rng.random((len(post), 1)) * cumulative[:, -1:]
        self.y[self.unknown] = np.minimum((cumulative < draw).sum(axis=1), self.states - 1)
        self._fit(self.y)
        return change

    def _fit(self, y):
        """Mean and covariance of the rows of each class of `y` (eqs. 13-14); -1 rows are left out."""
        dim = self.z.shape[1]
        floor = 1e-6 * np.trace(self.fallback) / dim + 1e-300
        self.means, self.factors, self.half_logdets = [], [], []
        for state in range(self.states):
            rows = self.z[y == state]
            if not len(rows):
                self.means.append(None)  # an empty class cannot be drawn
                continue
            mean = rows.mean(axis=0)
            # One row has no spread: borrow the covariance of all rows.
            cov = self.fallback.copy() if len(rows) < 2 else _ledoit_wolf(rows - mean)
            cov.flat[:: dim + 1] += floor
            factor = scipy.linalg.cholesky(cov, lower=True, check_finite=False)
            self.means.append(mean)
            self.factors.append(factor)
            self.half_logdets.append(np.log(np.diag(factor)).sum())

    def _log_unary(self):
        """log N(x_i | mu_l, Sigma_l) of the unknown rows, up to a constant; -inf for an empty class."""
        out = np.full((len(self.unknown), self.states), -np.inf)
        fitted = iter(zip(self.factors, self.half_logdets))
        for state, mean in enumerate(self.means):
            if mean is None:
                continue
            factor, half_logdet = next(fitted)
            white = scipy.linalg.solve_triangular(factor, (self.z_unknown - mean).T, lower=True, check_finite=False)
            out[:, state] = -0.5 * np.sum(white**2, axis=0) - half_logdet
        return out


@dataclasses.dataclass
class _Task:
    """A validated task: its kind, class count, labels as int64 (-1 unknown) and known rows."""

    name: str
    kind: str
    num_classes: int
    values: np.ndarray
    known: np.ndarray
    dtype: np.dtype

    def signs(self):
        """+1 for a present attribute (class), -1 for an absent one, 0 where unknown: `[N, C]`."""
        if self.kind == SINGLE:
            signs = -np.ones((len(self.values), self.num_classes))
            signs[self.known, self.values[self.known]] = 1
        else:
            signs = 2.0 * self.values - 1
        signs[~self.known] = 0
        return signs

    def variables(self, prior):
        """The task's MRF variables, each with its log-prior `[N_unknown, states]`."""
        if self.kind == SINGLE:
            return [_Variable(self.name, self.num_classes, self.values, self.known, prior)]
        absent = np.zeros(len(prior))
        return [
            _Variable(self.name, 2, self.values[:, c], self.known, np.stack([absent, prior[:, c]], axis=1))
            for c in range(self.num_classes)
        ]

    def filled(self, variables, inferred):
        """Labels in the input's form: the known ones, and the most probable (or kNN) value elsewhere."""
        out = self.values.copy()
        unknown = ~self.known
        for c, var in enumerate(variables):
            value = var.post.argmax(axis=1) if inferred else var.init
            if self.kind == SINGLE:
                out[unknown] = value
            else:
                out[unknown, c] = value
        return out.astype(self.dtype)

    def posterior(self, variables):
        """`[N, C]`: the last posterior on the unknown rows, the label on the known ones."""
        if self.kind == SINGLE:
            out = np.zeros((len(self.values), self.num_classes))
            out[self.known, self.values[self.known]] = 1
            out[~self.known] = variables[0].post
            return out
        out = self.values.astype(np.float64)
        for c, var in enumerate(variables):
            out[~self.known, c] = var.post[:, 1]
        return out


def _initialise(x, variables, k):
    """kNN initialisation: the vote of the k nearest known rows; ties go to the nearer neighbours."""
    groups = {}
    for var in variables:
        groups.setdefault(var.unknown.tobytes(), []).append(var)
    for group in groups.values():
        unknown = group[0].unknown
        if not len(unknown):
            for var in group:
                var.init, var.post = unknown, np.zeros((0, var.states))
            continue
        known = np.setdiff1d(np.arange(len(x)), unknown)
        count = min(k, len(known))
        _, neighbors = nearest_neighbors(x, count, queries=unknown, base=known)
        # Under 1 in all, so the weights decide only between equal counts.
        nearness = 1.0 / np.arange(1, count + 1)
        nearness *= 0.5 / nearness.sum()
        for var in group:
            votes = var.y[neighbors]
            counts = np.stack([(votes == s).sum(axis=1) for s in range(var.states)], axis=1)
            ties = np.stack([((votes == s) * nearness).sum(axis=1) for s in range(var.states)], axis=1)
            var.init = (counts + ties).argmax(axis=1)
            var.post = counts / count
            var.y[unknown] = var.init


def _check_inputs(features, labels, kernels, k, rounds, tol, seed, pca_dim, schema):
    """Validated float features and a `_Task` per task of `labels`."""
    x = np.asarray(features)
    if x.ndim != 2 or x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"features must be a numeric array [N, D]. Received: shape {x.shape}, dtype {x.dtype}")
    step = max(_BLOCK_BYTES // max(x.shape[1], 1), 1)  # no [N, D] mask at once
    bad = sum(np.count_nonzero(~np.isfinite(x[start : start + step])) for start in range(0, len(x), step))
    if bad:
        raise ValueError(f"features must be finite. Received: {bad} NaN or inf values")
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    n, dim = x.shape
    for name, value, low in (("k", k, 1), ("rounds", rounds, 0), ("seed", seed, 0), ("pca_dim", pca_dim, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}. Received: {name}={value!r}")
    if k >= n:
        raise ValueError(f"k must be below the number of rows ({n}), the neighbours of a row. Received: k={k}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not 0 <= tol < np.inf:
        raise ValueError(f"tol must be a finite number >= 0. Received: tol={tol!r}")
    if schema is not None and not isinstance(schema, Schema):
        raise ValueError(f"schema must be a Schema or None. Received: schema={schema!r:.100}")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"labels must be a non-empty dict task -> labels. Received: {labels!r:.100}")
    if not isinstance(kernels, dict):
        raise ValueError(f"classifier_kernels must be a dict task -> [D, C] kernel. Received: {kernels!r:.100}")
    identity = (schema or default_schema()).identity_task
    tasks = {}
    for name, y in labels.items():
        if identity is not None and name == identity.name:
            raise ValueError(
                f"Task {name!r} is the identity task, which propagation does not fill: re-identification is "
                f"open set (a row without an id is mostly a person outside the training ids, whom no class "
                f"fits), so every unlabelled person would be put into a wrong identity. Received: labels[{name!r}]"
            )
        if schema is not None:
            schema.task(name)
        if name not in kernels:
            raise ValueError(
                f"No classifier kernel for task {name!r} (the co-occurrence prior needs one per task). "
                f"Received: classifier_kernels for {sorted(kernels)}"
            )
        kernel = np.asarray(kernels[name])
        if (
            kernel.ndim != 2
            or kernel.shape[0] != dim
            or kernel.shape[1] < 1
            or not np.issubdtype(kernel.dtype, np.number)
            or not np.isfinite(kernel).all()
        ):
            raise ValueError(
                f"classifier_kernels[{name!r}] must be a finite [D, C] array with D = {dim} (the feature size). "
                f"Received: shape {kernel.shape}, dtype {kernel.dtype}"
            )
        tasks[name] = _check_labels(name, y, n, kernel.shape[1], schema)
    return x, tasks


def _check_labels(name, y, n, num_classes, schema):
    y = np.asarray(y)
    if y.dtype == bool or not np.issubdtype(y.dtype, np.number) or not np.isfinite(y).all() or (y != np.round(y)).any():
        raise ValueError(f"labels[{name!r}] must hold integer labels (-1 unknown). Received: dtype {y.dtype}")
    values = y.astype(np.int64)
    if values.shape == (n,):
        kind, known = SINGLE, values != -1
        if num_classes < 2:
            raise ValueError(f"Task {name!r}: a single-label task needs a kernel of >= 2 classes. Received: C=1")
        bad = values[(values < -1) | (values >= num_classes)]
        if bad.size:
            raise ValueError(
                f"labels[{name!r}] must be in [0, {num_classes}) (the kernel's classes) or -1. "
                f"Received: {np.unique(bad)[:5].tolist()}"
            )
    elif values.shape == (n, num_classes):
        kind, known = MULTI, ~(values == -1).all(axis=1)
        bad = values[known][~np.isin(values[known], (0, 1))]
        if bad.size:
            raise ValueError(
                f"labels[{name!r}] (multi-label) rows must be 0/1, or all -1 when unknown. "
                f"Received: {np.unique(bad)[:5].tolist()}"
            )
    else:
        raise ValueError(
            f"labels[{name!r}] must be [N] (single-label) or [N, C] (multi-label) with N = {n} (the features) "
            f"and C = {num_classes} (its kernel's columns). Received: shape {y.shape}"
        )
    if schema is not None:
        task = schema.task(name)
        if (task.kind, task.num_classes) != (kind, num_classes):
            raise ValueError(
                f"Task {name!r} is {task.kind} with {task.num_classes} classes in the schema. "
                f"Received: {kind} labels of shape {y.shape} and a kernel of {num_classes} classes"
            )
    if not known.any():
        raise ValueError(f"labels[{name!r}] has no known row to propagate from. Received: all {n} rows -1")
    return _Task(name, kind, num_classes, values, known, y.dtype)
