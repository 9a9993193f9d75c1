"""Experiment configuration: frozen dataclasses holding the paper's defaults (§6.1), no logic.

An experiment is a function returning a `Config` (see `experiments/configs.py`); values that
follow from others (learning-rate steps, class counts) are computed where they are used.
"""

import dataclasses
import json
import os
import typing
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


def override(config, key, value):
    """Returns `config` with the dotted field `key` (e.g. `"train.epochs"`) set to `value`.

    A string `value` (from `--set key=value`) is converted to the field's declared type:
    bool takes `true`/`false`/`yes`/`no`/`1`/`0` (any case); int and float what `int()` and
    `float()` take; a tuple field a JSON list (`[30, 60]`, `[id, arm]`) or one bare value (a
    one-element tuple); an `Optional` field `null` or `none` for None; `jit_compile` also
    `auto`. Fields of other types (`backbone_kwargs`) read JSON, else keep the string.
    Other values are set as they are (lists become tuples).

    Raises:
        ValueError: unknown key, or a string that does not convert, e.g.
            "--set train.lr: expected a float. Received: 'abc'".
    """
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in ("data", "model", "loss", "train"):
        raise ValueError(
            f"Override keys look like 'part.field' with part in data, model, loss, train. Received: {key!r}"
        )
    section = getattr(config, parts[0])
    fields = {f.name: f for f in dataclasses.fields(section)}
    if parts[1] not in fields:
        raise ValueError(f"Unknown field {key!r}. Allowed: {', '.join(parts[0] + '.' + f for f in fields)}")
    if isinstance(value, str):
        kind = typing.get_type_hints(type(section))[parts[1]]
        try:
            value = _from_string(value, kind)
        except ValueError:
            raise ValueError(f"--set {key}: expected {_describe(kind)}. Received: {value!r}") from None
    if isinstance(value, list):
        value = tuple(value)
    return dataclasses.replace(config, **{parts[0]: dataclasses.replace(section, **{parts[1]: value})})


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _from_string(text, kind):
    """`text` converted to the type annotation `kind`; ValueError if it does not fit."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        if text.strip().lower() in _TRUE + _FALSE:
            return text.strip().lower() in _TRUE
        raise ValueError(text)
    if kind is int or kind is float:
        return kind(text)
    if kind is str:
        return text
    if origin is Literal:
        for allowed in args:
            if text.strip().lower() == str(allowed).lower():
                return allowed
        raise ValueError(text)
    if origin is Union and type(None) in args:
        if text.strip().lower() in ("null", "none"):
            return None
        rest = tuple(a for a in args if a is not type(None))
        return _from_string(text, rest[0] if len(rest) == 1 else Union[rest])
    if origin is Union and all(_is_simple(a) for a in args):
        for a in args:
            try:
                return _from_string(text, a)
            except ValueError:
                pass
        raise ValueError(text)
    if kind is tuple or origin is tuple:
        return _tuple_from_string(text, args)
    try:  # dict, object and other unions: JSON when it parses, else the string
        value = json.loads(text)
    except ValueError:
        return text
    return tuple(value) if isinstance(value, list) else value


def _tuple_from_string(text, args):
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            items = json.loads(stripped)
        except ValueError:  # [id, arm]: unquoted words
            inner = stripped[1:-1].strip()
            items = [w.strip().strip("'\"") for w in inner.split(",")] if inner else []
    else:
        items = [text]
    if not args:
        return tuple(items)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(items)
    if len(args) != len(items):
        raise ValueError(text)
    out = []
    for item, kind in zip(items, args):
        if isinstance(item, (list, dict)) or item is None:
            raise ValueError(text)
        out.append(_from_string(item if isinstance(item, str) else json.dumps(item), kind))
    return tuple(out)


def _is_simple(kind):
    return kind in (bool, int, float, str) or typing.get_origin(kind) is Literal


def _describe(kind):
    """`kind` in words for error messages: "a float", "null or a str", ..."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        return "a bool (true/false, yes/no, 1/0)"
    if kind in (int, float, str):
        return f"{'an' if kind is int else 'a'} {kind.__name__}"
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is Union and type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        return "null or " + _describe(rest[0] if len(rest) == 1 else Union[rest])
    if origin is Union:
        return " or ".join(_describe(a) for a in args)
    if kind is tuple or origin is tuple:
        if not args:
            return "a JSON list or a single value"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {args[0].__name__} (JSON list or a single value)"
        return f"a list of {len(args)} values ({', '.join(a.__name__ for a in args)})"
    return getattr(kind, "__name__", repr(kind))


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
