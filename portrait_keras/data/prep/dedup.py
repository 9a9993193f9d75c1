"""Near-duplicate groups of a dataset's images by pHash Hamming distance (paper §4.3).

Two images are near-duplicates when the Hamming distance of their 64-bit pHashes is
at most `threshold`; groups are the connected components of that relation (every pair
within the threshold is in one group, transitively). Re-id evaluation ignores the
gallery images in a query's group (`portrait_keras.metrics.evaluate_reid`).

Exact and without a loop over pairs: identical hashes are merged first, then
multi-index hashing finds the other pairs. Split the 64 bits into `m`
blocks; two hashes within distance `t` differ in at most `t // m` bits of some block
(pigeonhole). For each block, a table indexed by the block's value lists the images,
and every image probes the values within `t // m` bits of its own; the candidate pairs
are verified with a vectorised popcount and joined with
`scipy.sparse.csgraph.connected_components` (scipy comes with imagehash). `m` is picked
by a cost model; for few hashes or a large threshold, a blockwise all-pairs popcount
is cheaper and is used instead.

Default threshold 8 (`DEFAULT_THRESHOLD`), from `python benchmarks/dedup.py --study`.
pHashes have 32 of 64 bits set, so distances are even. Near-duplicates:

- photo crops (256x128, sklearn's sample photos): JPEG re-encoding (quality 30-95)
  or brightness +-10 % move at most 6 bits (median 0); a shift of 1-2 px stays within
  8 bits for 99 % of crops, 3-4 px for 87 %, rescaling by +-5 % for 78 %;
- SynthPortrait (12,000 images, runs of 1-4 frames with up to 8 px of crop jitter,
  like consecutive film frames): 92 % of frame pairs are within 8 bits; 93 % of runs
  end up whole in one group and 98 % of groups hold one run (at 6 bits: 82 %, 83 %,
  99 %; at 10 bits: 97 %, 97 %, 93 %).

Unrelated SynthPortrait images (different runs) within 6, 8, 10, 12 bits: 6.0e-7,
3.6e-6, 1.7e-5, 7.1e-5 of the pairs. Their number grows with the square of the
dataset: at 12,000 images a threshold of 12 already chains runs into one group of
2,665 images, and at 250,000 images 8 would give about one chance pair per two images.
Hence the CLI only pairs images of the same source (film) when the CSV has a `source`
column, as the paper's near-duplicates are consecutive frames of one shot (§4.3):
same-source unrelated pairs within 8 bits are 66 instead of 259 at 12,000 images
(runs whole 93 %, groups holding one run 99.6 %). An empty source is a source of its
own; `--across-sources` pairs images of any source.

    portrait-keras dedup ANNOTATIONS.csv [--threshold T] [--workers W] [--root DIR] [--across-sources]

writes the `group` column (`-1` = no near-duplicate) back into the CSV, keeping every
other column, the row order, the line endings and a byte order mark; the original is kept
as `ANNOTATIONS.csv.bak` (or `--out OTHER.csv` leaves it untouched).
"""

import argparse
import itertools
import math
import os
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from portrait_keras.data.prep.phash import phash_images, read_paths

DEFAULT_THRESHOLD = 8
_BITS = 64
# Widest block whose value table (int64 counts and starts) stays small: 2**22 entries.
_MAX_BLOCK_BITS = 22
# Pairs per all-pairs popcount step, to bound memory.
_BRUTE_FORCE_PAIRS = 1 << 22


def near_duplicate_groups(hashes, threshold=DEFAULT_THRESHOLD, sources=None):
    """Groups of images whose pHashes are within `threshold` bits, transitively.

    Args:
        hashes: uint64 array `[N]`. 64-bit pHashes.
        threshold: int in [0, 64]. Largest Hamming distance of near-duplicates.
            Defaults to `DEFAULT_THRESHOLD` (8, see the module docstring).
        sources: array `[N]` or None. When given, only images with equal source
            are near-duplicates.

    Returns:
        int64 array `[N]`: the group of each image, numbered 0, 1, ... in order of
        first appearance, or `-1` for an image without near-duplicates.

    Example:
    >>> near_duplicate_groups(np.array([0b1111, 0b0111, 0b0011, 2**40], np.uint64), threshold=1)
    array([ 0,  0,  0, -1])
    """
    hashes = _hashes(hashes)
    if sources is None:
        codes = np.zeros(len(hashes), np.int64)
    else:
        sources = np.asarray(sources)
        if sources.shape != hashes.shape:
            raise ValueError(f"sources must have shape {hashes.shape}. Received: shape {sources.shape}")
        codes = np.unique(sources, return_inverse=True)[1].reshape(-1)
    # Identical (source, hash) images are one node: a run of identical frames stays linear.
    nodes, node_of = np.unique(np.rec.fromarrays([codes, hashes]), return_inverse=True)
    node_of = node_of.reshape(-1)
    first, second = near_duplicate_pairs(nodes["f1"], threshold)
    same = nodes["f0"][first] == nodes["f0"][second]
    first, second = first[same], second[same]
    graph = coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(len(nodes), len(nodes)))
    labels = connected_components(graph, directed=False)[1][node_of]
    # Number the groups of two or more images by their first image.
    sizes = np.bincount(labels, minlength=len(nodes))
    first_index = np.full(len(nodes), len(labels))
    np.minimum.at(first_index, labels, np.arange(len(labels)))
    shared = np.flatnonzero(sizes > 1)
    number = np.full(len(nodes), -1, np.int64)
    number[shared[np.argsort(first_index[shared], kind="stable")]] = np.arange(len(shared))
    return number[labels]


