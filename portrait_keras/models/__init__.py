"""Models of portrait interpretation (paper §5, Fig. 6): backbone → Feature Space Split →
BNNeck → heads. Only keras.ops and registered layers, so a saved `.keras` file loads with
`safe_mode=True` and the model runs on every Keras backend.
"""

from portrait_keras.models.backbones import BACKBONES, build_backbone
from portrait_keras.models.batch_norm import fused_batch_norm
from portrait_keras.models.clip import (
    CLIP_CONFIGS,
    CLIP_MEAN,
    CLIP_STD,
    ClipModel,
    clip_image_encoder,
    clip_model,
    clip_text_encoder,
)
from portrait_keras.models.heads import probabilities, task_head
from portrait_keras.models.hrnet import hrnet, hrnet_w32
from portrait_keras.models.portrait_model import PortraitModel, build_portrait_model
from portrait_keras.models.preprocessing import ImageNormalization
from portrait_keras.models.relation import TRAITS, RelationModel, SpatialCues, build_relation_model
from portrait_keras.models.resnet import resnet50
from portrait_keras.models.subspaces import (
    LAYOUTS,
    FeatureSpaceSplit,
    fss_blocks,
    fss_layout,
    make_layout,
    sim_mtl_layout,
    single_task_layout,
)
from portrait_keras.models.tiny import tiny
from portrait_keras.models.vit import vit, vit_b16, vit_flops, vit_tiny

__all__ = [
    "BACKBONES",
    "CLIP_CONFIGS",
    "CLIP_MEAN",
    "CLIP_STD",
    "ClipModel",
    "FeatureSpaceSplit",
    "ImageNormalization",
    "LAYOUTS",
    "PortraitModel",
    "RelationModel",
    "SpatialCues",
    "TRAITS",
    "build_backbone",
    "build_portrait_model",
    "build_relation_model",
    "clip_image_encoder",
    "clip_model",
    "clip_text_encoder",
    "fss_blocks",
    "fss_layout",
    "fused_batch_norm",
    "hrnet",
    "hrnet_w32",
    "make_layout",
    "probabilities",
    "resnet50",
    "sim_mtl_layout",
    "single_task_layout",
    "task_head",
    "tiny",
    "vit",
    "vit_b16",
    "vit_flops",
    "vit_tiny",
]
