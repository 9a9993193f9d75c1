"""Index samplers (numpy): random, P-K and the paper's "shuffle" mix."""

import numpy as np
import pytest

from portrait_keras.data import samplers

# 6 identities with 1..6 images, and 10 unknown-id images.
IDS = np.array([i for i in range(6) for _ in range(i + 1)] + [-1] * 10)
RNG = np.random.default_rng


def test_random_sampler_is_a_permutation_cut_to_whole_batches():
    sampler = samplers.RandomSampler(31, batch_size=8)
    first, second = sampler(RNG(0)), sampler(RNG(1))
    assert sampler.num_batches == 3 and len(first) == 24 and len(set(first)) == 24
    assert not np.array_equal(first, second)
    keep_all = samplers.RandomSampler(31, batch_size=8, drop_remainder=False)
    assert keep_all.num_batches == 4 and sorted(keep_all(RNG(0))) == list(range(31))


def test_pk_batches_hold_p_ids_times_k_images():
    sampler = samplers.PKSampler(IDS, p=3, k=2)
    indices = sampler(RNG(0))
    assert len(indices) == sampler.num_batches * 6
    for batch in indices.reshape(-1, 6):
        ids = IDS[batch]
        assert (ids >= 0).all()
        blocks = ids.reshape(3, 2)
        assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0])) == 3


def test_pk_resamples_small_identities_and_covers_all():
    sampler = samplers.PKSampler(IDS, p=2, k=4)
    seen = np.concatenate([sampler(RNG(e)) for e in range(20)])
    assert set(IDS[seen]) == set(range(6))
    ident_zero = seen[IDS[seen] == 0]
    assert (ident_zero == 0).all()  # the only image of id 0, repeated up to K


def test_pk_replicas_get_whole_identities():
    sampler = samplers.PKSampler(IDS, p=4, k=2, num_replicas=2)
    for batch in sampler(RNG(3)).reshape(-1, 8):
        halves = [set(IDS[half]) for half in batch.reshape(2, 4)]
        assert not halves[0] & halves[1]


def test_shuffle_mixes_pk_and_unknown_batches():
    sampler = samplers.ShuffleSampler(IDS, p=2, k=2)
    assert sampler.num_batches == sampler.pk.num_batches + 10 // 4

    def kinds(epoch):
        return tuple("unknown" if (IDS[b] == -1).all() else "pk" for b in epoch.reshape(-1, 4))

    epoch = sampler(RNG(0))
    assert kinds(epoch).count("unknown") == 2
    for batch in epoch.reshape(-1, 4):
        ids = IDS[batch]
        assert (ids == -1).all() or ((ids >= 0).all() and ids[0] == ids[1] and ids[2] == ids[3])
    assert len({kinds(sampler(RNG(e))) for e in range(10)}) > 1, "batch order should be shuffled"


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("pk", dict(batch_size=8, p=3, k=2), "batch_size must equal p \\* k. Received: batch_size=8, p=3, k=2"),
        ("pk", dict(batch_size=14, p=7, k=2), "Received: p=7, identities=6"),
        ("pk", dict(batch_size=6, p=3, k=2, num_replicas=2), "Received: p=3, num_replicas=2"),
        ("bogus", dict(batch_size=6, p=3, k=2), "Unknown sampler 'bogus'. Allowed: random, pk, shuffle"),
        ("random", dict(batch_size=64, p=3, k=2), "Received: num_images=31, batch_size=64"),
    ],
)
def test_build_sampler_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        samplers.build_sampler(name, IDS, **kwargs)
