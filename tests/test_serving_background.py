"""A model trained with the background of masked people removed (`data.background`, paper 002
§6.3) carries that setting (`PortraitModel.background`), and search, embed and the SavedModel
show it images with a person mask the way training did; images without one get a warning."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from portrait_keras.data import make_dataset, read_annotations
from portrait_keras.data.images import ImageFileError
from portrait_keras.data.synthportrait import generate
from portrait_keras.models import PortraitModel
from portrait_keras.serving.embed import embed_data
from portrait_keras.serving.interpret import interpret
from portrait_keras.serving.predictor import load_predictor
from portrait_keras.serving.search import gallery_embeddings, load_gallery, search

SIZE = (64, 32)


@pytest.fixture(scope="module")
def masked_csv(tmp_path_factory):
    """A small SynthPortrait whose rows have person masks."""
    return generate(
        tmp_path_factory.mktemp("bg") / "data", identities=4, seed=5, images_per_identity=4, workers=1, masks=True
    )


@pytest.fixture(scope="module")
def models(masked_csv, tmp_path_factory):
    """`{background: model.keras path}`: one tiny model's weights saved as trained with each."""
    schema = read_annotations(masked_csv).schema
    folder = tmp_path_factory.mktemp("models")
    first = PortraitModel(schema, 4, input_shape=(*SIZE, 3), background="mean")
    paths = {}
    for background in ("mean", "keep"):
        model = PortraitModel(schema, 4, input_shape=(*SIZE, 3), background=background)
        model.set_weights(first.get_weights())
        paths[background] = folder / f"{background}.keras"
        model.save(paths[background])
    return paths


def _pipeline_embeddings(model_path, csv, background, split="gallery"):
    """The Keras model's embeddings of `split` as the evaluation pipeline shows the images."""
    import keras

    model = keras.models.load_model(model_path)
    annotations = read_annotations(csv).with_background(background)
    ds = make_dataset(annotations, split, batch_size=64, training=False, image_size=SIZE)
    return np.concatenate([keras.ops.convert_to_numpy(model(x, training=False)["embedding"]) for x, _ in ds])


def test_the_model_carries_its_background_through_save_and_config(models, masked_csv):
    schema = read_annotations(masked_csv).schema
    assert load_predictor(models["mean"]).background == "mean"
    assert load_predictor(models["keep"]).background == "keep"
    model = PortraitModel(schema, 4, input_shape=(*SIZE, 3), background="blur")
    assert PortraitModel.from_config(model.get_config()).background == "blur"
    older = {k: v for k, v in model.get_config().items() if k != "background"}  # saved before the field
    assert PortraitModel.from_config(older).background == "keep"
    with pytest.raises(ValueError, match=r"background must be one of keep, mean, blur\. Received: background='grey'"):
        PortraitModel(schema, 4, input_shape=(*SIZE, 3), background="grey")


def test_search_and_embed_show_masked_images_as_training_did(models, masked_csv, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(os.path.dirname(masked_csv), data)  # the search cache is written beside the CSV
    csv = data / "annotations.csv"
    masked = _pipeline_embeddings(models["mean"], csv, "mean")
    whole = _pipeline_embeddings(models["mean"], csv, "keep")
    assert np.abs(masked - whole).max() > 1e-3  # the masks change what the model sees

    predictor = load_predictor(models["mean"])
    got = gallery_embeddings(predictor, load_gallery(csv), use_cache=False).embeddings
    np.testing.assert_allclose(got, masked, atol=1e-4)
    arrays = embed_data(predictor, csv, splits=["gallery"])
    np.testing.assert_allclose(arrays["embeddings"], masked, atol=1e-4)
    # The same weights trained with the background kept see the images whole.
    kept = gallery_embeddings(load_predictor(models["keep"]), load_gallery(csv), use_cache=False).embeddings
    np.testing.assert_allclose(kept, whole, atol=1e-4)
    assert "warning" not in capsys.readouterr().err  # every image had its mask

    # A query from the CSV takes its mask too: it finds itself at distance 0.
    gallery = load_gallery(csv)
    result = search(predictor, gallery, gallery.paths[3], k=3, use_cache=False)
    assert result.paths[0] == gallery.paths[3] and result.distances[0] == pytest.approx(0.0, abs=1e-5)
    assert "warning" not in capsys.readouterr().err


def test_images_without_a_mask_get_one_warning_each_time(models, masked_csv, tmp_path, capsys):
    image = load_gallery(masked_csv).paths[0]
    outside = tmp_path / "photo.jpg"
    shutil.copy(image, outside)  # not listed in any CSV: no mask
    mean, keep = load_predictor(models["mean"]), load_predictor(models["keep"])
    assert len(interpret(keep, [str(outside)])) == 1
    assert capsys.readouterr().err == ""
    assert len(interpret(mean, [str(outside)])) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"warning: {mean.path} was trained with data.background=mean on images with a person mask; no mask for "
        f"these images (an annotation CSV's `mask` column gives them), so the model sees the whole image"
    ]
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(image, folder / "a.jpg")
    search(mean, load_gallery(folder), str(outside), k=1, use_cache=False)
    err = capsys.readouterr().err
    assert "no mask for the query image" in err and "no mask for the gallery images" in err


def test_the_cache_sees_an_edited_mask(models, masked_csv, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(os.path.dirname(masked_csv), data)
    csv = data / "annotations.csv"
    predictor = load_predictor(models["mean"])
    first = gallery_embeddings(predictor, load_gallery(csv))
    assert first.embedded == len(first.positions) > 2
    mask = load_gallery(csv).masks[2]
    with Image.open(mask) as m:
        inverted = Image.eval(m.convert("L"), lambda v: 255 - v)
    inverted.save(mask)
    again = gallery_embeddings(predictor, load_gallery(csv))
    assert again.embedded == 1
    changed = np.abs(again.embeddings - first.embeddings).max(axis=1)
    assert changed[2] > 1e-3 and np.all(np.delete(changed, 2) == 0)


def test_an_unreadable_mask_names_the_mask_and_its_image(models, masked_csv, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(os.path.dirname(masked_csv), data)
    csv = data / "annotations.csv"
    gallery = load_gallery(csv)
    with open(gallery.masks[1], "wb") as f:
        f.write(b"not a png")
    with pytest.raises(ImageFileError) as raised:
        gallery_embeddings(load_predictor(models["mean"]), gallery, use_cache=False)
    assert gallery.masks[1] in str(raised.value) and gallery.paths[1] in str(raised.value)
    seen = []
    result = gallery_embeddings(load_predictor(models["mean"]), gallery, use_cache=False, on_bad_image=seen.append)
    assert [u.index for u in seen] == [1] and 1 not in result.positions.tolist()


@pytest.mark.slow
def test_the_saved_model_carries_the_background(models, masked_csv, tmp_path):
    from portrait_keras.serving.export import export_saved_model, load_model

    model = load_model(models["mean"])
    export_saved_model(model, model.schema, tmp_path / "saved_model")
    predictor = load_predictor(tmp_path / "saved_model")
    assert predictor.kind == "saved_model" and predictor.background == "mean"
    got = gallery_embeddings(predictor, load_gallery(masked_csv), use_cache=False).embeddings
    np.testing.assert_allclose(got, _pipeline_embeddings(models["mean"], masked_csv, "mean"), atol=1e-4)
