"""The paper's learning-rate schedule (§6.1): linear warm-up, then ×0.1 steps."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="portrait_keras")
class WarmupMultiStep(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `warmup_lr` to `lr`, then `lr · decay^k` after the k-th boundary.

    Paper §6.1: 3.5e-5 → 3.5e-4 over 10 epochs, ×0.1 at epochs 30, 60 and 90. Steps are
    optimizer iterations; `boundaries` and `warmup_steps` are in steps.

    Args:
        lr: float. Base rate reached at the end of the warm-up.
        warmup_lr: float. Rate at step 0.
        warmup_steps: int. Length of the warm-up (0 = none).
        boundaries: list of int. Steps where the rate is multiplied by `decay`, ascending.
        decay: float. Factor at each boundary. Defaults to `0.1`.

    Example:
    >>> s = WarmupMultiStep(1.0, 0.1, 10, [20, 30])
    >>> [round(float(s(i)), 3) for i in (0, 5, 10, 25, 35)]
    [0.1, 0.55, 1.0, 0.1, 0.01]
    """

    def __init__(self, lr, warmup_lr, warmup_steps, boundaries, decay=0.1):
        if lr <= 0 or warmup_lr <= 0:
            raise ValueError(f"Learning rates must be > 0. Received: lr={lr}, warmup_lr={warmup_lr}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0. Received: warmup_steps={warmup_steps}")
        boundaries = [int(b) for b in boundaries]
        if boundaries != sorted(boundaries):
            raise ValueError(f"boundaries must be ascending. Received: boundaries={boundaries}")
        self.lr = float(lr)
        self.warmup_lr = float(warmup_lr)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = boundaries
        self.decay = float(decay)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = max(self.warmup_steps, 1)
        frac = ops.minimum(step / warm, 1.0)
        rate = self.warmup_lr + (self.lr - self.warmup_lr) * frac
        if self.warmup_steps == 0:
            rate = ops.full_like(step, self.lr)
        passed = ops.zeros_like(step)
        for b in self.boundaries:
            passed = passed + ops.cast(step >= b, "float32")
        return rate * ops.power(self.decay, passed)

    def get_config(self):
        return {
            "lr": self.lr,
            "warmup_lr": self.warmup_lr,
            "warmup_steps": self.warmup_steps,
            "boundaries": list(self.boundaries),
            "decay": self.decay,
        }


def paper_schedule(train_config, steps_per_epoch):
    """`WarmupMultiStep` for a `TrainConfig`, with epochs turned into steps."""
    return WarmupMultiStep(
        lr=train_config.lr,
        warmup_lr=train_config.warmup_lr,
        warmup_steps=train_config.warmup_epochs * steps_per_epoch,
        boundaries=[e * steps_per_epoch for e in train_config.decay_epochs],
        decay=train_config.decay,
    )
