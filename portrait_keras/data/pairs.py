"""Pair annotations for the interpersonal-relation model (paper 004 §5): read, validate, tf.data.

A pair CSV (header on line 1) has one row per pair of people, in one of two forms:

| form        | columns                                                                 |
|-------------|-------------------------------------------------------------------------|
| one image   | `path` (the image), `box_a`, `box_b`: each `"x y w h"`, integer pixels:   |
|             | upper-left corner, width, height of a person's box (§5, spatial cue 1)   |
| two crops   | `path_a`, `path_b`: one crop per person (no spatial cues: a model for    |
|             | this form is built with `spatial_cues=False`)                            |

and in both forms `split` (`train` or `test`) and one column per relation trait
(`portrait_keras.traits.TRAITS`: dominant, competitive, trusting, warm, friendly, attached,
demonstrative, assured) holding `1`, `0` or empty (unknown: masked in the loss and the
metrics). Paths are relative to the CSV's folder. Other columns are ignored (the SynthPortrait
pairs generator writes the causes of its labels there). Every problem is listed at once as
`FILE:LINE: column 'x': value 'v': what was expected` (`AnnotationError`).

A box is clipped to its image when the pixels are read; its normalised form (x and w divided
by the image width, y and h by its height) is what the model's `SpatialCues` reads.
"""

import os
import posixpath

import numpy as np

from portrait_keras.data.annotations import AnnotationError, read_table
from portrait_keras.traits import TRAITS

PAIR_SPLITS = ("train", "test")
IMAGE_COLUMNS = ("path", "box_a", "box_b")
CROP_COLUMNS = ("path_a", "path_b")
UNKNOWN = -1.0


class Pairs:
    """A validated pair CSV (module docstring), encoded per split.

    Attributes:
        csv_path: str. The file.
        root: str. Folder the paths are relative to.
        form: str. `"image"` (one image, two boxes) or `"crops"` (two crops).
        traits: tuple of str. The trait columns, in `TRAITS` order.
        splits: tuple of str. The splits that have rows.
        has_boxes: bool. Whether the pairs carry spatial cues (the `"image"` form).
    """

    def __init__(self, csv_path, root, form, lines, splits, paths_a, paths_b, boxes, labels):
        self.csv_path = csv_path
        self.root = root
        self.form = form
        self.traits = TRAITS
        self.has_boxes = form == "image"
        self._lines, self._split = lines, splits
        self._paths_a, self._paths_b, self._boxes, self._labels = paths_a, paths_b, boxes, labels
        self.splits = tuple(s for s in PAIR_SPLITS if (splits == s).any())

    def __len__(self):
        return len(self._lines)

    def __repr__(self):
        sizes = ", ".join(f"{s}={self.num_pairs(s)}" for s in self.splits)
        return f"Pairs({self.csv_path!r}, {self.form}, {sizes})"

    def _rows(self, split):
        if split is None:  # every pair, in file order
            return np.arange(len(self._lines))
        if split not in PAIR_SPLITS:
            raise ValueError(f"Unknown split {split!r}. Allowed: {', '.join(PAIR_SPLITS)}")
        rows = np.flatnonzero(self._split == split)
        if not rows.size:
            present = ", ".join(self.splits) or "none"
            raise AnnotationError(self.csv_path, [(1, "split", split, f"no pairs in this split (present: {present})")])
        return rows

    def num_pairs(self, split):
        return int((self._split == split).sum())

    def labels(self, split):
        """float32 `[n, 8]`: 1 present, 0 absent, -1 unknown."""
        return self._labels[self._rows(split)]

    def paths(self, split):
        """`(paths_a, paths_b)`: absolute paths, object `[n]` each (the same image twice in the `"image"` form)."""
        rows = self._rows(split)
        return self._paths_a[rows], self._paths_b[rows]

    def boxes(self, split):
        """int64 `[n, 8]`: `box_a` then `box_b` in pixels (zeros in the `"crops"` form)."""
        return self._boxes[self._rows(split)]

    def lines(self, split):
        """CSV line of each pair of `split` (int64 `[n]`)."""
        return self._lines[self._rows(split)]


