"""Experiment configuration: frozen dataclasses holding the paper's defaults (§6.1).

An experiment is a function returning a `Config` (see `portrait_keras/experiments.py`); values
that follow from others (learning-rate steps, class counts) are computed where they are used.
Every part checks its values when it is made (`__post_init__`): a wrong type, a value out of
range or an unknown choice (with the nearest allowed spelling) is a `ValueError` naming the
field, before anything is built.
`--set key=value` strings are parsed by the command line (`portrait_keras.commands.overrides`).
"""

import dataclasses
import difflib
import json
import os
import re
import typing
from typing import Literal, Optional, Union

# The choices of the string fields. TF-free copies of the names the builders take
# (`models.backbones.BACKBONES`, `models.portrait_model.LAYOUTS`, `data.samplers.SAMPLERS`,
# `training.trainer.METRIC_LOSSES` / `MULTITASK`; a test keeps them equal), so that a bad value
# is refused before TensorFlow starts.
Backbone = Literal["hrnet_w32", "hrnet", "resnet50", "tiny", "vit_b16", "vit_tiny"]
Head = Literal["fss", "sim_mtl", "single_task", "relation"]
Sampler = Literal["random", "pk", "shuffle"]
Metric = Literal["none", "triplet", "batch_rank", "hfe"]
Multitask = Literal["average", "uncertainty"]
Preprocessing = Literal["auto", "imagenet", "caffe", "clip"]
Background = Literal["keep", "mean", "blur"]
PropagationSpace = Literal["task", "joint"]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how batches are drawn.

    Args:
        csv: str or None. Annotation table; None uses the embedded SynthPortrait default.
        extra_csvs: tuple of str. Further annotation tables trained together with `csv` as one
            dataset (`--data A --data B`; `portrait_keras.data.sources`): the union of their
            tasks, identities kept apart per dataset, the test splits evaluated per dataset too.
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
        background: str. Background removal (paper 002 §6.3) for rows with a person `mask`:
            `"keep"`, `"mean"` (background → its mean colour) or `"blur"` (→ blurred), in
            training and evaluation (`Annotations.with_background`). Defaults to `"keep"`.
    """

    csv: Optional[str] = None
    extra_csvs: tuple[str, ...] = ()
    image_size: tuple[int, int] = (256, 128)
    sampler: Sampler = "random"
    p: int = 32
    k: int = 4
    batch_size: int = 128
    skip_bad_images: bool = False
    erasing_probability: float = 0.5
    padding: int = 10
    background: Background = "keep"

    def __post_init__(self):
        _check_types(self, "data")
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            _fail("data.image_size", self.image_size, "(height, width), each at least 16 pixels")
        _at_least(self, "data", p=1, k=1, batch_size=1, padding=0)
        if self.extra_csvs and not self.csv:
            _fail("data.extra_csvs", self.extra_csvs, "empty unless data.csv names the first dataset")
        _between(self, "data", erasing_probability=(0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Backbone and head.

    Args:
        backbone: str. `"hrnet_w32"` (the paper's), `"resnet50"`, `"tiny"`, `"vit_b16"` (CLIP
            ViT-B/16's image tower, §6.2–6.3) or `"vit_tiny"` (its miniature).
        head: str. `"fss"` (Feature Space Split), `"sim_mtl"` or `"single_task"`; `"relation"`
            trains the Siamese relation model of paper 004 §5 on a pair CSV instead
            (`training/relation.py`).
        tasks: tuple of str or None. Tasks the model learns; None = every task of the schema.
        backbone_weights: str or None. Path to saved backbone weights (`.weights.h5`); for
            `resnet50` also `"imagenet"`, Keras' own ImageNet file where Keras caches it; for
            `vit_b16` also a converted CLIP ViT-B-16 `.weights.h5` (`convert_clip`).
        backbone_kwargs: dict. Extra backbone arguments, e.g. `{"last_stride": 1}`, or
            `{"patch_stride": 12}` for `vit_b16`'s overlapping patches.
        init_from: str or None. Fine-tuning: a run folder or `.keras` file whose weights
            start this run wherever a weight of the same name and shape exists (the id
            classifier of other data keeps its fresh start). A resumed run's state wins.
        preprocessing: str. The model's in-graph normalisation: `"imagenet"` (mean/std RGB),
            `"caffe"` (BGR minus the mean pixel), `"clip"` (CLIP's mean/std) or `"auto"` (clip
            for the `vit_*` backbones, caffe for `resnet50` with `backbone_weights="imagenet"`,
            else imagenet). Defaults to `"auto"`.
    """

    backbone: Backbone = "hrnet_w32"
    head: Head = "fss"
    tasks: Optional[tuple[str, ...]] = None
    backbone_weights: Optional[str] = None
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)
    init_from: Optional[str] = None
    preprocessing: Preprocessing = "auto"

    def __post_init__(self):
        _check_types(self, "model")
        if self.backbone_weights == "imagenet" and self.backbone != "resnet50":
            _fail("model.backbone_weights", "imagenet", "a .weights.h5 path ('imagenet' is for resnet50)")
        if self.tasks is not None and (not self.tasks or len(set(self.tasks)) != len(self.tasks)):
            _fail("model.tasks", self.tasks, "null (every task of the data) or a non-empty list of distinct task names")


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

    metric: Metric = "none"
    lam: float = 0.5
    multitask: Multitask = "average"
    triplet_margin: float = 0.3
    label_smoothing: float = 0.0

    def __post_init__(self):
        _check_types(self, "loss")
        _at_least(self, "loss", lam=0.0, triplet_margin=0.0)
        if not 0.0 <= self.label_smoothing < 1.0:
            _fail("loss.label_smoothing", self.label_smoothing, "a number in [0, 1)")


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
        ap_rounds: int. Rounds M of the second stage of paper 004's Algorithm 1 after the
            `epochs` of masked training: each round fills the training split's missing
            attribute labels by attribute propagation (`portrait_keras.propagation`) on the
            model's features and fine-tunes on ground truth plus those pseudo labels
            (`training.propagation_rounds`). `0` = off. Defaults to 0.
        ap_epochs: int. Fine-tuning epochs per round. Defaults to 1.
        ap_threshold: float. A pseudo label is used only when its posterior (eq. 11) is
            at least this (the most probable class of a single-label task; every column's
            more probable value of a multi-label task); the others stay masked. `0` keeps
            every filled label (the paper). Defaults to 0.0.
        ap_k: int. Neighbours h of the propagation's affinity graph (eq. 6). Defaults to 10.
        ap_space: str. The features a task is propagated on under the Feature Space Split
            head: `"task"`, its own subspace (one MRF per task), or `"joint"`, all the
            tasks' subspaces side by side (one MRF, the co-occurrence prior across tasks).
            `sim_mtl`'s tasks share one vector and are always joint. Defaults to `"task"`
            (`training.propagation_rounds` says why).
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
    ap_rounds: int = 0
    ap_epochs: int = 1
    ap_threshold: float = 0.0
    ap_k: int = 10
    ap_space: PropagationSpace = "task"

    def __post_init__(self):
        _check_types(self, "train")
        _at_least(self, "train", epochs=1, warmup_epochs=0, eval_every=0, ap_rounds=0, ap_epochs=1, ap_k=1)
        _between(self, "train", ap_threshold=(0.0, 1.0))
        for field in ("lr", "warmup_lr", "decay"):
            if not getattr(self, field) > 0:
                _fail(f"train.{field}", getattr(self, field), "a number > 0")
        if any(e < 1 for e in self.decay_epochs) or list(self.decay_epochs) != sorted(set(self.decay_epochs)):
            _fail("train.decay_epochs", list(self.decay_epochs), "increasing epochs, each at least 1")
        if self.seed is not None and self.seed < 0:
            _fail("train.seed", self.seed, "null or an int >= 0")


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


