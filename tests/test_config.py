import dataclasses

import numpy as np
import pytest

from experiments import configs
from portrait_keras.config import Config, override, rescale_epochs
from portrait_keras.schedules import WarmupMultiStep, paper_schedule


def test_base_holds_the_paper_defaults():
    c = configs.base()
    assert (c.model.backbone, c.model.head, c.data.batch_size, c.data.sampler) == ("hrnet_w32", "fss", 128, "random")
    assert (c.train.lr, c.train.warmup_lr, c.train.warmup_epochs) == (3.5e-4, 3.5e-5, 10)
    assert (c.train.decay_epochs, c.train.epochs, c.loss.lam) == ((30, 60, 90), 100, 0.5)


def test_table4_rows_differ_from_base_only_where_the_paper_says():
    fu = configs.get("fss_uncert")
    assert (fu.model.head, fu.loss.metric, fu.loss.multitask) == ("fss", "batch_rank", "uncertainty")
    assert configs.get("sim_mtl_pk").data.sampler == "pk"
    assert configs.get("sim_mtl_r50").model.backbone == "resnet50"
    st = configs.get("single_task_arm")
    assert (st.model.head, st.model.tasks) == ("single_task", ("arm",))
    assert configs.get("reid_br").model.tasks == ("id",) and configs.get("reid_br").loss.metric == "batch_rank"
    assert dataclasses.replace(configs.get("fss"), name="base") == configs.base()


def test_unknown_experiment_lists_every_name():
    with pytest.raises(ValueError) as e:
        configs.get("fss_magic")
    for name in ("fss_uncert", "sim_mtl_r50", "reid_triplet", "single_task_expression", "smoke"):
        assert name in str(e.value)


def test_override_and_json_round_trip():
    c = override(configs.base(), "train.epochs", "5")
    c = override(c, "train.decay_epochs", "[2, 4]")
    c = override(c, "model.backbone", "resnet50")
    assert (c.train.epochs, c.train.decay_epochs, c.model.backbone) == (5, (2, 4), "resnet50")
    assert Config.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="Unknown field 'train.epoch'"):
        override(c, "train.epoch", "5")
    with pytest.raises(ValueError, match="part.field"):
        override(c, "epochs", "5")


def test_rescale_epochs_keeps_the_schedule_shape():
    t = rescale_epochs(configs.base().train, 20)
    assert (t.epochs, t.warmup_epochs, t.decay_epochs) == (20, 2, (6, 12, 18))
    assert rescale_epochs(configs.base().train, 1).decay_epochs == ()


def test_synthetic_default_is_cpu_sized():
    c = configs.synthetic_default(configs.get("sim_mtl_r50"))
    assert c.model.backbone == "tiny" and c.train.epochs == configs.SYNTHETIC_EPOCHS
    assert c.data.image_size == configs.SYNTHETIC_IMAGE_SIZE and c.data.batch_size == configs.SYNTHETIC_BATCH
    assert c.data.sampler == "random" and c.model.head == "sim_mtl"
    # The paper's augmentation stays in the base; the short CPU recipe turns erasing off.
    assert configs.base().data.erasing_probability == 0.5
    assert c.data.erasing_probability == configs.SYNTHETIC_ERASING < 0.5


def test_warmup_multistep_matches_the_paper():
    s = paper_schedule(configs.base().train, steps_per_epoch=10)
    lr = np.array([float(s(i)) for i in (0, 50, 100, 299, 300, 600, 900, 999)])
    np.testing.assert_allclose(lr, [3.5e-5, 1.925e-4, 3.5e-4, 3.5e-4, 3.5e-5, 3.5e-6, 3.5e-7, 3.5e-7], rtol=1e-5)
    assert WarmupMultiStep.from_config(s.get_config()).get_config() == s.get_config()
    with pytest.raises(ValueError, match="ascending"):
        WarmupMultiStep(1.0, 0.1, 0, [5, 2])


def test_synthetic_default_trains_from_scratch_at_a_higher_rate_with_one_late_decay():
    c = configs.synthetic_default(configs.get("fss_uncert"))
    assert c.train.lr == configs.SYNTHETIC_LR > configs.base().train.lr
    assert c.train.warmup_lr < c.train.lr
    assert len(c.train.decay_epochs) == 1 and c.train.epochs // 2 < c.train.decay_epochs[0] < c.train.epochs
    assert configs.synthetic_default(configs.get("smoke")) == configs.get("smoke")
