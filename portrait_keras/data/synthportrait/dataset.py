"""SynthPortrait: a procedural Portrait250K-like dataset drawn with numpy and Pillow.

Every image is a 256x128 (HxW) RGB JPEG of one cartoon person, labelled with all eight
tasks of the default schema (paper §3), and every label has a visible cue:

- identity: fixed per person: skin and hair colour, hair style, clothing colours and
  pattern (plain, stripes, checks), skirt or trousers, hat, glasses, bag, body shape;
- gender: hair length, skirt, shoulder/hip width, beard;
- age: head-to-body ratio and figure size, grey or white hair, cane;
- physique: torso and limb width;
- height: figure scale and leg length;
- body posture: the leg layout (standing, walking, sitting on a seat, squatting, lying);
- arm posture: the arm layout;
- expression: eyebrows, eyes and mouth; an image with two expressions takes the
  eyebrows and eyes of one and the mouth of the other.

Each image also varies in background, lighting, position, blur and partial occlusion.
Images come in short runs of near-duplicate "frames" (same person, pose and scene,
tiny jitter) that share a `group`, like the consecutive film frames of Portrait250K
(paper §4.3). About 60% of the images are "extras" with unknown id (`-1`), as in the
paper (§4.2), and about 10% of the attribute labels are missing. Identities and classes
are long-tailed. Splits follow the paper (§4.1): train ids are disjoint from test ids,
query ids are gallery ids, extras go to train and gallery; the gallery holds other-run
positives for every query and, for some queries, a near-duplicate in the same group.

`plan.py` decides the runs and every label, `draw.py` the pixels; this module writes the
files. Output is deterministic per seed (byte-identical JPEGs and CSV, whatever `workers`).

Usage:
    portrait-keras synth OUT_DIR --identities 240 --seed 0
"""

import argparse
import csv
import multiprocessing
import os
import posixpath
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from portrait_keras import schema as schema_lib
from portrait_keras.data.progress import CountProgress
from portrait_keras.data.synthportrait.draw import draw_run
from portrait_keras.data.synthportrait.plan import COLUMNS, plan_runs
from portrait_keras.data.synthportrait.sources import (
    ALLOWED_SOURCES,
    COLUMNS_WITH_SOURCE,
    TRUTH_FILE,
    check_sources,
    source_rows,
)

__all__ = ["COLUMNS", "VERSION", "default_dataset", "generate", "main"]

# Bump whenever the bytes of a seed's dataset change: it names the cache folder.
VERSION = "v3"
# 240 identities (7,200 images): the smallest default on which the CPU recipe of
# `experiments/configs.py` learns every task, expression included (120 left it at the priors).
DEFAULT_IDENTITIES = 240
DEFAULT_IMAGES_PER_IDENTITY = 12
DEFAULT_SEED = 0
JPEG_QUALITY = 90
RUNS_PER_TASK = 16


def mask_path(image_path):
    """The `mask` column value of an image: `images/000/x.jpg` → `masks/000/x.png`."""
    folder, name = posixpath.split(image_path)
    return posixpath.join("masks", *folder.split("/")[1:], posixpath.splitext(name)[0] + ".png")


