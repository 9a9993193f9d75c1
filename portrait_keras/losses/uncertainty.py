"""Combining losses: per task (paper eq. 5) and across tasks (eq. 6, or the plain average).

A task can have no labelled sample in a batch (all `-1`): its masked losses are then 0, and
that 0 is not a measured loss. Both combiners take the losses in task order and an optional
`present` of the same form (True = the task has labels in this batch, e.g.
`classification.has_labels(labels)`): a task not present adds nothing, neither
`exp(−s_i)·L_i` nor `s_i`, so s_i gets no gradient from that batch and does not drift (an
optimizer with momentum may still move it a little by its running averages).
"""

import keras
from keras import ops

from portrait_keras.losses._masks import as_float


def task_loss(cls_loss, ml_loss, lam=0.5):
    """Per-task loss L_i = L_i,cls + λ·L_i,ml (paper eq. 5; λ = 0.5 in §6.3).

    Args:
        cls_loss: scalar. Classification loss.
        ml_loss: scalar. Metric-learning loss (Batch Rank, triplet or HFE).
        lam: float ≥ 0. λ. Defaults to `0.5`.

    Returns:
        float32 scalar.
    """
    if not isinstance(lam, (int, float)) or lam < 0:
        raise ValueError(f"lam must be a number ≥ 0. Received: lam={lam!r}")
    return as_float(cls_loss) + lam * as_float(ml_loss)


def _per_task(values, tasks, what, dtype):
    """A list/tuple of one scalar per task, or a tensor `[..., n]`, as a `dtype` tensor `[..., n]`.

    `tasks` names the tasks in order (for the length check and the error message).
    """
    expected = f"one {what} per task ({', '.join(tasks)})"
    if isinstance(values, (list, tuple)):
        if len(values) != len(tasks):
            raise ValueError(f"Expected {expected}. Received: {len(values)} values")
        return ops.stack([ops.cast(ops.convert_to_tensor(v), dtype) for v in values], axis=-1)
    values = ops.cast(ops.convert_to_tensor(values), dtype)
    if not len(values.shape) or values.shape[-1] != len(tasks):
        raise ValueError(f"Expected {expected}, shape [..., {len(tasks)}]. Received: shape={values.shape}")
    return values


def _only_present(terms, present):
    """`terms` `[..., n]` with the tasks not `present` set to 0 (`present=None`: every task)."""
    if present is None:
        return terms
    return ops.where(present, terms, ops.zeros_like(terms))


@keras.saving.register_keras_serializable(package="portrait_keras")
class UncertaintyWeighting(keras.layers.Layer):
    """Uncertainty weighting of the task losses (paper eq. 6, Kendall et al. 2018).

        L = Σ_i exp(−s_i)·L_i + s_i     (over the tasks present in the batch)

    Holds the trainable s (`log_vars`, s_i = log σ_i²) of shape `[num_tasks]`, initialised
    to 0 (all weights 1). A task not present adds nothing (module docstring).

    Args:
        task_names: sequence of str. Task order of s; unique, non-empty.
        **kwargs: base `Layer` arguments.

    Call arguments:
        losses: list/tuple of `num_tasks` scalar tensors in `task_names` order, or a float
            tensor `[num_tasks]` (or `[..., num_tasks]`, one weighting per leading index).
        present: optional bools in the same form: True where the task has labels in the
            batch. Defaults to `None` (every task present).

    Returns:
        float32 scalar (`[...]` for a `[..., num_tasks]` tensor).

    Example:
    >>> import numpy as np
    >>> weighting = UncertaintyWeighting(["id", "gender"])
    >>> float(weighting(np.array([2.0, 1.0])))  # s = 0: the plain sum
    3.0
    >>> float(weighting(np.array([2.0, 1.0]), present=[True, False]))
    2.0
    """

    def __init__(self, task_names, **kwargs):
        super().__init__(**kwargs)
        if isinstance(task_names, str):
            raise ValueError(f"task_names must be a sequence of names. Received: task_names={task_names!r}")
        task_names = tuple(task_names)
        if not task_names or len(set(task_names)) != len(task_names):
            raise ValueError(f"task_names must be unique and non-empty. Received: task_names={task_names}")
        if not all(isinstance(t, str) and t for t in task_names):
            raise ValueError(f"task_names must be non-empty strings. Received: task_names={task_names}")
        self.task_names = task_names
        self.log_vars = self.add_weight(shape=(len(task_names),), initializer="zeros", name="log_vars")
        self.built = True

    def call(self, losses, present=None):
        values = _per_task(losses, self.task_names, "loss", "float32")
        if present is not None:
            present = _per_task(present, self.task_names, "present value", "bool")
        s = ops.cast(self.log_vars, values.dtype)
        return ops.sum(_only_present(ops.exp(-s) * values + s, present), axis=-1)

    def task_weights(self):
        """dict task → current weight exp(−s_i) (for the epoch logs)."""
        return {t: ops.exp(-self.log_vars[i]) for i, t in enumerate(self.task_names)}

    def get_config(self):
        return {**super().get_config(), "task_names": list(self.task_names)}


def average_losses(losses, present=None):
    """Plain mean of the task losses ("Ave." of paper Table 4), over the tasks present.

    Args:
        losses: list/tuple of scalar tensors (one per task), or a float tensor `[n]`
            (or `[..., n]`).
        present: optional bools in the same form: False leaves the task out of the mean.
            Defaults to `None` (every task).

    Returns:
        float32 scalar (`[...]` for a `[..., n]` tensor); `0` when no task is present.

    Example:
    >>> float(average_losses([1.0, 5.0], present=[True, False]))
    1.0
    """
    if isinstance(losses, (list, tuple)):
        num_tasks = len(losses)
    else:
        losses = as_float(losses)
        if not len(losses.shape):
            raise ValueError(f"Expected losses [..., n]. Received: shape={losses.shape}")
        num_tasks = losses.shape[-1]
    if not num_tasks:
        raise ValueError(f"average_losses needs at least one loss. Received: losses={losses!r}")
    tasks = [str(i) for i in range(num_tasks)]
    values = _per_task(losses, tasks, "loss", "float32")
    if present is None:
        return ops.mean(values, axis=-1)
    present = _per_task(present, tasks, "present value", "bool")
    total = ops.sum(_only_present(values, present), axis=-1)
    return total / ops.maximum(ops.sum(ops.cast(present, "float32"), axis=-1), 1.0)
