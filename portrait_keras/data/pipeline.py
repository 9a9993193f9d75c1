"""Annotations -> `tf.data.Dataset` of `(images, labels)` batches (docs/design.md).

Images are float32 `[B, H, W, 3]` in 0..255 (the model normalises, so a served model
takes raw pixels). Labels are a dict keyed by task name (encoding in
`Annotations.labels`), except that in the train split the identity label is the index
into `annotations.train_ids` (`-1` unknown), the class index of the re-id classifier.

Training batches are drawn by a sampler (`samplers.py`) once per epoch, so every pass
over the dataset (every Keras epoch) has a new order and new augmentation; the number
of batches is fixed, so `dataset.cardinality()` is known and Keras needs no
`steps_per_epoch`. Evaluation reads every image once, in file order, with no
augmentation, so batch rows line up with `annotations.paths(split)`.

Unreadable images (zero bytes, not an image, truncated or corrupt data) stop the
pipeline with an error naming the file: cheap header checks in the graph name it
directly, and `naming_bad_images` turns a decoder error (which names no file) into a
`BadImageError` listing the CSV line, path and reason of every bad file of the split.
With `skip_bad_images=True` the split is checked once up front and the bad files are
left out and listed (`dataset.skipped_images`, `callbacks.SkippedImagesLogger`).
"""

import contextlib
import functools
import itertools
import sys
import warnings

import numpy as np
import tensorflow as tf

from portrait_keras.data import augment as augment_lib
from portrait_keras.data import samplers as samplers_lib
from portrait_keras.data.annotations import AnnotationError
from portrait_keras.data.images import decode, find_bad_images, is_image_error

UNKNOWN = -1


def split_labels(annotations, split):
    """Labels of `split` as `make_dataset` yields them, in file order.

    As `annotations.labels(split)`, except that for the train split the identity label
    is the index into `annotations.train_ids` (`-1` unknown).
    """
    labels = annotations.labels(split)
    identity = annotations.schema.identity_task
    if identity is not None and split == "train":
        ids = labels[identity.name]
        index = np.searchsorted(annotations.train_ids, ids)
        labels[identity.name] = np.where(ids == UNKNOWN, UNKNOWN, index).astype(np.int64)
    return labels


class BadImageError(AnnotationError):
    """Image files of an annotation table that cannot be decoded, all of them at once.

    An `AnnotationError` whose problems are `(line, "path", value, "unreadable image: reason")`.

    Args:
        annotations, split: where the images are listed.
        images: list of `UnreadableImage`.
        hint: str or None. The message's last line; defaults to naming `validate.py` and the
            skip options of training, evaluation and the report.

    Attributes:
        images: list of `UnreadableImage`.
    """

    def __init__(self, annotations, split, images, hint=None):
        self.images = list(images)
        rows = annotations.rows(split)[[b.index for b in self.images]]
        lines = annotations.table.index[rows]
        values = annotations.table["path"].iloc[rows]
        problems = [
            (int(line), "path", value, f"unreadable image: {b.reason}")
            for line, value, b in zip(lines, values, self.images)
        ]
        super().__init__(annotations.csv_path, problems)
        if hint is None:
            hint = (
                f"Check the whole table with `portrait-keras validate {annotations.csv_path}`, or "
                f"leave such files out with skip_bad_images=True (--set data.skip_bad_images=true when "
                f"training, --skip-bad-images for evaluate and report)."
            )
        self.args = (f"{self.args[0]}\n{hint}",)


@contextlib.contextmanager
def naming_bad_images(annotations, splits):
    """Turns an image decoding error inside the block into a `BadImageError`.

    TensorFlow's decoders fail with e.g. "Invalid JPEG data or crop window", naming no
    file. On such an error the block is left, the images of `splits` are checked
    (`find_bad_images`) and a `BadImageError` lists every unreadable file with its CSV
    line. Other errors, and decoding errors no file explains, pass unchanged.

    Example:
    >>> with naming_bad_images(annotations, ["train"]):  # doctest: +SKIP
    ...     model.fit(make_dataset(annotations, "train", batch_size=64, training=True))
    """
    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        if not is_image_error(error):
            raise
        for split in [splits] if isinstance(splits, str) else splits:
            print(
                f"An image of {annotations.csv_path} could not be decoded; checking the "
                f"{annotations.num_images(split)} images of split {split!r} to name it...",
                file=sys.stderr,
                flush=True,
            )
            bad = find_bad_images(annotations.paths(split))
            if bad:
                raise BadImageError(annotations, split, bad) from error
        raise


