"""Speed of near-duplicate grouping at Portrait250K size (250,000 pHashes, 2 CPU cores).

Generates random 64-bit hashes with 32 bits set (as pHashes have) and plants clusters
of near-duplicates (each member within `threshold` bits of its cluster's first image),
times `near_duplicate_groups`, checks that every planted cluster is exactly one group,
and compares with the same run's baseline: an all-pairs popcount on a subset,
extrapolated to the full size by the number of pairs.

`--study` instead measures the pHash distances behind `DEFAULT_THRESHOLD` (see
`data_prep/dedup.py`): perturbed crops of scikit-learn's sample photos, and, given
`--synth CSV`, the runs of near-duplicate frames of a SynthPortrait dataset
(`portrait-keras synth DIR --identities 400 --seed 1`).

    python benchmarks/dedup.py                    # 250,000 hashes, threshold 8
    python benchmarks/dedup.py --hashes 20000     # CI size
    python benchmarks/dedup.py --study --synth DIR/annotations.csv
"""

import argparse
import io
import os
import time

import numpy as np
import pandas as pd

from portrait_keras.data.prep.dedup import (
    DEFAULT_THRESHOLD,
    _pairs_brute_force,
    _popcount,
    near_duplicate_groups,
)
from portrait_keras.data.prep.phash import phash_images, read_paths


def balanced_hashes(rng, n):
    """n random uint64 with exactly 32 bits set."""
    bits = np.argsort(rng.random((n, 64)), axis=1)[:, :32].astype(np.uint64)
    return np.bitwise_or.reduce(np.uint64(1) << bits, axis=1)


