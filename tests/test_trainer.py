"""`PortraitTrainer`: per-task loss logs and the HFE schedule's step."""

import keras
import numpy as np
import pytest

from portrait_keras.models import build_portrait_model
from portrait_keras.schema import APPEARANCE, SINGLE, default_schema
from portrait_keras.training.trainer import PortraitTrainer

SHAPE = (64, 32, 3)


def _batch(rng, n=8, gender_known=True):
    y = {
        "id": np.array([0, 0, 1, 1, 2, 2, 3, 3]),
        "gender": np.array([0, 1] * (n // 2)) if gender_known else -np.ones(n, "int64"),
        "age": rng.integers(0, 5, n),
        "physique": rng.integers(0, 3, n),
        "height": rng.integers(0, 3, n),
        "body": rng.integers(0, 5, n),
        "arm": rng.integers(0, 5, n),
        "expression": rng.integers(0, 2, (n, 7)).astype("float32"),
    }
    return rng.uniform(0, 255, (n, *SHAPE)).astype("float32"), y


def _trainer(**kwargs):
    keras.utils.set_random_seed(0)
    schema = default_schema()
    model = build_portrait_model(schema, 4, input_shape=SHAPE)
    trainer = PortraitTrainer(model, list(schema.tasks), **kwargs)
    trainer.compile(optimizer=keras.optimizers.Adam(0.0), jit_compile=False)
    return trainer


def test_a_batch_without_labels_stays_out_of_the_task_loss_log():
    rng = np.random.default_rng(0)
    (x1, y1), (x2, y2) = _batch(rng), _batch(rng, gender_known=False)
    trainer = _trainer(metric="batch_rank")
    x = np.concatenate([x1, x2])
    y = {k: np.concatenate([y1[k], y2[k]]) for k in y1}
    history = trainer.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    # lr 0: weights stay, so batch 1's gender loss is what the trainer computes on it now.
    expected, _ = trainer.task_losses(y1, trainer(x1, training=True))
    assert history["loss_gender"][0] == pytest.approx(float(expected["gender"]), rel=1e-4)
    assert history["loss_gender"][0] > 0


def test_hfe_step_counts_training_steps_only():
    rng = np.random.default_rng(1)
    x, y = _batch(rng)
    hfe_tasks = [t for t in default_schema().aspect_tasks(APPEARANCE) if t.kind == SINGLE]
    trainer = _trainer(metric="hfe", hfe_tasks=hfe_tasks, total_steps=4)
    trainer.fit(x, y, batch_size=4, epochs=2, verbose=0)
    trainer.evaluate(x, y, batch_size=4, verbose=0)
    assert float(keras.ops.convert_to_numpy(trainer.hfe_step)) == 4.0
    assert _trainer(metric="batch_rank").hfe_step is None
