"""Augmentation: random erasing statistics and exact placement, pad-crop-flip, seeding."""

import numpy as np
import pytest
import tensorflow as tf

from portrait_keras.data import augment

H, W = 256, 128


def erasing_draws(count, image_size=(H, W), **kwargs):
    """`random_erasing_params` for seeds (0, 0) .. (count - 1, 0), fill left out."""

    def draw(i):
        params = augment.random_erasing_params(tf.stack([i, tf.constant(0, tf.int64)]), image_size, **kwargs)
        params.pop("fill")
        return params

    dataset = tf.data.Dataset.range(count).map(draw).batch(count)
    return {k: v.numpy() for k, v in next(iter(dataset)).items()}


def test_erasing_statistics_follow_the_recipe():
    draws = erasing_draws(4000)
    erased = draws["height"] > 0
    assert 0.47 < erased.mean() < 0.53  # probability 0.5
    h, w = draws["height"][erased], draws["width"][erased]
    share = h * w / (H * W)
    # Rounding h and w moves the area slightly off the drawn [0.02, 0.4] * H * W.
    assert share.min() >= 0.02 * 0.9 and share.max() <= 0.4 * 1.1
    assert (h < H).all() and (w < W).all()
    assert ((h / w) > 0.3 * 0.8).all() and ((h / w) < (1 / 0.3) * 1.25).all()
    top, left = draws["top"][erased], draws["left"][erased]
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= H).all() and (left + w <= W).all()
    # The corner is uniform over the free range, so it reaches both ends.
    assert (top == 0).any() and (top + h == H).any()


@pytest.mark.parametrize("probability, expected", [(0.0, 0.0), (1.0, 1.0)])
def test_erasing_probability_extremes(probability, expected):
    draws = erasing_draws(300, probability=probability)
    assert (draws["height"] > 0).mean() == expected


def test_erasing_takes_the_first_attempt_that_fits():
    size = (20, 6)  # narrow: many attempts are too wide
    needed_retry = 0
    for i in range(20):
        seed = tf.constant([i, 0], tf.int64)
        params = augment.random_erasing_params(seed, size, probability=1.0)
        seeds = tf.random.split(seed, 5)
        target = tf.random.stateless_uniform([100], seeds[1], 0.02, 0.4).numpy() * 120
        aspect = tf.random.stateless_uniform([100], seeds[2], 0.3, 1 / 0.3).numpy()
        h = np.round(np.sqrt(target * aspect))  # half to even, as Python's round()
        w = np.round(np.sqrt(target / aspect))
        first = np.flatnonzero((w < size[1]) & (h < size[0]))[0]
        needed_retry += first > 0
        assert (int(params["height"]), int(params["width"])) == (h[first], w[first])
    assert needed_retry >= 3


def test_erasing_fill_is_uniform_over_pixel_values():
    seeds = [tf.constant([i, 1], tf.int64) for i in range(40)]
    fills = [augment.random_erasing_params(seed, (H, W), probability=1.0)["fill"] for seed in seeds]
    values = np.concatenate([f.numpy().ravel() for f in fills])
    assert fills[0].dtype == tf.uint8
    assert values.min() == 0 and values.max() == 255
    assert abs(values.mean() - 127.5) < 2


def test_erase_applies_hand_built_parameters_exactly():
    image = tf.reshape(tf.range(6 * 5 * 3, dtype=tf.float32), [6, 5, 3])
    params = {"top": 2, "left": 1, "height": 3, "width": 2, "fill": tf.constant(-1.0)}
    out = augment.erase(image, params).numpy()
    expected = image.numpy().copy()
    expected[2:5, 1:3] = -1.0
    np.testing.assert_array_equal(out, expected)


def test_erase_with_empty_rectangle_is_identity():
    image = tf.random.uniform([8, 4, 3], 0, 255)
    params = {"top": 3, "left": 2, "height": 0, "width": 0, "fill": tf.zeros([0, 0, 3], tf.uint8)}
    np.testing.assert_array_equal(augment.erase(image, params), image)


def test_crop_flip_hand_built():
    image = tf.reshape(tf.range(4 * 3, dtype=tf.float32), [4, 3, 1])
    centred = {"top": 10, "left": 10, "flip": tf.constant(False)}
    np.testing.assert_array_equal(augment.crop_flip(image, centred), image)
    mirrored = {"top": 10, "left": 10, "flip": tf.constant(True)}
    np.testing.assert_array_equal(augment.crop_flip(image, mirrored), image.numpy()[:, ::-1])
    shifted = augment.crop_flip(image, {"top": 9, "left": 11, "flip": tf.constant(False)}).numpy()
    expected = np.zeros([4, 3, 1], np.float32)
    expected[1:, :2] = image.numpy()[:3, 1:]
    np.testing.assert_array_equal(shifted, expected)


def test_crop_flip_params_cover_the_padding_range():
    draws = [augment.crop_flip_params(tf.constant([i, 2], tf.int64)) for i in range(400)]
    tops = np.array([int(d["top"]) for d in draws])
    flips = np.array([bool(d["flip"]) for d in draws])
    assert tops.min() == 0 and tops.max() == 20
    assert 0.4 < flips.mean() < 0.6


def test_augment_is_a_function_of_the_seed():
    image = tf.cast(tf.random.uniform([H, W, 3], 0, 256, dtype=tf.int32), tf.uint8)
    a = augment.augment(image, tf.constant([1, 2], tf.int64))
    b = augment.augment(image, tf.constant([1, 2], tf.int64))
    c = augment.augment(image, tf.constant([1, 3], tf.int64))
    assert a.dtype == tf.uint8 and a.shape == (H, W, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_augment_maps_over_tf_data():
    images = tf.data.Dataset.from_tensors(tf.zeros([H, W, 3], tf.uint8)).repeat(64)
    seeds = tf.data.Dataset.range(64).map(lambda i: tf.stack([i, i]))
    dataset = tf.data.Dataset.zip(images, seeds).map(augment.augment).batch(64)
    batch = next(iter(dataset)).numpy()
    erased = (batch > 0).reshape(64, -1).any(axis=1)
    assert batch.shape == (64, H, W, 3) and 0.2 < erased.mean() < 0.8


def test_invalid_erasing_arguments():
    seed = tf.constant([0, 0], tf.int64)
    with pytest.raises(ValueError, match="Received: probability=1.5"):
        augment.random_erasing_params(seed, (H, W), probability=1.5)
    with pytest.raises(ValueError, match=r"Received: area=\(0.5, 0.2\)"):
        augment.random_erasing_params(seed, (H, W), area=(0.5, 0.2))
