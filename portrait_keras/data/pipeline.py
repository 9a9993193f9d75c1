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
"""

import itertools

import numpy as np
import tensorflow as tf

from portrait_keras.data import augment as augment_lib
from portrait_keras.data import samplers as samplers_lib

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


def decode(path, image_size):
    """Reads and decodes a JPEG/PNG/BMP/GIF file to uint8 `[H, W, 3]`.

    Grayscale and RGBA images become RGB; images of another size are resized
    (bilinear, antialiased).
    """
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    same = tf.reduce_all(tf.shape(image)[:2] == tf.constant(image_size))
    image = tf.cond(
        same,
        lambda: image,
        lambda: tf.saturate_cast(tf.round(tf.image.resize(image, image_size, antialias=True)), tf.uint8),
    )
    return tf.ensure_shape(image, [*image_size, 3])


def _to_float(images, labels):
    return tf.cast(images, tf.float32), labels


def _batch(dataset, batch_size, drop_remainder):
    # Per-image work stays in uint8 and the cast to float32 happens once per batch:
    # moving float32 images through tf.data costs more CPU than decoding them.
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


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
):
    """A `tf.data.Dataset` of `(images, labels)` batches of one split.

    Training (`training=True`): images are decoded, resized, flipped, padded by 10 px and
    randomly cropped back, and randomly erased (`augment.augment`, paper §6.1), in
    batches drawn by `sampler`. Evaluation: decode and resize only, file order.

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

    Returns:
        `tf.data.Dataset` with a known cardinality, yielding `(images, labels)`:
        images float32 `[B, H, W, 3]` in 0..255, labels `{task: tensor}` as
        `split_labels`.

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

    paths = tf.constant(annotations.paths(split))
    labels = {name: tf.constant(value) for name, value in split_labels(annotations, split).items()}

    def gather_labels(index):
        return {name: tf.gather(value, index) for name, value in labels.items()}

    if not training:
        dataset = tf.data.Dataset.range(annotations.num_images(split)).map(
            lambda i: (decode(tf.gather(paths, i), image_size), gather_labels(i)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return _batch(dataset, batch_size, drop_remainder)

    identity = annotations.schema.identity_task
    if sampler != "random" and identity is None:
        raise ValueError(
            f"Sampler {sampler!r} needs an identity task in the schema. Received: sampler={sampler!r}"
        )
    ids = annotations.labels(split)[identity.name] if identity is not None else np.full(
        [annotations.num_images(split)], UNKNOWN
    )
    index_sampler = samplers_lib.build_sampler(
        sampler, ids, batch_size=batch_size, p=p, k=k, num_replicas=num_replicas, drop_remainder=drop_remainder
    )

    def load(index, element_seed):
        image = augment_lib.augment(decode(tf.gather(paths, index), image_size), element_seed)
        return image, gather_labels(index)

    dataset = epoch_indices(index_sampler, seed).map(
        load,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic or sampler != "random",
    )
    return _batch(dataset, batch_size, drop_remainder)


def epoch_indices(sampler, seed=None):
    """Dataset of `(index, element_seed)`: one epoch of `sampler` per iteration.

    Epoch `e` of a dataset built with `seed` draws from `numpy.random.default_rng([seed,
    e])`: the sampler's indices, and an int64 `[2]` stateless seed per element for its
    augmentation. Iterating again gives the next epoch; building the dataset anew
    starts again at epoch 0.

    Args:
        sampler: a sampler from `samplers.build_sampler`.
        seed: int or None. `None` draws a fresh seed.

    Returns:
        `tf.data.Dataset` of `(int64 [], int64 [2])` with cardinality `sampler.num_indices`.
    """
    base = np.random.SeedSequence().entropy if seed is None else int(seed)
    epochs = itertools.count()

    def one_epoch():
        rng = np.random.default_rng([base, next(epochs)])
        indices = sampler(rng)
        yield indices, rng.integers(0, 2**62, size=(len(indices), 2), dtype=np.int64)

    dataset = tf.data.Dataset.from_generator(
        one_epoch,
        output_signature=(
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None, 2], tf.int64),
        ),
    )
    return dataset.unbatch().apply(tf.data.experimental.assert_cardinality(sampler.num_indices))
