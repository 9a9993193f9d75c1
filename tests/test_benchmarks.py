"""benchmarks/train_throughput*.py: settings, tables, synthetic batch, exit statuses; one tiny real run.

No timing is asserted: the figures depend on the machine.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # scripts, not a package

import train_throughput as tt  # noqa: E402
import train_throughput_gpu as gpu  # noqa: E402
from portrait_keras.schema import default_schema  # noqa: E402


def test_settings_put_the_baseline_first_per_backbone_and_size():
    todo = tt.settings(["tiny", "resnet50"], 16, ["on", "off"], ["mixed", "fp32"])
    keys = [(s.backbone, s.image_size, s.mixed, s.jit) for s in todo]
    assert keys == [
        ("tiny", (256, 128), False, False), ("tiny", (256, 128), False, True),
        ("tiny", (256, 128), True, False), ("tiny", (256, 128), True, True),
        ("tiny", (128, 64), False, False), ("tiny", (128, 64), False, True),
        ("tiny", (128, 64), True, False), ("tiny", (128, 64), True, True),
        ("resnet50", (256, 128), False, False), ("resnet50", (256, 128), False, True),
        ("resnet50", (256, 128), True, False), ("resnet50", (256, 128), True, True),
    ]
    assert [s.image_size for s in tt.settings(["resnet50"], 8, ["off"], ["fp32"], [(64, 32)])] == [(64, 32)]
    with pytest.raises(ValueError, match="Received: 'vit'"):
        tt.settings(["vit"], 8, ["off"], ["fp32"])


def test_table_ratio_is_to_fp32_without_jit_of_the_same_backbone_and_size():
    def row(backbone, size, mixed, jit, rate):
        return tt.Setting(backbone, size, 16, mixed, jit), {"img_s": rate, "ms_step": 1.0, "cpu_ms_img": 1.0}

    table = tt.format_table([
        row("tiny", (128, 64), False, False, 200.0),
        row("tiny", (128, 64), True, True, 300.0),
        row("tiny", (256, 128), False, True, 30.0),  # no baseline of its own
        row("resnet50", (256, 128), False, False, 2.0),
        row("resnet50", (256, 128), True, False, 0.5),
    ], "tensorflow").splitlines()
    ratios = [line.rsplit("|", 2)[1].strip() for line in table[2:]]
    assert ratios == ["1.00", "1.50", "n/a", "1.00", "0.25"]
    assert "| mixed_bfloat16 | on |" in table[3]


def test_synthetic_batch_looks_like_a_training_batch():
    schema = default_schema()
    images, labels = tt.synthetic_batch(schema, 751, 64, (32, 16))
    assert images.shape == (64, 32, 16, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 255
    ids = labels["id"]
    known = ids[ids >= 0]
    assert known.max() < 751 and (np.unique(known, return_counts=True)[1] > 1).any()  # positives exist
    for task in schema.classification_tasks:
        value = labels[task.name]
        unknown = (value == -1).all(axis=1) if value.ndim == 2 else value == -1
        assert 0 < unknown.sum() < 64, task.name
    expression = labels["expression"]
    assert set(np.unique(expression)) <= {-1.0, 0.0, 1.0}
    assert (expression[(expression >= 0).all(1)].sum(1) >= 1).all()  # every known row has an expression


def _keras_row(rate):
    return [{"framework": "keras 3", "model": "tiny", "compile": "jit (XLA)", "device": "jax cpu",
             "img_s": rate, "ms_step": 1.0}]


def test_gpu_script_reports_a_missing_torch_with_status_2(monkeypatch, capsys):
    calls = []

    def fake(half, argv):
        calls.append(half)
        return _keras_row(50.0) if half == "keras" else gpu.MISSING_TORCH

    monkeypatch.setattr(gpu, "run_half", fake)
    assert gpu.main(["--backbone", "resnet50", "--batch", "8"]) == 2
    assert calls == ["keras", "torch"]
    assert "| keras 3 | tiny | 256x128 | 8 | bf16 |" in capsys.readouterr().out

    calls.clear()
    assert gpu.main(["--backbone", "tiny"]) == 2  # no timm model like tiny: torch half skipped
    assert calls == ["keras"] and "pass --timm-model" in capsys.readouterr().err
    assert gpu.main(["--backbone", "tiny", "--keras-only"]) == 0


def test_gpu_script_ratio_is_keras_over_each_torch_row(monkeypatch, capsys):
    torch_rows = [{"framework": "torch 2", "model": "hrnet_w32", "compile": c, "device": "cuda",
                   "img_s": r, "ms_step": 1.0} for c, r in (("eager", 100.0), ("torch.compile", 160.0))]
    monkeypatch.setattr(gpu, "run_half", lambda half, argv: _keras_row(120.0) if half == "keras" else torch_rows)
    assert gpu.main(["--torch-compile"]) == 0
    out = capsys.readouterr().out
    assert "ratio keras / torch (eager): 1.20" in out
    assert "ratio keras / torch (torch.compile): 0.75" in out
    assert gpu.parse_args([]).timm_model == "hrnet_w32"


@pytest.mark.slow
def test_cpu_benchmark_runs_one_tiny_step(capsys):
    rows = tt.main(["--backbones", "tiny", "--size", "64", "32", "--batch", "4", "--steps", "1",
                    "--warmup", "1", "--jit", "off", "--precision", "fp32"])
    (setting, result), = rows
    assert (setting.backbone, setting.image_size, setting.mixed, setting.jit) == ("tiny", (64, 32), False, False)
    assert result["img_s"] > 0 and math.isfinite(result["loss"])
    import keras

    assert f"| {keras.backend.backend()} | tiny | 64x32 | 4 | float32 | off |" in capsys.readouterr().out
    assert keras.mixed_precision.global_policy().name == "float32"  # left as found
