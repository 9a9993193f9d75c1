"""The portrait interpretation model: backbone → Feature Space Split → BNNeck → heads (paper §5).

`PortraitModel` is a functional `keras.Model` that carries what it is: its `get_config` holds
the schema, the number of ids, the backbone, the head layout, the tasks and the input shape, so
a `.keras` file alone is enough to evaluate, interpret, search, report and export
(`model.schema` after `keras.models.load_model`), as keras-hub's Backbone/Task models do.
"""

import keras

from portrait_keras.models.backbones import build_backbone
from portrait_keras.models.heads import task_head
from portrait_keras.models.preprocessing import PREPROCESSING, ImageNormalization
from portrait_keras.models.subspaces import LAYOUTS, FeatureSpaceSplit, make_layout
from portrait_keras.schema import BACKGROUNDS, IDENTITY, Schema


@keras.saving.register_keras_serializable(package="portrait_keras")
class PortraitModel(keras.Model):
    """The functional multi-task model of paper Fig. 6, carrying its schema.

    Args:
        schema: `Schema`. Tasks, aspects and class lists.
        num_ids: int or None. Number of training identities (re-id classes); required
            when the model has the identity task. Defaults to `None`.
        backbone: str. A name of `models.backbones.BACKBONES`. Defaults to `"tiny"`.
        head: str. `"fss"` (Feature Space Split, §5), `"sim_mtl"` (every task reads the
            whole vector, §6.2) or `"single_task"` (one task, the whole vector).
            Defaults to `"fss"`.
        tasks: sequence of str or None. Task names of the model, kept in schema order;
            `None` = all schema tasks; exactly one for `"single_task"`. Defaults to `None`.
        input_shape: tuple of int. `(height, width, 3)`. Defaults to `(256, 128, 3)`.
        backbone_weights: str or None. Path to saved backbone weights (`.weights.h5`), read
            once when the model is built; not part of the config (a saved model has its
            weights). Defaults to `None`.
        backbone_kwargs: dict or None. Extra builder arguments (e.g. `{"last_stride": 1}`).
            Defaults to `None`.
        fss_kwargs: dict or None. `free_ratio` / `shared_ratio` of `fss_layout`; only with
            `head="fss"`. Defaults to `None`.
        preprocessing: str. The in-graph normalisation, a key of `PREPROCESSING`: `"imagenet"`
            (mean/std-normalised RGB), `"caffe"` (BGR minus the mean pixel, for Keras'
            ResNet-50 ImageNet weights) or `"clip"` (CLIP's mean/std, for the `vit_*`
            backbones). Defaults to `"imagenet"`.
        background: str. How the images it is trained on show the background of a person
            with a `mask` (`data.background`, paper 002 §6.3): `"keep"`, `"mean"` or `"blur"`.
            The model does not apply it (its input is the image); it carries it so that
            what reads images for it (evaluation, search, embed) shows them the same way.
            Defaults to `"keep"`.
        name: str. Model name. Defaults to `"portrait"`.

    Attributes:
        schema: `Schema`. The dataset's schema (class names of every task).
        tasks: tuple of str. The model's tasks, in schema order.
        num_ids: int or None. Re-id classes.
        background: str. As the argument.

    Call:
        Input `images` float32 `[B, H, W, 3]` in 0..255; a dict output:
        `"<task>"` logits `[B, C]` (identity task: `C = num_ids`), `"<task>_feature"` the
        sub-vector before the BNNeck `[B, d_task]`, and `"embedding"` the re-id BNNeck output
        `[B, d_id]` when the model has the identity task.

    Example:
    >>> from portrait_keras.schema import default_schema
    >>> model = PortraitModel(default_schema(), 10, input_shape=(64, 32, 3))
    >>> outputs = model(keras.ops.zeros((2, 64, 32, 3)))
    >>> tuple(outputs["id"].shape), tuple(outputs["embedding"].shape)
    ((2, 10), (2, 141))
    >>> model.tasks[:3]
    ('id', 'gender', 'age')
    """

    def __init__(
        self,
        schema,
        num_ids=None,
        *,
        backbone="tiny",
        head="fss",
        tasks=None,
        input_shape=(256, 128, 3),
        backbone_weights=None,
        backbone_kwargs=None,
        fss_kwargs=None,
        preprocessing="imagenet",
        background="keep",
        name="portrait",
        **kwargs,
    ):
        # === Config ===
        if head not in LAYOUTS:
            raise ValueError(f"Unknown head. Allowed: {', '.join(LAYOUTS)}. Received: head={head!r}")
        if preprocessing not in PREPROCESSING:
            raise ValueError(
                f"Unknown preprocessing. Allowed: {', '.join(PREPROCESSING)}. Received: preprocessing={preprocessing!r}"
            )
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}. Received: background={background!r}")
        if isinstance(schema, dict):
            schema = Schema.from_dict(schema)
        if fss_kwargs and head != "fss":
            raise ValueError(f"fss_kwargs apply only to head='fss'. Received: head={head!r}, fss_kwargs={fss_kwargs!r}")
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise ValueError(f"input_shape must be (height, width, 3). Received: input_shape={input_shape}")
        if isinstance(tasks, str):
            raise ValueError(f"tasks must be a sequence of task names. Received: tasks={tasks!r}")
        model_schema = schema.subset(tasks) if tasks is not None else schema
        identity = model_schema.identity_task
        if identity is not None and (not isinstance(num_ids, int) or num_ids < 1):
            raise ValueError(
                f"The model has the identity task {identity.name!r}: num_ids must be a positive int. "
                f"Received: num_ids={num_ids!r}"
            )
        reserved = {"embedding", "images", "normalize", "feature_space_split", backbone, name}
        reserved |= {f"{n}_{suffix}" for n in model_schema.names for suffix in ("feature", "bnneck", "classifier")}
        clash = reserved.intersection(model_schema.names)
        if clash:
            raise ValueError(f"Task names clash with output keys or layer names. Received: {sorted(clash)}")

        # === Layers ===
        net = build_backbone(backbone, input_shape, backbone_weights, **(backbone_kwargs or {}))
        dim = net.output_shape[-1]
        layout = make_layout(head, schema, dim, tasks=tasks, **(fss_kwargs or {}))

        # === Functional Model ===
        images = keras.Input(input_shape, dtype="float32", name="images")
        x = ImageNormalization(**PREPROCESSING[preprocessing], name="normalize")(images)
        features = net(x)
        parts = FeatureSpaceSplit(layout, name="feature_space_split")(features)
        outputs = {}
        for task in model_schema.tasks:
            num_classes = num_ids if task.kind == IDENTITY else task.num_classes
            neck, logits = task_head(parts[task.name], num_classes, task.name)
            outputs[task.name] = logits
            outputs[f"{task.name}_feature"] = parts[task.name]
            if task.kind == IDENTITY:
                outputs["embedding"] = neck
        # Name each output's last layer by its key, so `model.output_names` are the dict keys.
        outputs = {key: keras.layers.Identity(name=key)(value) for key, value in outputs.items()}
        super().__init__(images, outputs, name=name, **kwargs)

        # === Config ===
        self.schema = schema
        self.num_ids = num_ids
        self.backbone_name = backbone
        self.head = head
        self.tasks = tuple(model_schema.names)
        self.task_subset = None if tasks is None else tuple(model_schema.names)
        self.image_shape = input_shape
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.fss_kwargs = dict(fss_kwargs or {})
        self.preprocessing = preprocessing
        self.background = background

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "schema": self.schema.to_dict(),
            "num_ids": self.num_ids,
            "backbone": self.backbone_name,
            "head": self.head,
            "tasks": None if self.task_subset is None else list(self.task_subset),
            "input_shape": list(self.image_shape),
            "backbone_kwargs": self.backbone_kwargs,
            "fss_kwargs": self.fss_kwargs,
            "preprocessing": self.preprocessing,
            "background": self.background,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)
        schema = config.pop("schema")
        return cls(Schema.from_dict(schema) if isinstance(schema, dict) else schema, **config)


def build_portrait_model(schema, num_ids=None, **kwargs):
    """`PortraitModel(schema, num_ids, **kwargs)` (the name every caller knows)."""
    return PortraitModel(schema, num_ids, **kwargs)
