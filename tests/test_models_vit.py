"""The CLIP ViT backbones (`models/vit.py`): overlapping patches, CLIP weights, FLOPs, CLIP input."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from portrait_keras.config import ModelConfig, model_preprocessing
from portrait_keras.models import CLIP_MEAN, CLIP_STD, PortraitModel, build_backbone, clip_model, vit, vit_flops
from portrait_keras.models.clip import CLIP_CONFIGS, clip_image_encoder
from portrait_keras.models.vit import is_clip_weights_file, vit_b16, vit_tiny
from portrait_keras.schema import default_schema

TINY = CLIP_CONFIGS["tiny"]  # patch 8, width 32, 2 blocks, trained grid 4×4


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("stride, grid", [(8, (8, 4)), (6, (10, 5)), (4, (15, 7))])
def test_the_patch_stride_sets_the_grid_of_overlapping_patches(stride, grid):
    model = vit_tiny((64, 32, 3), patch_stride=stride)
    conv = model.get_layer("conv1")
    assert conv.output.shape == (None, *grid, 32) and conv.kernel.shape == (8, 8, 3, 32)
    # The position table stays the trained 4×4 grid (+ class token): the same weights at any stride.
    assert tuple(model.get_layer("embeddings").position_embedding.shape) == (17, 32)
    assert model.get_layer("resblocks_0_attn").input.shape == (None, 1 + grid[0] * grid[1], 32)
    # Patch (i, j) reads the 8×8 window at (i·stride, j·stride): overlapping when stride < 8.
    images = _images((64, 32, 3), n=1)
    patches = _numpy(keras.Model(model.input, conv.output)(images))
    kernel = _numpy(conv.kernel)
    for i, j in ((0, 0), (1, 2), (grid[0] - 1, grid[1] - 1)):
        window = images[0, i * stride : i * stride + 8, j * stride : j * stride + 8]
        np.testing.assert_allclose(patches[0, i, j], np.einsum("hwc,hwco->o", window, kernel), rtol=1e-4, atol=1e-4)


def test_vit_b16s_patches_at_stride_12_give_transreids_21_by_10_grid():
    # ViT-B/16's geometry (16-pixel patches, 224-pixel weights) at a narrow width: vit_b16
    # itself takes ~20 s to build on 2 cores (test_vit_b16_parameter_count, slow).
    model = clip_image_encoder(
        (256, 128, 3), image_size=224, patch_size=16, patch_stride=12, width=8, layers=1, heads=2, output_dim=None
    )
    assert model.get_layer("conv1").output.shape == (None, 21, 10, 8)
    # Tokens: 1 + 21·10; CLIP's 14×14 table (+ class token) resized to 21×10.
    assert tuple(model.get_layer("embeddings").position_embedding.shape) == (197, 8)
    assert model.get_layer("ln_pre").output.shape == (None, 211, 8)
    assert model.output_shape == (None, 8) and "proj" not in {layer.name for layer in model.layers}


def test_a_clip_model_file_gives_the_backbone_the_image_towers_pre_projection_feature(tmp_path):
    clip = clip_model("tiny", input_shape=(64, 32, 3))
    for w in clip.weights:  # away from the initialisers, so a copy is recognisable
        w.assign(np.random.default_rng(len(w.path)).normal(scale=0.2, size=w.shape).astype("float32"))
    path = str(tmp_path / "clip_tiny.weights.h5")
    clip.save_weights(path)
    assert is_clip_weights_file(path)

    backbone = build_backbone("vit_tiny", (64, 32, 3), weights=path)
    tower = clip.image_encoder
    pre_projection = keras.Model(tower.input, tower.get_layer("ln_post").output)
    x = _images((64, 32, 3))
    np.testing.assert_allclose(_numpy(backbone(x)), _numpy(pre_projection(x)), atol=1e-5)
    # CLIP's projection applied to the backbone feature is CLIP's image embedding.
    np.testing.assert_allclose(
        _numpy(backbone(x)) @ _numpy(tower.get_layer("proj").kernel), _numpy(clip.encode_image(x)), atol=1e-4
    )
    # Overlapping patches take the same conv kernel.
    overlapping = vit_tiny((64, 32, 3), weights=path, patch_stride=6)
    kernel = overlapping.get_layer("conv1").kernel
    np.testing.assert_array_equal(_numpy(kernel), _numpy(tower.get_layer("conv1").kernel))


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, on the refused wider file
def test_a_backbone_weights_file_round_trips_and_other_clip_sizes_are_refused(tmp_path):
    first = vit_tiny((64, 32, 3), patch_stride=6)
    path = str(tmp_path / "vit_tiny.weights.h5")
    first.save_weights(path)
    assert not is_clip_weights_file(path)
    second = vit_tiny((64, 32, 3), weights=path, patch_stride=6)
    x = _images((64, 32, 3))
    np.testing.assert_allclose(_numpy(second(x)), _numpy(first(x)), atol=1e-6)

    wider = str(tmp_path / "clip_wide.weights.h5")
    clip_model("tiny", vision_width=64).save_weights(wider)
    with pytest.raises(ValueError, match="does not hold CLIP tiny weights"):
        vit_tiny((64, 32, 3), weights=wider)
    with pytest.raises(ValueError, match="no download"):
        vit_tiny((64, 32, 3), weights=str(tmp_path / "missing.weights.h5"))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: vit_tiny((64, 32, 3), patch_stride=0), "Received: patch_stride=0"),
        (lambda: vit_tiny((64, 32, 3), quick_gelu="yes"), "Received: quick_gelu='yes'"),
        (lambda: vit((64, 32, 3), config="ViT-L-14"), "Received: config='ViT-L-14'"),
        (lambda: vit_tiny((60, 32, 3)), "input_shape must be a multiple of patch_size=8"),
        (lambda: vit_tiny((6, 32, 3), patch_stride=4), "input_shape must be at least patch_size=8"),
    ],
)
def test_the_builders_validate_their_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _matmul_flops(model, batch, shape):
    """FLOPs (2 per multiply-add) of the Conv2D, MatMul and Einsum ops in the traced graph."""
    graph = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec([batch, *shape])).graph
    total = 0
    for op in graph.get_operations():
        if op.type == "Conv2D":
            kh, kw, cin, cout = op.inputs[1].shape
            total += 2 * math.prod(op.outputs[0].shape[:3]) * kh * kw * cin * cout
        elif op.type == "MatMul":
            (m, k), (_, n) = op.inputs[0].shape, op.inputs[1].shape
            total += 2 * m * k * n
        elif op.type == "Einsum":  # every index of a contraction is looped over once
            inputs = op.get_attr("equation").decode().split("->")[0].split(",")
            sizes = {c: d for spec, t in zip(inputs, op.inputs) for c, d in zip(spec, t.shape)}
            total += 2 * math.prod(sizes.values())
        else:
            assert "MatMul" not in op.type and "Conv" not in op.type, op.type
    return total


@pytest.mark.parametrize("stride", [8, 6])
def test_vit_flops_is_the_matmul_count_of_the_graph(stride):
    shape = (64, 32, 3)
    model = vit_tiny(shape, patch_stride=stride)
    # One more image adds its FLOPs; the per-model position-embedding resize cancels.
    counted = _matmul_flops(model, 2, shape) - _matmul_flops(model, 1, shape)
    sizes = dict(patch_size=TINY["patch_size"], width=TINY["vision_width"], layers=TINY["vision_layers"])
    assert counted == vit_flops(shape, patch_stride=stride, **sizes)


def test_vit_models_take_clip_input_and_reload_with_safe_mode(tmp_path):
    assert model_preprocessing(ModelConfig(backbone="vit_b16")) == "clip"
    assert model_preprocessing(ModelConfig(backbone="vit_tiny")) == "clip"
    assert model_preprocessing(ModelConfig(backbone="vit_b16", preprocessing="imagenet")) == "imagenet"
    assert model_preprocessing(ModelConfig(backbone="tiny")) == "imagenet"

    model = PortraitModel(
        default_schema(),
        5,
        backbone="vit_tiny",
        input_shape=(64, 32, 3),
        backbone_kwargs={"patch_stride": 6},
        preprocessing="clip",
    )
    normalize = model.get_layer("normalize")
    assert (normalize.mean, normalize.std) == (CLIP_MEAN, CLIP_STD)
    white = _numpy(normalize(np.full((1, 3), 255.0, "float32")))[0]
    np.testing.assert_allclose(white, [(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)], rtol=1e-5)
    model.save(tmp_path / "vit.keras")
    again = keras.models.load_model(tmp_path / "vit.keras", safe_mode=True)
    assert again.preprocessing == "clip" and again.backbone_kwargs == {"patch_stride": 6}
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 32, 3)).astype("float32")
    np.testing.assert_allclose(_numpy(again(images)["embedding"]), _numpy(model(images)["embedding"]), atol=1e-5)


@pytest.mark.slow
def test_vit_b16_parameter_count():
    model = vit_b16(patch_stride=12)
    # CLIP ViT-B/16's visual tower is 86,192,640 values; the backbone leaves out proj (768×512).
    assert model.count_params() == 86_192_640 - 768 * 512 == 85_799_424
    assert model.output_shape == (None, 768)