# Keras' ImageNet weights without the classifier, as `keras.applications.ResNet50` caches them.
KERAS_IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def keras_imagenet_weights():
    """Where Keras keeps its ResNet-50 ImageNet file: `$KERAS_HOME/models/`, else `~/.keras/models/`.

    For `models.resnet.resnet50(weights="imagenet")`; it lives here, with no Keras import, so
    that the command line checks it before TensorFlow starts.

    Raises: ValueError saying where to put the file when it is not there (nothing is downloaded).
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(home, "models", KERAS_IMAGENET_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"ResNet-50 weights='imagenet' reads Keras' {KERAS_IMAGENET_FILE}, not found at {path}. Nothing "
            f"is downloaded here: copy it there from a machine where "
            f"`keras.applications.ResNet50(include_top=False)` has run (it caches the file in ~/.keras/models/)."
        )
    return path


def model_preprocessing(model):
    """The `PortraitModel` preprocessing of a `ModelConfig` (`"auto"` resolved)."""
    if model.preprocessing != "auto":
        return model.preprocessing
    if model.backbone.startswith("vit"):
        return "clip"  # CLIP's towers were trained on CLIP-normalised RGB
    return "caffe" if model.backbone == "resnet50" and model.backbone_weights == "imagenet" else "imagenet"


def _fail(key, value, expected):
    raise ValueError(f"{key}: expected {expected}. Received: {value!r}")


def _check_types(part, section):
    """The field values fit their annotations: a Literal's choices (with the nearest spelling),
    bool, int (not a bool), float (an int too), str, tuples of those, Optional."""
    hints = typing.get_type_hints(type(part))
    for field in dataclasses.fields(part):
        value, kind = getattr(part, field.name), hints[field.name]
        if _fits(value, kind):
            continue
        choices = literal_choices(kind)
        if choices and isinstance(value, str):
            raise ValueError(unknown_choice_message(f"{section}.{field.name}", value, choices))
        _fail(f"{section}.{field.name}", value, describe_type(kind))


def literal_choices(kind):
    """The allowed values of a `Literal` annotation (also inside `Union`), else ()."""
    if typing.get_origin(kind) is Literal:
        return typing.get_args(kind)
    if typing.get_origin(kind) is Union:
        return tuple(c for a in typing.get_args(kind) for c in literal_choices(a))
    return ()


def unknown_choice_message(key, value, choices):
    """ "KEY: unknown value 'x'. Allowed: a, b (did you mean 'a'?)" """
    allowed = [c for c in choices if isinstance(c, str)]
    text = ", ".join(str(c) for c in choices)
    near = difflib.get_close_matches(str(value).lower(), allowed, n=1, cutoff=0.5)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{key}: unknown value {value!r}. Allowed: {text}{hint}"


def _fits(value, kind):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if kind is dict:
        return isinstance(value, dict)
    if origin is Literal:
        return value in args
    if origin is Union:
        return any(_fits(value, a) for a in args)
    if kind is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args))
    return True


def describe_type(kind):
    """`kind` in words for error messages: "a float", "null or a str", ..."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        return "a bool (true/false, yes/no, 1/0)"
    if kind in (int, float, str):
        return f"{'an' if kind is int else 'a'} {kind.__name__}"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is Union and type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        return "null or " + describe_type(rest[0] if len(rest) == 1 else Union[rest])
    if origin is Union:
        return " or ".join(describe_type(a) for a in args)
    if kind is tuple or origin is tuple:
        if not args:
            return "a JSON list or a single value"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {args[0].__name__} (JSON list or a single value)"
        return f"a list of {len(args)} values ({', '.join(a.__name__ for a in args)})"
    return getattr(kind, "__name__", repr(kind))


