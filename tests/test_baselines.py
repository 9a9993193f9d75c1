"""`portrait-keras baseline`: the pixel / majority baseline and its input errors."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from portrait_keras.evaluation.baselines import main, pixel_features


@pytest.fixture
def dataset_copy(tiny_synth, tmp_path):
    shutil.copytree(os.path.dirname(tiny_synth), tmp_path / "data")
    return tmp_path / "data" / "annotations.csv"


def keep_rows(csv, keep):
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], *(line for line in lines[1:] if keep(line))]) + "\n")


def run_main(args, capsys):
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_the_baseline_scores_a_dataset(tiny_synth, capsys):
    rc, out, _ = run_main([str(tiny_synth)], capsys)
    assert rc == 0 and "reid_mAP" in out and "f1_expression" in out


@pytest.mark.parametrize(
    "case, needed",
    [("train_only", ["query", "gallery"]), ("no_train", ["train"]), ("header_only", ["train", "query", "gallery"])],
)
def test_a_missing_split_is_an_error_naming_it(case, needed, dataset_copy, capsys):
    keep = {"train_only": lambda line: ",train," in line, "no_train": lambda line: ",train," not in line}
    keep_rows(dataset_copy, keep.get(case, lambda line: False))
    rc, out, err = run_main([str(dataset_copy)], capsys)
    assert rc == 2 and out == "" and err.startswith("error: ") and "Traceback" not in err
    for split in needed:
        assert f"{dataset_copy}:1: column 'split': value '{split}': no rows in this split" in err


def test_a_missing_csv_is_an_error_naming_it(tmp_path, capsys):
    rc, _, err = run_main([str(tmp_path / "nope.csv")], capsys)
    assert rc == 2 and err.strip() == f"error: {tmp_path / 'nope.csv'}: no such annotation CSV file"


def test_an_undecodable_gallery_image_names_its_csv_line(dataset_copy, capsys):
    lines = dataset_copy.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if ",gallery," in line) + 1
    value = lines[number - 1].split(",")[0]
    image = dataset_copy.parent / value
    image.write_bytes(image.read_bytes()[:300])  # truncated
    empty = dataset_copy.parent / lines[number].split(",")[0]
    empty.write_bytes(b"")
    rc, out, err = run_main([str(dataset_copy)], capsys)
    assert rc == 2 and out == "" and err.startswith("error: ")
    assert f"{dataset_copy}:{number}: column 'path': value '{value}': unreadable image: cannot decode" in err
    assert f"{dataset_copy}:{number + 1}: " in err and "zero bytes" in err  # every bad image at once
    assert "skip_bad_images" not in err  # the baseline has no such option


def test_pixel_features_of_a_16_bit_image_are_those_of_its_8_bit_picture(tmp_path):
    gray = np.add.outer(np.arange(64) * 4, np.arange(32) * 3).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.tiff")
    eight, sixteen = pixel_features([tmp_path / "gray8.png", tmp_path / "gray16.tiff"])
    np.testing.assert_array_equal(sixteen, eight)
    assert np.abs(eight).max() > 10  # not a blank picture
