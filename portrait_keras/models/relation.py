"""The Siamese interpersonal-relation model of paper 004 §5 (Fig. 5, eqs. 15–17).

Two crops of two people go through ONE portrait backbone (the tied `K_l = K_r` of eq. 16:
a single set of variables, called twice), their pooled features are concatenated,
projected by `W_R` to a shared 256-d representation `x_g`, concatenated with the spatial
cues `x_s` of the two boxes, and read by one logistic unit per relation trait (eq. 15).
Beyond the paper, the classifier also reads `relu(W_s x_s)` (`spatial_hidden` units): eq. 15 is
linear in `x_s`, which cannot tell "close" (a small |x_l − x_r| whichever side A is on) from the
signed offset. In 15-epoch runs on the SynthPortrait pairs without it, `attached` scored 0.59
balanced accuracy (linear form) and 0.66–0.69 (`x_s` fed into `W_R` beside the 512 image
features), where a threshold on |x_l − x_r| / w_l alone reaches 0.93; 0.95 with it.
The loss of eq. 17 is the masked BCE of `portrait_keras.losses.relation` plus the L2
weight decay that `RelationModel.compute_loss` adds (see `RelationModel`, Args `l2`).
"""

import keras
from keras import ops

from portrait_keras.models.backbones import build_backbone
from portrait_keras.models.preprocessing import PREPROCESSING, ImageNormalization
from portrait_keras.traits import TRAITS

# Each box is (x, y, w, h): upper-left corner, width and height, x and w divided by the
# image width, y and h by its height (§5, spatial cue 1).
BOX_VALUES = 4
# 8 box values + 2 relative positions + 1 scale ratio (§5, cues 1–3).
SPATIAL_DIM = 2 * BOX_VALUES + 3


@keras.saving.register_keras_serializable(package="portrait_keras")
class SpatialCues(keras.layers.Layer):
    """The spatial cues `x_s` of paper 004 §5 from two normalised boxes.

    `[x_a, y_a, w_a, h_a, x_b, y_b, w_b, h_b]` (upper-left corner, width and height, x and w
    divided by the image width, y and h by its height) becomes those 8 values followed by
    the relative position `(x_a − x_b) / w_a`, `(y_a − y_b) / h_a` and the scale ratio
    `w_a / w_b` (§5, cues 1–3). Widths and heights are floored at `min_size` so a
    degenerate box gives a large, finite cue instead of Inf.

    Args:
        min_size: float. Smallest width/height used as a divisor. Defaults to `1e-3`.
        **kwargs: base `Layer` arguments.

    Call:
        boxes: float `[B, 8]`. Returns float `[B, 11]`.

    Example:
    >>> cues = SpatialCues()(keras.ops.convert_to_tensor([[0.1, 0.2, 0.2, 0.5, 0.5, 0.2, 0.1, 0.5]]))
    >>> [round(float(v), 3) for v in cues[0, 8:]]
    [-2.0, 0.0, 2.0]
    """

    def __init__(self, min_size=1e-3, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(min_size, (int, float)) or isinstance(min_size, bool) or not min_size > 0:
            raise ValueError(f"min_size must be a number > 0. Received: min_size={min_size!r}")
        self.min_size = float(min_size)

    def call(self, boxes):
        boxes = ops.cast(boxes, self.compute_dtype)
        xa, ya, wa, ha, xb, yb, wb, hb = (boxes[:, i : i + 1] for i in range(2 * BOX_VALUES))
        wa, ha, wb = (ops.maximum(v, self.min_size) for v in (wa, ha, wb))
        return ops.concatenate([boxes, (xa - xb) / wa, (ya - yb) / ha, wa / wb], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], SPATIAL_DIM)

    def get_config(self):
        return {**super().get_config(), "min_size": self.min_size}


