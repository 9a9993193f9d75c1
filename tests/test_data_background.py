"""Background removal (paper 002 §6.3): the `mask` column, `remove_background` in the pipeline,
SynthPortrait's masks, `data.background` and the `fss_uncert_bgmean` experiment."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from portrait_keras import experiments
from portrait_keras.config import DataConfig
from portrait_keras.data import make_dataset, read_annotations
from portrait_keras.data.annotations import AnnotationError
from portrait_keras.data.images import decode
from portrait_keras.data.pipeline import _gaussian_blur, read_mask, remove_background
from portrait_keras.data.synthportrait import generate


@pytest.fixture(scope="module")
def masked_synth(tmp_path_factory):
    """A small SynthPortrait with masks, and the same one without: `(csv, plain csv)`."""
    root = tmp_path_factory.mktemp("masked")
    masked = generate(root / "masked", identities=4, seed=3, images_per_identity=4, workers=1, masks=True)
    plain = generate(root / "plain", identities=4, seed=3, images_per_identity=4, workers=1)
    return masked, plain


def _image_and_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)
    mask = np.zeros((32, 16, 1), np.float32)
    mask[8:24, 4:12] = 1
    return image, mask


def test_mean_fills_the_background_with_its_mean_colour_and_keeps_the_person():
    image, mask = _image_and_mask()
    out = remove_background(tf.constant(image), tf.constant(mask), "mean").numpy()
    person = mask[..., 0] == 1
    np.testing.assert_array_equal(out[person], image[person])
    expected = np.round(image[~person].astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(out[~person], np.broadcast_to(expected, out[~person].shape), atol=0.5)
    np.testing.assert_array_equal(remove_background(tf.constant(image), tf.constant(mask), "keep"), image)


def test_blur_fills_the_background_with_the_blurred_image():
    image, mask = _image_and_mask()
    out = remove_background(tf.constant(image), tf.constant(mask), "blur").numpy()
    person = mask[..., 0] == 1
    np.testing.assert_array_equal(out[person], image[person])
    blurred = _gaussian_blur(tf.constant(image, tf.float32), 1.0).numpy()  # min(32, 16) / 16
    np.testing.assert_allclose(out[~person], np.round(blurred[~person]), atol=1)
    # Blurred noise is much smoother than the noise; a flat image stays flat.
    assert (
        np.abs(np.diff(out[~person].astype(float), axis=0)).mean()
        < 0.6 * np.abs(np.diff(image[~person], axis=0)).mean()
    )
    flat = tf.fill([32, 16, 3], 90.0)
    np.testing.assert_allclose(_gaussian_blur(flat, 2.0).numpy(), 90.0, atol=1e-3)
    with pytest.raises(ValueError, match="Received: background='grey'"):
        remove_background(tf.constant(image), tf.constant(mask), "grey")


@pytest.mark.parametrize("shape, sigma", [((256, 128), 8.0), ((64, 32), 2.0), ((32, 16), 1.0)])
def test_the_blur_is_a_reflect_padded_separable_gaussian(shape, sigma):
    radius = max(1, int(round(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel = tf.constant(np.tile((kernel / kernel.sum()).astype(np.float32)[:, None, None], [1, 3, 1]))
    image = tf.random.stateless_uniform([*shape, 3], seed=[1, 2], maxval=255.0)
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.nn.depthwise_conv2d(padded, kernel[:, None], [1, 1, 1, 1], "VALID")
    expected = tf.nn.depthwise_conv2d(rows, kernel[None], [1, 1, 1, 1], "VALID")[0]
    np.testing.assert_allclose(_gaussian_blur(image, sigma).numpy(), expected.numpy(), atol=2e-3)


def test_read_mask_thresholds_and_an_empty_path_is_no_mask(tmp_path):
    pixels = np.zeros((64, 32), np.uint8)
    pixels[:, 16:] = 200
    Image.fromarray(pixels).save(tmp_path / "m.png")
    mask = read_mask(tf.constant(str(tmp_path / "m.png")), (32, 16)).numpy()
    assert mask.shape == (32, 16, 1) and set(np.unique(mask)) == {0.0, 1.0}
    assert mask[:, :8].max() == 0 and mask[:, 8:].min() == 1
    assert read_mask(tf.constant(""), (32, 16)).numpy().min() == 1


def test_the_pipeline_replaces_the_background_where_the_mask_is_0(masked_synth):
    annotations = read_annotations(masked_synth[0])
    assert annotations.has_masks and annotations.background == "keep"
    mean = annotations.with_background("mean")
    assert annotations.background == "keep"  # a copy
    paths, masks = annotations.paths("train"), annotations.masks("train")
    assert all(m.endswith(".png") and os.path.isfile(m) for m in masks)
    (kept, _), *_ = make_dataset(annotations, "train", batch_size=8, training=False)
    (removed, _), *_ = make_dataset(mean, "train", batch_size=8, training=False)
    for i in range(8):
        original = decode(paths[i], (256, 128)).numpy()
        person = np.asarray(Image.open(masks[i])) > 127
        assert 0.05 < person.mean() < 0.6
        np.testing.assert_array_equal(kept[i], original)
        np.testing.assert_array_equal(removed[i][person], original[person])
        background = removed[i][~person]
        np.testing.assert_allclose(background, np.broadcast_to(background[0], background.shape))
        np.testing.assert_allclose(background[0], np.round(original[~person].mean(axis=0)), atol=0.5)
    # Training batches too (no erasing, no padding: only a flip): the background is flat.
    (train, _), *_ = make_dataset(
        mean, "train", batch_size=8, training=True, seed=0, erasing_probability=0.0, padding=0
    )
    assert all(np.unique(img[0, 0:4].reshape(-1, 3), axis=0).shape[0] <= 2 for img in train.numpy())


def test_synthportrait_masks_leave_the_images_unchanged(masked_synth):
    masked, plain = read_annotations(masked_synth[0]), read_annotations(masked_synth[1])
    assert not plain.has_masks and "mask" not in plain.table.columns
    for a, b in zip(masked.paths("train")[:10], plain.paths("train")[:10]):
        assert open(a, "rb").read() == open(b, "rb").read()


def test_a_bad_mask_path_names_the_file_and_line(masked_synth, tmp_path):
    folder = os.path.dirname(masked_synth[0])
    lines = open(masked_synth[0]).read().splitlines()
    header, row = lines[0], lines[2].split(",")
    row[-1] = "masks/nowhere.png"
    csv = os.path.join(folder, "bad_mask.csv")
    with open(csv, "w") as f:
        f.write("\n".join([header, lines[1], ",".join(row), lines[3].rsplit(",", 1)[0] + ","]) + "\n")
    with pytest.raises(AnnotationError) as error:
        read_annotations(csv)
    assert f"{csv}:3: column 'mask': value 'masks/nowhere.png': missing mask file" in str(error.value)
    assert len(error.value.problems) == 1  # line 4's empty mask is none
    row[-1] = "../outside.png"
    with open(csv, "w") as f:
        f.write("\n".join([header, ",".join(row)]) + "\n")
    with pytest.raises(AnnotationError, match=r":2: column 'mask': value '../outside.png': expected a mask image path"):
        read_annotations(csv)


def test_background_config_and_experiment(masked_synth):
    assert DataConfig().background == "keep"
    with pytest.raises(ValueError) as error:
        DataConfig(background="blurred")
    assert "data.background" in str(error.value) and "keep, mean, blur" in str(error.value)
    config = experiments.get("fss_uncert_bgmean")
    assert config.data.background == "mean"
    assert dataclasses.replace(config.data, background="keep") == experiments.get("fss_uncert").data
    with pytest.raises(ValueError, match="Received: background='grey'"):
        read_annotations(masked_synth[0]).with_background("grey")
