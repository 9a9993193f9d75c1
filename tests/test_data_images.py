"""The one image module: EXIF orientation, the shared resize, the pipeline decoder's agreement."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from portrait_keras.data import images


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(tmp_path, fmt, orientation):
    pixels = (np.random.default_rng(orientation).random((40, 24, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo.{fmt}"
    image.save(path, exif=exif, **({"quality": 95} if fmt == "jpeg" else {}))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).astype(int)
    got = images.decode_image_file(path).astype(int)
    assert got.shape == upright.shape == ((40, 24, 3) if orientation < 5 else (24, 40, 3))
    # Pillow's and TensorFlow's JPEG decoders differ by a few levels, never by a rotation.
    assert np.abs(got - upright).max() <= (0 if fmt == "png" else 8)


def test_a_file_without_exif_is_left_as_stored(tmp_path):
    pixels = (np.random.default_rng(0).random((8, 6, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert images.exif_orientation((tmp_path / "a.png").read_bytes()) == 1
    np.testing.assert_array_equal(images.decode_image_file(tmp_path / "a.png"), pixels)


def test_serving_and_training_resize_and_decode_alike(tmp_path):
    pixels = (np.random.default_rng(1).random((50, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    served = images.read_image(tmp_path / "a.png", (32, 16))
    trained = images.decode(str(tmp_path / "a.png"), (32, 16)).numpy()
    np.testing.assert_array_equal(served, trained)
    np.testing.assert_array_equal(served, images.resize(pixels, (32, 16)).numpy())
