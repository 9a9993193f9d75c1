"""ResNet-50 from Keras' own ImageNet file, with the Caffe-style input those weights expect."""

import h5py
import keras
import numpy as np
import pytest

from portrait_keras import experiments as configs
from portrait_keras.config import KERAS_IMAGENET_FILE, model_preprocessing
from portrait_keras.models import PortraitModel
from portrait_keras.models.preprocessing import PREPROCESSING, ImageNormalization
from portrait_keras.models.resnet import resnet50
from portrait_keras.schema import default_schema


def test_caffe_preprocessing_is_keras_resnet_preprocess_input():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (2, 4, 3, 3)).astype("float32")
    ours = ImageNormalization(**PREPROCESSING["caffe"])(pixels)
    reference = keras.applications.resnet.preprocess_input(pixels.copy())  # caffe mode
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), reference, atol=1e-4)
    assert not np.allclose(keras.ops.convert_to_numpy(ImageNormalization()(pixels)), reference, atol=1.0)
    layer = ImageNormalization(**PREPROCESSING["caffe"])
    assert ImageNormalization.from_config(layer.get_config()).bgr is True
    with pytest.raises(ValueError, match="bgr must be a bool"):
        ImageNormalization(bgr="yes")


def _write_keras_imagenet_file(home):
    """A file in the layout of Keras' notop ImageNet weights (legacy .h5, by layer), random values."""
    from keras.src.legacy.saving import legacy_h5_format

    donor = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 32, 3), pooling="avg")
    for w in donor.weights:
        w.assign(np.random.default_rng(len(w.path)).normal(size=w.shape).astype("float32") * 0.01)
    (home / "models").mkdir(parents=True)
    with h5py.File(home / "models" / KERAS_IMAGENET_FILE, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, donor)
    return donor


def test_imagenet_weights_load_from_where_keras_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ValueError, match=f"{KERAS_IMAGENET_FILE}, not found at {tmp_path}/models/"):
        resnet50((64, 32, 3), weights="imagenet")
    donor = _write_keras_imagenet_file(tmp_path)
    ours = resnet50((64, 32, 3), weights="imagenet")
    assert len(ours.weights) == len(donor.weights)
    for a, b in zip(ours.weights, donor.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_the_config_picks_caffe_input_for_keras_imagenet_weights():
    config = configs.get("sim_mtl_r50").model
    assert model_preprocessing(config) == "imagenet"
    keras_weights = type(config)(**{**config.__dict__, "backbone_weights": "imagenet"})
    assert model_preprocessing(keras_weights) == "caffe"
    forced = type(config)(**{**keras_weights.__dict__, "preprocessing": "imagenet"})
    assert model_preprocessing(forced) == "imagenet"
    with pytest.raises(ValueError, match="'imagenet' is for resnet50"):
        type(config)(**{**config.__dict__, "backbone": "tiny", "backbone_weights": "imagenet"})


def test_a_caffe_model_saves_and_reloads_its_preprocessing(tmp_path):
    model = PortraitModel(default_schema(), 5, input_shape=(64, 32, 3), preprocessing="caffe")
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert again.preprocessing == "caffe" and again.get_layer("normalize").bgr
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(images)["embedding"]),
        keras.ops.convert_to_numpy(model(images)["embedding"]),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="Unknown preprocessing"):
        PortraitModel(default_schema(), 5, input_shape=(64, 32, 3), preprocessing="bgr")