def read_pairs(csv_path):
    """Reads and validates a pair CSV (module docstring).

    Returns: `Pairs`.

    Raises: `AnnotationError` listing every problem (`FILE:LINE: column 'x': value 'v': ...`).
    """
    csv_path = os.fspath(csv_path)
    table = read_table(csv_path)
    root = os.path.dirname(os.path.abspath(csv_path))
    header = ", ".join(table.columns)
    columns = set(table.columns)
    if set(IMAGE_COLUMNS) <= columns:
        form, path_columns = "image", ("path", "path")
    elif set(CROP_COLUMNS) <= columns:
        form, path_columns = "crops", CROP_COLUMNS
    else:
        message = f"expected columns path, box_a, box_b (one image) or path_a, path_b (two crops); header has: {header}"
        raise AnnotationError(csv_path, [(1, "path", "", message)])
    missing = [c for c in ("split", *TRAITS) if c not in columns]
    if missing:
        problems = [(1, c, "", f"missing required column (header has: {header})") for c in missing]
        raise AnnotationError(csv_path, problems)

    problems = []
    lines = table.index.to_numpy()
    n = len(table)
    paths = {}
    for column in dict.fromkeys(path_columns):
        paths[column] = np.asarray(
            [_check_path(v, root, line, column, problems) for v, line in zip(table[column], lines)]
        )
    boxes = np.zeros([n, 8], np.int64)
    if form == "image":
        for k, column in enumerate(("box_a", "box_b")):
            for i, (value, line) in enumerate(zip(table[column], lines)):
                boxes[i, 4 * k : 4 * k + 4] = _check_box(value, line, column, problems)
    split = table["split"].to_numpy().astype(str)
    for value, line in zip(split, lines):
        if value not in PAIR_SPLITS:
            problems.append((int(line), "split", str(value), f"expected one of {', '.join(PAIR_SPLITS)}"))
    labels = np.full([n, len(TRAITS)], UNKNOWN, np.float32)
    for j, trait in enumerate(TRAITS):
        values = table[trait].str.strip().to_numpy()
        labels[values == "1", j] = 1.0
        labels[values == "0", j] = 0.0
        for value, line in zip(table[trait][~np.isin(values, ("0", "1", ""))], lines[~np.isin(values, ("0", "1", ""))]):
            problems.append((int(line), trait, str(value), "expected 1 (present), 0 (absent) or empty (unknown)"))
    if problems:
        raise AnnotationError(csv_path, problems)
    return Pairs(csv_path, root, form, lines, split, paths[path_columns[0]], paths[path_columns[1]], boxes, labels)


def _check_path(value, root, line, column, problems):
    """The absolute path of a relative `value`, or "" after adding a problem."""
    if not value:
        problems.append((int(line), column, value, "expected an image path relative to the CSV's folder"))
        return ""
    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        problems.append((int(line), column, value, f"expected a path relative to the CSV's folder {root}"))
        return ""
    norm = posixpath.normpath(value)
    if norm == ".." or norm.startswith("../"):
        problems.append((int(line), column, value, f"escapes the CSV's folder {root}"))
        return ""
    path = os.path.join(root, norm)
    if not os.path.isfile(path):
        problems.append((int(line), column, value, f"missing image file (under {root})"))
        return ""
    return path


def _check_box(value, line, column, problems):
    """`[x, y, w, h]` of a `"x y w h"` cell (integers, w and h > 0), or zeros after a problem."""
    parts = value.split()
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 4 or min(numbers) < 0 or min(numbers[2:]) < 1:
        problems.append(
            (int(line), column, value, "expected 'x y w h': 4 integer pixels separated by spaces, x, y >= 0, w, h >= 1")
        )
        return [0, 0, 0, 0]
    return numbers


# === tf.data ===