def _write_runs(task):
    """Worker: draws the runs of one task and saves their JPEGs (and PNG masks). Returns the number of images."""
    out_dir, seed, runs, masks = task
    count = 0
    for run in runs:
        for row, frame in zip(run.rows, draw_run(run, seed, masks)):
            image, mask = frame if masks else (frame, None)
            path = os.path.join(out_dir, row["path"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            image.save(path, "JPEG", quality=JPEG_QUALITY)
            if mask is not None:
                path = os.path.join(out_dir, mask_path(row["path"]))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                mask.save(path, "PNG")
            count += 1
    return count


def generate(
    out_dir,
    identities=DEFAULT_IDENTITIES,
    seed=DEFAULT_SEED,
    images_per_identity=DEFAULT_IMAGES_PER_IDENTITY,
    workers=None,
    masks=False,
    quiet=False,
    sources=0,
):
    """Writes a SynthPortrait dataset: JPEGs, `annotations.csv` and `schema.json`.

    Args:
        out_dir: path-like. Output folder (created); images go to `out_dir/images/`.
        identities: int. Number of labelled identities. Defaults to `240`.
        seed: int. Same seed, same bytes. Defaults to `0`.
        images_per_identity: int. Mean id-labelled images per identity (long-tailed,
            at least `min(4, images_per_identity)` each); about 1.5x as many unknown-id
            images are added.
            Defaults to `12` (about 7,200 images with 240 identities).
        workers: int. Processes drawing images; `1` draws in this process. Defaults
            to the number of CPUs.
        masks: bool. Also write each image's person mask (white = person) as
            `masks/.../NAME.png` and a `mask` column (background removal, paper 002 §6.3).
            The images are the same either way. Defaults to `False`.
        quiet: bool. No progress line (`portrait_keras.data.progress.CountProgress`) on
            stderr. Defaults to False.
        sources: int. `3` splits the images into three source datasets, each labelled for
            its own tasks, and writes every label into `truth.csv` beside the annotations
            (`synthportrait.sources`); `0` labels every task. Defaults to `0`.

    Returns:
        `Path` of `annotations.csv`.

    Example:
    >>> csv_path = generate("/tmp/synth", identities=12, images_per_identity=8)  # doctest: +SKIP
    """
    if not isinstance(identities, (int, np.integer)) or identities < 2:
        raise ValueError(f"`identities` must be an integer >= 2. Received: identities={identities!r}")
    if not isinstance(images_per_identity, (int, np.integer)) or images_per_identity < 2:
        raise ValueError(
            f"`images_per_identity` must be an integer >= 2. Received: images_per_identity={images_per_identity!r}"
        )
    check_sources(sources)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"`workers` must be >= 1. Received: workers={workers!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(int(identities), int(images_per_identity), int(seed))
    tasks = [
        (os.fspath(out_dir), int(seed), runs[i : i + RUNS_PER_TASK], bool(masks))
        for i in range(0, len(runs), RUNS_PER_TASK)
    ]
    total = sum(len(run.rows) for run in runs)
    with CountProgress(total, "SynthPortrait", quiet=quiet) as progress:
        if workers == 1 or len(tasks) == 1:
            for task in tasks:
                progress.update(_write_runs(task))
        else:
            # spawn, not fork: the caller may have started TensorFlow threads.
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for count in pool.imap_unordered(_write_runs, tasks):
                    progress.update(count)
    schema_lib.default_schema().save(out_dir / "schema.json")
    csv_path = out_dir / "annotations.csv"
    if sources:
        rows, truth = source_rows(runs, int(seed))
        columns = COLUMNS_WITH_SOURCE
    else:
        rows, truth, columns = [row for run in runs for row in run.rows], None, COLUMNS
    if masks:
        rows = [{**row, "mask": mask_path(row["path"])} for row in rows]
        columns = columns + ("mask",)
    _write_csv(csv_path, columns, rows)
    if truth is not None:
        _write_csv(out_dir / TRUTH_FILE, COLUMNS_WITH_SOURCE, truth)
    return csv_path


def _write_csv(path, columns, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def default_cache_dir():
    """`$PORTRAIT_KERAS_CACHE`, else `~/.cache/portrait_keras`."""
    return Path(os.environ.get("PORTRAIT_KERAS_CACHE") or Path.home() / ".cache" / "portrait_keras")


def default_dataset_name():
    """Folder name of the cached default, e.g. `synthportrait-v3-seed0-240ids-12per`."""
    return f"synthportrait-{VERSION}-seed{DEFAULT_SEED}-{DEFAULT_IDENTITIES}ids-{DEFAULT_IMAGES_PER_IDENTITY}per"


def default_dataset(cache_dir=None, quiet=False):
    """The default SynthPortrait (`DEFAULT_IDENTITIES` identities, seed 0), generated once and cached.

    The dataset is written to a temporary folder and renamed into place when complete,
    so an interrupted or concurrent run never leaves a half-written dataset behind. The
    folder name carries the generator version and the size, so a cache made by another
    version or default is never reused.

    Args:
        cache_dir: path-like. Parent folder of `default_dataset_name()`. Defaults to
            `default_cache_dir()`.
        quiet: bool. No progress line while it is generated. Defaults to False.

    Returns:
        `Path` of the cached `annotations.csv`.
    """
    final = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / default_dataset_name()

    def write(tmp):
        if not quiet:
            print(f"Generating the embedded SynthPortrait once into {final} ...", file=sys.stderr, flush=True)
        generate(tmp, DEFAULT_IDENTITIES, DEFAULT_SEED, DEFAULT_IMAGES_PER_IDENTITY, quiet=quiet)

    return generate_once(final, "annotations.csv", write)


def generate_once(final, filename, write):
    """`final/filename`, after `write(tmp)` fills a temporary folder beside `final` that is
    then renamed to `final`, unless `final/filename` exists already.

    An interrupted run leaves no half-written `final`; of two concurrent runs one rename
    wins and the other's folder is removed. Returns the `Path` of `final/filename`.
    """
    final = Path(final)
    path = final / filename
    if path.exists():
        return path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        write(tmp)
        os.rename(tmp, final)
    except OSError:
        if not path.exists():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def main(argv=None):
    """`portrait-keras synth`: generates a dataset and prints its size and rate. Returns 0."""
    parser = argparse.ArgumentParser(prog="portrait-keras synth", description="Generate a SynthPortrait dataset.")
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--identities", type=int, default=DEFAULT_IDENTITIES)
    parser.add_argument("--images-per-identity", type=int, default=DEFAULT_IMAGES_PER_IDENTITY)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--masks", action="store_true", help="also write person masks (the `mask` column)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument(
        "--sources",
        type=int,
        default=0,
        choices=ALLOWED_SOURCES,
        help="3: three source datasets, each labelled for its own tasks, truth in truth.csv (default 0: one)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    csv_path = generate(
        args.out_dir,
        args.identities,
        args.seed,
        args.images_per_identity,
        args.workers,
        masks=args.masks,
        quiet=args.quiet,
        sources=args.sources,
    )
    with open(csv_path, encoding="utf-8") as f:
        count = sum(1 for _ in f) - 1
    seconds = time.perf_counter() - start
    print(f"{csv_path}: {count} images in {seconds:.1f} s ({count / seconds:.0f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