@keras.saving.register_keras_serializable(package="portrait_keras")
class RelationModel(keras.Model):
    """Siamese relation-trait model with tied portrait backbones (paper 004 §5, Fig. 5).

    Args:
        backbone: str. A name of `models.backbones.BACKBONES`, shared by both branches.
            Defaults to `"tiny"`.
        input_shape: tuple of int. `(height, width, 3)` of each person's crop. Defaults to
            `(128, 64, 3)`.
        traits: sequence of str. Relation traits, one sigmoid output each. Defaults to `TRAITS`.
        hidden: int. Width of the shared representation `x_g` (`W_R`, 256 in the paper).
            Defaults to `256`.
        spatial_hidden: int. Units of the ReLU encoding of the spatial cues read by the
            classifier beside `x_s` (module docstring); only with `spatial_cues`. Defaults to `32`.
        dropout: float in [0, 1). Dropout on the two people's features before `W_R` and on
            `x_g` before the classifier, in training (not in the paper, which starts from a
            pre-trained DCN; from scratch on 1,800 SynthPortrait pairs the model otherwise
            fits the 5% label noise). Defaults to `0.5`.
        spatial_cues: bool. Concatenate the spatial cues of the two boxes (`SpatialCues`)
            to `x_g` (the paper's full S-DCN); False is its "without spatial cue" variant,
            for pairs given as two crops without boxes. Defaults to `True`.
        l2: float. Weight of eq. 17's weight decay: `l2 · (2·Σ‖k‖² + ‖W_R‖² + Σ‖w_g‖²)` over
            the backbone's kernels (counted twice: eq. 17 sums `k_l` and `k_r`, tied), the
            projection and the trait kernels; biases and normalisation scales are not
            decayed. The paper's MAP derivation weighs it 1 per sample under unit Gaussian
            priors; on minibatch means that would swamp the data term, so it is a small
            coefficient here. Defaults to `5e-5`.
        backbone_weights: str or None. `.weights.h5` of the backbone (e.g. one trained by a
            portrait run, §5 "initialize K_l and K_r by the representation we learn in
            Sec. 4"); not part of the config. Defaults to `None`.
        backbone_kwargs: dict or None. Extra backbone arguments. Defaults to `None`.
        preprocessing: str. In-graph normalisation, a key of `PREPROCESSING`. Defaults to
            `"imagenet"`.
        thresholds: sequence of float in (0, 1), or None. Per-trait probability above which
            the trait is called present (`interpret`, the evaluation); training sets them to
            the traits' positive shares in the train split, the decision that maximises
            balanced accuracy for calibrated probabilities. None = 0.5 each. Defaults to `None`.
        name: str. Defaults to `"relation"`.

    Call:
        A dict: `"image_a"`, `"image_b"` float32 `[B, H, W, 3]` in 0..255, and with
        `spatial_cues` `"boxes"` float32 `[B, 8]` (the two normalised boxes). Returns a dict:
        `"traits"` logits `[B, len(traits)]`, `"feature_a"` / `"feature_b"` the backbone
        features `[B, D]` of the two people.

    Example:
    >>> model = RelationModel(input_shape=(64, 32, 3))
    >>> out = model({"image_a": keras.ops.zeros((2, 64, 32, 3)), "image_b": keras.ops.zeros((2, 64, 32, 3)),
    ...              "boxes": keras.ops.ones((2, 8))})
    >>> tuple(out["traits"].shape)
    (2, 8)
    """

    def __init__(
        self,
        backbone="tiny",
        input_shape=(128, 64, 3),
        traits=TRAITS,
        hidden=256,
        spatial_hidden=32,
        dropout=0.5,
        spatial_cues=True,
        l2=5e-5,
        backbone_weights=None,
        backbone_kwargs=None,
        preprocessing="imagenet",
        thresholds=None,
        name="relation",
        **kwargs,
    ):
        # === Config ===
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise ValueError(f"input_shape must be (height, width, 3). Received: input_shape={input_shape}")
        if isinstance(traits, str) or not traits or len(set(traits)) != len(traits):
            raise ValueError(f"traits must be a non-empty sequence of distinct names. Received: traits={traits!r}")
        traits = tuple(traits)
        if not all(isinstance(t, str) and t for t in traits):
            raise ValueError(f"traits must be non-empty strings. Received: traits={traits!r}")
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
            raise ValueError(f"hidden must be a positive int. Received: hidden={hidden!r}")
        if not isinstance(spatial_hidden, int) or isinstance(spatial_hidden, bool) or spatial_hidden < 1:
            raise ValueError(f"spatial_hidden must be a positive int. Received: spatial_hidden={spatial_hidden!r}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1). Received: dropout={dropout!r}")
        if not isinstance(spatial_cues, bool):
            raise ValueError(f"spatial_cues must be a bool. Received: spatial_cues={spatial_cues!r}")
        if not isinstance(l2, (int, float)) or isinstance(l2, bool) or l2 < 0:
            raise ValueError(f"l2 must be a number >= 0. Received: l2={l2!r}")
        if preprocessing not in PREPROCESSING:
            raise ValueError(
                f"Unknown preprocessing. Allowed: {', '.join(PREPROCESSING)}. Received: preprocessing={preprocessing!r}"
            )
        thresholds = (0.5,) * len(traits) if thresholds is None else tuple(thresholds)
        if len(thresholds) != len(traits) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in thresholds
        ):
            raise ValueError(
                f"thresholds must be None or one number in (0, 1) per trait ({len(traits)}). "
                f"Received: thresholds={thresholds!r}"
            )

        # === Layers ===
        # One backbone, called on both crops: the weights are tied by construction (eq. 16).
        net = build_backbone(backbone, input_shape, backbone_weights, **(backbone_kwargs or {}))
        normalize = ImageNormalization(**PREPROCESSING[preprocessing], name="normalize")
        project = keras.layers.Dense(hidden, activation="relu", name="shared_representation")
        classify = keras.layers.Dense(len(traits), name="trait_classifier")

        # === Functional Model ===
        inputs = {
            "image_a": keras.Input(input_shape, dtype="float32", name="image_a"),
            "image_b": keras.Input(input_shape, dtype="float32", name="image_b"),
        }
        feature_a = net(normalize(inputs["image_a"]))
        feature_b = net(normalize(inputs["image_b"]))
        people = keras.layers.Concatenate(name="pair_features")([feature_a, feature_b])
        x_g = project(keras.layers.Dropout(dropout, name="feature_dropout")(people))
        x_g = keras.layers.Dropout(dropout, name="shared_dropout")(x_g)
        if spatial_cues:
            inputs["boxes"] = keras.Input((2 * BOX_VALUES,), dtype="float32", name="boxes")
            x_s = SpatialCues(name="spatial_cues")(inputs["boxes"])
            h_s = keras.layers.Dense(spatial_hidden, activation="relu", name="spatial_encoder")(x_s)
            x_g = keras.layers.Concatenate(name="with_spatial_cues")([x_s, h_s, x_g])
        outputs = {
            "traits": keras.layers.Identity(name="traits")(classify(x_g)),
            "feature_a": keras.layers.Identity(name="feature_a")(feature_a),
            "feature_b": keras.layers.Identity(name="feature_b")(feature_b),
        }
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self.backbone_name = backbone
        self.image_shape = input_shape
        self.traits = traits
        self.hidden = hidden
        self.dropout = float(dropout)
        self.spatial_hidden = spatial_hidden
        self.spatial_cues = spatial_cues
        self.l2 = float(l2)
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.preprocessing = preprocessing
        self.thresholds = tuple(float(v) for v in thresholds)
        self.backbone = net
        # Eq. 17's decayed weights, each with its multiplicity (the tied backbone twice).
        self._decayed = [(v, 2.0) for v in net.trainable_weights if _is_kernel(v)]
        self._decayed += [(project.kernel, 1.0), (classify.kernel, 1.0)]
        if spatial_cues:
            self._decayed.append((self.get_layer("spatial_encoder").kernel, 1.0))

    def weight_decay(self):
        """Eq. 17's prior terms times `l2`: a scalar (0 when `l2` is 0)."""
        if not self.l2:
            return ops.convert_to_tensor(0.0)
        total = sum(m * ops.sum(ops.square(ops.cast(v, "float32"))) for v, m in self._decayed)
        return self.l2 * total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled (masked BCE) loss plus `weight_decay()`: eq. 17."""
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        return loss + ops.cast(self.weight_decay(), loss.dtype)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone_name,
            "input_shape": list(self.image_shape),
            "traits": list(self.traits),
            "hidden": self.hidden,
            "spatial_hidden": self.spatial_hidden,
            "dropout": self.dropout,
            "spatial_cues": self.spatial_cues,
            "l2": self.l2,
            "backbone_kwargs": self.backbone_kwargs,
            "preprocessing": self.preprocessing,
            "thresholds": list(self.thresholds),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)
        return cls(**config)


def _is_kernel(variable):
    """Conv and dense kernels (the paper's "filters"), not biases or BatchNorm statistics."""
    return variable.path.rsplit("/", 1)[-1] in ("kernel", "depthwise_kernel")


def build_relation_model(**kwargs):
    """`RelationModel(**kwargs)`."""
    return RelationModel(**kwargs)
