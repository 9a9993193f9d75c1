"""Bad image files: the input pipeline names them, `skip_bad_images` leaves them out and lists
them, `data_prep/validate.py` reports a whole table; resumable epochs of the data stream."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from portrait_keras.data import make_dataset, read_annotations
from portrait_keras.data.images import UnreadableImage, find_bad_images
from portrait_keras.data.pipeline import BadImageError, epoch_indices, naming_bad_images
from portrait_keras.data.prep import validate
from portrait_keras.data.samplers import RandomSampler
from portrait_keras.training.callbacks import SkippedImagesLogger
from tests.test_data_annotations import GOOD_ROWS, HEADER, write_dataset


def jpeg_bytes(size=(32, 64), seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bytes():
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


# name -> (file content, start of the reason find_bad_images gives)
BAD_FILES = {
    "zero.jpg": (b"", "zero bytes"),
    "text.jpg": (b"hello, not an image\n", "not an image (starts with b'hello, n')"),
    "truncated.jpg": (jpeg_bytes()[:600], "corrupt or truncated JPEG data (Invalid JPEG data"),
    "truncated.png": (png_bytes()[:300], "corrupt or truncated PNG data (Invalid PNG data"),
}


def write_good_images(folder):
    """Valid files in every form the pipeline must read: grayscale, CMYK, PNG named .jpg,
    BMP, GIF, WebP, an odd size."""
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 256, (50, 30, 3), dtype=np.uint8))
    rgb.convert("L").save(folder / "gray.jpg")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rgb.save(folder / "png_named.jpg", format="PNG")
    rgb.save(folder / "image.bmp")
    rgb.save(folder / "image.gif")
    rgb.save(folder / "image.webp")
    rgb.resize((33, 77)).save(folder / "odd.jpg")
    return ["gray.jpg", "cmyk.jpg", "png_named.jpg", "image.bmp", "image.gif", "image.webp", "odd.jpg"]


def test_find_bad_images_names_every_unreadable_file_and_why(tmp_path):
    good = write_good_images(tmp_path)
    for name, (content, _) in BAD_FILES.items():
        (tmp_path / name).write_bytes(content)
    names = good + list(BAD_FILES) + ["missing.jpg"]
    found = find_bad_images([str(tmp_path / n) for n in names])
    assert [os.path.basename(b.path) for b in found] == list(BAD_FILES) + ["missing.jpg"]
    assert [b.index for b in found] == list(range(len(good), len(names)))
    for bad in found[:-1]:
        assert bad.reason.startswith(BAD_FILES[os.path.basename(bad.path)][1]), bad
    assert found[-1].reason == "missing file"
    assert find_bad_images([]) == []


def bad_dataset(folder, bad=("zero.jpg",), split="train"):
    """The reader's good table, with the image of its first `split` row replaced by each of
    `bad` in turn (one row each). Returns (csv path, {name: CSV line})."""
    rows = list(GOOD_ROWS)
    lines = {}
    template = next(r for r in rows if f",{split}," in r)
    for name in bad:
        rows.append(template.replace(template.split(",")[0], name, 1))
        lines[name] = len(rows) + 1
    csv_path = write_dataset(folder, rows, images=[r.split(",")[0] for r in GOOD_ROWS])
    for name in bad:
        (folder / name).write_bytes(BAD_FILES[name][0])
    return csv_path, lines


@pytest.mark.parametrize("name, words", [("zero.jpg", "zero bytes"), ("text.jpg", "not an image")])
def test_empty_or_non_image_file_stops_the_pipeline_naming_it(tmp_path, name, words):
    csv_path, _ = bad_dataset(tmp_path, [name])
    dataset = make_dataset(read_annotations(csv_path), "train", batch_size=2, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        list(dataset)
    assert str(tmp_path / name) in info.value.message and words in info.value.message


def test_decoder_error_becomes_bad_image_error_with_csv_line(tmp_path):
    csv_path, lines = bad_dataset(tmp_path, ["truncated.jpg"], split="gallery")
    ann = read_annotations(csv_path)
    dataset = make_dataset(ann, "gallery", batch_size=2, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as raw:
        list(dataset)
    assert "truncated.jpg" not in raw.value.message  # why naming_bad_images exists
    with pytest.raises(BadImageError) as info, naming_bad_images(ann, ["gallery"]):
        list(dataset)
    ((line, column, value, message),) = info.value.problems
    assert (line, column, value) == (lines["truncated.jpg"], "path", "truncated.jpg")
    assert message.startswith("unreadable image: corrupt or truncated JPEG data")
    assert f"{csv_path}:{line}: column 'path': value 'truncated.jpg': unreadable image" in str(info.value)
    assert "portrait-keras validate" in str(info.value) and "skip_bad_images" in str(info.value)
    reason = message[len("unreadable image: ") :]
    assert info.value.images == [UnreadableImage(2, str(tmp_path / "truncated.jpg"), reason)]


def test_naming_bad_images_lets_other_errors_pass(tmp_path):
    ann = read_annotations(write_dataset(tmp_path, GOOD_ROWS))
    other = tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [2] vs. [3]")
    with pytest.raises(tf.errors.InvalidArgumentError, match="Incompatible shapes"), naming_bad_images(ann, ["train"]):
        raise other
    # A decoding error that no file of the split explains is not blamed on one.
    unexplained = tf.errors.InvalidArgumentError(None, None, "Invalid JPEG data [[{{node DecodeJpeg}}]]")
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid JPEG"), naming_bad_images(ann, "train"):
        raise unexplained


def test_skip_bad_images_leaves_them_out_and_lists_them(tmp_path):
    csv_path, _ = bad_dataset(tmp_path, ["zero.jpg", "truncated.jpg", "text.jpg"])
    ann = read_annotations(csv_path)
    with pytest.warns(UserWarning, match=r"skipping 3 unreadable image\(s\).*zero\.jpg \(zero bytes\)"):
        train = make_dataset(
            ann, "train", batch_size=2, training=True, seed=0, skip_bad_images=True, drop_remainder=False
        )
    assert [(b.index, os.path.basename(b.path)) for b in train.skipped_images] == [
        (3, "zero.jpg"),
        (4, "truncated.jpg"),
        (5, "text.jpg"),
    ]
    ids = np.concatenate([labels["id"].numpy() for _, labels in train])
    assert sorted(ids.tolist()) == [-1, 0, 1]  # the three readable train images, each once
    with pytest.warns(UserWarning):
        evaluation = make_dataset(ann, "train", batch_size=4, training=False, skip_bad_images=True)
    ((images, labels),) = list(evaluation)
    np.testing.assert_array_equal(labels["age"], [0, 4, -1])  # file order, bad rows left out
    clean = make_dataset(
        read_annotations(write_dataset(tmp_path / "clean", GOOD_ROWS)),
        "train",
        batch_size=4,
        training=False,
        skip_bad_images=True,
    )
    assert clean.skipped_images == []


def test_skipped_images_logger_reports_every_epoch(capsys):
    skipped = [UnreadableImage(3, "/data/a/zero.jpg", "zero bytes"), UnreadableImage(7, "/data/b.jpg", "not an image")]
    logger = SkippedImagesLogger(skipped, root="/data")
    logs = {}
    logger.on_epoch_end(2, logs)
    assert logs["skipped_images"] == 2
    err = capsys.readouterr().err
    assert "Epoch 3: skipped 2 unreadable images this epoch: a/zero.jpg (zero bytes), b.jpg (not an image)" in err
    none = {}
    SkippedImagesLogger([]).on_epoch_end(0, none)
    assert none == {"skipped_images": 0} and capsys.readouterr().err == ""


def test_epoch_of_a_pass_is_a_function_of_seed_and_epoch_alone(tiny_annotations):
    sampler = RandomSampler(40, batch_size=8)

    def passes(dataset, count):
        return [[int(i) for i, _ in dataset] for _ in range(count)]

    first, second, third = passes(epoch_indices(sampler, seed=3), 3)
    assert len(set(map(tuple, (first, second, third)))) == 3
    assert passes(epoch_indices(sampler, seed=3, epoch=2), 1) == [third]
    assert passes(epoch_indices(sampler, seed=3, epoch=lambda: 1), 2) == [second, second]
    assert passes(epoch_indices(sampler, seed=3, epoch=1, skip=16), 1) == [second[16:]]

    def images(**kwargs):
        dataset = make_dataset(
            tiny_annotations,
            "train",
            batch_size=16,
            training=True,
            seed=5,
            deterministic=True,
            image_size=(64, 32),
            **kwargs,
        )
        return dataset, [x.numpy() for x, _ in dataset]

    full, full_images = images(epoch=1)
    rest, rest_images = images(epoch=1, skip_batches=3)
    assert rest.cardinality().numpy() == full.cardinality().numpy() - 3
    for a, b in zip(full_images[3:], rest_images):
        np.testing.assert_array_equal(a, b)  # same images and augmentation
    with pytest.raises(ValueError, match="Received: skip_batches=-1"):
        images(skip_batches=-1)


@pytest.fixture
def broken_dataset(tmp_path):
    """A table with one problem of each kind the reader finds, plus unreadable images."""
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace(",child,", ",toddler,")  # unknown class
    rows[1] = rows[1].replace("b.jpg", "gone.jpg")  # missing file
    rows[2] = rows[2].replace("sad;angry", "sad;;angry")  # malformed expression list
    rows[3] = rows[3].replace(",query,7,", ",query,8,")  # query id not in the gallery
    rows += [
        "zero.jpg,train,-1,,,,,,,,m1,1,1,1",
        "truncated.jpg,train,-1,,,,,,,,m1,2,1,1",
        "text.jpg,gallery,-1,,,,,,,,m3,3,3,1",
        "../outside.jpg,train,-1,,,,,,,,m1,4,1,1",
    ]
    csv_path = write_dataset(tmp_path, rows, images=["a.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    for name in ("zero.jpg", "truncated.jpg", "text.jpg"):
        (tmp_path / name).write_bytes(BAD_FILES[name][0])
    return csv_path


def test_validate_reports_every_problem_by_kind(broken_dataset, capsys):
    assert validate.main([broken_dataset, "--examples", "1"]) == 1
    out = capsys.readouterr().out
    assert "10 rows, 8 problems" in out
    table = {line.split("  ")[0].strip(): line for line in out.splitlines() if "  " in line}
    expected = {
        "unknown class": "value 'toddler'",
        "missing image file": "value 'gone.jpg'",
        "malformed label list": "value 'sad;;angry'",
        "query id not in the gallery": ":5: column 'id': value '8'",
        "zero-byte image": ":8: column 'path': value 'zero.jpg': unreadable image: zero bytes",
        "corrupt or truncated image": ":9: column 'path': value 'truncated.jpg'",
        "not an image file": ":10: column 'path': value 'text.jpg'",
        "path outside the dataset root": "value '../outside.jpg'",
    }
    for kind, words in expected.items():
        assert kind in table and words in table[kind], (kind, out)
        assert table[kind].split()[len(kind.split())] == "1"  # the count column


def test_validate_names_paths_the_system_cannot_look_up(tmp_path, capsys):
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace("a.jpg", "su\x00b/a.jpg")
    rows[1] = rows[1].replace("b.jpg", "x" * 300 + "/b.jpg")
    csv_path = write_dataset(tmp_path, rows, images=["c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    assert validate.main([csv_path]) == 1
    out = capsys.readouterr().out
    assert "6 rows, 2 problems" in out
    line = next(line for line in out.splitlines() if line.startswith("unusable path"))
    assert line.split()[2] == "2" and ":2: column 'path': value 'su\\x00b/a.jpg'" in line, out


def test_validate_passes_a_clean_dataset_and_checks_required_splits(tmp_path, capsys):
    csv_path = write_dataset(tmp_path, GOOD_ROWS)
    assert validate.main([csv_path]) == 0
    assert "every check passed" in capsys.readouterr().out
    no_query = write_dataset(tmp_path / "noq", [r for r in GOOD_ROWS if ",query," not in r])
    assert validate.main([no_query]) == 1
    assert "empty split" in capsys.readouterr().out
    assert validate.main([no_query, "--splits", "train,gallery"]) == 0
    with pytest.raises(SystemExit):
        validate.main([no_query, "--splits", "val"])


def test_validate_gives_image_lines_after_a_quoted_newline(tmp_path, capsys):
    rows = list(GOOD_ROWS)
    rows[1] = rows[1].replace(",m1,", ',"m1\nsecond line",')
    rows.append("zero.jpg,train,-1,,,,,,,,m1,1,1,1")
    csv_path = write_dataset(tmp_path, rows, images=["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    (tmp_path / "zero.jpg").write_bytes(BAD_FILES["zero.jpg"][0])
    assert validate.main([csv_path]) == 1
    assert f"{csv_path}:9: column 'path': value 'zero.jpg': unreadable image: zero bytes" in capsys.readouterr().out


@pytest.mark.parametrize(
    "row, words",
    [
        ("b.jpg,train,-1,,elderly", ":3: column '': value '': Expected 14 fields in line 3, saw 5"),
        (GOOD_ROWS[1].replace(",m1,", ",caf\u00e9,"), ":3: column '': value 'b.jpg,train,"),
    ],
    ids=["short row", "not utf-8"],
)
def test_validate_reports_a_table_it_cannot_split(tmp_path, capsys, row, words):
    rows = list(GOOD_ROWS)
    rows[1] = row
    csv_path = write_dataset(tmp_path, rows)
    with open(csv_path, "w", encoding="latin-1") as f:  # 'é' becomes the lone byte 0xe9
        f.write("\n".join([HEADER] + rows) + "\n")
    assert validate.main([csv_path]) == 1
    out = capsys.readouterr().out
    assert "unparsable CSV" in out and words in out, out
