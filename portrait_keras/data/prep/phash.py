"""Perceptual hashes (64-bit pHash) of a dataset's images, in parallel, with a cache.

The paper marks near-duplicate frames with the perceptual hash [45] (§4.3); this
computes `imagehash.phash` (8x8 DCT bits) of every image. Hashes are cached in
`.phash_cache.npz` in the dataset root (plain arrays, loaded with
`allow_pickle=False`), keyed by relative path, file size and modification time, so a
re-run only hashes new or changed files.

    portrait-keras phash ANNOTATIONS.csv [--root DIR] [--workers N] [--cache FILE] [--quiet]

The files to hash are counted on one progress line (`portrait_keras.data.progress`) on stderr.
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from portrait_keras.data.progress import CountProgress

CACHE_NAME = ".phash_cache.npz"
_CACHE_KEYS = ("paths", "sizes", "mtimes", "hashes")
# Below this many files to hash, starting worker processes costs more than it saves.
_MIN_PARALLEL = 64


def phash_file(path):
    """The 64-bit pHash of one image as an int; bit 63 is the first DCT coefficient."""
    try:
        with Image.open(path) as image:
            return int(str(imagehash.phash(image)), 16)
    except OSError as e:
        raise OSError(f"{path}: cannot hash the image: {e}") from e


def phash_images(paths, root=".", *, cache_path=None, workers=None, quiet=False):
    """pHashes of images, reusing the cache for files that did not change.

    Args:
        paths: sequence of str. Image paths, relative to `root` (or absolute).
        root: str. Dataset root. Defaults to the current directory.
        cache_path: str or None. Cache file; None means `ROOT/.phash_cache.npz`.
        workers: int or None. Hashing processes; None means one per CPU.
        quiet: bool. No progress line on stderr while files are hashed. Defaults to False.

    Returns:
        uint64 array `[len(paths)]`, the hash of each path in order.

    Example:
    >>> hashes = phash_images(["images/a.jpg", "images/b.jpg"], root="dataset")  # doctest: +SKIP
    """
    return _phash_images(paths, root, cache_path, workers, quiet)[0]


def _phash_images(paths, root, cache_path, workers, quiet=False):
    """`phash_images`, plus the number of files it had to hash."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None. Received: workers={workers!r}")
    root = os.fspath(root)
    cache_path = os.path.join(root, CACHE_NAME) if cache_path is None else os.fspath(cache_path)
    keys = [os.path.normpath(os.path.relpath(os.path.join(root, p), root)) for p in paths]
    stats = []
    for key in keys:
        try:
            stats.append(os.stat(os.path.join(root, key)))
        except FileNotFoundError:
            raise FileNotFoundError(f"{os.path.join(root, key)}: image not found") from None

    cached = _load_cache(cache_path)
    hashes = np.zeros(len(keys), np.uint64)
    todo = []
    for i, (key, stat) in enumerate(zip(keys, stats)):
        entry = cached.get(key)
        if entry is not None and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            hashes[i] = entry[2]
        else:
            todo.append(i)
    files = [os.path.join(root, keys[i]) for i in todo]
    if workers is None:
        workers = os.cpu_count() or 1
    new = []
    with CountProgress(len(files), "pHash", quiet=quiet or not files) as progress:
        if workers == 1 or len(files) < _MIN_PARALLEL:
            for file in files:
                new.append(phash_file(file))
                progress.update()
        else:
            # spawn: safe even when the caller has threads running (e.g. TensorFlow). Chunks
            # of at most 64 files, so that the progress line moves.
            chunk = max(1, min(64, len(files) // (8 * workers)))
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for value in pool.imap(phash_file, files, chunksize=chunk):
                    new.append(value)
                    progress.update()
    hashes[todo] = np.array(new, np.uint64)

    # Entries of other files stay while those files exist (another annotation file may use them).
    current = set(keys)
    stale = [k for k in cached if k not in current and not os.path.exists(os.path.join(root, k))]
    if todo or stale:
        for key in stale:
            del cached[key]
        for i in todo:
            cached[keys[i]] = (stats[i].st_size, stats[i].st_mtime_ns, hashes[i])
        _save_cache(cache_path, cached)
    return hashes, len(todo)


def _load_cache(path):
    """{relative path: (size, mtime_ns, hash)}; empty when the file is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[k] for k in _CACHE_KEYS]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError) as e:
        print(f"{path}: ignoring unreadable pHash cache ({e})", file=sys.stderr)
        return {}
    paths, sizes, mtimes, hashes = arrays
    return {str(p): (s, m, h) for p, s, m, h in zip(paths.tolist(), sizes, mtimes, hashes)}


def _save_cache(path, cached):
    """Writes the cache atomically (temporary file, then rename)."""
    keys = sorted(cached)
    arrays = {
        "paths": np.array(keys, dtype=str) if keys else np.zeros(0, "<U1"),
        "sizes": np.array([cached[k][0] for k in keys], np.int64),
        "mtimes": np.array([cached[k][1] for k in keys], np.int64),
        "hashes": np.array([cached[k][2] for k in keys], np.uint64),
    }
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".phash_cache.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_paths(csv_path):
    """The `path` column of an annotation CSV, as strings in row order."""
    table = pd.read_csv(csv_path, usecols=["path"], dtype=str, keep_default_na=False)
    empty = np.flatnonzero(table["path"].str.strip() == "")
    if len(empty):
        raise ValueError(f"{csv_path}:{empty[0] + 2}: column 'path': empty. Received: an empty path")
    return table["path"].tolist()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="portrait-keras phash",
        description=__doc__.split("\n")[0],
        epilog="examples:\n  portrait-keras phash data/annotations.csv --workers 4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("annotations", help="annotation CSV with a 'path' column")
    parser.add_argument("--root", help="dataset root (default: the CSV's folder)")
    parser.add_argument("--workers", type=int, help="hashing processes (default: one per CPU)")
    parser.add_argument("--cache", help=f"cache file (default: ROOT/{CACHE_NAME})")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    root = args.root or os.path.dirname(os.path.abspath(args.annotations))
    start = time.perf_counter()
    hashes, hashed = _phash_images(read_paths(args.annotations), root, args.cache, args.workers, args.quiet)
    print(
        f"{len(hashes)} images: {hashed} hashed, {len(hashes) - hashed} from the cache, "
        f"{time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
