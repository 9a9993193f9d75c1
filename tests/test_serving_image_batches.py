"""`serving.predictor.read_image_batches`: the read-ahead reader of `embed` gives `read_image`'s pixels and errors."""

import io

import numpy as np
import pytest
from PIL import Image

from portrait_keras.data.images import ImageFileError, read_image
from portrait_keras.serving.predictor import read_image_batches

SIZE = (16, 8)


def _jpeg_bytes(array, exif_orientation=None):
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if exif_orientation is None:
        image.save(buffer, "JPEG", quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


@pytest.fixture
def files(tmp_path):
    """Readable files of every route (plain JPEG at and off size, EXIF JPEG, PNG, BMP, TIFF)
    and unreadable ones (empty, truncated JPEG, not an image, missing)."""
    rng = np.random.default_rng(0)

    def pixels(h=16, w=8):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    made = {
        "a.jpg": _jpeg_bytes(pixels()),
        "b_resized.jpg": _jpeg_bytes(pixels(40, 24)),
        "c_exif_rotated.jpg": _jpeg_bytes(pixels(8, 16), exif_orientation=6),  # upright: 16x8
        "d_empty.jpg": b"",
        "e_truncated.jpg": _jpeg_bytes(pixels())[:200],
        "f_text.jpg": b"hello, not an image",
        "i_plain.jpg": _jpeg_bytes(pixels()),
    }
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    Image.fromarray(pixels()).save(tmp_path / "g.png")
    Image.fromarray(pixels(20, 10)).save(tmp_path / "h.bmp")
    Image.fromarray(pixels()).save(tmp_path / "j.tif")
    paths = [str(tmp_path / n) for n in sorted([*made, "g.png", "h.bmp", "j.tif"])]
    paths.insert(6, str(tmp_path / "missing.jpg"))  # between two graph-decoded JPEGs
    return paths


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batches_hold_read_image_pixels_and_errors_in_order(files, batch_size):
    expected_images, expected_errors = {}, {}
    for i, path in enumerate(files):
        try:
            expected_images[i] = read_image(path, SIZE)
        except ImageFileError as e:
            expected_errors[i] = str(e)
    assert len(expected_errors) == 4 and len(expected_images) == len(files) - 4  # every route is exercised

    batches = list(read_image_batches(files, SIZE, batch_size))
    assert len(batches) == -(-len(files) // batch_size)
    seen = []
    for k, (positions, images, bad) in enumerate(batches):
        decided = sorted([*positions.tolist(), *(i for i, _ in bad)])
        assert decided == list(range(k * batch_size, min((k + 1) * batch_size, len(files))))  # aligned batches
        assert images.dtype == np.uint8 and images.shape == (len(positions), *SIZE, 3)
        for i, image in zip(positions, images):
            np.testing.assert_array_equal(image, expected_images[i], err_msg=files[i])
        for i, error in bad:
            assert isinstance(error, ImageFileError) and str(error) == expected_errors[i]
        seen += decided
    assert seen == list(range(len(files)))


def test_nothing_to_read_yields_nothing():
    assert list(read_image_batches([], SIZE, 4)) == []


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    name = tmp_path.as_posix().encode() + b"/caf\xe9.jpg"  # Latin-1 bytes, as an old camera card may hold
    array = np.random.default_rng(1).integers(0, 256, (16, 8, 3), dtype=np.uint8)
    with open(name, "wb") as f:
        f.write(_jpeg_bytes(array))
    path = name.decode("utf-8", "surrogateescape")  # as os.listdir gives it
    ((positions, images, bad),) = list(read_image_batches([path], SIZE, 4))
    assert positions.tolist() == [0] and not bad
    np.testing.assert_array_equal(images[0], read_image(path, SIZE))
