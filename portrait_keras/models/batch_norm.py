"""BatchNormalization that calls TensorFlow's fused kernel under the TensorFlow backend.

The one documented exception to the keras.ops-only rule of `portrait_keras/models`
(see `ruff.toml` here): Keras 3.15's `BatchNormalization` under TensorFlow computes the
moments, the normalisation and their gradients as a dozen separate ops, where PyTorch (and
TensorFlow's own `FusedBatchNormV3`, oneDNN on CPU) runs one kernel each way. On the 2-core
CPU that was 31% of an HRNet-W32 training step (benchmarks/RESULTS.md, issue #19). Every other
backend, and every layout the kernel does not cover, runs Keras' own code unchanged.
"""

import contextlib

import keras

# Whether the backbones build this module's `BatchNormalization` (True) or Keras' own.
# Read at build time by `batch_normalization`; models saved either way load either way.
_FUSED = [True]


@contextlib.contextmanager
def fused_batch_norm(enabled=True):
    """Within the block, `batch_normalization` builds this module's `BatchNormalization` if
    `enabled`, else Keras' (for a same-run comparison of both). Restored on exit."""
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled must be a bool. Received: enabled={enabled!r}")
    before = _FUSED[0]
    _FUSED[0] = enabled
    try:
        yield
    finally:
        _FUSED[0] = before


def fused_by_default():
    """Whether `batch_normalization` builds this module's `BatchNormalization` now."""
    return _FUSED[0]


def batch_normalization(**kwargs):
    """The BN layer the backbones build: this module's `BatchNormalization(**kwargs)` by
    default, Keras' `keras.layers.BatchNormalization(**kwargs)` inside `fused_batch_norm(False)`."""
    return (BatchNormalization if _FUSED[0] else keras.layers.BatchNormalization)(**kwargs)


@keras.saving.register_keras_serializable(package="portrait_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' `BatchNormalization` (Ioffe & Szegedy 2015, Alg. 1), with TensorFlow's fused
    kernel where it applies.

    Same arguments, variables (`gamma`, `beta`, `moving_mean`, `moving_variance`), config
    and results as `keras.layers.BatchNormalization`, so weights, converters and
    `isinstance(layer, keras.layers.BatchNormalization)` keep working. Same class name too:
    Keras names a layer's entry in a weights file after its class (`batch_normalization_7`),
    so `.weights.h5` files written with Keras' BN load into models built with this one and
    back. Registered as `portrait_keras>BatchNormalization`: a `.keras` file saved with
    Keras' BN still loads as Keras' BN (unfused), one saved with this one loads as this one. Under the TensorFlow
    backend, for 4-D channels-last inputs (`axis=-1` or `3`) without mask, renorm or
    `synchronized=True`, `call` runs `tf.raw_ops.FusedBatchNormV3`:

    - training: `y = gamma · (x - μ_B) / sqrt(σ²_B + ε) + beta` with the batch mean and the
      *biased* batch variance (Alg. 1), as Keras; the kernel returns the Bessel-corrected
      variance, so the moving update uses `σ²_B · (n - 1) / n` with `n = B·H·W`, and Keras'
      convention `moving = momentum · moving + (1 - momentum) · batch` (PyTorch would
      instead average the unbiased variance);
    - inference (or `trainable=False`): the moving statistics, as Keras.

    Inputs of any float dtype are cast to float32 first and the output to the layer's
    compute dtype, as Keras does, so mixed precision (bfloat16/float16) gives Keras' result.
    `ε` is passed as is (`tf.nn.fused_batch_norm` would raise it to 1.001e-5 for cuDNN).
    Elsewhere (JAX, torch, NumPy backends; other ranks and axes; masks; renorm; synchronized
    BN, as `training.distribute.synchronized_batch_norm` sets it) `super().call` runs.

    Measured (benchmarks/train_throughput_timm.py, TF backend, fp32, 2-core CPU): see
    benchmarks/RESULTS.md, "Fused BatchNormalization".

    Args:
        **kwargs: the arguments of `keras.layers.BatchNormalization`.

    Example:
    >>> layer = BatchNormalization(momentum=0.9, epsilon=1e-5)
    >>> tuple(layer(keras.ops.ones((2, 4, 4, 3)), training=True).shape)
    (2, 4, 4, 3)
    """

    def _fused_applies(self, inputs, mask):
        if keras.backend.backend() != "tensorflow" or mask is not None or self.renorm or self.synchronized:
            return False
        return len(inputs.shape) == 4 and self.axis in (-1, 3)

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # the documented exception: TF backend only

        x = tf.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels], "float32")
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels], "float32")
        moving_mean = tf.cast(self.moving_mean, "float32")
        moving_variance = tf.cast(self.moving_variance, "float32")
        train = bool(training) and self.trainable
        if train:
            # exponential_avg_factor=1: the kernel returns this batch's mean and (unbiased) variance.
            y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=gamma,
                offset=beta,
                mean=tf.zeros([0], "float32"),
                variance=tf.zeros([0], "float32"),
                epsilon=self.epsilon,
                exponential_avg_factor=1.0,
                data_format="NHWC",
                is_training=True,
            )
            shape = tf.shape(x)
            n = tf.cast(shape[0] * shape[1] * shape[2], "float32")
            biased = variance * ((n - 1.0) / tf.maximum(n, 1.0))
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + biased * (1.0 - self.momentum))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=gamma,
                offset=beta,
                mean=moving_mean,
                variance=moving_variance,
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )
        return tf.cast(y, self.compute_dtype)


# The class fields of a functional-model layer config that make it this module's BN
# (for builders that edit a config, as `resnet50` does keras.applications').
FUSED_CLASS_CONFIG = {
    "module": BatchNormalization.__module__,
    "class_name": BatchNormalization.__name__,
    "registered_name": keras.saving.get_registered_name(BatchNormalization),
}
