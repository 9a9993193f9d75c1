"""The thin `keras.losses.Loss` classes: the plain functions' values, config round trip, and
`model.compile(loss={output: Loss})` on a model with a dict of outputs, labels partly -1."""

import keras
import numpy as np
import pytest

from portrait_keras.losses import (
    BatchHardTripletLoss,
    BatchRankLoss,
    MaskedBinaryCrossentropy,
    MaskedSparseCategoricalCrossentropy,
    batch_hard_triplet_loss,
    batch_rank_loss,
    masked_multilabel_bce,
    masked_sparse_ce,
)

RNG = np.random.default_rng(0)
IDS = np.array([0, 0, 1, 1, 2, -1, 2, 3])
MULTI_HOT = RNG.integers(0, 2, (8, 3)).astype("float32")
MULTI_HOT[[1, 6]] = -1
FEATURES = RNG.normal(size=(8, 5)).astype("float32")
LOGITS = RNG.normal(size=(8, 4)).astype("float32")

# (Loss object, the same loss as a plain function of (y_true, y_pred), y_true, y_pred)
CASES = {
    "batch_rank": (BatchRankLoss(), batch_rank_loss, IDS, FEATURES),
    "batch_rank_multi_hot": (BatchRankLoss(), batch_rank_loss, MULTI_HOT, FEATURES),
    "triplet": (
        BatchHardTripletLoss(margin=0.7),
        lambda y, f: batch_hard_triplet_loss(y, f, margin=0.7),
        IDS,
        FEATURES,
    ),
    "sparse_ce": (
        MaskedSparseCategoricalCrossentropy(label_smoothing=0.2),
        lambda y, lo: masked_sparse_ce(y, lo, label_smoothing=0.2),
        IDS,
        LOGITS,
    ),
    "binary_ce": (MaskedBinaryCrossentropy(), masked_multilabel_bce, MULTI_HOT, LOGITS[:, :3]),
}


@pytest.mark.parametrize("case", CASES)
def test_loss_object_equals_the_plain_function(case):
    loss, fn, y_true, y_pred = CASES[case]
    expected = float(fn(y_true, y_pred))
    assert expected > 0
    # Keras' reduction must give the batch value as it is (not divided again by the batch
    # size); a sample weight scales it by the weights' mean (package docstring).
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-6)
    weights = np.array([1.0, 3.0] * 4, "float32")
    assert float(loss(y_true, y_pred, sample_weight=weights)) == pytest.approx(2.0 * expected, rel=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_loss_object_config_round_trips_through_the_registry(case):
    loss = CASES[case][0]
    config = loss.get_config()
    assert type(loss).from_config(config).get_config() == config
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is type(loss) and clone.get_config() == config
    assert keras.saving.get_registered_name(type(loss)) == f"portrait_keras>{type(loss).__name__}"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: BatchHardTripletLoss(margin=-1), "Received: margin=-1"),
        (lambda: MaskedSparseCategoricalCrossentropy(label_smoothing=1.0), "Received: label_smoothing=1.0"),
    ],
)
def test_loss_objects_validate_their_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    trunk = keras.layers.Dense(8, activation="relu", name="trunk")(inputs)
    outputs = {
        "id": keras.layers.Dense(4, name="id")(trunk),
        "id_feature": keras.layers.Dense(5, name="id_feature")(trunk),
        "expression": keras.layers.Dense(3, name="expression")(trunk),
    }
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "make_metric, metric_fn",
    [
        (BatchRankLoss, batch_rank_loss),
        (lambda: BatchHardTripletLoss(0.5), lambda y, f: batch_hard_triplet_loss(y, f, 0.5)),
    ],
    ids=["batch_rank", "triplet"],
)
def test_compile_with_a_dict_of_loss_objects_fits_and_reports_the_plain_values(make_metric, metric_fn, tmp_path):
    model = _model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={
            "id": MaskedSparseCategoricalCrossentropy(label_smoothing=0.1),
            "id_feature": make_metric(),
            "expression": MaskedBinaryCrossentropy(),
        },
    )
    plain = {
        "id": lambda y, lo: masked_sparse_ce(y, lo, label_smoothing=0.1),
        "id_feature": metric_fn,
        "expression": masked_multilabel_bce,
    }
    x = np.random.default_rng(1).normal(size=(16, 6)).astype("float32")
    ids = np.array([0, 0, 1, 1, 2, 2, -1, 3, 0, 1, -1, 2, 3, 3, 1, -1])
    expression = np.random.default_rng(2).integers(0, 2, (16, 3)).astype("float32")
    expression[[0, 5, 9]] = -1
    y = {"id": ids, "id_feature": ids, "expression": expression}

    # One batch, no update: every logged loss is the plain function's on the model's outputs.
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    out = model(x)
    expected = {name: float(fn(y[name], out[name])) for name, fn in plain.items()}
    assert min(expected.values()) > 0
    for name, value in expected.items():
        assert logs[f"{name}_loss"] == pytest.approx(value, rel=1e-5), name
    assert logs["loss"] == pytest.approx(sum(expected.values()), rel=1e-5)

    before = {layer: np.array(model.get_layer(layer).kernel) for layer in ("trunk", "id_feature")}
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    for layer, kernel in before.items():  # the id_feature layer is trained by the metric loss alone
        assert not np.allclose(np.array(model.get_layer(layer).kernel), kernel), layer

    # The compiled losses are saved with the model and load back (registered, safe mode).
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(loaded.loss["id_feature"]) is type(model.loss["id_feature"])
    reloaded = loaded.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert reloaded == pytest.approx(model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True), rel=1e-6)
