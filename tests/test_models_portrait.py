"""The functional portrait model: output dict, head variants, round trip, probabilities."""

import keras
import numpy as np
import pytest

from portrait_keras.losses import masked_multilabel_bce, masked_sparse_ce
from portrait_keras.models import build_portrait_model, fss_layout, probabilities
from portrait_keras.schema import default_schema

SHAPE = (64, 32, 3)
NUM_IDS = 6


def _images(n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *SHAPE)).astype("float32")


def _keys(tasks, with_id):
    return {k for t in tasks for k in (t, f"{t}_feature")} | ({"embedding"} if with_id else set())


@pytest.mark.parametrize(
    "head, tasks",
    [
        ("fss", None),
        ("sim_mtl", None),
        ("single_task", ["arm"]),
        ("single_task", ["id"]),
        ("fss", ["id", "expression"]),
    ],
)
def test_outputs_are_a_dict_of_logits_features_and_the_embedding(head, tasks):
    schema = default_schema()
    model = build_portrait_model(schema, NUM_IDS, head=head, tasks=tasks, input_shape=SHAPE)
    names = tasks or schema.names
    assert set(model.output_names) == _keys(names, "id" in names)
    out = model(_images(), training=False)
    assert set(out) == _keys(names, "id" in names)
    dim = 256  # tiny backbone
    layout = fss_layout(schema, dim, tasks=tasks) if head == "fss" else {t: [[0, dim]] for t in names}
    for t in names:
        classes = NUM_IDS if t == "id" else schema.task(t).num_classes
        assert tuple(out[t].shape) == (4, classes)
        assert out[f"{t}_feature"].shape[-1] == sum(b - a for a, b in layout[t])
    if "id" in names:
        assert tuple(out["embedding"].shape) == tuple(out["id_feature"].shape)


def test_features_are_the_split_backbone_vector():
    model = build_portrait_model(default_schema(), NUM_IDS, input_shape=SHAPE)
    x = _images()
    pooled = np.asarray(model.get_layer("tiny")(model.get_layer("normalize")(x), training=False))
    out = model(x, training=False)
    np.testing.assert_allclose(np.asarray(out["id_feature"]), pooled[:, :141], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["arm_feature"]), pooled[:, 167:219], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head, tasks", [("fss", None), ("sim_mtl", None), ("single_task", ["expression"])])
def test_saved_model_loads_in_safe_mode_with_identical_outputs_and_trains(head, tasks, tmp_path):
    schema = default_schema()
    model = build_portrait_model(schema, NUM_IDS, head=head, tasks=tasks, input_shape=SHAPE)
    x = _images()
    expected = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")  # safe_mode=True by default
    for key, value in loaded(x, training=False).items():
        np.testing.assert_allclose(np.asarray(value), expected[key], rtol=1e-5, atol=1e-6, err_msg=key)

    # One step with the masked losses on every classifier.
    names = tasks or schema.names
    rng = np.random.default_rng(1)
    y, losses = {}, {}
    for t in names:
        if t == "expression":
            y[t] = rng.integers(0, 2, (4, 7)).astype("float32")
            y[t][0] = -1
            losses[t] = masked_multilabel_bce
        else:
            y[t] = rng.integers(-1, NUM_IDS if t == "id" else schema.task(t).num_classes, 4)
            losses[t] = masked_sparse_ce
    loaded.compile(optimizer="adam", loss=losses, run_eagerly=True)  # one step: tracing costs more
    kernel = np.array(loaded.get_layer("tiny").get_layer("stem_conv").kernel)
    history = loaded.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(np.array(loaded.get_layer("tiny").get_layer("stem_conv").kernel), kernel)


def test_heads_are_bnneck_without_shift_then_bias_free_classifier():
    model = build_portrait_model(default_schema(), NUM_IDS, input_shape=SHAPE)
    neck, classifier = model.get_layer("age_bnneck"), model.get_layer("age_classifier")
    assert not neck.center and neck.scale
    assert not classifier.use_bias and classifier.units == 5
    assert model.get_layer("id_classifier").units == NUM_IDS


