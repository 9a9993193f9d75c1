"""make_dataset: shapes, dtypes, label masks, order, samplers, replicas, determinism."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from portrait_keras.data import make_dataset, read_annotations, split_labels


def batches(dataset, count=None):
    out = []
    for images, labels in dataset.take(count) if count else dataset:
        out.append((images.numpy(), {k: v.numpy() for k, v in labels.items()}))
    return out


def concat_labels(items):
    return {k: np.concatenate([labels[k] for _, labels in items]) for k in items[0][1]}


def test_training_batches_shapes_dtypes_and_cardinality(tiny_annotations):
    ann = tiny_annotations
    dataset = make_dataset(ann, "train", batch_size=32, training=True, seed=0)
    assert dataset.cardinality().numpy() == ann.num_images("train") // 32
    images, labels = dataset.element_spec
    assert images.shape == (32, 256, 128, 3) and images.dtype == tf.float32
    (x, y), *_ = batches(dataset, 1)
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 255 and x.max() > 1
    assert set(y) == set(ann.schema.names)
    assert y["id"].dtype == np.int64 and y["gender"].dtype == np.int32 and y["expression"].dtype == np.float32
    assert y["expression"].shape == (32, 7)


def test_training_labels_and_masks(tiny_annotations):
    ann = tiny_annotations
    items = batches(make_dataset(ann, "train", batch_size=16, training=True, seed=1, drop_remainder=False))
    got = concat_labels(items)
    assert len(got["id"]) == ann.num_images("train")
    # identity -> index into train_ids, unknown stays -1
    assert set(got["id"]) <= set(range(len(ann.train_ids))) | {-1}
    expected = split_labels(ann, "train")

    def rows(labels):
        return sorted(zip(*[labels[n].tolist() for n in ann.schema.names]))

    assert rows(got) == rows(expected)  # every image once, labels intact
    raw = ann.labels("train")["id"]
    np.testing.assert_array_equal(np.where(raw >= 0, ann.train_ids[np.maximum(expected["id"], 0)], -1), raw)
    unknown_expression = (got["expression"] == -1).all(axis=1)
    assert unknown_expression.any() and ((got["expression"][~unknown_expression] >= 0).all())
    assert (got["gender"] == -1).any() and (got["id"] == -1).any()


def test_evaluation_keeps_file_order_raw_ids_and_pixels(tiny_annotations):
    ann = tiny_annotations
    dataset = make_dataset(ann, "gallery", batch_size=50, training=False)
    assert dataset.cardinality().numpy() == int(np.ceil(ann.num_images("gallery") / 50))
    items = batches(dataset)
    got = concat_labels(items)
    for name, value in ann.labels("gallery").items():
        np.testing.assert_array_equal(got[name], value)
    first = items[0][0][0]
    decoded = tf.io.decode_jpeg(tf.io.read_file(ann.paths("gallery")[0])).numpy()
    np.testing.assert_array_equal(first, decoded.astype(np.float32))  # no augmentation


def test_deterministic_reproduces_batches_and_epochs_differ(tiny_annotations):
    def make():
        return make_dataset(tiny_annotations, "train", batch_size=16, training=True, seed=7, deterministic=True)

    first = make()
    epoch_one = batches(first, 3)
    epoch_two = batches(first, 3)
    again = batches(make(), 3)
    for (xa, ya), (xb, yb) in zip(epoch_one, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya["id"], yb["id"])
    assert not np.array_equal(epoch_one[0][0], epoch_two[0][0])
    other = make_dataset(tiny_annotations, "train", batch_size=16, training=True, seed=8, deterministic=True)
    other_seed = batches(other, 1)
    assert not np.array_equal(epoch_one[0][0], other_seed[0][0])


def test_pk_batches(tiny_annotations):
    dataset = make_dataset(tiny_annotations, "train", batch_size=16, training=True, sampler="pk", p=4, k=4, seed=0)
    assert dataset.cardinality().numpy() >= 1
    for _, labels in batches(dataset):
        blocks = labels["id"].reshape(4, 4)
        assert (blocks >= 0).all() and (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0])) == 4


def test_pk_replicas_hold_whole_identities(tiny_annotations):
    dataset = make_dataset(
        tiny_annotations, "train", batch_size=16, training=True, sampler="pk", p=4, k=4, seed=0, num_replicas=2
    )
    for _, labels in batches(dataset):
        halves = labels["id"].reshape(2, 8)
        assert not set(halves[0]) & set(halves[1])


def test_shuffle_sampler_batches(tiny_annotations):
    dataset = make_dataset(tiny_annotations, "train", batch_size=8, training=True, sampler="shuffle", p=4, k=2, seed=0)
    kinds = set()
    for _, labels in batches(dataset):
        ids = labels["id"]
        kinds.add("unknown" if (ids == -1).all() else "pk")
        assert (ids == -1).all() or ((ids >= 0).all() and (ids[::2] == ids[1::2]).all())
    assert kinds == {"unknown", "pk"}


def test_any_image_format_and_size_becomes_rgb_256x128(tmp_path):
    Image.new("L", (30, 50), 128).save(tmp_path / "gray.png")
    Image.new("RGBA", (64, 128), (255, 0, 0, 10)).save(tmp_path / "rgba.png")
    Image.new("RGB", (300, 600), (0, 0, 255)).save(tmp_path / "big.jpg")
    Image.new("RGB", (37, 81), (200, 100, 50)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    Image.new("L", (33, 77), 90).save(tmp_path / "gray_odd.jpg")
    (tmp_path / "annotations.csv").write_text(
        "path,split,id,gender,age,physique,height,body,arm,expression\n"
        "gray.png,train,1,,,,,,,\nrgba.png,train,2,,,,,,,\nbig.jpg,train,-1,,,,,,,\n"
        "cmyk.jpg,train,-1,,,,,,,\ngray_odd.jpg,train,-1,,,,,,,\n"
    )
    ann = read_annotations(tmp_path / "annotations.csv")
    ((images, labels),) = batches(make_dataset(ann, "train", batch_size=5, training=False))
    assert images.shape == (5, 256, 128, 3)
    np.testing.assert_array_equal(images[0], np.full([256, 128, 3], 128))
    np.testing.assert_array_equal(images[1][..., 0], np.full([256, 128], 255))
    assert abs(images[2][..., 2].mean() - 254) < 2
    assert np.abs(images[3] - [200, 100, 50]).max() <= 2  # CMYK JPEG -> RGB
    np.testing.assert_allclose(images[4], np.full([256, 128, 3], 90), atol=1)  # odd size, grayscale
    np.testing.assert_array_equal(labels["id"], [0, 1, -1, -1, -1])  # train: index into train_ids [1, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "Received: batch_size=0"),
        (dict(batch_size=15, num_replicas=2), "Received: num_replicas=2, batch_size=15"),
        (dict(batch_size=16, deterministic=True), "Received: seed=None"),
        (dict(batch_size=16, sampler="pk"), "Received: batch_size=16, p=16, k=4"),
        (dict(batch_size=16, image_size=(256,)), "Received: image_size=\\(256,\\)"),
        (dict(batch_size=16, erasing_probability=1.5), "Received: erasing_probability=1.5"),
        (dict(batch_size=16, padding=-1), "Received: padding=-1"),
    ],
)
def test_invalid_arguments(tiny_annotations, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(tiny_annotations, "train", training=True, **kwargs)


def test_padding_and_erasing_probability_reach_the_augmentation(tiny_annotations):
    ann = tiny_annotations

    def first_batch(**kwargs):
        ds = make_dataset(ann, "train", batch_size=16, training=True, seed=3, deterministic=True, **kwargs)
        return batches(ds, 1)[0]

    # No padding and no erasing: each training image is its decoded file, possibly mirrored.
    images, _ = first_batch(padding=0, erasing_probability=0.0)
    originals = {}
    for path in ann.paths("train"):
        pixels = tf.io.decode_jpeg(tf.io.read_file(path)).numpy().astype(np.float32)
        originals[pixels.tobytes()] = True
        originals[pixels[:, ::-1].tobytes()] = True
    assert all(image.tobytes() in originals for image in images)
    # The defaults shift and erase: most images then match no file.
    images, _ = first_batch()
    assert sum(image.tobytes() in originals for image in images) < len(images) // 2
    # Erasing always: every image carries a noise rectangle, so none equals its file.
    erased, _ = first_batch(padding=0, erasing_probability=1.0)
    assert not any(image.tobytes() in originals for image in erased)
