"""Training augmentation of the re-id recipe: pad-and-crop, horizontal flip, random erasing.

The paper trains with "random cropping, random horizontal flipping, and random erasing"
(§6.1) as in strong re-id baselines (Luo et al., "Bag of Tricks"; torchreid). Each
transform is split in two (as `keras.layers.RandomErasing` does): `*_params(seed, ...)`
draws the random parameters with stateless ops, and a second function applies them, so
a test can hand-build the parameters and the same seed always gives the same image.

Images are `[H, W, 3]` in 0..255, uint8 (as in the input pipeline) or float32; seeds are
int64 `[2]` (stateless RNG seeds).
"""

import tensorflow as tf

ERASE_PROBABILITY = 0.5
ERASE_AREA = (0.02, 0.4)
ERASE_MIN_ASPECT = 0.3
ERASE_ATTEMPTS = 100
PADDING = 10


def random_erasing_params(
    seed,
    image_size,
    probability=ERASE_PROBABILITY,
    area=ERASE_AREA,
    min_aspect=ERASE_MIN_ASPECT,
    attempts=ERASE_ATTEMPTS,
):
    """Draws one random-erasing rectangle (Zhong et al. 2020; torchreid `RandomErasing`).

    With probability `probability`, up to `attempts` rectangles are drawn: target area
    `uniform(*area) * H * W`, aspect ratio `r = uniform(min_aspect, 1 / min_aspect)`,
    `h = round(sqrt(area * r))`, `w = round(sqrt(area / r))`; the first with `w < W` and
    `h < H` is kept and placed at a uniform top-left corner. All attempts are drawn at
    once and the first valid one is picked, so the op is vectorised. When no attempt
    fits, or the coin says no, the rectangle is empty (`height = width = 0`).

    Args:
        seed: int64 `[2]`. Stateless RNG seed.
        image_size: (int, int). Image `(H, W)`.
        probability: float. Chance to erase. Defaults to `0.5`.
        area: (float, float). Range of the erased share of the image area.
            Defaults to `(0.02, 0.4)`.
        min_aspect: float. Aspect ratios are drawn in `[min_aspect, 1 / min_aspect]`.
            Defaults to `0.3`.
        attempts: int. Rectangles tried. Defaults to `100`.

    Returns:
        dict of scalars `top`, `left`, `height`, `width` (int32) and `fill`, uint8
        `[height, width, 3]` uniform over 0..255, the values written into the rectangle.
    """
    height, width = image_size
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"`probability` must be in [0, 1]. Received: probability={probability}")
    if not 0.0 < area[0] <= area[1] <= 1.0:
        raise ValueError(f"`area` must satisfy 0 < low <= high <= 1. Received: area={area}")
    if not 0.0 < min_aspect <= 1.0:
        raise ValueError(f"`min_aspect` must be in (0, 1]. Received: min_aspect={min_aspect}")
    seeds = tf.random.split(seed, 5)
    coin = tf.random.stateless_uniform([], seeds[0])
    target = tf.random.stateless_uniform([attempts], seeds[1], area[0], area[1]) * float(height * width)
    aspect = tf.random.stateless_uniform([attempts], seeds[2], min_aspect, 1.0 / min_aspect)
    # tf.round rounds half to even, like Python's round() in torchreid.
    h = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
    w = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    valid = (w < width) & (h < height)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)
    erase = (coin < probability) & tf.reduce_any(valid)
    h = tf.where(erase, h[first], 0)
    w = tf.where(erase, w[first], 0)
    corner = tf.random.stateless_uniform([2], seeds[3])
    top = tf.cast(tf.floor(corner[0] * tf.cast(height - h + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(corner[1] * tf.cast(width - w + 1, tf.float32)), tf.int32)
    # Noise only for the rectangle: a full-image draw would cost more than the erasing.
    fill = tf.random.stateless_uniform(tf.stack([h, w, 3]), seeds[4], 0, 256, dtype=tf.int32)
    fill = tf.cast(fill, tf.uint8)
    return {"top": top, "left": left, "height": h, "width": w, "fill": fill}


def erase(image, params):
    """Replaces the rectangle of `params` (from `random_erasing_params`) by its fill.

    Args:
        image: `[H, W, C]`, any dtype.
        params: dict with int32 scalars `top`, `left`, `height`, `width` (the
            rectangle must lie inside the image) and `fill`, broadcastable to
            `[height, width, C]` (cast to the image dtype).

    Returns:
        `[H, W, C]`, the dtype of `image`.
    """
    top, left, h, w = params["top"], params["left"], params["height"], params["width"]

    def paste():
        # Slicing and concatenating copies the image once; a full-size mask and
        # `tf.where` is about twice as slow.
        fill = tf.broadcast_to(tf.cast(params["fill"], image.dtype), tf.stack([h, w, tf.shape(image)[2]]))
        band = image[top : top + h]
        band = tf.concat([band[:, :left], fill, band[:, left + w :]], axis=1)
        return tf.concat([image[:top], band, image[top + h :]], axis=0)

    return tf.cond((h > 0) & (w > 0), paste, lambda: image)


def crop_flip_params(seed, padding=PADDING):
    """Draws a pad-and-crop offset and a horizontal flip.

    Args:
        seed: int64 `[2]`. Stateless RNG seed.
        padding: int. Zero padding on each side before cropping back. Defaults to `10`.

    Returns:
        dict: `top`, `left` int32 scalars in `[0, 2 * padding]` (crop corner in the
        padded image), `flip` bool scalar (p = 0.5).
    """
    seeds = tf.random.split(seed, 2)
    corner = tf.random.stateless_uniform([2], seeds[0], 0, 2 * padding + 1, dtype=tf.int32)
    flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
    return {"top": corner[0], "left": corner[1], "flip": flip}


def crop_flip(image, params, padding=PADDING):
    """Flips `image` if `params["flip"]`, zero-pads it by `padding` and crops back.

    Args:
        image: `[H, W, C]` with a static shape, any dtype.
        params: dict from `crop_flip_params`.
        padding: int. Must match the one given to `crop_flip_params`.

    Returns:
        `[H, W, C]`, the dtype of `image`.
    """
    height, width, channels = image.shape
    image = tf.cond(params["flip"], lambda: tf.reverse(image, axis=[1]), lambda: image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.slice(padded, [params["top"], params["left"], 0], [height, width, channels])


def augment(image, seed, padding=PADDING, erasing_probability=ERASE_PROBABILITY):
    """The training transform: flip, pad-and-crop, then random erasing (as torchreid).

    Args:
        image: `[H, W, 3]` in 0..255 with a static shape, uint8 or float32.
        seed: int64 `[2]`. Stateless RNG seed; the same seed gives the same output.
        padding: int. Pad-and-crop padding. Defaults to `10`.
        erasing_probability: float. Chance of random erasing. Defaults to `0.5`.

    Returns:
        `[H, W, 3]`, the dtype of `image`.
    """
    seeds = tf.random.split(seed, 2)
    image = crop_flip(image, crop_flip_params(seeds[0], padding), padding)
    params = random_erasing_params(seeds[1], image.shape[:2], probability=erasing_probability)
    return tf.ensure_shape(erase(image, params), image.shape)
