"""`portrait_keras.models.batch_norm.BatchNormalization` (here `FusedBatchNormalization`):
TensorFlow's fused kernel, numerically Keras' BatchNormalization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from portrait_keras.models import resnet50, tiny
from portrait_keras.models.batch_norm import BatchNormalization as FusedBatchNormalization
from portrait_keras.models.batch_norm import batch_normalization, fused_batch_norm
from portrait_keras.training import distribute

SHAPE = (4, 6, 5, 8)  # n = 4·6·5 = 120 per channel: the Bessel factor 119/120 is visible


def pair(**kwargs):
    """Keras' BN and ours with equal, non-trivial weights (moving variance far from 1)."""
    rng = np.random.default_rng(1)
    ours, reference = FusedBatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    ours.build(SHAPE)
    reference.build(SHAPE)
    for a, b in zip(ours.weights, reference.weights):
        value = rng.uniform(0.2, 3.0, a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    return ours, reference


def step(layer, x, training):
    """Output and gradients (input, trainable weights) of a non-trivial loss, in a tf.function."""

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, "float32") * tf.sin(x))
        return y, tape.gradient(loss, [x, *layer.trainable_weights])

    return run(tf.constant(x))


def inputs(seed=0):
    return (np.random.default_rng(seed).normal(size=SHAPE) * 3 + 2).astype("float32")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "kwargs", [{"momentum": 0.9, "epsilon": 1e-5}, {"center": False}, {"scale": False, "epsilon": 1e-3}]
)
def test_equals_keras_batch_norm_forward_backward_and_moving_statistics(kwargs, training):
    ours, reference = pair(**kwargs)
    for seed in range(3):  # three steps: the moving statistics compound
        x = inputs(seed)
        (y, grads), (y_ref, grads_ref) = step(ours, x, training), step(reference, x, training)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
        for g, g_ref in zip(grads, grads_ref):
            np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5 * np.abs(g_ref).max())
    for a, b in zip(ours.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    moved = not np.allclose(ours.moving_variance.numpy(), pair(**kwargs)[0].moving_variance.numpy())
    assert moved == training


def test_moving_variance_is_the_biased_batch_variance():
    layer = FusedBatchNormalization(momentum=0.0)  # moving = this batch's statistics
    x = inputs()
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), x.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), x.var((0, 1, 2)), rtol=1e-5)  # ddof=0


def test_frozen_layer_runs_in_inference_mode():
    ours, reference = pair()
    ours.trainable = reference.trainable = False
    x = inputs()
    np.testing.assert_allclose(step(ours, x, True)[0], step(reference, x, True)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.moving_mean.numpy(), reference.moving_mean.numpy())