def _decode(path):
    """uint8 `[H, W, 3]` of an image file, EXIF orientation applied (as `images.decode`, not resized)."""
    import tensorflow as tf

    from portrait_keras.data.images import _check_header, upright

    data = _check_header(tf.io.read_file(path), path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return upright(image, data)


def crop_person(image, box, image_size):
    """One person's crop and its normalised box.

    Args:
        image: uint8 `[H, W, 3]`.
        box: int `[4]`: x, y, w, h in pixels; clipped to the image.
        image_size: (int, int). Size of the crop.

    Returns:
        `(crop, box)`: uint8 `[*image_size, 3]` (bilinear, antialiased: `images.resize`) and
        float32 `[4]`: x and w divided by the image width, y and h by its height.
    """
    import tensorflow as tf

    from portrait_keras.data.images import resize

    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    box = tf.cast(box, tf.int32)
    x = tf.clip_by_value(box[0], 0, width - 1)
    y = tf.clip_by_value(box[1], 0, height - 1)
    w = tf.clip_by_value(box[2], 1, width - x)
    h = tf.clip_by_value(box[3], 1, height - y)
    crop = resize(image[y : y + h, x : x + w], image_size)
    scale = tf.cast(tf.stack([width, height, width, height]), tf.float32)
    return tf.ensure_shape(crop, [*image_size, 3]), tf.cast(tf.stack([x, y, w, h]), tf.float32) / scale


def pair_inputs(path_a, path_b, boxes, image_size, form):
    """The model inputs of one pair: `{"image_a", "image_b"[, "boxes"]}` (float32; boxes normalised)."""
    import tensorflow as tf

    from portrait_keras.data.images import resize

    if form == "image":
        image = _decode(path_a)
        crop_a, box_a = crop_person(image, boxes[:4], image_size)
        crop_b, box_b = crop_person(image, boxes[4:], image_size)
        return {
            "image_a": tf.cast(crop_a, tf.float32),
            "image_b": tf.cast(crop_b, tf.float32),
            "boxes": tf.concat([box_a, box_b], 0),
        }
    crops = [tf.ensure_shape(resize(_decode(p), image_size), [*image_size, 3]) for p in (path_a, path_b)]
    return {"image_a": tf.cast(crops[0], tf.float32), "image_b": tf.cast(crops[1], tf.float32)}


def _swapped(path_a, path_b, boxes, swap):
    """A and B exchanged (paths and boxes) where `swap`."""
    import tensorflow as tf

    exchanged = tf.concat([boxes[4:], boxes[:4]], 0)
    return tf.where(swap, path_b, path_a), tf.where(swap, path_a, path_b), tf.where(swap, exchanged, boxes)


def _flipped(inputs, flips):
    """Crop A mirrored left-right where `flips[0]`, crop B where `flips[1]` (the boxes stay:
    they say where, not which way a person faces)."""
    import tensorflow as tf

    out = dict(inputs)
    for flip, key in zip((flips[0], flips[1]), ("image_a", "image_b")):
        out[key] = tf.where(flip, tf.reverse(inputs[key], [1]), inputs[key])
    return out


def epoch_steps(pairs, split, batch_size):
    """Training batches per epoch of `make_pair_dataset(..., training=True)`."""
    n = pairs.num_pairs(split)
    return n // batch_size if n >= batch_size else 1


def make_pair_dataset(pairs, split, batch_size, image_size, *, training=False, seed=0, epochs=(0, 1)):
    """A `tf.data.Dataset` of `(inputs, {"traits": labels})` batches of `split`.

    Args:
        pairs: `Pairs`.
        split: str or None. `"train"`, `"test"`, or None for every pair in file order.
        batch_size: int.
        image_size: (int, int). Size of each person's crop.
        training: bool. The batches of epochs `epochs[0]` to `epochs[1] - 1` back to back,
            `epoch_steps` each (the last partial batch dropped): every epoch shuffled, persons
            A and B (crops and boxes) swapped in half of the pairs and each crop mirrored in
            half of them, all drawn from `(seed, epoch)` alone, so a run resumed at epoch k
            sees what the uninterrupted one saw. Defaults to False (file order, every pair,
            as written).
        seed: int. Seed of the draws. Defaults to `0`.
        epochs: (int, int). With `training`, the first epoch and the one after the last.
            Defaults to `(0, 1)`.

    Returns: the dataset; inputs as `RelationModel` takes them, labels float32 `[B, 8]`
    (1/0/-1 unknown).
    """
    import tensorflow as tf

    paths_a, paths_b = pairs.paths(split)
    labels = pairs.labels(split)
    image_size = tuple(int(s) for s in image_size)
    columns = tuple(tf.constant(c) for c in (paths_a.astype(str), paths_b.astype(str), pairs.boxes(split), labels))

    def element(index, draws):
        a, b, boxes, y = (tf.gather(c, index) for c in columns)
        if draws is not None:  # the traits are properties of the pair (paper 004 Table 2), not of its order
            a, b, boxes = _swapped(a, b, boxes, draws[0] < 0.5)
        inputs = pair_inputs(a, b, boxes, image_size, pairs.form)
        return (inputs if draws is None else _flipped(inputs, draws[1:] < 0.5)), {"traits": y}

    n = len(labels)
    if not training:
        ds = tf.data.Dataset.range(n).map(
            lambda i: element(i, None), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    first, end = (int(e) for e in epochs)

    def one_epoch(epoch):
        key = tf.stack([tf.constant(int(seed), tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key)
        draws = tf.random.stateless_uniform([n, 3], seed=key + tf.constant([0, 1 << 32], tf.int64))
        ds = tf.data.Dataset.from_tensor_slices((order, tf.gather(draws, order)))
        ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size, drop_remainder=n >= batch_size)  # epoch_steps batches

    return tf.data.Dataset.range(first, end).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)
