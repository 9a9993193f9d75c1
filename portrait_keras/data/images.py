"""Image files: the one decoder and resize of every view of an image (training, serving, baselines, plots).

`decode_image_file` decodes any image file to uint8 RGB at its own size (JPEG, PNG, BMP, GIF by
TensorFlow as the tf.data pipeline does; TIFF, PGM, WebP... by Pillow; 16- and 32-bit pixels
scaled to 8 bits; upright by its EXIF orientation); `read_image` also resizes it to a model's
input size as training does. A file that cannot be read or decoded raises `ImageFileError`;
`read_images(..., on_bad_image=...)` leaves such files out instead.
"""

import io
import os
import re
from typing import NamedTuple

import numpy as np

from portrait_keras.errors import InputError


class ImageFileError(InputError):
    """An image file that cannot be read or decoded; the message names it and says why.

    Attributes:
        path: str. The file.
        reason: str. Why, in a few words: `"zero bytes"`, `"cannot read the file (Permission
            denied)"`, `"corrupt or truncated JPEG data (...)"`...
    """

    def __init__(self, path, reason, message=None):
        super().__init__(message or f"{path}: cannot decode this file as an image: {reason}")
        self.path, self.reason = path, reason


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
        raise ImageFileError(
            path,
            f"{'float' if mode == 'F' else '32-bit integer'} pixel values in [{low:g}, {high:g}] are in "
            f"no range to scale to 8 bits (0-1, 0-255 or 0-65535 are). Convert it to an 8-bit image.",
        )
    if mode == "F" and high <= 1.0:
        return np.round(values * 255).astype(np.uint8)
    if high <= 255:
        return np.round(values).astype(np.uint8)
    return np.floor(values / 256).astype(np.uint8)  # 16-bit values: their high byte, as TensorFlow's


def _decode_with_pillow(path, data):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            if not (mode.startswith("I;16") or mode in ("I", "F")):
                return np.asarray(image.convert("RGB"))
            values = np.asarray(image)  # convert("RGB") would clip these to 255: white
    except Image.DecompressionBombError as e:  # not an OSError
        raise ImageFileError(path, f"too large ({e})") from None
    except Exception as e:  # Pillow's decoders fail in many ways (OSError, SyntaxError, ...) on a bad file
        # The training pipeline's words (zero bytes, not an image, truncated JPEG) when it
        # knows the format; Pillow's for the formats only Pillow reads.
        reason = describe_image_file(path)
        if reason is None:
            unknown = isinstance(e, UnidentifiedImageError)
            reason = "no format TensorFlow or Pillow reads" if unknown else str(e) or type(e).__name__
        raise ImageFileError(path, reason) from None
    return np.repeat(_to_uint8(values, mode, path)[..., None], 3, axis=-1)


def decode_image_file(path):
    """Decodes one image file to uint8 `[H, W, 3]` at its own size, as the model sees it.

    The one decoder of every view of an image (`read_image` for the model, the rank-list tiles
    of `plots`, the pixel baseline of `baselines`). JPEG, PNG, BMP and GIF (first frame) are
    decoded by TensorFlow exactly as the training pipeline does (`portrait_keras.data.pipeline.
    decode`); other formats (TIFF, PGM, ...) by Pillow. Grayscale and RGBA become RGB. An EXIF
    orientation (a phone photo stored sideways) is applied, so the person stands upright. The
    input pipeline (training, evaluation) applies it too, for the JPEG files cameras write
    (`upright`); an EXIF orientation in a PNG, WebP or TIFF file is applied here only.

    Deeper pixels become 8-bit as TensorFlow makes a 16-bit PNG 8-bit: a 16-bit value keeps
    its high byte (`v >> 8`). Pillow's 32-bit modes (`I` integer, `F` float) are scaled from
    the range their values lie in: a float image in [0, 1] is multiplied by 255; values in
    [0, 255] are kept; values in [0, 65535] are taken as 16-bit. Negative, non-finite or larger
    values have no such range: the image is refused (`ImageFileError`).

    Args:
        path: str or path-like.

    Raises: `ImageFileError` naming `path` when it cannot be read or decoded (or is larger than
        Pillow decodes, `PIL.Image.MAX_IMAGE_PIXELS`).
    """
    import tensorflow as tf

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        reason = f"cannot read the file ({e.strerror or e})"
        raise ImageFileError(path, reason, f"{path}: {reason}") from None
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        image = _decode_with_pillow(path, data)
    return apply_orientation(image, exif_orientation(data))