class global_policy:
    """Within the block, Keras' global dtype policy is `name`."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.before = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.before)


@pytest.mark.parametrize("policy, ulp", [("mixed_bfloat16", 2**-8), ("mixed_float16", 2**-11)])
def test_mixed_precision_gives_keras_result(policy, ulp):
    with global_policy(policy):
        ours, reference = pair(momentum=0.9)
        x = inputs()
        y, y_ref = step(ours, x, True)[0], step(reference, x, True)[0]
    assert y.dtype == y_ref.dtype == policy.split("_")[1]
    y, y_ref = np.asarray(tf.cast(y, "float32")), np.asarray(tf.cast(y_ref, "float32"))
    np.testing.assert_allclose(y, y_ref, rtol=ulp, atol=ulp)  # both float32 inside: at most one rounding apart
    np.testing.assert_allclose(ours.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-5)
    assert ours.moving_variance.dtype == "float32"


def op_types(layer, shape, training=True):
    graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(tf.TensorSpec(shape)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("training", [True, False])
def test_fused_kernel_runs_for_4d_channels_last(training):
    assert "FusedBatchNormV3" in op_types(FusedBatchNormalization(), (2, 3, 3, 4), training)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"synchronized": True}, (2, 3, 3, 4)),  # SyncBN of the distributed training: Keras' path
        ({"axis": 1}, (2, 4, 3, 3)),  # channels first
        ({}, (2, 4)),  # 2-D, as a BNNeck
        ({"renorm": True}, (2, 3, 3, 4)),
    ],
)
def test_keras_path_where_the_kernel_does_not_apply(kwargs, shape):
    layer = FusedBatchNormalization(**kwargs)
    assert "FusedBatchNormV3" not in op_types(layer, shape)
    reference = keras.layers.BatchNormalization(**kwargs)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    np.testing.assert_allclose(layer(x, training=True), reference(x, training=True), rtol=1e-6, atol=1e-6)


def test_synchronized_batch_norm_block_switches_fused_layers_to_keras_path():
    model = tiny((32, 16, 3), widths=(8, 16))
    layers = distribute.batch_norm_layers(model)
    assert layers and all(isinstance(layer, FusedBatchNormalization) for layer in layers)
    with distribute.synchronized_batch_norm(model):
        assert "FusedBatchNormV3" not in op_types(layers[0], (2, 8, 4, 8))
    assert "FusedBatchNormV3" in op_types(layers[0], (2, 8, 4, 8))


def test_config_round_trip_save_load_and_fit(tmp_path):
    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, center=False, name="bn")
    config = layer.get_config()
    assert FusedBatchNormalization.from_config(config).get_config() == config
    assert config == keras.layers.BatchNormalization.from_config(config).get_config()
    images = keras.Input((4, 4, 3))
    model = keras.Sequential([images, keras.layers.Conv2D(2, 1), layer, keras.layers.GlobalAveragePooling2D()])
    model.compile("adam", "mse")
    x, y = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype("float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.layers[1], FusedBatchNormalization)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_models_and_weights_saved_with_keras_batch_norm_still_load(tmp_path):
    with fused_batch_norm(False):
        old = tiny((32, 16, 3), widths=(8, 16))
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in old.layers)
    old(np.ones((2, 32, 16, 3), "float32"), training=True)  # non-default moving statistics
    old.save(tmp_path / "old.keras")
    old.save_weights(tmp_path / "old.weights.h5")
    x = np.random.default_rng(0).normal(size=(2, 32, 16, 3)).astype("float32")
    expected = old.predict(x, verbose=0)

    loaded = keras.models.load_model(tmp_path / "old.keras", safe_mode=True)
    assert keras.layers.BatchNormalization in {type(layer) for layer in loaded.layers}  # stays Keras' BN
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6)
    new = tiny((32, 16, 3), widths=(8, 16))  # fused by default: same variables and paths
    assert any(isinstance(layer, FusedBatchNormalization) for layer in new.layers)
    new.load_weights(tmp_path / "old.weights.h5")
    np.testing.assert_allclose(new.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    new.save_weights(tmp_path / "new.weights.h5")  # and back
    with fused_batch_norm(False):
        again = tiny((32, 16, 3), widths=(8, 16))
    again.load_weights(tmp_path / "new.weights.h5")
    np.testing.assert_allclose(again.predict(x, verbose=0), expected, rtol=1e-6)


def test_factory_and_resnet_follow_the_default():
    assert type(batch_normalization()) is FusedBatchNormalization
    with fused_batch_norm(False):
        assert type(batch_normalization()) is keras.layers.BatchNormalization
        plain = resnet50((32, 32, 3))
    with pytest.raises(ValueError, match="Received: enabled=1"), fused_batch_norm(1):
        pass
    fused = resnet50((32, 32, 3))
    kinds = {type(layer) for layer in fused.layers}
    assert FusedBatchNormalization in kinds and keras.layers.BatchNormalization not in kinds
    assert [w.path for w in fused.weights] == [w.path for w in plain.weights]
    assert all(layer.momentum == 0.9 for layer in distribute.batch_norm_layers(fused))


def test_equals_keras_batch_norm_under_xla():
    # jit_compile=True (the GPU setting under TF): XLA compiles the fused kernel and its gradient.
    ours, reference = pair(momentum=0.9, epsilon=1e-5)
    x = tf.constant(inputs())

    def run(layer):
        @tf.function(jit_compile=True)
        def f(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * tf.sin(x))
            return y, tape.gradient(loss, x)

        return [t.numpy() for t in f(x)] + [layer.moving_variance.numpy()]

    for a, b in zip(run(ours), run(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