def _at_least(part, section, **minimums):
    for field, low in minimums.items():
        if getattr(part, field) < low:
            what = f"an int >= {low}" if isinstance(low, int) else f"a number >= {low}"
            _fail(f"{section}.{field}", getattr(part, field), what)


def _between(part, section, **ranges):
    for field, (low, high) in ranges.items():
        if not low <= getattr(part, field) <= high:
            _fail(f"{section}.{field}", getattr(part, field), f"a number in [{low}, {high}]")


def default_run_dir(config):
    """Where a run goes when no run folder is given: `runs/NAME` on the embedded SynthPortrait
    default, `runs/NAME-DATASET` on a CSV, DATASET being the CSV's folder name (plus the file
    name unless it is `annotations.csv`), so runs on different data never share a folder.

    Example:
    >>> from portrait_keras import experiments
    >>> default_run_dir(experiments.get("fss_uncert"))
    'runs/fss_uncert'
    >>> c = experiments.get("fss_uncert")
    >>> default_run_dir(dataclasses.replace(c, data=dataclasses.replace(c.data, csv="/d/Market-1501/market.csv")))
    'runs/fss_uncert-Market-1501-market'
    """
    if not config.data.csv:
        return os.path.join("runs", config.name)
    names = [dataset_name(csv) for csv in (config.data.csv, *config.data.extra_csvs)]
    return os.path.join("runs", f"{config.name}-{'+'.join(names)}")


def dataset_name(csv):
    """A dataset's short name: its CSV's folder, or `folder-stem` unless the file is
    `annotations.csv`, in file-name-safe characters.

    >>> dataset_name("/d/Market-1501/market.csv"), dataset_name("/d/duke/annotations.csv")
    ('Market-1501-market', 'duke')
    """
    folder = os.path.basename(os.path.dirname(os.path.abspath(csv)))
    stem = os.path.splitext(os.path.basename(csv))[0]
    dataset = folder if stem == "annotations" else f"{folder}-{stem}" if folder else stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("._") or "data"


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