# EXIF orientation (tag 0x0112) → the transform that shows the image upright, as
# PIL.ImageOps.exif_transpose applies it: 1 upright, 2 mirrored, 3 upside down, 4 flipped,
# 5 transposed, 6 turned right, 7 transversed, 8 turned left.
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def exif_orientation(data):
    """The EXIF orientation (1-8) of an image file's bytes; 1 when it has none (reads the header only)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            value = image.getexif().get(0x0112, 1)
    except Exception:  # no EXIF, or one Pillow cannot parse: shown as stored
        return 1
    return value if value in _ORIENTATIONS else 1


# The EXIF orientation of a JPEG read in the TensorFlow graph (`decode`, the input pipeline):
# the APP1 "Exif" segment right after the start marker (as cameras write it) or after a JFIF
# APP0 segment (as editors do), its TIFF header ("II" little-endian, "MM" big-endian), the
# first image directory and its Orientation entry (tag 0x0112, type SHORT). A file without
# such a segment (dataset crops) costs a few string comparisons: the parse sits in a `tf.cond`.
_EXIF_APP1 = (b"\xff\xe1", b"Exif\x00\x00")
_MAX_IFD_ENTRIES = 64


def _bytes_at(data, size, position, n):
    """int64 `[n]`: the bytes `data[position:position + n]`, zeros past either end."""
    import tensorflow as tf

    inside = (position >= 0) & (position < size)
    raw = tf.io.decode_raw(tf.strings.substr(data, tf.where(inside, position, size), n), tf.uint8)
    return tf.reshape(tf.pad(tf.cast(raw, tf.int64), [[0, n - tf.shape(raw, out_type=tf.int64)[0]]]), [n])


def _tiff_number(values, little_endian):
    """Unsigned integers of TIFF bytes `[..., k]` in the file's byte order."""
    import tensorflow as tf

    k = values.shape[-1]
    weights = tf.constant([256**i for i in range(k)], tf.int64)
    return tf.where(
        little_endian, tf.reduce_sum(values * weights, -1), tf.reduce_sum(values * tf.reverse(weights, [0]), -1)
    )


def _tiff_orientation(data, tiff):
    """The Orientation entry (1-8) of the first image directory of the TIFF header at byte
    `tiff` of `data`; 1 when it has none or the header is not one."""
    import tensorflow as tf

    size = tf.cast(tf.strings.length(data), tf.int64)
    header = _bytes_at(data, size, tiff, 8)
    little = (header[0] == 0x49) & (header[1] == 0x49)
    big = (header[0] == 0x4D) & (header[1] == 0x4D)
    directory = tiff + _tiff_number(header[4:8], little)
    count = _tiff_number(_bytes_at(data, size, directory, 2), little)
    entries = tf.reshape(_bytes_at(data, size, directory + 2, 12 * _MAX_IFD_ENTRIES), [_MAX_IFD_ENTRIES, 12])
    hit = (
        (tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64) < count)
        & (_tiff_number(entries[:, 0:2], little) == 0x0112)
        & (_tiff_number(entries[:, 2:4], little) == 3)
    )
    value = tf.reduce_max(tf.where(hit, _tiff_number(entries[:, 8:10], little), 0))
    return tf.where((little | big) & (value >= 2) & (value <= 8), value, tf.constant(1, tf.int64))


def upright(image, data):
    """`image` turned upright by the EXIF orientation of its JPEG file, in the TensorFlow graph.

    What `decode_image_file` does with Pillow's reading of the orientation (`exif_orientation`,
    `apply_orientation`), for the JPEG files the input pipeline decodes, where they carry it: an
    APP1 "Exif" segment right after the start marker or after a JFIF segment. Other files (PNG,
    WebP, ...) are left as they are.

    Args:
        image: uint8 `[H, W, C]`, decoded from `data`.
        data: scalar tf.string. The file's bytes.

    Returns: uint8 `[H, W, C]`, or `[W, H, C]` for the orientations 5-8.
    """
    import tensorflow as tf

    marker, magic = _EXIF_APP1
    size = tf.cast(tf.strings.length(data), tf.int64)

    def substr(position, n):
        return tf.strings.substr(data, tf.minimum(tf.cast(position, tf.int64), size), n)

    def exif_at(position):
        return (substr(position, 2) == marker) & (substr(position + 4, 6) == magic)

    length = _bytes_at(data, size, tf.constant(4, tf.int64), 2)  # of the segment after the start marker
    after_jfif = 4 + length[0] * 256 + length[1]
    first = exif_at(2)
    second = (substr(2, 2) == b"\xff\xe0") & exif_at(after_jfif)
    segment = tf.where(first, tf.constant(2, tf.int64), after_jfif)
    return tf.cond(
        (substr(0, 3) == b"\xff\xd8\xff") & (first | second),
        lambda: orient(image, _tiff_orientation(data, segment + 10)),
        lambda: image,
    )


