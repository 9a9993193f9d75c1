"""`PortraitTrainer`: the functional portrait model plus its multi-task objective.

The wrapper owns what only training needs (the s_i of eq. 6, per-task loss trackers) so
that the exported model is the plain functional one. keras.ops only (and the replica gather
of `distribute`, the identity outside TensorFlow): it trains under TensorFlow and JAX alike.
"""

import keras
from keras import ops

from portrait_keras import losses as L
from portrait_keras.schema import IDENTITY, MULTI
from portrait_keras.training import distribute

METRIC_LOSSES = ("none", "triplet", "batch_rank", "hfe")
MULTITASK = ("average", "uncertainty")


def _appearance_code(y, tasks):
    """One int per sample for the appearance attributes together (-1 if any is unknown)."""
    labels = [ops.cast(y[t.name], "int32") for t in tasks]
    code, known = labels[0], labels[0] >= 0
    for t, lab in zip(tasks[1:], labels[1:]):
        code = code * t.num_classes + lab
        known = known & (lab >= 0)
    return ops.where(known, code, -ops.ones_like(code))


class PortraitTrainer(keras.Model):
    """Trains a portrait model with per-task losses L_i = L_cls + λ·L_ml (eq. 5), combined
    by their average or by learnable uncertainty (eq. 6).

    Args:
        model: keras.Model. The functional portrait model (`build_portrait_model`): a dict
            of `"<task>"` logits and `"<task>_feature"` pre-BNNeck features.
        tasks: list of `schema.Task`. The tasks the model learns, in output order.
        metric: str. `"none"`, `"triplet"`, `"batch_rank"` or `"hfe"`.
        lam: float. λ of eq. 5. Defaults to `0.5`.
        multitask: str. `"average"` or `"uncertainty"`.
        triplet_margin: float. Margin of the batch-hard triplet loss.
        label_smoothing: float. For the single-label classifiers.
        hfe_tasks: list of `schema.Task`. Appearance attributes whose joint label is the
            HFE loss's coarse class; used when `metric="hfe"`.
        total_steps: int. Training steps, for the HFE weight schedule.

    Labels `y` are a dict per task: ints with -1 unknown, multi-hot rows with -1 unknown.
    """

    def __init__(
        self,
        model,
        tasks,
        metric="none",
        lam=0.5,
        multitask="average",
        triplet_margin=0.3,
        label_smoothing=0.0,
        hfe_tasks=(),
        total_steps=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if metric not in METRIC_LOSSES:
            raise ValueError(f"metric must be one of {METRIC_LOSSES}. Received: metric={metric!r}")
        if multitask not in MULTITASK:
            raise ValueError(f"multitask must be one of {MULTITASK}. Received: multitask={multitask!r}")
        if lam < 0:
            raise ValueError(f"lam must be >= 0. Received: lam={lam}")
        if metric == "hfe" and not hfe_tasks:
            raise ValueError("metric='hfe' needs hfe_tasks (the appearance attributes). Received: hfe_tasks=()")
        self.portrait = model
        self.tasks = list(tasks)
        self.metric = metric
        self.lam = float(lam)
        self.multitask = multitask
        self.triplet_margin = float(triplet_margin)
        self.label_smoothing = float(label_smoothing)
        self.hfe_tasks = list(hfe_tasks)
        self.total_steps = max(int(total_steps), 1)
        names = [t.name for t in self.tasks]
        self.weighting = L.UncertaintyWeighting(names, name="uncertainty") if multitask == "uncertainty" else None
        self.task_trackers = {n: keras.metrics.Mean(name=f"loss_{n}") for n in names}
        # The HFE schedule's step. Not `optimizer.iterations`: JAX's stateless compute_loss
        # sees only the model's own variables.
        self.hfe_step = None
        if metric == "hfe":
            self.hfe_step = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="hfe_step", aggregation="only_first_replica"
            )
        # Every weight exists already (functional model, s_i): BackupAndRestore needs `built`.
        self.built = True

    def call(self, images, training=False):
        return self.portrait(images, training=training)

    def task_losses(self, y, y_pred):
        """Per-task L_i (eq. 5) and whether the batch had any label for it.

        Returns: dict name → scalar loss, dict name → bool scalar (task present).
        """
        out, present = {}, {}
        for task in self.tasks:
            labels = y[task.name]
            logits = ops.cast(y_pred[task.name], "float32")
            feature = ops.cast(y_pred[f"{task.name}_feature"], "float32")
            if task.kind == MULTI:
                labels = ops.cast(labels, "float32")
                cls = L.masked_multilabel_bce(labels, logits)
            else:
                labels = ops.cast(labels, "int32")
                smoothing = 0.0 if task.kind == IDENTITY else self.label_smoothing
                cls = L.masked_sparse_ce(labels, logits, label_smoothing=smoothing)
            loss = cls
            if self.metric != "none" and self.lam > 0:
                # Multi-hot rows go to the metric losses as they are: equal label sets are positives.
                loss = L.task_loss(cls, self._metric_loss(task, feature, labels, y), self.lam)
            out[task.name] = loss
            present[task.name] = L.has_labels(labels)
        return out, present

    def _metric_loss(self, task, feature, labels, y):
        if self.metric == "triplet":
            return L.batch_hard_triplet_loss(labels, feature, margin=self.triplet_margin)
        if self.metric == "hfe" and task.kind == IDENTITY:
            w = L.hfe_weight(ops.convert_to_tensor(self.hfe_step), self.total_steps, 1.0)
            return w * L.hfe_loss(labels, feature, _appearance_code(y, self.hfe_tasks))
        return L.batch_rank_loss(labels, feature)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The multi-task loss of the global batch, scaled for the distribution strategy.

        Under a TensorFlow multi-replica strategy every replica gathers all replicas' outputs
        and labels (`distribute.gather`, gradients flowing back to its own rows), so masked
        means, the metric losses and the tasks' presence are those of the global batch, and
        returns the loss divided by the replica count (Keras' `scale_loss_for_distribution`):
        the summed gradients and the logged losses equal one device's on the same batch.
        """
        y, y_pred = distribute.gather((y, y_pred))
        losses, present = self.task_losses(y, y_pred)
        if self.hfe_step is not None and training:
            self.hfe_step.assign_add(1.0)
        for name, value in losses.items():
            # A batch without labels for a task carries a placeholder 0: keep it out of the mean.
            self.task_trackers[name].update_state(value, sample_weight=ops.cast(present[name], "float32"))
        names = [t.name for t in self.tasks]
        values, flags = [losses[n] for n in names], [present[n] for n in names]
        if self.weighting is not None:
            total = self.weighting(values, present=flags)
        else:
            total = L.average_losses(values, present=flags)
        return distribute.scale_for_replicas(total)

    def uncertainties(self):
        """Current s_i by task name (empty for average weighting)."""
        if self.weighting is None:
            return {}
        values = ops.convert_to_numpy(self.weighting.log_vars)
        return {t.name: float(v) for t, v in zip(self.tasks, values)}