def test_probabilities_softmax_single_label_and_sigmoid_multi_label():
    schema = default_schema()
    model = build_portrait_model(schema, NUM_IDS, input_shape=SHAPE)
    out = model(_images(), training=False)
    probs = {k: np.asarray(v) for k, v in probabilities(out, schema).items()}
    assert set(probs) == set(schema.names) - {"id"}
    np.testing.assert_allclose(probs["age"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs["expression"], 1 / (1 + np.exp(-np.asarray(out["expression"]))), rtol=1e-5)
    assert set(probabilities({"age": out["age"]}, schema)) == {"age"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"head": "split"}, "Unknown head"),
        ({"num_ids": None}, "num_ids must be a positive int"),
        ({"head": "sim_mtl", "fss_kwargs": {"free_ratio": 2.0}}, "only to head='fss'"),
        ({"tasks": "age"}, "sequence of task names"),
        ({"tasks": ["age", "nope"]}, "Unknown task 'nope'"),
        ({"input_shape": (64, 32, 1)}, r"\(height, width, 3\)"),
        ({"backbone": "vgg"}, "Unknown backbone"),
    ],
)
def test_build_errors_name_the_bad_argument(kwargs, match):
    kwargs = {"num_ids": NUM_IDS, "input_shape": SHAPE, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_portrait_model(default_schema(), **kwargs)


def test_a_model_without_re_id_needs_no_num_ids():
    model = build_portrait_model(default_schema(), tasks=["body", "arm"], input_shape=SHAPE)
    assert "embedding" not in model.output_names


def test_resnet50_last_stride_backbone_plugs_in():
    model = build_portrait_model(
        default_schema(), NUM_IDS, backbone="resnet50", backbone_kwargs={"last_stride": 1}, input_shape=SHAPE
    )
    assert model.get_layer("resnet50").get_layer("conv5_block3_out").output.shape[1:3] == (4, 2)
    assert model.output_shape is not None and model.get_layer("id_classifier").units == NUM_IDS


def test_portrait_model_carries_its_schema_through_get_config_and_a_saved_file(tmp_path):
    from portrait_keras.models import PortraitModel
    from portrait_keras.schema import Schema, Task

    schema = Schema(default_schema().tasks + (Task("mood", "emotion", "single", ("calm", "tense")),))
    model = PortraitModel(
        schema, NUM_IDS, head="fss", tasks=["id", "gender", "mood"], input_shape=SHAPE, fss_kwargs={"free_ratio": 0.5}
    )
    config = model.get_config()
    assert config["schema"] == schema.to_dict() and config["num_ids"] == NUM_IDS
    assert (config["backbone"], config["head"], config["tasks"]) == ("tiny", "fss", ["id", "gender", "mood"])
    assert config["input_shape"] == list(SHAPE) and config["fss_kwargs"] == {"free_ratio": 0.5}
    again = PortraitModel.from_config(config)
    assert again.get_config() == config and again.count_params() == model.count_params()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded, PortraitModel)
    assert loaded.schema == schema and loaded.tasks == ("id", "gender", "mood") and loaded.num_ids == NUM_IDS
    x = _images()
    for key, value in model(x, training=False).items():
        np.testing.assert_allclose(np.asarray(loaded(x, training=False)[key]), np.asarray(value), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head": "FSS"}, "Unknown head"),
        ({"input_shape": (64, 32)}, "input_shape must be"),
        ({"tasks": "gender"}, "tasks must be a sequence"),
        ({"num_ids": 0}, "num_ids must be a positive int"),
    ],
)
def test_portrait_model_arguments_are_checked(kwargs, message):
    from portrait_keras.models import PortraitModel

    kwargs = {"num_ids": NUM_IDS, "input_shape": SHAPE, **kwargs}
    with pytest.raises(ValueError, match=message + ".*Received"):
        PortraitModel(default_schema(), **kwargs)
