import dataclasses
import json

import numpy as np
import pytest

from portrait_keras import experiments as configs
from portrait_keras.commands import train as run
from portrait_keras.commands.overrides import override
from portrait_keras.config import Config, rescale_epochs
from portrait_keras.training.schedules import WarmupMultiStep, paper_schedule


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
    c = configs.synthetic_default(configs.get("sim_mtl"))
    assert c.model.backbone == "tiny" and c.train.epochs == configs.SYNTHETIC_EPOCHS
    # An experiment about its backbone keeps it: sim_mtl_r50 must not turn into sim_mtl.
    r50 = configs.synthetic_default(configs.get("sim_mtl_r50"))
    assert r50.model.backbone == "resnet50" and dataclasses.replace(r50, name="sim_mtl", model=c.model) == c
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


# --- `--set key=value`: the string is read as the field's declared type ---------------------


@pytest.mark.parametrize(
    "text, expected",
    [("False", False), ("false", False), ("0", False), ("no", False)]
    + [("True", True), ("TRUE", True), ("1", True), ("yes", True)],
)
@pytest.mark.parametrize("key", ["train.mixed_precision", "data.skip_bad_images"])
def test_override_reads_bools(key, text, expected):
    part, field = key.split(".")
    assert getattr(getattr(override(configs.base(), key, text), part), field) is expected


@pytest.mark.parametrize("text, expected", [("False", False), ("true", True), ("0", False), ("auto", "auto")])
def test_override_jit_compile_takes_a_bool_or_auto(text, expected):
    assert override(configs.base(), "train.jit_compile", text).train.jit_compile is expected


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("model.tasks", "id", ("id",)),
        ("model.tasks", "[id, arm]", ("id", "arm")),
        ("model.tasks", '["id", "arm"]', ("id", "arm")),
        ("model.tasks", "null", None),
        ("model.tasks", "None", None),
        ("train.decay_epochs", "30", (30,)),
        ("train.decay_epochs", "[30, 60]", (30, 60)),
        ("train.decay_epochs", "[]", ()),
        ("data.image_size", "[128, 64]", (128, 64)),
        ("train.lr", "1e-3", 1e-3),
        ("train.lr", "3", 3.0),
        ("train.epochs", "7", 7),
        ("data.csv", "null", None),
        ("data.csv", "a.csv", "a.csv"),
        ("model.backbone", "resnet50", "resnet50"),
        ("model.backbone_kwargs", '{"last_stride": 1}', {"last_stride": 1}),
    ],
)
def test_override_converts_to_the_field_type(key, text, expected):
    part, field = key.split(".")
    value = getattr(getattr(override(configs.base(), key, text), part), field)
    assert value == expected and type(value) is type(expected)
    if isinstance(value, tuple):
        assert all(type(v) is type(e) for v, e in zip(value, expected))


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("train.lr", "abc", "a float"),
        ("train.lr", "", "a float"),
        ("train.epochs", "3.5", "an int"),
        ("train.epochs", "true", "an int"),
        ("train.mixed_precision", "maybe", "a bool"),
        ("data.skip_bad_images", "", "a bool"),
        ("train.jit_compile", "sometimes", "a bool"),
        ("train.decay_epochs", "[2.5]", "a list of int"),
        ("train.decay_epochs", "[[1]]", "a list of int"),
        ("data.image_size", "128", "a list of 2 values"),
        ("data.image_size", "[128, 64, 3]", "a list of 2 values"),
    ],
)
def test_override_rejects_values_of_the_wrong_type(key, text, expected):
    with pytest.raises(ValueError) as e:
        override(configs.base(), key, text)
    assert str(e.value).startswith(f"--set {key}: expected {expected}")
    assert str(e.value).endswith(f"Received: {text!r}")


def test_override_error_message():
    with pytest.raises(ValueError, match=r"^--set train\.lr: expected a float\. Received: 'abc'$"):
        override(configs.base(), "train.lr", "abc")


def _as_cli(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return str(value)


@pytest.mark.parametrize("name", list(configs.EXPERIMENTS))
def test_every_experiment_value_survives_set(name):
    for config in (configs.get(name), configs.synthetic_default(configs.get(name))):
        again = config
        for part in ("data", "model", "loss", "train"):
            for f in dataclasses.fields(getattr(config, part)):
                again = override(again, f"{part}.{f.name}", _as_cli(getattr(getattr(config, part), f.name)))
        assert again == config


@pytest.mark.parametrize(
    "item, part, field, expected",
    [  # the `--set` examples of README.md, benchmarks/RESULTS.md and the error hints
        ("train.eval_every=0", "train", "eval_every", 0),
        ("data.skip_bad_images=true", "data", "skip_bad_images", True),
        ("train.mixed_precision=true", "train", "mixed_precision", True),
        ("train.jit_compile=true", "train", "jit_compile", True),
        ("model.backbone=resnet50", "model", "backbone", "resnet50"),
        ("train.mixed_precision=False", "train", "mixed_precision", False),
        ("model.tasks=id", "model", "tasks", ("id",)),
        ("model.backbone_weights=w.weights.h5", "model", "backbone_weights", "w.weights.h5"),
    ],
)
def test_run_set_examples(item, part, field, expected):
    config = run.build_config(run.parse_args(["fss_uncert", "--epochs", "2", "--set", item]))
    assert getattr(getattr(config, part), field) == expected


def test_run_rejects_a_bad_set_value(capsys):
    assert run.main(["smoke", "--set", "train.lr="]) == 2
    assert "--set train.lr: expected a float. Received: ''" in capsys.readouterr().err


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_run_epochs_zero_is_an_error_not_the_default(epochs, capsys):
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        run.build_config(run.parse_args(["smoke", "--epochs", epochs]))
    assert run.main(["smoke", "--epochs", epochs]) == 2
    assert f"epochs must be >= 1. Received: epochs={epochs}" in capsys.readouterr().err


def test_run_refuses_to_retrain_a_finished_run_folder(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    assert run.main(["smoke", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "--overwrite" in err
    assert run.parse_args(["smoke", "--overwrite"]).overwrite


def test_run_names_bad_data_without_a_traceback(tmp_path, capsys):
    (tmp_path / "a.jpg").touch()
    csv = tmp_path / "data.csv"
    csv.write_text("path,split,id,gender\na.jpg,train,1,maybe\n")
    assert run.main(["fss", "--data", str(csv), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert f"error: 1 problem in {csv}" in err and f"{csv}:2: column 'gender': value 'maybe'" in err
    assert "Traceback" not in err