def planted(n, threshold, seed=0, clustered_share=0.3):
    """Hashes and the planted cluster of each (-1 for background hashes)."""
    rng = np.random.default_rng(seed)
    hashes = balanced_hashes(rng, n)
    sizes = rng.integers(2, 6, int(n * clustered_share / 3.5))
    cluster = -np.ones(n, np.int64)
    members = rng.permutation(n)[: sizes.sum()]
    cluster[members] = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.cumsum(sizes) - sizes
    centre = hashes[members[np.repeat(starts, sizes)]]
    # Each member: its centre with 1 .. threshold // 2 pairs of bits swapped (keeps 32 bits set).
    near = centre.copy()
    for _ in range(max(threshold // 2, 1)):
        ones = _random_bit(rng, near, set_bits=True)
        zeros = _random_bit(rng, near, set_bits=False)
        swap = rng.random(len(near)) < 0.7
        near[swap] ^= ones[swap] | zeros[swap]
    is_centre = np.zeros(len(members), bool)
    is_centre[starts] = True
    hashes[members[~is_centre]] = near[~is_centre]
    return hashes, cluster


def _random_bit(rng, values, set_bits):
    """One random set (or clear) bit of each value, as a mask."""
    bits = ((values[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(bool)
    bits = bits if set_bits else ~bits
    choice = np.argmax(np.where(bits, rng.random(bits.shape), -1), axis=1)
    return np.uint64(1) << choice.astype(np.uint64)


def photo_study(crops=200, seed=0):
    """pHash distance of 256x128 photo crops to perturbed copies of themselves."""
    import imagehash
    from PIL import Image, ImageEnhance
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)

    def phash(image, quality=90):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(quality))
        return int(str(imagehash.phash(Image.open(buffer))), 16)

    distances = {
        k: [] for k in ("JPEG quality 30-95", "brightness +-10 %", "shift 1-2 px", "shift 3-4 px", "rescale +-5 %")
    }
    for k in range(crops):
        photo = photos[k % len(photos)]
        w, h = (np.array([128, 256]) * rng.uniform(1.0, 1.6)).astype(int)
        x, y = rng.integers(8, photo.size[0] - w - 8), rng.integers(8, photo.size[1] - h - 8)

        def crop(dx=0, dy=0, scale=1.0):
            box = (x + dx, y + dy, x + dx + int(w * scale), y + dy + int(h * scale))
            return photo.crop(box).resize((128, 256), Image.BILINEAR)

        base = phash(crop())
        sign = rng.choice([-1, 1])
        perturbed = {
            "JPEG quality 30-95": phash(crop(), rng.integers(30, 96)),
            "brightness +-10 %": phash(ImageEnhance.Brightness(crop()).enhance(rng.uniform(0.9, 1.1))),
            "shift 1-2 px": phash(crop(sign * rng.integers(1, 3), rng.integers(-2, 3))),
            "shift 3-4 px": phash(crop(sign * rng.integers(3, 5), rng.integers(-4, 5))),
            "rescale +-5 %": phash(crop(scale=rng.uniform(0.95, 1.05))),
        }
        for name, value in perturbed.items():
            distances[name].append(bin(base ^ value).count("1"))
    print(f"photo crops ({crops}): pHash distance to the perturbed copy")
    for name, d in distances.items():
        d = np.array(d)
        print(
            f"  {name:20s} median {np.median(d):4.1f}  max {d.max():3d}  within 6: {np.mean(d <= 6):.2f}  "
            f"within 8: {np.mean(d <= 8):.2f}"
        )


def synth_study(csv_path, thresholds=(4, 6, 8, 10, 12)):
    """Near-duplicate runs (the `group` column) of a SynthPortrait CSV against pHash groups."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    hashes = phash_images(read_paths(csv_path), os.path.dirname(os.path.abspath(csv_path)))
    run = table["group"].astype(int).to_numpy()
    source = table["source"].to_numpy()
    n = len(hashes)
    first, second = _pairs_brute_force(hashes, max(thresholds))
    distance = _popcount(hashes[first] ^ hashes[second])
    unrelated = run[first] != run[second]
    same_source = source[first] == source[second]
    order = np.argsort(run, kind="stable")
    starts = np.flatnonzero(np.r_[True, run[order][1:] != run[order][:-1]])
    pairs = [
        (a, b)
        for s, e in zip(starts, np.r_[starts[1:], n])
        for i, a in enumerate(order[s:e])
        for b in order[s:e][i + 1 :]
    ]
    run_distance = _popcount(hashes[[a for a, _ in pairs]] ^ hashes[[b for _, b in pairs]])
    num_unrelated = n * (n - 1) // 2 - len(pairs)
    multi = np.bincount(run)[run] > 1
    print(f"SynthPortrait {csv_path}: {n} images, {len(pairs)} near-duplicate pairs")
    print("  t  dup pairs  unrelated pairs (rate)   runs whole  groups of one run  largest group")
    for within in (False, True):
        if within:
            print("  same source only:")
        for t in thresholds:
            groups = near_duplicate_groups(hashes, t, source if within else None)
            frame = pd.DataFrame({"run": run, "group": groups})
            whole = frame[multi].groupby("run")["group"].agg(lambda g: g.iloc[0] >= 0 and g.nunique() == 1)
            runs_per_group = frame[groups >= 0].groupby("group")["run"].nunique()
            chance = np.count_nonzero((distance <= t) & unrelated & (same_source | (not within)))
            print(
                f"  {t:2d}  {np.mean(run_distance <= t):9.3f}  {chance:8d} ({chance / num_unrelated:.1e})"
                f"  {whole.mean():10.3f}  {np.mean(runs_per_group == 1):17.3f}  "
                f"{np.bincount(groups[groups >= 0]).max()}"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hashes", type=int, default=250_000)
    parser.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD)
    parser.add_argument("--subset", type=int, default=20_000, help="hashes for the all-pairs baseline")
    parser.add_argument("--study", action="store_true", help="measure the distances behind the default threshold")
    parser.add_argument("--synth", help="with --study: a SynthPortrait annotations.csv")
    args = parser.parse_args()
    if args.study:
        photo_study()
        if args.synth:
            synth_study(args.synth)
        return

    hashes, cluster = planted(args.hashes, args.threshold)
    start = time.perf_counter()
    groups = near_duplicate_groups(hashes, args.threshold)
    seconds = time.perf_counter() - start

    planted_ids = np.unique(cluster[cluster >= 0])
    ok = np.array([len(np.unique(groups[cluster == c])) == 1 and groups[cluster == c][0] >= 0 for c in planted_ids])
    groups_of_clusters = {}
    for c, g in zip(cluster[cluster >= 0], groups[cluster >= 0]):
        groups_of_clusters.setdefault(g, set()).add(c)
    merged = sum(len(v) > 1 for v in groups_of_clusters.values())
    background_grouped = np.count_nonzero(groups[cluster < 0] >= 0)

    subset = min(args.subset, args.hashes)
    start = time.perf_counter()
    _pairs_brute_force(hashes[:subset], args.threshold)
    brute = (time.perf_counter() - start) * (args.hashes * (args.hashes - 1)) / (subset * (subset - 1))

    print(
        f"{args.hashes} hashes, threshold {args.threshold}: {len(planted_ids)} planted clusters "
        f"({np.count_nonzero(cluster >= 0)} hashes)"
    )
    print(f"near_duplicate_groups: {seconds:.2f} s")
    print(
        f"planted clusters found whole: {ok.mean():.4f}; groups joining planted clusters: {merged}; "
        f"background hashes grouped by chance: {background_grouped}"
    )
    print(
        f"baseline all-pairs popcount (timed on {subset}, extrapolated): {brute:.0f} s = {brute / seconds:.0f} x slower"
    )


if __name__ == "__main__":
    main()