def _to_float(images, labels):
    return tf.cast(images, tf.float32), labels


def _batch(dataset, batch_size, drop_remainder):
    # Per-image work stays in uint8 and the cast to float32 happens once per batch:
    # moving float32 images through tf.data costs more CPU than decoding them.
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


BLUR_SIGMA_FRACTION = 1 / 16  # blurred background: Gaussian sigma = min(H, W) / 16 (8 px at 256x128)


def read_mask(path, image_size):
    """A person mask file as float32 `[H, W, 1]` in {0, 1} (1 = person), resized like its image.

    Any image file (PNG best); a pixel is the person where its first channel is above half
    (white on black). An empty `path` is no mask: all ones.
    """

    def load():
        data = tf.io.read_file(path)
        mask = tf.cast(tf.io.decode_image(data, channels=1, expand_animations=False), tf.float32)
        return tf.image.resize(mask, image_size, method="bilinear")

    mask = tf.cond(tf.equal(path, ""), lambda: tf.fill([*image_size, 1], 255.0), load)
    return tf.ensure_shape(tf.cast(mask > 127.5, tf.float32), [*image_size, 1])


@functools.lru_cache(maxsize=8)
def _blur_matrix(n, sigma):
    """`[n, n]` float32 `M` with `M @ x` the Gaussian blur of a length-`n` signal `x` (radius
    3 sigma, edges reflected without repeating the edge sample, as `tf.pad(mode="REFLECT")`)."""
    radius = max(1, int(round(3 * sigma)))
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    matrix = np.zeros((n, n))
    period = 2 * (n - 1)
    for i in range(n):
        j = (i + taps) % period if n > 1 else np.zeros_like(taps)
        j = np.where(j >= n, period - j, j)
        np.add.at(matrix[i], j, kernel)
    return matrix.astype(np.float32)


def _gaussian_blur(image, sigma):
    """float32 `[H, W, 3]` blurred by a separable Gaussian (reflected edges, radius 3 sigma).

    Two matrix products, rows then columns, with the reflection folded into the matrices:
    the same values as a reflect-padded separable convolution, at 0.8 instead of 2.2 CPU-ms
    for a 256x128 image (depthwise convolutions are slow on CPUs)."""
    height, width = image.shape[0], image.shape[1]
    rows = tf.einsum("ij,jwc->iwc", tf.constant(_blur_matrix(int(height), float(sigma))), image)
    return tf.einsum("hwc,vw->hvc", rows, tf.constant(_blur_matrix(int(width), float(sigma))))


def remove_background(image, mask, background):
    """The background of a person image replaced (paper 002 §6.3: only the person is classified).

    Args:
        image: uint8 `[H, W, 3]`.
        mask: float32 `[H, W, 1]`, 1 on the person, 0 on the background (`read_mask`).
        background: str. `"keep"` (image unchanged), `"mean"` (background pixels become their
            mean colour: the clutter goes, the overall colour stays) or `"blur"` (background
            pixels become those of the image blurred by a Gaussian of sigma
            `min(H, W) * BLUR_SIGMA_FRACTION`).

    Returns: uint8 `[H, W, 3]`, equal to `image` where `mask` is 1.
    """
    if background == "keep":
        return image
    pixels = tf.cast(image, tf.float32)
    outside = 1.0 - mask
    if background == "mean":
        total = tf.reduce_sum(pixels * outside, axis=[0, 1])
        fill = (total / tf.maximum(tf.reduce_sum(outside), 1.0))[None, None, :]
    elif background == "blur":
        fill = _gaussian_blur(pixels, min(image.shape[0], image.shape[1]) * BLUR_SIGMA_FRACTION)
    else:
        raise ValueError(f"background must be one of keep, mean, blur. Received: background={background!r}")
    return tf.cast(tf.round(pixels * mask + fill * outside), tf.uint8)


