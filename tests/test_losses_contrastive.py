"""CLIP's symmetric contrastive loss (`losses/contrastive.py`) against a NumPy reference."""

import keras
import numpy as np
import pytest

from portrait_keras.losses import ClipContrastiveLoss, clip_contrastive_loss


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _clip_reference(logits):
    """CLIP's pseudocode: (CE(logits, arange) over texts + CE over images) / 2."""
    n = len(logits)
    image = -_log_softmax(logits)[np.arange(n), np.arange(n)].mean()
    text = -_log_softmax(logits.T)[np.arange(n), np.arange(n)].mean()
    return (image + text) / 2


def test_distinct_captions_give_clips_loss():
    logits = np.random.default_rng(0).normal(scale=3.0, size=(5, 5)).astype("float32")
    value = float(clip_contrastive_loss(np.arange(5), logits))
    assert value == pytest.approx(_clip_reference(logits), rel=1e-5)


def test_equal_captions_are_positives_of_each_other():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(4, 4)).astype("float32")
    ids = np.array([7, 2, 7, 5])
    # By hand: the targets of images 0 and 2 are texts 0 and 2 at 1/2 each; KL = CE − log 2.
    targets = np.array([[0.5, 0, 0.5, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 1]])
    entropy = np.array([np.log(2), 0, np.log(2), 0])
    image = (-(targets * _log_softmax(logits)).sum(1) - entropy).mean()
    text = (-(targets * _log_softmax(logits.T)).sum(1) - entropy).mean()
    assert float(clip_contrastive_loss(ids, logits)) == pytest.approx((image + text) / 2, rel=1e-5)
    # Scoring the two texts of one caption alike costs nothing more than scoring one of them.
    same = np.where(np.eye(4, dtype=bool) | (ids[:, None] == ids[None, :]), 10.0, -10.0).astype("float32")
    assert float(clip_contrastive_loss(ids, same)) == pytest.approx(0.0, abs=1e-6)
    # As distinct captions, rows 0 and 2 split their mass over two texts: log 2 for half the rows.
    assert float(clip_contrastive_loss(np.arange(4), same)) == pytest.approx(np.log(2) / 2, rel=1e-5)


def test_the_loss_class_compiles_round_trips_and_trains_a_logit_scale():
    loss = ClipContrastiveLoss()
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, ClipContrastiveLoss) and again.get_config() == loss.get_config()
    logits = np.random.default_rng(2).normal(size=(3, 3)).astype("float32")
    assert float(loss(np.arange(3), logits)) == pytest.approx(float(clip_contrastive_loss(np.arange(3), logits)))
    # A learnable scale on fixed cosines grows when the diagonal is the largest (CLIP's temperature).
    model = keras.Sequential([keras.Input((3,)), _Scale()])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=ClipContrastiveLoss())
    x = (np.eye(3) * 0.8 + 0.1).astype("float32")
    # Not shuffled: the columns of x are the texts of the rows in this order.
    model.fit(x, np.arange(3), batch_size=3, epochs=5, shuffle=False, verbose=0)
    assert float(model.layers[0].scale) > 1.5


class _Scale(keras.layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale
