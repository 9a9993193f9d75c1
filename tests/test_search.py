"""`python -m portrait_keras search`: nearest gallery images by the re-id embedding, cached."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from portrait_keras.cli import main
from portrait_keras.data import read_annotations
from portrait_keras.metrics.distance import cosine_distances
from portrait_keras.serving.predictor import InputError, load_predictor
from portrait_keras.serving.search import cache_path, embed, gallery_embeddings, load_gallery, search


@pytest.fixture(scope="module")
def predictor(smoke_run_dir):
    return load_predictor(smoke_run_dir)


@pytest.fixture(scope="module")
def dataset_copy(tiny_synth, tmp_path_factory):
    """A copy of the tiny dataset (the search writes its cache beside the CSV)."""
    folder = tmp_path_factory.mktemp("search") / "data"
    shutil.copytree(os.path.dirname(tiny_synth), folder)
    return folder / "annotations.csv"


@pytest.fixture
def folder_gallery(tiny_annotations, tmp_path):
    """A folder of 10 gallery images in two subfolders."""
    for i, path in enumerate(tiny_annotations.paths("gallery")[:10]):
        target = tmp_path / "gallery" / f"part{i % 2}" / f"{i:02d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return tmp_path / "gallery"


class CountingPredictor:
    """Wraps a predictor and counts the images it is asked to embed."""

    def __init__(self, predictor):
        self._predictor = predictor
        self.images = 0

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def predict(self, images, batch_size=32):
        self.images += len(images)
        return self._predictor.predict(images, batch_size)


def keras_embeddings(run_dir, paths):
    from portrait_keras.data.images import decode

    model = keras.models.load_model(run_dir / "model.keras")
    images = np.stack([decode(str(p), (128, 64)).numpy() for p in paths]).astype("float32")
    return keras.ops.convert_to_numpy(model(images, training=False)["embedding"])


def test_a_gallery_image_finds_itself_first(smoke_run_dir, predictor, dataset_copy):
    gallery = load_gallery(dataset_copy)
    query = gallery.paths[7]
    result = search(predictor, gallery, query, k=10)
    assert result.paths[0] == query
    assert result.distances[0] == pytest.approx(0.0, abs=1e-5)
    assert len(result.paths) == 10 and np.all(np.diff(result.distances) >= 0)
    # The distances are the cosine distances of the Keras model's embeddings.
    expected = cosine_distances(keras_embeddings(smoke_run_dir, [query]), keras_embeddings(smoke_run_dir, result.paths))
    np.testing.assert_allclose(result.distances, expected[0], atol=1e-4)


def test_csv_gallery_is_its_gallery_split_with_ids(predictor, dataset_copy):
    annotations = read_annotations(dataset_copy)
    gallery = load_gallery(dataset_copy)
    assert gallery.paths == list(annotations.paths("gallery"))
    np.testing.assert_array_equal(gallery.ids, annotations.labels("gallery")["id"])
    ids = annotations.labels("query")["id"]
    query = annotations.paths("query")[int(np.flatnonzero(ids >= 0)[0])]
    result = search(predictor, gallery, query, k=len(gallery.paths))
    assert result.query_id == int(ids[ids >= 0][0])
    for hit_id, same in zip(result.ids, result.same_id):
        assert same == (None if hit_id is None else hit_id == result.query_id)
    assert True in result.same_id and False in result.same_id and None in result.same_id


def test_csv_without_gallery_split_searches_every_row(predictor, tiny_synth, tmp_path):
    shutil.copytree(os.path.dirname(tiny_synth), tmp_path / "data")
    csv = tmp_path / "data" / "annotations.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [line for line in lines[1:] if ",train," in line]) + "\n")
    annotations = read_annotations(csv)
    assert annotations.splits == ("train",)
    gallery = load_gallery(csv)
    assert gallery.paths == [p for s in annotations.splits for p in annotations.paths(s)]


def test_cache_is_reused_and_refreshed_for_changed_images(predictor, folder_gallery):
    counting = CountingPredictor(predictor)
    gallery = load_gallery(folder_gallery)
    assert len(gallery.paths) == 10 and gallery.ids is None
    first = gallery_embeddings(counting, gallery)
    assert first.embedded == 10 and counting.images == 10
    assert os.path.dirname(first.cache_file) == str(folder_gallery)
    assert first.cache_file == cache_path(gallery, predictor)

    again = gallery_embeddings(counting, load_gallery(folder_gallery))
    assert again.embedded == 0 and counting.images == 10  # nothing re-embedded
    np.testing.assert_array_equal(again.embeddings, first.embeddings)

    # One image changes (new pixels, new mtime): only it is embedded again.
    changed = gallery.paths[3]
    shutil.copyfile(gallery.paths[0], changed)
    os.utime(changed, ns=(os.stat(changed).st_atime_ns, os.stat(changed).st_mtime_ns + 10**9))
    refreshed = gallery_embeddings(counting, load_gallery(folder_gallery))
    assert refreshed.embedded == 1 and counting.images == 11
    np.testing.assert_allclose(refreshed.embeddings[3], first.embeddings[0], atol=1e-5)
    np.testing.assert_array_equal(np.delete(refreshed.embeddings, 3, 0), np.delete(first.embeddings, 3, 0))

    # A new image is embedded; a removed one leaves the cache.
    shutil.copy(gallery.paths[5], folder_gallery / "part0" / "new.jpg")
    os.remove(gallery.paths[9])
    updated = load_gallery(folder_gallery)
    result = gallery_embeddings(counting, updated)
    assert result.embedded == 1 and counting.images == 12
    with np.load(result.cache_file, allow_pickle=False) as cache:  # plain arrays, no pickle
        assert sorted(cache["paths"].tolist()) == sorted(os.path.relpath(p, folder_gallery) for p in updated.paths)
        assert all(cache[k].dtype != object for k in cache.files)


def test_another_model_has_its_own_cache(smoke_run_dir, predictor, folder_gallery):
    gallery = load_gallery(folder_gallery)
    gallery_embeddings(predictor, gallery)
    other = load_predictor(smoke_run_dir / "saved_model")
    counting = CountingPredictor(other)
    result = gallery_embeddings(counting, gallery)
    assert result.embedded == 10 and counting.images == 10
    assert result.cache_file != cache_path(gallery, predictor)
    assert len([n for n in os.listdir(folder_gallery) if n.endswith(".npz")]) == 2


def test_broken_cache_is_rebuilt(predictor, folder_gallery, capsys):
    gallery = load_gallery(folder_gallery)
    with open(cache_path(gallery, predictor), "wb") as f:
        f.write(b"not a zip file")
    result = gallery_embeddings(predictor, gallery)
    assert result.embedded == 10
    assert "unreadable embedding cache" in capsys.readouterr().err
    assert gallery_embeddings(predictor, gallery).embedded == 0


def test_an_unreadable_gallery_image_is_reported_and_left_out(predictor, folder_gallery):
    from portrait_keras.data.images import ImageFileError

    gallery = load_gallery(folder_gallery)
    broken = gallery.paths[5]  # the second batch of 4
    with open(broken, "wb") as f:
        f.write(b"not a picture")
    with pytest.raises(ImageFileError, match=os.path.basename(broken)):
        gallery_embeddings(predictor, gallery, batch_size=4, use_cache=False)
    seen = []
    result = gallery_embeddings(predictor, gallery, batch_size=4, use_cache=False, on_bad_image=seen.append)
    assert [(u.index, u.path) for u in seen] == [(5, broken)]
    assert result.positions.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9] and result.embedded == 9
    readable = [p for p in gallery.paths if p != broken]
    np.testing.assert_allclose(result.embeddings, embed(predictor, readable, batch_size=3), atol=1e-5)
    assert all(len(v) == 9 for v in result.probabilities.values()) and result.probabilities


def test_search_command_prints_json_and_plots_the_rank_list(smoke_run_dir, dataset_copy, tmp_path, capsys):
    annotations = read_annotations(dataset_copy)
    ids = annotations.labels("query")["id"]
    query = annotations.paths("query")[int(np.flatnonzero(ids >= 0)[0])]
    plot = tmp_path / "rank.png"
    args = ["search", str(smoke_run_dir), "--gallery", str(dataset_copy), "--query", query]
    rc = main([*args, "-k", "5", "--plot", str(plot), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == query and out["query_id"] == int(ids[ids >= 0][0])
    assert [r["rank"] for r in out["results"]] == [1, 2, 3, 4, 5]
    assert all(r["path"] in annotations.paths("gallery") for r in out["results"])
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (840, 340)  # 6 tiles of 1.4 x 3.4 inches at 100 dpi

    rc = main([*args, "-k", "3"])
    text = capsys.readouterr().out.splitlines()
    assert rc == 0 and text[0].startswith(f"query: {query}") and len(text) == 4
    assert [line.split()[-1] for line in text[1:]] == [r["path"] for r in out["results"][:3]]


def test_search_errors_name_the_input(smoke_run_dir, dataset_copy, tmp_path, capsys):
    query = read_annotations(dataset_copy).paths("query")[0]
    missing = str(tmp_path / "nowhere")
    assert main(["search", str(smoke_run_dir), "--gallery", missing, "--query", query]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and missing in err
    assert main(["search", str(smoke_run_dir), "--gallery", str(dataset_copy), "--query", missing + ".jpg"]) == 2
    assert missing + ".jpg" in capsys.readouterr().err
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("path,split,id\nimages/none.jpg,gallery,abc\n")
    assert main(["search", str(smoke_run_dir), "--gallery", str(bad_csv), "--query", query]) == 2
    err = capsys.readouterr().err
    assert str(bad_csv) in err and "Traceback" not in err


def test_an_edit_that_restores_the_modification_time_is_embedded_again(predictor, tmp_path):
    rng = np.random.default_rng(0)
    gallery_dir = tmp_path / "bmp"
    gallery_dir.mkdir()
    for i in range(3):  # BMPs of one size: an edit keeps the file size
        Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(gallery_dir / f"{i}.bmp")
    counting = CountingPredictor(predictor)
    gallery = load_gallery(gallery_dir)
    assert gallery_embeddings(counting, gallery).embedded == 3
    edited = gallery.paths[1]
    before = os.stat(edited)
    Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(edited)
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` or `touch -r` would
    assert os.stat(edited).st_size == before.st_size
    result = gallery_embeddings(counting, load_gallery(gallery_dir))
    assert result.embedded == 1
    np.testing.assert_allclose(result.embeddings, embed(predictor, gallery.paths), atol=1e-6)


def test_galleries_sharing_a_folder_keep_each_others_cache(predictor, tiny_synth, tmp_path):
    shutil.copytree(os.path.dirname(tiny_synth), tmp_path / "data")
    lines = (tmp_path / "data" / "annotations.csv").read_text().splitlines()
    for name, split in (("a.csv", ",gallery,"), ("b.csv", ",train,")):
        rows = [line for line in lines[1:] if split in line][:4]
        (tmp_path / "data" / name).write_text("\n".join([lines[0], *rows]) + "\n")
    counting = CountingPredictor(predictor)
    a, b = load_gallery(tmp_path / "data" / "a.csv"), load_gallery(tmp_path / "data" / "b.csv")
    assert gallery_embeddings(counting, a).cache_file == gallery_embeddings(counting, b).cache_file
    assert counting.images == 8
    assert gallery_embeddings(counting, a).embedded == 0 and gallery_embeddings(counting, b).embedded == 0
    # A row of the other gallery whose file is gone leaves the cache.
    os.remove(b.paths[0])
    gallery_embeddings(counting, a)
    with np.load(cache_path(a, predictor), allow_pickle=False) as cache:
        assert len(cache["paths"]) == 7


def test_a_bad_query_fails_before_the_gallery_is_embedded(predictor, folder_gallery, tmp_path):
    counting = CountingPredictor(predictor)
    bad = tmp_path / "query.jpg"
    bad.write_bytes(b"not a picture")
    with pytest.raises(InputError, match=str(bad)):
        search(counting, load_gallery(folder_gallery), str(bad))
    assert counting.images == 0


def perturbed_model_file(run_dir, path):
    """`run_dir/model.keras` with other weights, saved as `path`."""
    model = keras.models.load_model(run_dir / "model.keras")
    layer = next(layer for layer in model.layers if layer.weights)
    layer.set_weights([w * 1.5 for w in layer.get_weights()])
    model.save(path)


def test_a_model_rewritten_while_it_loads_never_caches_stale_embeddings(
    smoke_run_dir, folder_gallery, tmp_path, monkeypatch, capsys
):
    import portrait_keras.serving.export as export

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "schema.json"):
        shutil.copy(smoke_run_dir / name, run / name)
    perturbed_model_file(smoke_run_dir, tmp_path / "other.keras")
    load, loads = export.load_keras_model, []

    def rewritten_once(path):
        model = load(path)
        if not loads:  # a run writes its new model.keras right after the first load
            shutil.copyfile(tmp_path / "other.keras", run / "model.keras")
        loads.append(path)
        return model

    monkeypatch.setattr(export, "load_keras_model", rewritten_once)
    racing = load_predictor(run)
    monkeypatch.undo()
    assert len(loads) == 2  # loaded again: it holds the weights its fingerprint names
    gallery = load_gallery(folder_gallery)
    gallery_embeddings(racing, gallery)
    fresh = load_predictor(run)
    assert fresh.fingerprint == racing.fingerprint
    result = gallery_embeddings(fresh, gallery)
    assert result.embedded == 0
    np.testing.assert_allclose(result.embeddings, embed(fresh, gallery.paths), atol=1e-6)

    # Files that change at every load: the model is used without a cache.
    def always_rewritten(path):
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        return load(path)

    monkeypatch.setattr(export, "load_keras_model", always_rewritten)
    unstable = load_predictor(run)
    monkeypatch.undo()
    assert unstable.fingerprint is None
    capsys.readouterr()
    assert gallery_embeddings(unstable, gallery).cache_file is None
    assert "no embedding cache used" in capsys.readouterr().err
    assert len([n for n in os.listdir(folder_gallery) if n.endswith(".npz")]) == 1


def test_skip_bad_images_leaves_unreadable_gallery_images_out(smoke_run_dir, predictor, folder_gallery, capsys):
    good = load_gallery(folder_gallery).paths
    empty, text = folder_gallery / "part0" / "empty.jpg", folder_gallery / "part1" / "text.jpg"
    empty.write_bytes(b"")
    text.write_bytes(b"no picture in here")
    query = good[3]
    args = ["search", str(smoke_run_dir), "--gallery", str(folder_gallery), "--query", query, "-k", "20", "--json"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"error: {empty}: cannot decode this file as an image: zero bytes. "
        "Rerun with --skip-bad-images to leave unreadable images out.\n"
    )

    assert main([*args, "--skip-bad-images"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    reasons = {str(empty): "zero bytes", str(text): "not an image (starts with b'no pictu')"}
    assert report["skipped"] == [{"path": p, "reason": r} for p, r in reasons.items()]
    assert err == f"skipped 2 unreadable images: {empty} (zero bytes), {text} ({reasons[str(text)]})\n"
    # Every good image is ranked, as in a gallery without the bad files.
    left_out = []
    gallery = load_gallery(folder_gallery)
    expected = search(predictor, gallery, query, k=20, use_cache=False, on_bad_image=left_out.append)
    assert [(b.path, b.reason) for b in left_out] == list(reasons.items())
    assert [r["path"] for r in report["results"]] == expected.paths and sorted(expected.paths) == sorted(good)
    np.testing.assert_allclose([r["distance"] for r in report["results"]], expected.distances, atol=1e-6)
    with np.load(cache_path(load_gallery(folder_gallery), predictor), allow_pickle=False) as cache:
        assert sorted(cache["paths"]) == sorted(os.path.relpath(p, folder_gallery) for p in good)  # bad ones not cached

    # A bad query is never skipped: it is what is searched for.
    assert main([*args[:4], "--query", str(empty), "--skip-bad-images"]) == 2
    assert capsys.readouterr().err == (
        f"error: {empty}: cannot decode this file as an image: zero bytes "
        "(the query; --skip-bad-images leaves out gallery images only)\n"
    )
