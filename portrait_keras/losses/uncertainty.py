"""Combining losses: per task (paper eq. 5) and across tasks (eq. 6, or the plain average).

A task can have no labelled sample in a batch (all `-1`): its masked losses are then 0, and
that 0 is not a measured loss. Both combiners take an optional `mask` (True = the task has
labels in this batch, e.g. `classification.has_labels(labels)`): a masked-out task adds
nothing, neither `exp(−s_i)·L_i` nor `s_i`, so s_i gets no gradient from that batch and does
not drift (an optimizer with momentum may still move it a little by its running averages).
With a dict of losses, a missing key counts as masked out.
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


def _to_vector(values, task_names, what):
    """A dict (by task), a list (in order) or a tensor `[..., n]` → tensor `[..., n]`."""
    if isinstance(values, dict):
        return ops.stack([ops.convert_to_tensor(values[t]) for t in task_names], axis=-1)
    if isinstance(values, (list, tuple)):
        if len(values) != len(task_names):
            raise ValueError(f"Expected one {what} per task ({', '.join(task_names)}). Received: {len(values)} values")
        return ops.stack([ops.convert_to_tensor(v) for v in values], axis=-1)
    values = ops.convert_to_tensor(values)
    if values.shape[-1] != len(task_names):
        raise ValueError(f"Expected {what} [..., {len(task_names)}]. Received: shape={values.shape}")
    return values


def _losses_and_mask(losses, mask, task_names):
    """float32 losses `[..., n]` and bool mask `[..., n]` (or None) in `task_names` order."""
    if isinstance(mask, (list, tuple, dict)) and all(
        m is None for m in (mask.values() if isinstance(mask, dict) else mask)
    ):
        mask = None  # Keras fills `mask` with the inputs' (absent) Keras masks.
    given = None
    if isinstance(losses, dict):
        unknown = set(losses) - set(task_names)
        if unknown:
            raise ValueError(f"Unknown task losses {sorted(unknown)}. Allowed: {', '.join(task_names)}")
        given = [t in losses for t in task_names]
        losses = {t: as_float(losses.get(t, 0.0)) for t in task_names}
    if isinstance(mask, dict):
        unknown = set(mask) - set(task_names)
        if unknown:
            raise ValueError(f"Unknown tasks in mask {sorted(unknown)}. Allowed: {', '.join(task_names)}")
        mask = {t: mask.get(t, True) for t in task_names}
    values = as_float(_to_vector(losses, task_names, "loss"))
    if mask is not None:
        mask = ops.cast(_to_vector(mask, task_names, "mask value"), "bool")
    if given is not None and not all(given):
        given = ops.convert_to_tensor(given)
        mask = given if mask is None else mask & given
    return values, mask


@keras.saving.register_keras_serializable(package="portrait_keras")
class UncertaintyWeighting(keras.layers.Layer):
    """Uncertainty weighting of the task losses (paper eq. 6, Kendall et al. 2018).

        L = Σ_i exp(−s_i)·L_i + s_i

    Holds the trainable s (`log_vars`, s_i = log σ_i²) of shape `[num_tasks]`, initialised
    to 0 (all weights 1). Tasks masked out of a batch add nothing (module docstring).

    Args:
        task_names: sequence of str. Task order of s; unique, non-empty.
        **kwargs: base `Layer` arguments.

    Call arguments:
        losses: dict task → scalar (a missing task is masked out), list of scalars in
            `task_names` order, or a tensor `[..., num_tasks]`.
        mask: optional bools in the same form (dict, list or tensor): True where the task
            has labels in the batch. Defaults to every given task.

    Shapes:
        scalar out (`[...]` for a `[..., num_tasks]` tensor).

    Example:
    >>> weighting = UncertaintyWeighting(["id", "gender"])
    >>> float(weighting({"id": 2.0, "gender": 1.0}))
    3.0
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
        # `mask` here selects tasks; it is not a Keras timestep mask to propagate.
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    def __call__(self, losses, mask=None, **kwargs):
        # Keras layers take only tensors positionally; accept plain numbers too.
        losses = keras.tree.map_structure(as_float, losses)
        return super().__call__(losses, mask=mask, **kwargs)

    def call(self, losses, mask=None):
        values, mask = _losses_and_mask(losses, mask, self.task_names)
        s = ops.cast(self.log_vars, values.dtype)
        terms = ops.exp(-s) * values + s
        if mask is not None:
            terms = ops.where(mask, terms, ops.zeros_like(terms))
        return ops.sum(terms, axis=-1)

    def compute_output_spec(self, losses, mask=None):
        values, _ = _losses_and_mask(losses, None, self.task_names)
        return keras.KerasTensor(values.shape[:-1], dtype="float32")

    def task_weights(self):
        """dict task → current weight exp(−s_i) (for the epoch logs)."""
        return {t: ops.exp(-self.log_vars[i]) for i, t in enumerate(self.task_names)}

    def get_config(self):
        return {**super().get_config(), "task_names": list(self.task_names)}


def average_losses(losses, mask=None):
    """Plain mean of the task losses ("Ave." of paper Table 4).

    Args:
        losses: dict task → scalar, or list of scalars.
        mask: optional bools in the same form: False leaves the task out of the mean.
            Defaults to every given task.

    Returns:
        float32 scalar; `0` when every task is masked out.
    """
    if not len(losses):
        raise ValueError(f"average_losses needs at least one loss. Received: losses={losses!r}")
    names = tuple(losses) if isinstance(losses, dict) else tuple(str(i) for i in range(len(losses)))
    values, mask = _losses_and_mask(losses, mask, names)
    if mask is None:
        return ops.mean(values, axis=-1)
    total = ops.sum(ops.where(mask, values, ops.zeros_like(values)), axis=-1)
    return total / ops.maximum(ops.sum(ops.cast(mask, "float32"), axis=-1), 1.0)
