"""Features of a whole dataset for use outside the package: `embed_data` → arrays → `.npz`.

`embed_data(predictor, data)` runs a model over an annotation CSV (some or all of its splits) or
every image file below a folder, and returns plain arrays, one row per image:

- `embeddings` float32 `[N, D]`: the re-id embedding (the BNNeck feature, not L2-normalised;
  the metrics normalise it);
- `paths` str `[N]`: each image relative to `root` (the CSV's `path` values, or the file below
  the folder), and `root` str: that folder, absolute;
- `prob_<task>` float32 `[N, C]` per classification task the model predicts, with its class
  names `classes_<task>` str `[C]`;
- from a CSV also `ids` (`-1` unknown), `cameras`, `groups` (near-duplicate group, `-1` none)
  int64 `[N]` and `splits` str `[N]`, so `metrics.evaluate_reid` can be run on them.

`write_npz` saves them with `np.savez`: strings are unicode arrays, so `np.load(path)` needs
no pickle.

Example:
>>> predictor = load_predictor("runs/fss_uncert")  # doctest: +SKIP
>>> arrays = embed_data(predictor, "data/annotations.csv", splits=["query", "gallery"])  # doctest: +SKIP
>>> arrays["embeddings"].shape, arrays["splits"][:2]  # doctest: +SKIP
((12000, 141), array(['query', 'query'], dtype='<U7'))
"""

import os
import sys
import tempfile

import numpy as np

from portrait_keras.data.images import image_files_below
from portrait_keras.errors import InputError
from portrait_keras.serving.predictor import read_image_batches, warn_unmasked

SHOWN_SKIPPED = 5  # unreadable images named in the warning


def embed_data(predictor, data, *, splits=None, flip=False, batch_size=64, skip_bad_images=False):
    """Embeddings and probabilities of every image of `data` (module docstring).

    Args:
        predictor: `Predictor` with a re-id embedding (`load_predictor`).
        data: str or path-like. An annotation CSV or an image folder.
        splits: sequence of str or None. CSV only: the splits to embed, in this order;
            defaults to every split the CSV has (train, query, gallery).
        flip: bool. Average each image with its horizontal mirror (`Predictor.predict`).
            Defaults to `False`.
        batch_size: int. Images read and run at a time. Defaults to `64`.
        skip_bad_images: bool. Leave unreadable images out, with a warning naming them,
            instead of failing on the first. Defaults to `False`.

    Returns: dict name → numpy array (module docstring).

    Raises: `InputError` for a model without embedding, a missing `data`, a split the CSV has
        no rows in, `splits` with a folder, or an unreadable image (naming its CSV line);
        `AnnotationError` for an invalid CSV.
    """
    if not predictor.has_embedding:
        raise InputError(f"{predictor.path}: the model has no re-id embedding (it was trained without the id task)")
    rows = _rows(data, splits)
    arrays = _embed_rows(predictor, rows, flip, batch_size, skip_bad_images)
    for task in predictor.tasks:
        arrays[f"classes_{task.name}"] = np.array(task.classes, dtype=str)
    return arrays


def _rows(data, splits):
    """`(root, paths, where, columns, masks)`: absolute image paths, the text naming each one's
    source (`CSV:LINE` or the file), the CSV columns (`ids`, `cameras`, `groups`, `splits`) or
    {}, and the person mask of each path (`""` none), or None when none has one."""
    data = os.fspath(data)
    if os.path.isdir(data):
        if splits:
            raise InputError(f"{data}: --split applies to an annotation CSV, and this is an image folder")
        paths = image_files_below(data)
        if not paths:
            raise InputError(f"{data}: no image files in this folder")
        return os.path.abspath(data), [os.path.abspath(p) for p in paths], list(paths), {}, None
    if not os.path.isfile(data):
        raise InputError(f"{data}: no such annotation CSV or image folder")
    if not data.lower().endswith(".csv"):
        raise InputError(f"{data}: DATA is an annotation CSV file or a folder of images")
    from portrait_keras.data import read_annotations

    annotations = read_annotations(data)
    if splits is None:
        splits = annotations.splits
    missing = [s for s in splits if s not in annotations.splits]
    if missing:
        raise InputError(
            f"{data}: no rows in split {', '.join(missing)} (splits present: {', '.join(annotations.splits) or 'none'})"
        )
    identity = annotations.schema.identity_task
    paths, where, columns = [], [], {"ids": [], "cameras": [], "groups": [], "splits": []}
    for split in splits:
        n = annotations.num_images(split)
        paths += list(annotations.paths(split))
        lines = annotations.table.index[annotations.rows(split)]
        where += [f"{data}:{line}" for line in lines]
        ids = annotations.labels(split)[identity.name] if identity is not None else np.full(n, -1)
        columns["ids"].append(np.asarray(ids, np.int64))
        columns["cameras"].append(annotations.cameras(split))
        columns["groups"].append(annotations.groups(split))
        columns["splits"].append(np.full(n, split))
    columns = {k: np.concatenate(v) for k, v in columns.items()}
    columns["splits"] = columns["splits"].astype(str)
    masks = [str(m) for split in splits for m in annotations.masks(split)] if annotations.has_masks else None
    return annotations.root, paths, where, columns, masks


def _embed_rows(predictor, rows, flip, batch_size, skip_bad_images):
    root, paths, where, columns, masks = rows
    if masks is None:
        warn_unmasked(predictor, "these images")
    outputs, kept, skipped = [], [], []
    # The next batch is read in a background thread while the model runs on this one.
    batches = read_image_batches(paths, predictor.image_size, batch_size, masks, predictor.background)
    for positions, images, bad in batches:
        for i, e in bad:
            if not skip_bad_images:
                hint = "Leave such images out with --skip-bad-images (skip_bad_images=True)."
                raise InputError(f"{where[i]}: {e}. {hint}") from None
            skipped.append(f"{where[i]} ({e})")
        kept += positions.tolist()
        if len(images):
            outputs.append(predictor.predict(images, batch_size=batch_size, flip=flip))
    if skipped:
        more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
        print(
            f"warning: left out {len(skipped)} unreadable image(s): {'; '.join(skipped[:SHOWN_SKIPPED])}{more}",
            file=sys.stderr,
        )
    if not kept:
        raise InputError("no image could be read: nothing to embed")
    kept = np.array(kept)
    arrays = {
        "embeddings": np.concatenate([o["embedding"] for o in outputs]).astype(np.float32),
        "paths": np.array([os.path.relpath(paths[i], root) for i in kept], dtype=str),
        "root": np.array(root, dtype=str),
    }
    for task in predictor.tasks:
        arrays[f"prob_{task.name}"] = np.concatenate([o[task.name] for o in outputs]).astype(np.float32)
    arrays.update({k: v[kept] for k, v in columns.items()})
    return arrays


def write_npz(path, arrays):
    """Writes `arrays` to the `.npz` file `path` (exactly that name), atomically.

    Raises: `InputError` naming `path` when its folder does not exist or cannot be written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{path}: no such folder {folder}")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        raise InputError(f"{path}: cannot write it ({e.strerror or e})") from None