def orient(image, orientation):
    """`apply_orientation` in the TensorFlow graph: `[H, W, C]` turned upright for a scalar
    int `orientation` (1-8; 1 leaves it as it is)."""
    import tensorflow as tf

    def transpose(a):
        # An einsum in float32: TensorFlow's oneDNN Transpose logs an E0000 line for uint8, and
        # Grappler moves a float Transpose between casts back onto the uint8 values.
        return tf.cast(tf.einsum("hwc->whc", tf.cast(a, tf.float32)), a.dtype)

    branches = [
        lambda: image,
        lambda: tf.reverse(image, [1]),
        lambda: tf.reverse(image, [0, 1]),
        lambda: tf.reverse(image, [0]),
        lambda: transpose(image),
        lambda: tf.reverse(transpose(image), [1]),
        lambda: transpose(tf.reverse(image, [0, 1])),
        lambda: tf.reverse(transpose(image), [0]),
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32) - 1, 0, 7)
    return tf.switch_case(index, branches)


def apply_orientation(image, orientation):
    """uint8 `[H, W, 3]` turned upright for an EXIF `orientation` (1 leaves it as it is).

    Example:
    >>> a = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    >>> apply_orientation(a, 6)[..., 0].tolist()  # stored turned left: shown turned right
    [[3, 0], [4, 1], [5, 2]]
    """
    transform = _ORIENTATIONS.get(orientation)
    return image if transform is None else np.ascontiguousarray(transform(image))


def resize(image, image_size):
    """uint8 `[H, W, 3]` (or a batch `[B, H, W, 3]`) → uint8 `[*image_size, 3]`: bilinear,
    antialiased, rounded (a TF tensor).

    The one resize of training (`decode`) and serving (`read_image`, and the SavedModel's
    `serve` endpoint inside its graph, `serving.export.uint8_endpoint`).
    """
    import tensorflow as tf

    return tf.saturate_cast(tf.round(tf.image.resize(image, image_size, antialias=True)), tf.uint8)


def read_image(path, image_size):
    """Reads one image file as uint8 `[H, W, 3]` of `image_size`.

    Decoded by `decode_image_file` (JPEG, PNG, BMP and GIF as the training pipeline does, other
    formats by Pillow, 16- and 32-bit images scaled to 8 bits); another size is resized
    (bilinear, antialiased), without keeping the aspect ratio, as in training.

    Args:
        path: str or path-like.
        image_size: (int, int). `(height, width)`.

    Raises: `ImageFileError` naming `path` when it cannot be read or decoded.
    """

    image = decode_image_file(path)
    if tuple(image.shape[:2]) != tuple(image_size):
        image = resize(image, image_size).numpy()
    return image


def read_images(paths, image_size, on_bad_image=None):
    """`read_image` for each path, stacked: uint8 `[N, H, W, 3]`.

    Args:
        paths: sequence of str or path-like.
        image_size: (int, int). `(height, width)`.
        on_bad_image: callable or None. Called with an `UnreadableImage` (its index in `paths`,
            path and reason) for each file that cannot be read or decoded, which is then left
            out: `N` counts the readable files. None raises the `ImageFileError` of the first.
            Defaults to `None`.
    """
    images = []
    for index, path in enumerate(paths):
        try:
            images.append(read_image(path, image_size))
        except ImageFileError as e:
            if on_bad_image is None:
                raise
            on_bad_image(UnreadableImage(index, os.fspath(path), e.reason))
    if not images:
        return np.zeros((0, *image_size, 3), np.uint8)
    return np.stack(images)


# === The input pipeline's decoder (TensorFlow graph) ===

# Leading bytes of the formats `tf.io.decode_image` reads ("One of JPEG, JPEG XL, PNG,
# GIF, BMP, WebP required"); a file starting otherwise cannot be an image.
SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG": "PNG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"RIFF": "WebP",
    b"\xff\x0a": "JPEG XL",
    b"\x00\x00\x00\x0cJXL ": "JPEG XL",
}
# Start of the assertion messages of `decode`; `naming_bad_images` looks for it.
UNREADABLE = "unreadable image file"