def near_duplicate_pairs(hashes, threshold=DEFAULT_THRESHOLD):
    """Every pair of hashes within `threshold` bits, exactly once.

    Args:
        hashes: uint64 array `[N]`.
        threshold: int in [0, 64].

    Returns:
        (first, second): int64 arrays `[P]` with `first < second`, sorted.
    """
    hashes = _hashes(hashes)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 0 <= threshold <= _BITS:
        raise ValueError(f"threshold must be an int in [0, 64]. Received: threshold={threshold!r}")
    n = len(hashes)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    blocks = _plan(n, threshold)
    if blocks is None:
        first, second = _pairs_brute_force(hashes, threshold)
    else:
        first, second = _pairs_multi_index(hashes, threshold, blocks)
    keys = np.unique(first * n + second)
    return keys // n, keys % n


def _plan(n, threshold):
    """Number of blocks for multi-index hashing, or None when all pairs are cheaper.

    Costs in units of one pair of the all-pairs popcount, measured with numpy on one
    core: a table probe costs 1.25, a candidate pair 2, a probe round's Python
    overhead 4,000; random hashes collide in a probed value with probability 2**-width.
    """
    best_blocks, best_cost = None, n * (n - 1) / 2
    for blocks in range(math.ceil(_BITS / _MAX_BLOCK_BITS), _BITS + 1):
        width = math.ceil(_BITS / blocks)
        probes = sum(math.comb(width, r) for r in range(threshold // blocks + 1))
        cost = blocks * (probes * (1.25 * n + 4000) + 2 * n * n / 2 * probes / 2**width)
        if cost < best_cost:
            best_blocks, best_cost = blocks, cost
    return best_blocks


def _pairs_multi_index(hashes, threshold, blocks):
    """Candidate pairs sharing a block value up to `threshold // blocks` flipped bits,
    verified; (first, second) with first < second, possibly repeated across blocks."""
    radius = threshold // blocks
    edges = np.linspace(0, _BITS, blocks + 1).round().astype(int)
    found = []
    for low, high in zip(edges[:-1], edges[1:]):
        width = int(high - low)
        values = ((hashes >> np.uint64(low)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(values, kind="stable")
        counts = np.bincount(values, minlength=1 << width)
        starts = np.cumsum(counts) - counts
        # Same value: each image pairs with the images after it in `order`.
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        first = np.arange(len(values))
        found.append(
            _expand(hashes, threshold, order, first, position + 1, starts[values] + counts[values] - position - 1)
        )
        occupied = counts > 0
        for flips in _masks(width, radius):
            if flips == 0:
                continue
            probe = values ^ flips
            first = np.flatnonzero(occupied[probe])
            # Each pair once: from the image with the smaller block value.
            first = first[probe[first] > values[first]]
            found.append(_expand(hashes, threshold, order, first, starts[probe[first]], counts[probe[first]]))
    first, second = zip(*found)
    first, second = np.concatenate(first), np.concatenate(second)
    swap = first > second
    return np.where(swap, second, first), np.where(swap, first, second)


def _expand(hashes, threshold, order, first, start, count):
    """Pairs (first[i], order[start[i] + k]) for k < count[i] within `threshold` bits."""
    found_first, found_second = [], []
    keep = count > 0
    first, start, count = first[keep], start[keep], count[keep]
    while len(first):
        second = order[start]
        close = _popcount(hashes[first] ^ hashes[second]) <= threshold
        found_first.append(first[close])
        found_second.append(second[close])
        more = count > 1
        first, start, count = first[more], start[more] + 1, count[more] - 1
    if not found_first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(found_first), np.concatenate(found_second)


def _masks(width, radius):
    """Every `width`-bit mask with at most `radius` bits set."""
    for r in range(radius + 1):
        for bits in itertools.combinations(range(width), r):
            yield sum(1 << b for b in bits)


def _pairs_brute_force(hashes, threshold):
    """All pairs, a block of rows at a time."""
    n = len(hashes)
    step = max(1, _BRUTE_FORCE_PAIRS // max(n, 1))
    found_first, found_second = [], []
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        distance = _popcount(hashes[rows, None] ^ hashes[None, :])
        first, second = np.nonzero((distance <= threshold) & (rows[:, None] < np.arange(n)))
        found_first.append(rows[first])
        found_second.append(second)
    return np.concatenate(found_first).astype(np.int64), np.concatenate(found_second).astype(np.int64)


def _popcount(x):
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    # numpy < 2.0 has no bitwise_count: count per byte.
    table = np.array([bin(i).count("1") for i in range(256)], np.uint8)
    return table[x[..., None].view(np.uint8)].sum(-1)


def _hashes(hashes):
    hashes = np.asarray(hashes)
    if hashes.ndim != 1 or (hashes.size and hashes.dtype != np.uint64):
        raise ValueError(f"hashes must be a uint64 array [N]. Received: shape {hashes.shape}, dtype {hashes.dtype}")
    return hashes.astype(np.uint64, copy=False)


def write_groups(csv_path, groups, out_path=None, backup=True):
    """Sets the `group` column of an annotation CSV, keeping the other columns, the row order,
    the line endings and a byte order mark.

    Args:
        csv_path: path-like. The annotation CSV.
        groups: int array `[N]`, one group per data row (`-1` = none).
        out_path: path-like or None. Where to write; None rewrites `csv_path` in place.
        backup: bool. When rewriting in place, first copy the original to `CSV.bak`.
            Defaults to True.

    Returns: the path written. The file is written to a temporary file and renamed, so a
    crash never leaves half a CSV.
    """
    csv_path = os.fspath(csv_path)
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if len(table) != len(groups):
        raise ValueError(f"{csv_path}: has {len(table)} rows. Received: {len(groups)} groups")
    with open(csv_path, "rb") as f:
        head = f.read(1 << 16)
    bom = head.startswith(b"\xef\xbb\xbf")
    line_end = "\r\n" if head.split(b"\n", 1)[0].endswith(b"\r") else "\n"
    table["group"] = np.asarray(groups).astype(str)
    target = os.fspath(out_path) if out_path is not None else csv_path
    if out_path is None and backup:
        shutil.copy2(csv_path, csv_path + ".bak")
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".annotations.", suffix=".csv.tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
            table.to_csv(f, index=False, lineterminator=line_end)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="portrait-keras dedup",
        description=__doc__.split("\n")[0],
        epilog="examples:\n  portrait-keras dedup data/annotations.csv\n"
        "  portrait-keras dedup data/annotations.csv --threshold 6 --workers 4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("annotations", help="annotation CSV with a 'path' column; gets a 'group' column")
    parser.add_argument(
        "--threshold",
        type=int,
        default=DEFAULT_THRESHOLD,
        help=f"largest Hamming distance of near-duplicates (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument("--workers", type=int, help="hashing processes (default: one per CPU)")
    parser.add_argument("--root", help="dataset root (default: the CSV's folder)")
    parser.add_argument(
        "--across-sources",
        action="store_true",
        help="pair images of different 'source' values too (default: same source only)",
    )
    parser.add_argument(
        "--out",
        metavar="CSV",
        help="write the CSV with its 'group' column here (default: rewrite ANNOTATIONS, keeping ANNOTATIONS.bak)",
    )
    args = parser.parse_args(argv)
    root = args.root or os.path.dirname(os.path.abspath(args.annotations))

    start = time.perf_counter()
    hashes = phash_images(read_paths(args.annotations), root, workers=args.workers)
    hashed = time.perf_counter()
    sources = None
    if not args.across_sources:
        table = pd.read_csv(args.annotations, usecols=lambda c: c == "source", dtype=str, keep_default_na=False)
        if "source" in table:
            sources = table["source"].to_numpy()  # an empty source is a source of its own
    groups = near_duplicate_groups(hashes, args.threshold, sources)
    written = write_groups(args.annotations, groups, args.out)
    sizes = np.bincount(groups[groups >= 0])
    print(
        f"{len(groups)} images: {len(sizes)} groups holding {sizes.sum()} images, the largest "
        f"{sizes.max(initial=0)} (threshold {args.threshold}, "
        f"{'within each source' if sources is not None else 'across sources'}); hashing "
        f"{hashed - start:.1f} s, grouping {time.perf_counter() - hashed:.1f} s; wrote the 'group' "
        f"column of {written}" + ("" if args.out else f" (the original is {args.annotations}.bak)")
    )


if __name__ == "__main__":
    main()
