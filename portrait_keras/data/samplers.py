"""Index samplers: which images make up each training batch of an epoch (numpy).

The paper compares three ways to fill a batch (§5 "Sampling Strategy", Table 4):

- `random`: all training images in random order; the paper's default and best;
- `pk`: P identities x K images each (Hermans et al. 2017), id-labelled images only;
- `shuffle`: P-K batches mixed with batches of the images P-K sampling leaves out
  (unknown id), in random batch order.

A sampler is called once per epoch with a `numpy.random.Generator` and returns the
image indices of the whole epoch, `num_batches * batch_size` of them (fewer for `random`
without `drop_remainder`), batch after batch. Its `num_batches` is fixed, so the
`tf.data` pipeline has a known cardinality.
"""

import math

import numpy as np

UNKNOWN = -1
SAMPLERS = ("random", "pk", "shuffle")


class RandomSampler:
    """Every image once per epoch, in random order.

    Args:
        num_images: int. Number of images.
        batch_size: int. Images per batch.
        drop_remainder: bool. Leave out the last incomplete batch. Defaults to `True`.
    """

    def __init__(self, num_images, batch_size, drop_remainder=True):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
        if num_images < (batch_size if drop_remainder else 1):
            raise ValueError(
                f"Need at least one {'full ' if drop_remainder else ''}batch of images. "
                f"Received: num_images={num_images}, batch_size={batch_size}"
            )
        self.num_images = num_images
        self.batch_size = batch_size
        self.num_batches = num_images // batch_size if drop_remainder else math.ceil(num_images / batch_size)
        self.num_indices = self.num_batches * batch_size if drop_remainder else num_images

    def __call__(self, rng):
        """int64 `[num_indices]`: a random permutation (cut to whole batches)."""
        return rng.permutation(self.num_images)[: self.num_indices].astype(np.int64)


class PKSampler:
    """P identities x K images per batch, like torchreid's `RandomIdentitySampler`.

    Per epoch, each identity's images are shuffled (drawn with replacement up to K when
    it has fewer) and cut into chunks of K; each batch takes one chunk from each of P
    identities picked at random among those with chunks left. An epoch has
    `Σ chunks // P` batches (torchreid's length); when fewer than P identities have
    chunks left, the rest are dropped and a fresh set of chunks is drawn (torchreid ends
    the epoch there instead). With long-tailed ids an epoch therefore repeats some images
    and misses others: on the default SynthPortrait train split about a quarter of the
    indices are repeats. Images with unknown id (`-1`) are never used.

    With `num_replicas > 1` the P identities of a batch come in `num_replicas` equal
    contiguous slices, so a replica's share of the global batch holds whole identities.

    Args:
        ids: int array `[n]`. Identity per image, `-1` unknown.
        p: int. Identities per batch.
        k: int. Images per identity.
        num_replicas: int. Replicas the global batch is split across; must divide `p`.
            Defaults to `1`.
    """

    def __init__(self, ids, p, k, num_replicas=1):
        if p < 1 or k < 1:
            raise ValueError(f"`p` and `k` must be >= 1. Received: p={p}, k={k}")
        if num_replicas < 1 or p % num_replicas:
            raise ValueError(
                f"`p` must be a multiple of `num_replicas` so each replica holds whole "
                f"identities. Received: p={p}, num_replicas={num_replicas}"
            )
        ids = np.asarray(ids)
        known = np.flatnonzero(ids != UNKNOWN)
        self.identities, inverse, counts = np.unique(ids[known], return_inverse=True, return_counts=True)
        if len(self.identities) < p:
            raise ValueError(
                f"P-K sampling needs at least p identities with a known id. "
                f"Received: p={p}, identities={len(self.identities)}"
            )
        self.members = np.split(known[np.argsort(inverse, kind="stable")], np.cumsum(counts)[:-1])
        self.p, self.k = p, k
        self.batch_size = p * k
        chunks = sum(max(len(m), k) // k for m in self.members)
        self.num_batches = max(1, chunks // p)
        self.num_indices = self.num_batches * self.batch_size

    def __call__(self, rng):
        """int64 `[num_indices]`: batches of P blocks of K same-id images."""
        return np.concatenate(self.batches(rng, self.num_batches)).astype(np.int64)

    def batches(self, rng, num_batches):
        """`num_batches` arrays of P x K indices."""
        out = []
        chunks = {}
        while len(out) < num_batches:
            if len(chunks) < self.p:
                chunks = self._chunks(rng)
            alive = np.fromiter(chunks, dtype=np.int64)
            picked = rng.choice(alive, self.p, replace=False)
            out.append(np.concatenate([chunks[i].pop() for i in picked]))
            for i in picked:
                if not chunks[i]:
                    del chunks[i]
        return out

    def _chunks(self, rng):
        """Identity -> list of K-index chunks, freshly shuffled."""
        chunks = {}
        for i, members in enumerate(self.members):
            if len(members) < self.k:
                members = rng.choice(members, self.k, replace=True)
            else:
                members = rng.permutation(members)
            n = len(members) // self.k
            chunks[i] = list(members[: n * self.k].reshape(n, self.k))
        return chunks


class ShuffleSampler:
    """The paper's "shuffle" sampling: P-K batches mixed with unknown-id batches.

    Per epoch: the P-K batches of `PKSampler`, plus the unknown-id images in random
    order cut into batches (the last incomplete one left out), all batches shuffled.

    Args:
        ids: int array `[n]`. Identity per image, `-1` unknown.
        p: int. Identities per P-K batch.
        k: int. Images per identity.
        num_replicas: int. As for `PKSampler`. Defaults to `1`.
    """

    def __init__(self, ids, p, k, num_replicas=1):
        self.pk = PKSampler(ids, p, k, num_replicas)
        self.batch_size = self.pk.batch_size
        self.unknown = np.flatnonzero(np.asarray(ids) == UNKNOWN)
        self.num_unknown_batches = len(self.unknown) // self.batch_size
        self.num_batches = self.pk.num_batches + self.num_unknown_batches
        self.num_indices = self.num_batches * self.batch_size

    def __call__(self, rng):
        """int64 `[num_indices]`: whole batches, each either P-K or unknown-id only."""
        batches = self.pk.batches(rng, self.pk.num_batches)
        unknown = rng.permutation(self.unknown)[: self.num_unknown_batches * self.batch_size]
        batches += list(unknown.reshape(-1, self.batch_size))
        order = rng.permutation(len(batches))
        return np.concatenate([batches[i] for i in order]).astype(np.int64)


def build_sampler(name, ids, *, batch_size, p, k, num_replicas=1, drop_remainder=True):
    """The sampler called `name` (one of `SAMPLERS`) for images with identities `ids`.

    `pk` and `shuffle` need `batch_size == p * k`.
    """
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}. Allowed: {', '.join(SAMPLERS)}")
    if name == "random":
        return RandomSampler(len(ids), batch_size, drop_remainder)
    if batch_size != p * k:
        raise ValueError(
            f"Sampler {name!r} fills a batch with p identities x k images, so batch_size "
            f"must equal p * k. Received: batch_size={batch_size}, p={p}, k={k}"
        )
    if name == "pk":
        return PKSampler(ids, p, k, num_replicas)
    return ShuffleSampler(ids, p, k, num_replicas)