def _check_header(data, path):
    """`data` after asserting it is not empty and starts like an image file.

    The assertion message names `path`, which the decoder's own errors never do.
    """
    import tensorflow as tf

    known = tf.reduce_any(tf.stack([tf.strings.substr(data, 0, len(s)) == s for s in SIGNATURES]))
    checks = [
        tf.debugging.Assert(tf.strings.length(data) > 0, [f"{UNREADABLE} (zero bytes):", path]),
        tf.debugging.Assert(known, [f"{UNREADABLE} (not an image: no JPEG/PNG/GIF/BMP/WebP header):", path]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(data)


def decode(path, image_size):
    """Reads and decodes a JPEG/PNG/BMP/GIF/WebP file to uint8 `[H, W, 3]`.

    Grayscale, CMYK and RGBA images become RGB; a JPEG's EXIF orientation is applied
    (`upright`); images of another size are resized (bilinear, antialiased). An empty file
    or one without an image header raises `InvalidArgumentError` naming `path`; a corrupt
    body raises the decoder's error, which `naming_bad_images` turns into one that names
    the file.
    """
    import tensorflow as tf

    data = _check_header(tf.io.read_file(path), path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = upright(image, data)
    same = tf.reduce_all(tf.shape(image)[:2] == tf.constant(image_size))
    image = tf.cond(
        same,
        lambda: image,
        lambda: resize(image, image_size),
    )
    return tf.ensure_shape(image, [*image_size, 3])


class UnreadableImage(NamedTuple):
    """An image file the input pipeline cannot decode.

    Attributes:
        index: int. Position of the image in its split (`annotations.paths(split)`).
        path: str. Absolute file path.
        reason: str. What is wrong, e.g. `"zero bytes"`.
    """

    index: int
    path: str
    reason: str


def skipped_images_line(skipped, shown=10):
    """One line naming unreadable images, as `SkippedImagesLogger` does during training.

    Example:
    >>> skipped_images_line([UnreadableImage(0, "a.jpg", "zero bytes")] * 3, shown=2)
    'skipped 3 unreadable images: a.jpg (zero bytes), a.jpg (zero bytes), and 1 more'
    """
    names = ", ".join(f"{b.path} ({b.reason})" for b in skipped[:shown])
    more = len(skipped) - shown
    count = len(skipped)
    return f"skipped {count} unreadable image{'s' if count != 1 else ''}: {names}" + (
        f", and {more} more" if more > 0 else ""
    )


def describe_image_file(path):
    """Why the input pipeline cannot decode the file at `path`, or None when it can.

    Returns: str or None, e.g. `"missing file"`, `"zero bytes"`, `"not an image (starts
    with b'hello')"`, `"corrupt or truncated JPEG data (Invalid JPEG data or crop window.)"`.
    """
    import tensorflow as tf

    try:
        data = tf.io.read_file(path).numpy()
    except tf.errors.OpError as e:
        return "missing file" if isinstance(e, tf.errors.NotFoundError) else f"cannot be read: {_tf_message(e)}"
    if not data:
        return "zero bytes"
    kind = next((name for sig, name in SIGNATURES.items() if data.startswith(sig)), None)
    if kind is None:
        return f"not an image (starts with {data[:8]!r})"
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as e:
        return f"corrupt or truncated {kind} data ({_tf_message(e)})"
    return None


def _tf_message(error):
    """The op's own words, without TensorFlow's function and node decorations."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message)
    text = re.sub(r"\s*\[Op:.*$|\s*\[\[\{\{node.*$", "", text, flags=re.S)
    return text.replace("jpeg::Uncompress failed. ", "").strip()


def find_bad_images(paths):
    """Every file among `paths` that the input pipeline cannot decode, with the reason.

    Reads and decodes all files in parallel (`tf.data`, the decoder of training), then
    describes the few that failed (`describe_image_file`).

    Args:
        paths: sequence of str. Image files.

    Returns:
        list of `UnreadableImage`, by index.
    """
    import tensorflow as tf

    paths = np.asarray(paths, dtype=object)
    if not len(paths):
        return []
    table = tf.constant(paths.astype(str))

    def check(i):
        path = tf.gather(table, i)
        image = tf.io.decode_image(_check_header(tf.io.read_file(path), path), channels=3, expand_animations=False)
        # The shape is returned so that graph optimisation cannot drop the (stateless) decode.
        return i, tf.shape(image)

    good = np.zeros(len(paths), bool)
    dataset = tf.data.Dataset.range(len(paths)).map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    for indices, _ in dataset.ignore_errors().batch(4096):
        good[indices.numpy()] = True
    found = [(int(i), str(paths[i]), describe_image_file(str(paths[i]))) for i in np.flatnonzero(~good)]
    # A file that decodes on a second try had a passing read problem: not a bad image.
    return [UnreadableImage(*item) for item in found if item[2] is not None]


def is_image_error(error):
    """Whether a TensorFlow error inside a pipeline comes from reading or decoding an image."""
    import tensorflow as tf

    text = error.message
    return UNREADABLE in text or "Decode" in text or "ReadFile" in text or isinstance(error, tf.errors.NotFoundError)
