"""Image files: the one decoder and resize of every view of an image (training, serving, baselines, plots).

`decode_image_file` decodes any image file to uint8 RGB at its own size (JPEG, PNG, BMP, GIF by
TensorFlow as the tf.data pipeline does; TIFF, PGM, WebP... by Pillow; 16- and 32-bit pixels
scaled to 8 bits); `read_image` also resizes it to a model's input size as training does.
"""

import io
import os

import numpy as np

from portrait_keras.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def image_files_below(folder):
    """Every image file below `folder` (extensions `IMAGE_EXTENSIONS`, hidden files skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            os.path.join(root, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found)


def _to_uint8(values, mode, path):
    """Pillow's 16-bit (`I;16*`) and 32-bit (`I`, `F`) pixel values as uint8 (`decode_image_file`)."""
    if mode.startswith("I;16"):
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    values = values.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 65535:
        raise InputError(
            f"{path}: cannot decode this file as an image: {'float' if mode == 'F' else '32-bit integer'} "
            f"pixel values in [{low:g}, {high:g}] are in no range to scale to 8 bits (0-1, 0-255 or "
            f"0-65535 are). Convert it to an 8-bit image."
        )
    if mode == "F" and high <= 1.0:
        return np.round(values * 255).astype(np.uint8)
    if high <= 255:
        return np.round(values).astype(np.uint8)
    return np.floor(values / 256).astype(np.uint8)  # 16-bit values: their high byte, as TensorFlow's


def _decode_with_pillow(path, data):
    from PIL import Image, UnidentifiedImageError

    from portrait_keras.data.pipeline import describe_image_file

    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            if not (mode.startswith("I;16") or mode in ("I", "F")):
                return np.asarray(image.convert("RGB"))
            values = np.asarray(image)  # convert("RGB") would clip these to 255: white
    except Image.DecompressionBombError as e:  # not an OSError
        raise InputError(f"{path}: cannot decode this file as an image: too large ({e})") from None
    except Exception as e:  # Pillow's decoders fail in many ways (OSError, SyntaxError, ...) on a bad file
        # The training pipeline's words (zero bytes, not an image, truncated JPEG) when it
        # knows the format; Pillow's for the formats only Pillow reads.
        reason = describe_image_file(path)
        if reason is None:
            unknown = isinstance(e, UnidentifiedImageError)
            reason = "no format TensorFlow or Pillow reads" if unknown else str(e) or type(e).__name__
        raise InputError(f"{path}: cannot decode this file as an image: {reason}") from None
    return np.repeat(_to_uint8(values, mode, path)[..., None], 3, axis=-1)


def decode_image_file(path):
    """Decodes one image file to uint8 `[H, W, 3]` at its own size, as the model sees it.

    The one decoder of every view of an image (`read_image` for the model, the rank-list tiles
    of `plots`, the pixel baseline of `baselines`). JPEG, PNG, BMP and GIF (first frame) are
    decoded by TensorFlow exactly as the training pipeline does (`portrait_keras.data.pipeline.
    decode`); other formats (TIFF, PGM, ...) by Pillow. Grayscale and RGBA become RGB.

    Deeper pixels become 8-bit as TensorFlow makes a 16-bit PNG 8-bit: a 16-bit value keeps
    its high byte (`v >> 8`). Pillow's 32-bit modes (`I` integer, `F` float) are scaled from
    the range their values lie in: a float image in [0, 1] is multiplied by 255; values in
    [0, 255] are kept; values in [0, 65535] are taken as 16-bit. Negative, non-finite or larger
    values have no such range: the image is refused (`InputError`).

    Args:
        path: str or path-like.

    Raises: `InputError` naming `path` when it cannot be read or decoded (or is larger than
        Pillow decodes, `PIL.Image.MAX_IMAGE_PIXELS`).
    """
    import tensorflow as tf

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read the file ({e.strerror or e})") from None
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return _decode_with_pillow(path, data)


def read_image(path, image_size):
    """Reads one image file as uint8 `[H, W, 3]` of `image_size`.

    Decoded by `decode_image_file` (JPEG, PNG, BMP and GIF as the training pipeline does, other
    formats by Pillow, 16- and 32-bit images scaled to 8 bits); another size is resized
    (bilinear, antialiased), without keeping the aspect ratio, as in training.

    Args:
        path: str or path-like.
        image_size: (int, int). `(height, width)`.

    Raises: `InputError` naming `path` when it cannot be read or decoded.
    """
    import tensorflow as tf

    image = decode_image_file(path)
    if tuple(image.shape[:2]) != tuple(image_size):
        # The same resize as `pipeline.decode`, so a served image matches a training one.
        image = tf.saturate_cast(tf.round(tf.image.resize(image, image_size, antialias=True)), tf.uint8).numpy()
    return image


def read_images(paths, image_size):
    """`read_image` for each path, stacked: uint8 `[N, H, W, 3]`."""
    images = [read_image(p, image_size) for p in paths]
    if not images:
        return np.zeros((0, *image_size, 3), np.uint8)
    return np.stack(images)
