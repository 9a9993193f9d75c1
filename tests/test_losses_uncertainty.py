"""Combining losses: eq. 5 per task, eq. 6 uncertainty weighting, the plain average."""

import math

import keras
import numpy as np
import pytest

from portrait_keras.losses import UncertaintyWeighting, average_losses, task_loss

NAMES = ["id", "gender", "expression"]


def _weighting(s):
    layer = UncertaintyWeighting(NAMES)
    layer.log_vars.assign(np.array(s, "float32"))
    return layer


def test_task_loss_is_cls_plus_lambda_ml():
    assert float(task_loss(1.0, 2.0)) == pytest.approx(2.0)
    assert float(task_loss(1.0, 2.0, lam=0.25)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="Received: lam=-0.5"):
        task_loss(1.0, 2.0, lam=-0.5)


def test_uncertainty_weighting_is_eq_6():
    s, losses = [0.5, -1.0, 0.0], [2.0, 0.5, 1.5]
    expected = sum(math.exp(-si) * li + si for si, li in zip(s, losses))
    layer = _weighting(s)
    assert float(layer(np.array(losses, "float32"))) == pytest.approx(expected, rel=1e-6)
    as_list = [keras.ops.convert_to_tensor(v) for v in losses]
    assert float(layer(as_list)) == pytest.approx(expected, rel=1e-6)
    assert float(UncertaintyWeighting(NAMES)(np.array(losses))) == pytest.approx(sum(losses))  # s starts at 0


def test_tasks_not_present_add_neither_term():
    s, losses = [0.5, -1.0, 0.25], np.array([2.0, 0.5, 1.5], "float32")
    layer = _weighting(s)
    only_id_and_expression = math.exp(-0.5) * 2.0 + 0.5 + math.exp(-0.25) * 1.5 + 0.25
    assert float(layer(losses, present=[True, False, True])) == pytest.approx(only_id_and_expression, rel=1e-6)
    flags = [keras.ops.convert_to_tensor(f) for f in (True, False, True)]
    assert float(layer(losses, present=flags)) == pytest.approx(only_id_and_expression, rel=1e-6)
    assert float(layer(losses, present=np.array([True, False, True]))) == pytest.approx(
        only_id_and_expression, rel=1e-6
    )
    assert float(layer(losses, present=[False, False, False])) == 0.0


def test_s_moves_under_gradient_steps_and_absent_tasks_keep_theirs():
    # d/ds (e^{−s}·L + s) = 1 − e^{−s}·L: s rises for L > 1, falls for L < 1.
    inputs = keras.Input((3,))
    layer = UncertaintyWeighting(NAMES)
    model = keras.Model(inputs, layer(inputs, present=[True, True, False]))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
    losses = np.array([[3.0, 0.2, 5.0]] * 4, "float32")
    model.fit(losses, np.zeros(4, "float32"), epochs=5, batch_size=4, verbose=0)
    s = np.asarray(layer.log_vars)
    assert s[0] > 0.1 and s[1] < -0.1 and s[2] == 0.0


@pytest.mark.parametrize(
    "losses, present, match",
    [
        ([1.0, 2.0], None, r"one loss per task \(id, gender, expression\). Received: 2 values"),
        (
            np.ones(4, "float32"),
            None,
            r"one loss per task \(id, gender, expression\), shape \[..., 3\]. Received: shape=\(4,\)",
        ),
        (np.ones(3, "float32"), [True, False], "one present value per task"),
    ],
    ids=["short_list", "long_tensor", "short_present"],
)
def test_uncertainty_weighting_rejects_a_wrong_number_of_tasks(losses, present, match):
    layer = UncertaintyWeighting(NAMES)
    if isinstance(losses, list):
        losses = [keras.ops.convert_to_tensor(v) for v in losses]
    with pytest.raises(ValueError, match=match):
        layer(losses, present=present)


def test_task_weights_are_exp_minus_s():
    weights = _weighting([0.0, 1.0, -1.0]).task_weights()
    assert {k: round(float(v), 5) for k, v in weights.items()} == {
        "id": 1.0, "gender": round(math.exp(-1), 5), "expression": round(math.e, 5),
    }  # fmt: skip


def test_average_losses_is_the_mean_of_present_tasks():
    assert float(average_losses([1.0, 2.0, 6.0])) == pytest.approx(3.0)
    assert float(average_losses(np.array([1.0, 2.0, 6.0], "float32"))) == pytest.approx(3.0)
    assert float(average_losses([1.0, 5.0, 3.0], present=[True, False, True])) == pytest.approx(2.0)
    assert float(average_losses(np.array([1.0, 5.0]), present=np.array([False, True]))) == pytest.approx(5.0)
    assert float(average_losses([1.0, 5.0], present=[False, False])) == 0.0
    with pytest.raises(ValueError, match="at least one loss"):
        average_losses([])
    with pytest.raises(ValueError, match="one present value per task"):
        average_losses([1.0, 5.0], present=[True])
