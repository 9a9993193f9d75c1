"""`portrait-keras embed`: the .npz of a CSV or an image folder, --flip, and its user errors."""

import os
import shutil

import keras
import numpy as np
import pytest

from portrait_keras.cli import main
from portrait_keras.data.images import read_images
from portrait_keras.serving.predictor import load_predictor
from tests.test_data_annotations import GOOD_ROWS, write_dataset


def load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_a_csv_gives_what_the_evaluation_sees(smoke_run_dir, tiny_synth, tiny_annotations, tmp_path, capsys):
    from portrait_keras.evaluation.evaluator import predict_split

    out = tmp_path / "feats.npz"
    args = ["embed", str(smoke_run_dir), str(tiny_synth), "--out", str(out), "--split", "gallery,query", "--flip"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    arrays = load(out)
    n_query, n_gallery = tiny_annotations.num_images("query"), tiny_annotations.num_images("gallery")
    assert f"{n_query + n_gallery} images (gallery {n_gallery}, query {n_query})" in printed
    model = keras.models.load_model(smoke_run_dir / "model.keras")
    tasks = [t.name for t in model.schema.classification_tasks]
    assert set(arrays) == {
        "embeddings", "paths", "root", "ids", "cameras", "groups", "splits",
        *(f"prob_{t}" for t in tasks), *(f"classes_{t}" for t in tasks),
    }  # fmt: skip
    assert arrays["embeddings"].dtype == np.float32 and arrays["splits"].dtype.kind == "U"
    assert arrays["splits"].tolist() == ["gallery"] * n_gallery + ["query"] * n_query
    for split, rows in (("gallery", slice(0, n_gallery)), ("query", slice(n_gallery, None))):
        flipped, _ = predict_split(model, tiny_annotations, split, batch_size=64, flip=True)
        np.testing.assert_allclose(arrays["embeddings"][rows], flipped["embedding"], atol=1e-4)
        np.testing.assert_array_equal(arrays["ids"][rows], tiny_annotations.labels(split)["id"])
        np.testing.assert_array_equal(arrays["cameras"][rows], tiny_annotations.cameras(split))
        np.testing.assert_array_equal(arrays["groups"][rows], tiny_annotations.groups(split))
        paths = [os.path.join(str(arrays["root"]), p) for p in arrays["paths"][rows]]
        assert paths == list(tiny_annotations.paths(split))
        gender = keras.ops.softmax(flipped["gender"])
        np.testing.assert_allclose(arrays["prob_gender"][rows], keras.ops.convert_to_numpy(gender), atol=1e-4)
    assert arrays["classes_age"].tolist() == list(model.schema.task("age").classes)


def test_a_folder_gives_paths_and_the_predictors_outputs(smoke_run_dir, tiny_annotations, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    sources = list(tiny_annotations.paths("gallery")[:3])
    for name, source in zip(["b.jpg", "a.jpg", "sub/c.jpg"], sources):
        shutil.copy(source, folder / name)
    out = tmp_path / "photos.npz"
    assert main(["embed", str(smoke_run_dir / "model.keras"), str(folder), "--out", str(out)]) == 0
    capsys.readouterr()
    arrays = load(out)
    assert arrays["paths"].tolist() == ["a.jpg", "b.jpg", "sub/c.jpg"]
    assert not {"ids", "cameras", "groups", "splits"} & set(arrays)
    predictor = load_predictor(smoke_run_dir)
    expected = predictor.predict(read_images([folder / p for p in arrays["paths"]], predictor.image_size))
    np.testing.assert_allclose(arrays["embeddings"], expected["embedding"], atol=1e-5)
    np.testing.assert_allclose(arrays["prob_expression"], expected["expression"], atol=1e-5)


def test_predictor_flip_is_the_mean_of_the_image_and_its_mirror(smoke_run_dir, tiny_annotations):
    predictor = load_predictor(smoke_run_dir)
    images = read_images(tiny_annotations.paths("query")[:4], predictor.image_size)
    plain, mirror = predictor.predict(images), predictor.predict(images[:, :, ::-1].copy())
    flipped = predictor.predict(images, flip=True)
    assert np.abs(plain["embedding"] - mirror["embedding"]).max() > 1e-3
    for key in plain:
        np.testing.assert_allclose(flipped[key], (plain[key] + mirror[key]) / 2, atol=1e-6)


@pytest.fixture
def small_csv(tmp_path):
    """The six-row table of test_data_annotations (d query; e, f gallery) with f.jpg corrupt."""
    csv = write_dataset(tmp_path / "data", GOOD_ROWS)
    (tmp_path / "data" / "f.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return csv


def test_an_unreadable_image_names_its_csv_line_or_is_skipped(smoke_run_dir, small_csv, tmp_path, capsys):
    out = tmp_path / "g.npz"
    assert main(["embed", str(smoke_run_dir), small_csv, "--out", str(out), "--split", "gallery"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {small_csv}:7: ") and "f.jpg" in err and "--skip-bad-images" in err
    assert len(err.splitlines()) == 1 and not out.exists()
    args = ["embed", str(smoke_run_dir), small_csv, "--out", str(out), "--split", "gallery", "--skip-bad-images"]
    assert main(args) == 0
    assert f"left out 1 unreadable image(s): {small_csv}:7" in capsys.readouterr().err
    arrays = load(out)
    assert arrays["paths"].tolist() == ["e.jpg"] and arrays["ids"].tolist() == [7]


@pytest.mark.parametrize(
    "case, message",
    [
        ("split_of_a_folder", "--split applies to an annotation CSV"),
        ("absent_split", "no rows in split train"),
        ("missing_out_folder", "no such folder"),
        ("missing_data", "no such annotation CSV or image folder"),
    ],
)
def test_user_errors_are_one_line(case, message, smoke_run_dir, small_csv, tmp_path, capsys):
    data, out, extra = small_csv, tmp_path / "x.npz", []
    if case == "split_of_a_folder":
        data, extra = os.path.dirname(small_csv), ["--split", "query"]
    elif case == "absent_split":
        no_train = write_dataset(tmp_path / "no_train", [r for r in GOOD_ROWS if ",train," not in r])
        data, extra = no_train, ["--split", "query,train"]
    elif case == "missing_out_folder":
        out, extra = tmp_path / "nowhere" / "x.npz", ["--split", "query"]
    else:
        data = str(tmp_path / "nope.csv")
    assert main(["embed", str(smoke_run_dir), str(data), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_an_unknown_split_name_is_refused_by_the_parser(smoke_run_dir, small_csv, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["embed", str(smoke_run_dir), small_csv, "--out", str(tmp_path / "x.npz"), "--split", "querry"])
    assert info.value.code == 2 and "splits are train, query, gallery" in capsys.readouterr().err