def make_dataset(
    annotations,
    split,
    *,
    batch_size,
    training,
    sampler="random",
    image_size=(256, 128),
    p=16,
    k=4,
    seed=None,
    deterministic=False,
    num_replicas=1,
    drop_remainder=None,
    skip_bad_images=False,
    epoch=0,
    skip_batches=0,
    erasing_probability=augment_lib.ERASE_PROBABILITY,
    padding=augment_lib.PADDING,
):
    """A `tf.data.Dataset` of `(images, labels)` batches of one split.

    Training (`training=True`): images are decoded, resized, flipped, padded by 10 px and
    randomly cropped back, and randomly erased (`augment.augment`, paper §6.1), in
    batches drawn by `sampler`. Evaluation: decode and resize only, file order. Both
    replace the background of images with a person mask first when
    `annotations.background` says so (`remove_background`; `Annotations.with_background`).

    Args:
        annotations: `Annotations`.
        split: str. `"train"`, `"query"` or `"gallery"`.
        batch_size: int. Global batch size (all replicas together).
        training: bool. Sample and augment (True) or read in order (False).
        sampler: str. `"random"` (the paper's default), `"pk"` or `"shuffle"` (paper
            Table 4; see `samplers.py`). Only used when training. Defaults to `"random"`.
        image_size: (int, int). Output `(H, W)`. Defaults to `(256, 128)`.
        p: int. Identities per batch for `"pk"` / `"shuffle"`; `batch_size` must be
            `p * k`. Defaults to `16`.
        k: int. Images per identity for `"pk"` / `"shuffle"`. Defaults to `4`.
        seed: int. Seed of the sampling and augmentation; `None` draws a fresh one.
        deterministic: bool. Keep element order through the parallel map so the same
            `seed` gives the same batches (needs a `seed`). `"pk"` and `"shuffle"`
            always keep order (a batch must stay P x K). Defaults to `False`.
        num_replicas: int. Replicas the global batch is split across (each replica gets
            a contiguous slice, as `tf.distribute` does); with `"pk"` / `"shuffle"` each
            slice holds whole identities. Defaults to `1`.
        drop_remainder: bool. Drop the last incomplete batch. Defaults to `training`.
        skip_bad_images: bool. Check every image of the split first (`find_bad_images`)
            and leave the unreadable ones out, with a warning; the returned dataset lists
            them in `dataset.skipped_images` (list of `UnreadableImage`). When False, an
            unreadable image stops the iteration with an error (module docstring).
            Defaults to `False`.
        epoch: int or callable. Training only: the epoch whose order and augmentation the
            first pass over the dataset draws, each further pass the next one; or a
            function called at the start of each pass that returns its epoch (training
            passes the Keras epoch, so a resumed run draws what an uninterrupted one
            would). Defaults to `0`.
        skip_batches: int. Training only: leave out the first n batches of every pass,
            to finish an epoch a killed run left half done. Defaults to `0`.
        erasing_probability: float in [0, 1]. Training only: chance that an image is
            randomly erased. Defaults to `0.5` (the re-id recipe).
        padding: int >= 0. Training only: pixels of padding before the random crop.
            Defaults to `10` (the re-id recipe at 256x128).

    Returns:
        `tf.data.Dataset` with a known cardinality, yielding `(images, labels)`:
        images float32 `[B, H, W, 3]` in 0..255, labels `{task: tensor}` as
        `split_labels`. Evaluation batches follow `annotations.paths(split)` (less any
        skipped image).

    Example:
    >>> ann = read_annotations(default_dataset())  # doctest: +SKIP
    >>> ds = make_dataset(ann, "train", batch_size=64, training=True, seed=0)  # doctest: +SKIP
    >>> images, labels = next(iter(ds))  # doctest: +SKIP
    >>> images.shape, labels["expression"].shape  # doctest: +SKIP
    (TensorShape([64, 256, 128, 3]), TensorShape([64, 7]))
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1 or batch_size % num_replicas:
        raise ValueError(
            f"`num_replicas` must be a positive integer dividing `batch_size`. "
            f"Received: num_replicas={num_replicas!r}, batch_size={batch_size}"
        )
    image_size = tuple(int(s) for s in image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"`image_size` must be (height, width) > 0. Received: image_size={image_size!r}")
    if deterministic and training and seed is None:
        raise ValueError("`deterministic=True` needs a `seed` to reproduce batches. Received: seed=None")
    if drop_remainder is None:
        drop_remainder = bool(training)
    if not 0.0 <= float(erasing_probability) <= 1.0:
        raise ValueError(
            f"`erasing_probability` must be in [0, 1]. Received: erasing_probability={erasing_probability!r}"
        )
    if not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"`padding` must be an integer >= 0. Received: padding={padding!r}")
    if not isinstance(skip_batches, (int, np.integer)) or skip_batches < 0:
        raise ValueError(f"`skip_batches` must be an integer >= 0. Received: skip_batches={skip_batches!r}")

    all_paths = annotations.paths(split)
    skipped = find_bad_images(all_paths) if skip_bad_images else []
    if skipped:
        listed = ", ".join(f"{b.path} ({b.reason})" for b in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(
            f"make_dataset: split {split!r} of {annotations.csv_path}: skipping {len(skipped)} "
            f"unreadable image(s) (skip_bad_images=True): {listed}{more}",
            stacklevel=2,
        )
    # Positions in the split of the images the dataset reads.
    keep = np.setdiff1d(np.arange(len(all_paths)), [b.index for b in skipped])
    paths = tf.constant(all_paths[keep])
    labels = {name: tf.constant(value[keep]) for name, value in split_labels(annotations, split).items()}

    def gather_labels(index):
        return {name: tf.gather(value, index) for name, value in labels.items()}

    background = getattr(annotations, "background", "keep")
    masks = tf.constant(annotations.masks(split)[keep].astype(str)) if background != "keep" else None

    def read(index):
        image = decode(tf.gather(paths, index), image_size)
        if masks is None:
            return image
        return remove_background(image, read_mask(tf.gather(masks, index), image_size), background)

    if not training:
        dataset = tf.data.Dataset.range(len(keep)).map(
            lambda i: (read(i), gather_labels(i)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return _with_skipped(_batch(dataset, batch_size, drop_remainder), skipped)

    identity = annotations.schema.identity_task
    if sampler != "random" and identity is None:
        raise ValueError(f"Sampler {sampler!r} needs an identity task in the schema. Received: sampler={sampler!r}")
    ids = annotations.labels(split)[identity.name][keep] if identity is not None else np.full([len(keep)], UNKNOWN)
    index_sampler = samplers_lib.build_sampler(
        sampler, ids, batch_size=batch_size, p=p, k=k, num_replicas=num_replicas, drop_remainder=drop_remainder
    )
    if skip_batches >= index_sampler.num_batches:
        raise ValueError(
            f"`skip_batches` must be less than the {index_sampler.num_batches} batches of an epoch. "
            f"Received: skip_batches={skip_batches}"
        )

    def load(index, element_seed):
        image = read(index)
        image = augment_lib.augment(image, element_seed, padding=padding, erasing_probability=erasing_probability)
        return image, gather_labels(index)

    indices = epoch_indices(index_sampler, seed, epoch=epoch, skip=skip_batches * batch_size)
    dataset = indices.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or sampler != "random")
    return _with_skipped(_batch(dataset, batch_size, drop_remainder), skipped)


def _with_skipped(dataset, skipped):
    dataset.skipped_images = skipped
    return dataset


def epoch_indices(sampler, seed=None, epoch=0, skip=0):
    """Dataset of `(index, element_seed)`: one epoch of `sampler` per iteration.

    Epoch `e` of a dataset built with `seed` draws from `numpy.random.default_rng([seed,
    e])`: the sampler's indices, and an int64 `[2]` stateless seed per element for its
    augmentation. So epoch `e` is the same whenever and in whichever process it is drawn.

    Args:
        sampler: a sampler from `samplers.build_sampler`.
        seed: int or None. `None` draws a fresh seed.
        epoch: int or callable. The epoch of the first iteration, each further iteration
            the next one; or a function returning the epoch of each iteration, called
            when it starts. Defaults to `0`.
        skip: int. Leave out the first `skip` elements of every iteration. Defaults to `0`.

    Returns:
        `tf.data.Dataset` of `(int64 [], int64 [2])` with cardinality
        `sampler.num_indices - skip`.
    """
    base = np.random.SeedSequence().entropy if seed is None else int(seed)
    if callable(epoch):
        current = epoch
    else:
        epochs = itertools.count(int(epoch))
        current = lambda: next(epochs)  # noqa: E731

    def one_epoch():
        rng = np.random.default_rng([base, int(current())])
        indices = sampler(rng)
        # Seeds are drawn for the whole epoch before skipping, so a skipped pass keeps its images' seeds.
        seeds = rng.integers(0, 2**62, size=(len(indices), 2), dtype=np.int64)
        yield indices[skip:], seeds[skip:]

    dataset = tf.data.Dataset.from_generator(
        one_epoch,
        output_signature=(
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None, 2], tf.int64),
        ),
    )
    return dataset.unbatch().apply(tf.data.experimental.assert_cardinality(sampler.num_indices - skip))
