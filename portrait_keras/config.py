"""Experiment configuration: frozen dataclasses holding the paper's defaults (§6.1).

An experiment is a function returning a `Config` (see `portrait_keras/experiments.py`); values
that follow from others (learning-rate steps, class counts) are computed where they are used.
`--set key=value` strings are parsed by the command line (`portrait_keras.commands.overrides`).
"""

import dataclasses
import json
import os
from typing import Literal, Optional, Union


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how batches are drawn.

    Args:
        csv: str or None. Annotation table; None uses the embedded SynthPortrait default.
        image_size: (height, width). Input size of the model. Defaults to `(256, 128)`.
        sampler: str. `"random"` (paper §5, the default), `"pk"` or `"shuffle"` (Table 4).
        p: int. Identities per P-K batch.
        k: int. Images per identity in a P-K batch.
        batch_size: int. Global batch size (split across replicas). Defaults to 128.
        skip_bad_images: bool. Leave unreadable image files out (listed at every epoch end)
            instead of stopping at the first. Defaults to False.
        erasing_probability: float. Chance of random erasing per training image. Defaults
            to 0.5 (the re-id recipe the paper follows).
        padding: int. Padding before the random crop, in pixels. Defaults to 10.
    """

    csv: Optional[str] = None
    image_size: tuple[int, int] = (256, 128)
    sampler: str = "random"
    p: int = 32
    k: int = 4
    batch_size: int = 128
    skip_bad_images: bool = False
    erasing_probability: float = 0.5
    padding: int = 10


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Backbone and head.

    Args:
        backbone: str. `"hrnet_w32"` (the paper's), `"resnet50"` or `"tiny"`.
        head: str. `"fss"` (Feature Space Split), `"sim_mtl"` or `"single_task"`.
        tasks: tuple of str or None. Tasks the model learns; None = every task of the schema.
        backbone_weights: str or None. Path to saved backbone weights (`.weights.h5`).
        backbone_kwargs: dict. Extra backbone arguments, e.g. `{"last_stride": 1}`.
    """

    backbone: str = "hrnet_w32"
    head: str = "fss"
    tasks: Optional[tuple[str, ...]] = None
    backbone_weights: Optional[str] = None
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Per-task and multi-task losses.

    Args:
        metric: str. Metric-learning loss on the pre-BNNeck feature: `"none"`,
            `"triplet"`, `"batch_rank"` (eq. 4) or `"hfe"` (re-id reads the HFE loss,
            the other tasks Batch Rank).
        lam: float. λ of eq. 5, L_i = L_cls + λ·L_ml. Defaults to 0.5 (§6.3).
        multitask: str. `"average"` (Table 4 "Ave.") or `"uncertainty"` (eq. 6).
        triplet_margin: float. Margin of the batch-hard triplet loss.
        label_smoothing: float. Label smoothing of the single-label classifiers.
    """

    metric: str = "none"
    lam: float = 0.5
    multitask: str = "average"
    triplet_margin: float = 0.3
    label_smoothing: float = 0.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and run settings (paper §6.1).

    Args:
        epochs: int. Training epochs. Defaults to 100.
        lr: float. Base learning rate of Adam. Defaults to 3.5e-4.
        warmup_epochs: int. Linear warm-up length, from `warmup_lr`. Defaults to 10.
        warmup_lr: float. Learning rate at step 0. Defaults to 3.5e-5.
        decay_epochs: tuple of int. Epochs where the rate is multiplied by `decay`.
        decay: float. Step factor. Defaults to 0.1.
        mixed_precision: bool. float16 compute on GPU, bfloat16 on CPU.
        jit_compile: bool or "auto". XLA compilation of the train step.
        seed: int or None. Seed of weights, sampling and augmentation; None draws one at the
            start (the same on every worker) and writes it into the run's config.json.
        eval_every: int. PIQ evaluation every n epochs (0 = only at the end).
        sync_batch_norm: bool or None. Under several replicas, BatchNormalization with the
            statistics of the global batch (SyncBN), as on one device; None = on whenever
            there are several replicas. Defaults to None.
    """

    epochs: int = 100
    lr: float = 3.5e-4
    warmup_epochs: int = 10
    warmup_lr: float = 3.5e-5
    decay_epochs: tuple[int, ...] = (30, 60, 90)
    decay: float = 0.1
    mixed_precision: bool = False
    jit_compile: Union[bool, Literal["auto"]] = "auto"
    seed: Optional[int] = 0
    eval_every: int = 1
    sync_batch_norm: Optional[bool] = None


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole experiment: name plus the four parts."""

    name: str
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d):
        def part(klass, values):
            fields = {f.name for f in dataclasses.fields(klass)}
            unknown = set(values) - fields
            if unknown:
                raise ValueError(f"Unknown {klass.__name__} fields {sorted(unknown)}. Allowed: {sorted(fields)}")
            return klass(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        return cls(
            name=d["name"],
            data=part(DataConfig, d.get("data", {})),
            model=part(ModelConfig, d.get("model", {})),
            loss=part(LossConfig, d.get("loss", {})),
            train=part(TrainConfig, d.get("train", {})),
        )


def default_run_dir(config):
    """`runs/<config.name>`: where a run goes when no run folder is given."""
    return os.path.join("runs", config.name)


def rescale_epochs(train, epochs):
    """`train` with `epochs` and its warm-up and decay epochs scaled to keep the paper's shape.

    The paper's 10/30/60/90 of 100 epochs become e.g. 2/6/12/18 of 20.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1. Received: epochs={epochs}")
    scale = epochs / train.epochs
    return dataclasses.replace(
        train,
        epochs=epochs,
        warmup_epochs=min(epochs - 1, round(train.warmup_epochs * scale)),
        decay_epochs=tuple(e for e in (max(1, round(d * scale)) for d in train.decay_epochs) if e < epochs),
    )
