"""The one image module: EXIF orientation, the shared resize, the pipeline decoder's agreement."""

import io
import struct

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


def camera_jpeg(pixels, orientation, byte_order, after_jfif):
    """JPEG bytes of `pixels` with an EXIF Orientation entry written by hand: in `byte_order`
    ("II" or "MM"), right after the start marker (as cameras do) or after the JFIF segment."""
    e = "<" if byte_order == "II" else ">"
    entries = struct.pack(e + "HHI", 0x010F, 2, 4) + b"cam\0" + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = byte_order.encode() + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", 2) + entries + b"\0" * 4
    payload = b"Exif\0\0" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    jfif_end = 4 + int.from_bytes(data[4:6], "big")  # Pillow writes SOI, then JFIF APP0
    return data[:jfif_end] + app1 + data[jfif_end:] if after_jfif else data[:2] + app1 + data[jfif_end:]


@pytest.mark.parametrize("after_jfif", [True, False], ids=["after_jfif", "camera"])
@pytest.mark.parametrize("byte_order", ["II", "MM"])
def test_the_input_pipeline_turns_a_jpeg_upright_as_serving_does(tmp_path, byte_order, after_jfif):
    pixels = (np.random.default_rng(2).random((40, 24, 3)) * 255).astype(np.uint8)
    for orientation in range(1, 9):
        data = camera_jpeg(pixels, orientation, byte_order, after_jfif)
        assert images.exif_orientation(data) == orientation  # Pillow reads the hand-written entry
        path = tmp_path / f"{orientation}.jpg"
        path.write_bytes(data)
        served = images.decode_image_file(path)
        assert served.shape == ((40, 24, 3) if orientation < 5 else (24, 40, 3))
        # The pipeline's graph: the same upright picture, at its own size and resized.
        np.testing.assert_array_equal(images.decode(str(path), served.shape[:2]).numpy(), served)
        np.testing.assert_array_equal(images.decode(str(path), (32, 16)).numpy(), images.read_image(path, (32, 16)))


def test_the_input_pipeline_reads_no_orientation_outside_jpeg(tmp_path):
    pixels = (np.random.default_rng(3).random((40, 24, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "a.png", exif=exif)
    assert images.decode_image_file(tmp_path / "a.png").shape == (24, 40, 3)  # serving turns it
    np.testing.assert_array_equal(images.decode(str(tmp_path / "a.png"), (40, 24)).numpy(), pixels)  # as documented
    exif_start = b"\xff\xd8\xff\xe1\x00\x10Exif\0\0"
    truncated = [b"\xff\xd8\xff", exif_start, exif_start + b"MM", exif_start + b"II*\0\xff\xff"]
    image = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    for data in truncated:  # headers cut short: shown as stored, no error
        np.testing.assert_array_equal(np.asarray(images.upright(image, data)), image)
