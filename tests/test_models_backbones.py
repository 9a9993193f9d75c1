"""Backbones: every builder builds, HRNet has the official W32-C structure, ResNet's last stride."""

import keras
import numpy as np
import pytest

from portrait_keras.models import BACKBONES, build_backbone, hrnet, hrnet_w32, resnet50, tiny

NARROW_HRNET = dict(width=4, stem_channels=8, head_channels=(4, 8, 16, 32), final_channels=64)


@pytest.fixture(scope="module")
def narrow_hrnet():
    """HRNet-W32-C's structure at width 4 (building it takes seconds: share it)."""
    return hrnet((64, 32, 3), **NARROW_HRNET)


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


@pytest.mark.parametrize(
    "name, kwargs, dim",
    [
        ("tiny", {}, 256),
        ("tiny", {"widths": (8, 16)}, 16),
        ("resnet50", {}, 2048),
        ("vit_tiny", {}, 32),
        ("vit_tiny", {"patch_stride": 4}, 32),
    ],
)
def test_every_backbone_maps_images_to_a_pooled_vector(name, kwargs, dim):
    model = build_backbone(name, (64, 32, 3), **kwargs)
    assert model.output_shape == (None, dim)
    out = np.asarray(model(_images((64, 32, 3)), training=False))
    assert out.shape == (2, dim) and np.isfinite(out).all()


def test_narrow_hrnet_maps_images_to_a_pooled_vector(narrow_hrnet):
    out = np.asarray(narrow_hrnet(_images((64, 32, 3)), training=False))
    assert narrow_hrnet.output_shape == (None, 64)
    assert out.shape == (2, 64) and np.isfinite(out).all()


def test_the_registry_is_a_plain_dict_and_unknown_names_list_the_known_ones():
    assert set(BACKBONES) == {"hrnet", "hrnet_w32", "resnet50", "tiny", "vit_b16", "vit_tiny"}
    with pytest.raises(ValueError, match="hrnet_w32, resnet50, tiny.*Received: name='vgg'"):
        build_backbone("vgg")


def test_hrnet_w32_has_the_official_parameter_count():
    model = hrnet_w32()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    classifier = 2048 * 1000 + 1000  # the ImageNet Linear layer we leave out
    # HRNet-Image-Classification README: HRNet-W32-C has 41.2M parameters.
    assert trainable == 39_183_680
    assert round((trainable + classifier) / 1e6, 1) == 41.2
    assert model.output_shape == (None, 2048)


def test_narrow_hrnet_has_the_w32_c_structure(narrow_hrnet):
    model = narrow_hrnet
    shape = lambda layer: model.get_layer(layer).output.shape[1:]  # noqa: E731
    assert shape("stem_2_relu") == (16, 8, 8)  # two stride-2 convs → 1/4
    assert shape("stage1_3_out") == (16, 8, 32)  # 4 Bottlenecks, expansion 4
    # Stages 2-4: 1, 4, 3 modules of 2, 3, 4 branches, width·2^i channels at 1/4 … 1/32.
    for stage, modules in ((2, 1), (3, 4), (4, 3)):
        last = modules - 1
        for i in range(stage):
            assert shape(f"stage{stage}_{last}_fuse_{i}_relu") == (16 >> i, 8 >> i, 4 << i)
            assert shape(f"stage{stage}_{last}_b{i}_3_out") == (16 >> i, 8 >> i, 4 << i)  # 4 BasicBlocks
        names = {layer.name for layer in model.layers}
        assert f"stage{stage}_{modules}_b0_0_out" not in names
        assert f"stage{stage}_{last}_b{stage}_0_out" not in names
    # Fusion: upsampling by 1×1 conv + BN + nearest; downsampling by 3×3 stride-2 chains.
    assert model.get_layer("stage4_2_fuse_0_3_up").size == (8, 8)
    assert model.get_layer("stage4_2_fuse_3_0_2_conv").strides == (2, 2)
    assert "stage4_2_fuse_3_0_2_relu" not in {layer.name for layer in model.layers}  # no ReLU after the last
    # Head: incre Bottlenecks to 4·head_channels, stride-2 merges, 1×1 conv to final_channels.
    for i, c in enumerate((16, 32, 64, 128)):
        assert shape(f"head_incre{i}_out") == (16 >> i, 8 >> i, c)
    assert shape("head_final_relu") == (2, 1, 64)


def test_hrnet_validates_its_arguments():
    with pytest.raises(ValueError, match="divisible by 32"):
        hrnet((60, 32, 3), **NARROW_HRNET)
    with pytest.raises(ValueError, match="Received: width=0"):
        hrnet((64, 32, 3), width=0)
    with pytest.raises(ValueError, match="head_channels"):
        hrnet((64, 32, 3), head_channels=(1, 2))


def test_resnet50_last_stride_1_doubles_the_last_feature_map():
    maps = {}
    for stride in (1, 2):
        model = resnet50((64, 32, 3), last_stride=stride)
        maps[stride] = model.get_layer("conv5_block3_out").output.shape[1:3]
        assert model.output_shape == (None, 2048)
        assert model.count_params() == 23_587_712
    assert maps == {1: (4, 2), 2: (2, 1)}
    with pytest.raises(ValueError, match="Received: last_stride=3"):
        resnet50(last_stride=3)


def test_backbones_average_their_bn_statistics_alike():
    for model in (resnet50((64, 32, 3)), hrnet_w32((64, 32, 3))):
        momenta = {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
        assert momenta == {0.9}, model.name


def test_tiny_accepts_small_inputs_and_rejects_too_small_ones():
    assert tiny((128, 64, 3)).output_shape == (None, 256)
    with pytest.raises(ValueError, match="total stride 32"):
        tiny((16, 16, 3))
    with pytest.raises(ValueError, match="Received: widths=()"):
        tiny(widths=())


def test_backbone_weights_load_from_a_weights_file(tmp_path):
    # Every builder loads through the same `load_backbone_weights`.
    first = build_backbone("tiny", (64, 32, 3))
    path = str(tmp_path / "backbone.weights.h5")
    first.save_weights(path)
    second = build_backbone("tiny", (64, 32, 3), weights=path)
    x = _images((64, 32, 3))
    np.testing.assert_allclose(np.asarray(second(x)), np.asarray(first(x)), atol=1e-6)


def test_a_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no download"):
        build_backbone("tiny", (64, 32, 3), weights=str(tmp_path / "nope.weights.h5"))
