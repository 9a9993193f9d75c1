"""benchmarks/ (train_throughput*.py, step_breakdown.py, gpu_session.sh, *_reid.py, embed_throughput.py):
options, tables, tiny runs.

No timing is asserted: the figures depend on the machine.
"""

import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import train_throughput as tt
import train_throughput_timm as timm_bench

from portrait_keras.schema import default_schema

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"  # on the path by setup.cfg [tool:pytest]


def test_settings_put_the_baseline_first_per_backbone_and_size():
    todo = tt.settings(["tiny", "resnet50"], 16, ["on", "off"], ["mixed", "fp32"])
    keys = [(s.backbone, s.image_size, s.mixed, s.jit) for s in todo]
    assert keys == [
        ("tiny", (256, 128), False, False),
        ("tiny", (256, 128), False, True),
        ("tiny", (256, 128), True, False),
        ("tiny", (256, 128), True, True),
        ("tiny", (128, 64), False, False),
        ("tiny", (128, 64), False, True),
        ("tiny", (128, 64), True, False),
        ("tiny", (128, 64), True, True),
        ("resnet50", (256, 128), False, False),
        ("resnet50", (256, 128), False, True),
        ("resnet50", (256, 128), True, False),
        ("resnet50", (256, 128), True, True),
    ]
    assert [s.image_size for s in tt.settings(["resnet50"], 8, ["off"], ["fp32"], [(64, 32)])] == [(64, 32)]
    with pytest.raises(ValueError, match="Received: 'vit'"):
        tt.settings(["vit"], 8, ["off"], ["fp32"])


def test_table_ratio_is_to_fp32_without_jit_of_the_same_backbone_and_size():
    def row(backbone, size, mixed, jit, rate):
        return tt.Setting(backbone, size, 16, mixed, jit), {"img_s": rate, "ms_step": 1.0, "cpu_ms_img": 1.0}

    table = tt.format_table(
        [
            row("tiny", (128, 64), False, False, 200.0),
            row("tiny", (128, 64), True, True, 300.0),
            row("tiny", (256, 128), False, True, 30.0),  # no baseline of its own
            row("resnet50", (256, 128), False, False, 2.0),
            row("resnet50", (256, 128), True, False, 0.5),
        ],
        "tensorflow",
    ).splitlines()
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


def _keras_row(rate, bn="fused (ours)"):
    return [
        {
            "framework": "keras 3",
            "model": "tiny",
            "compile": "jit (XLA)",
            "bn": bn,
            "device": "jax cpu",
            "img_s": rate,
            "ms_step": 1.0,
            "cpu_ms_img": 2.0,
        }
    ]


def _half(rows, status=0):
    """What `run_half` gives: the rows, each passed to `on_row` first, and the exit status."""

    def run(on_row):
        for row in rows:
            if on_row:
                on_row(row)
        return rows, status

    return run


def test_timm_script_reports_a_missing_torch_with_status_2(monkeypatch, capsys):
    calls = []

    def fake(half, argv, keras_backend="jax", on_row=None):
        calls.append(half)
        return (_half(_keras_row(50.0)) if half == "keras" else _half([], timm_bench.MISSING_TORCH))(on_row)

    monkeypatch.setattr(timm_bench, "run_half", fake)
    assert timm_bench.main(["--backbone", "resnet50", "--batch", "8"]) == 2
    assert calls == ["keras", "torch"]
    assert "| keras 3 | tiny | 256x128 | 8 | bf16 |" in capsys.readouterr().out

    calls.clear()
    assert timm_bench.main(["--backbone", "tiny"]) == 2  # no timm model like tiny: torch half skipped
    assert calls == ["keras"] and "pass --timm-model" in capsys.readouterr().err
    assert timm_bench.main(["--backbone", "tiny", "--keras-only"]) == 0


def test_timm_script_ratio_is_keras_over_each_torch_row(monkeypatch, capsys):
    torch_rows = [
        {"framework": "torch 2", "model": "hrnet_w32", "compile": c, "device": "cuda", "img_s": r, "ms_step": 1.0}
        for c, r in (("eager", 100.0), ("torch.compile", 160.0))
    ]
    monkeypatch.setattr(
        timm_bench,
        "run_half",
        lambda half, argv, keras_backend="jax", on_row=None: (
            _half(_keras_row(120.0)) if half == "keras" else _half(torch_rows)
        )(on_row),
    )
    assert timm_bench.main(["--torch-compile"]) == 0
    out = capsys.readouterr().out
    assert "ratio keras, BN fused (ours) / torch (eager): 1.20" in out
    assert "ratio keras, BN fused (ours) / torch (torch.compile): 0.75" in out
    # Each row as it arrives, with its ratio, before the table.
    assert out.index(
        "measured: torch 2 | hrnet_w32 | eager | BN ? | cuda | 100.0 img/s; "
        "keras, BN fused (ours) / torch (eager): 1.20"
    ) < out.index("| framework")
    assert timm_bench.parse_args([]).timm_model == "hrnet_w32"


def test_timm_script_keeps_the_rows_of_a_torch_half_that_failed_later(monkeypatch, capsys):
    eager = [
        {
            "framework": "torch 2",
            "model": "hrnet_w32",
            "compile": "eager",
            "device": "cuda",
            "img_s": 100.0,
            "ms_step": 1.0,
        }
    ]
    monkeypatch.setattr(
        timm_bench,
        "run_half",
        lambda half, argv, keras_backend="jax", on_row=None: (
            _half(_keras_row(120.0)) if half == "keras" else _half(eager, -11)
        )(on_row),
    )
    assert timm_bench.main(["--torch-compile"]) == 1
    captured = capsys.readouterr()
    assert "ratio keras, BN fused (ours) / torch (eager): 1.20" in captured.out
    assert "rows so far are kept" in captured.err


def test_run_half_streams_rows_from_the_subprocess(monkeypatch, tmp_path):
    # A half that emits one row and then dies: the row arrives, with the exit status.
    script = tmp_path / "half.py"
    script.write_text("import sys\nprint('RESULT {\"img_s\": 5.0}', flush=True)\nprint('other output')\nsys.exit(7)\n")
    monkeypatch.setattr(timm_bench.os.path, "abspath", lambda path: str(script))
    seen = []
    rows, status = timm_bench.run_half("torch", [], on_row=seen.append)
    assert rows == seen == [{"img_s": 5.0}] and status == 7


def test_timm_script_runs_the_keras_half_on_the_backend_asked_for(monkeypatch, capsys):
    backends = []

    def fake(half, argv, keras_backend="jax", on_row=None):
        backends.append(keras_backend)
        return _half(_keras_row(10.0))(on_row)

    monkeypatch.setattr(timm_bench, "run_half", fake)
    assert timm_bench.main(["--keras-only"]) == 0
    assert timm_bench.main(["--keras-only", "--keras-backend", "tensorflow", "--jit", "off"]) == 0
    assert backends == ["jax", "tensorflow"]
    assert "keras on tensorflow, jit off" in capsys.readouterr().out
    args = timm_bench.parse_args([])
    assert (args.keras_backend, args.jit, args.precision, args.batch) == ("jax", "on", "bf16", 128)
    assert (args.bn, args.repeats) == ("fused", 1)  # under JAX ours is Keras' code: nothing to compare
    assert timm_bench.parse_args(["--keras-backend", "tensorflow"]).bn == "both"


def test_timm_script_prints_fused_over_keras_bn_and_each_over_torch(monkeypatch, capsys):
    torch_row = {"framework": "torch 2", "model": "tiny", "compile": "eager", "bn": "BatchNorm2d"}
    torch_row.update({"device": "cpu", "img_s": 100.0, "ms_step": 1.0, "cpu_ms_img": 4.0})
    keras_rows = _keras_row(120.0) + _keras_row(80.0, bn="keras")
    monkeypatch.setattr(
        timm_bench,
        "run_half",
        lambda half, argv, keras_backend="jax", on_row=None: (
            _half(keras_rows) if half == "keras" else _half([torch_row])
        )(on_row),
    )
    assert timm_bench.main(["--keras-backend", "tensorflow", "--jit", "off"]) == 0
    out = capsys.readouterr().out
    assert "ratio keras, BN fused (ours) / torch (eager): 1.20" in out
    assert "ratio keras, BN keras / torch (eager): 0.80" in out
    assert "ratio fused BN / keras BN: 1.50 img/s (2 vs 2 CPU-ms/img)" in out
    assert "| fused (ours) | jax cpu | 120.0 | 1 | 2 | 1.20 | 1.50 |" in out  # to torch, to keras BN


def test_lockstep_alternates_the_halves_round_by_round_and_keeps_the_fastest(monkeypatch, tmp_path):
    # Fake halves speaking the protocol: "ready", then a row and "done" per "go"; torch gets slower.
    script = tmp_path / "half.py"
    script.write_text(
        "import json, sys\n"
        "half = sys.argv[sys.argv.index('--half') + 1]\n"
        f"print({timm_bench.READY!r}, flush=True)\n"
        "for n, line in enumerate(sys.stdin, 1):\n"
        "    rate = {'keras': 10.0 * n, 'torch': 100.0 / n}[half]\n"
        "    row = dict(framework=half, model='m', compile='eager', img_s=rate, round=n)\n"
        f"    print({timm_bench.RESULT!r} + json.dumps(row), flush=True)\n"
        f"    print({timm_bench.DONE!r}, flush=True)\n"
    )
    monkeypatch.setattr(timm_bench.os.path, "abspath", lambda path: str(script))
    rows, statuses = timm_bench.run_lockstep([], "tensorflow", 3)
    assert statuses == {"keras": 0, "torch": 0}
    order = [(r["framework"], r["round"]) for r in rows]
    assert order == [("keras", 1), ("torch", 1), ("torch", 2), ("keras", 2), ("keras", 3), ("torch", 3)]
    assert [(r["framework"], r["img_s"]) for r in timm_bench.fastest(rows)] == [("keras", 30.0), ("torch", 100.0)]


@pytest.mark.slow
def test_timm_script_keras_half_times_both_bn_variants_alternately(capsys):
    timm_bench.keras_half(
        timm_bench.parse_args(
            "--backbone tiny --size 64 32 --batch 2 --steps 1 --warmup 1 --repeats 2 --keras-backend tensorflow "
            "--jit off --precision fp32".split()
        )
    )
    out = capsys.readouterr().out
    rows = [json.loads(line[len(timm_bench.RESULT) :]) for line in out.splitlines() if line.startswith("RESULT")]
    assert [(r["round"], r["bn"]) for r in rows] == [
        (1, "fused (ours)"),
        (1, "keras"),
        (2, "keras"),
        (2, "fused (ours)"),
    ]
    assert all(r["img_s"] > 0 and r["cpu_ms_img"] > 0 for r in rows)
    # Same seed, same data and numerically the same BN: the same loss.
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-5)


@pytest.mark.slow
def test_cpu_benchmark_runs_one_tiny_step(capsys):
    rows = tt.main(
        [
            "--backbones",
            "tiny",
            "--size",
            "64",
            "32",
            "--batch",
            "4",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--jit",
            "off",
            "--precision",
            "fp32",
        ]
    )
    ((setting, result),) = rows
    assert (setting.backbone, setting.image_size, setting.mixed, setting.jit) == ("tiny", (64, 32), False, False)
    assert result["img_s"] > 0 and math.isfinite(result["loss"])
    import keras

    assert f"| {keras.backend.backend()} | tiny | 64x32 | 4 | float32 | off |" in capsys.readouterr().out
    assert keras.mixed_precision.global_policy().name == "float32"  # left as found


def test_breakdown_removes_every_batchnorm_and_keeps_the_outputs():
    import keras
    import step_breakdown

    from portrait_keras.models.backbones import build_backbone

    backbone = build_backbone("tiny", input_shape=(64, 32, 3))
    stripped = step_breakdown.without_batchnorm(backbone)
    kinds = [type(layer) for layer in stripped.layers]
    assert keras.layers.BatchNormalization not in kinds
    assert (
        sum(isinstance(layer, keras.layers.BatchNormalization) for layer in backbone.layers)
        == len([layer for layer in stripped.layers if type(layer).__name__ == "PassThrough"])
        > 0
    )
    assert stripped.output.shape == backbone.output.shape
    # BN's gamma and beta are gone with it.
    assert len(stripped.trainable_weights) < len(backbone.trainable_weights)


def test_breakdown_summary_subtracts_the_right_rows():
    import step_breakdown

    rows = [
        ("keras", "trainer", 0.110),
        ("keras", "bare", 0.100),
        ("keras", "bare, no BN", 0.080),
        ("torch", "bare", 0.090),
        ("torch", "bare, no BN", 0.080),
    ]
    lines = step_breakdown.summary(rows, batch=8)
    assert "| keras | trainer | 72.7 | 110.0 |" in lines
    assert "heads and losses: +10.0 ms/step over the bare backbone (+9% of the trainer's step)" in lines
    assert "BatchNormalization, keras: 20.0 ms/step (20% of the bare step)" in lines
    assert "BatchNormalization, torch: 10.0 ms/step (11% of the bare step)" in lines
    assert "keras / torch img/s: 0.90 with BN, 1.00 without" in lines
    assert len(step_breakdown.summary(rows[:3], batch=8)) == 2 + 3 + 2  # no torch rows, no torch lines


@pytest.mark.slow
def test_breakdown_runs_on_a_tiny_backbone(capsys):
    import step_breakdown

    rows = step_breakdown.main(["--backbone", "tiny", "--size", "64", "32", "--batch", "4", "--steps", "1"])
    assert [variant for _, variant, _ in rows][1:] == ["backbone + Dense", "backbone + Dense, no BN"]
    assert all(seconds > 0 for _, _, seconds in rows)
    assert "BatchNormalization, keras:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        step_breakdown.main(["--backbone", "tiny", "--timm"])  # no timm model like tiny


def test_breakdown_torch_subprocess_never_imports_keras():
    # PyTorch and TensorFlow in one process crash (segfault), so the torch rows' process must not load Keras.
    import subprocess

    code = (
        "import sys, step_breakdown as s; "
        "s.torch_rows = lambda args: print(s.RESULT + s.json.dumps(['torch', 'bare', 0.1])); s.main(['--torch-rows']); "
        "print('keras loaded:', 'keras' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert 'RESULT ["torch", "bare", 0.1]' in done.stdout
    assert "keras loaded: False" in done.stdout


@pytest.mark.slow
def test_gpu_session_script_runs_the_benchmark_and_keeps_its_output(tmp_path):
    # Keras is installed here, so `run` installs no wheels; without torch/timm the torch half is skipped (status 2).
    import os
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "BENCH_ARGS": "--backbone tiny --timm-model resnet18 --size 64 32 --batch 4 --steps 1 --warmup 1",
    }
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_session.sh"), "run"], env=env, capture_output=True, text=True)
    log = (tmp_path / "train_throughput_timm.log").read_text()
    assert "| keras 3" in log and "| tiny | 64x32 | 4 | bf16 | jit (XLA) |" in log, log
    has_torch = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("timm") is not None
    assert done.returncode == (0 if has_torch else 2), done.stderr
    assert "keras" in (tmp_path / "machine.txt").read_text()
    usage = subprocess.run(["bash", str(BENCHMARKS / "gpu_session.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "prepare|run|breakdown" in usage.stderr


def test_propagation_benchmark_data_hide_the_share_asked_for_and_keep_the_truth():
    import propagation_knn

    x, truth, labels, kernels = propagation_knn.make_data(2000, 16, hidden=0.7)
    assert x.shape == (2000, 16) and x.dtype == np.float32
    for task, y in truth.items():
        hidden = labels[task] == -1 if y.ndim == 1 else (labels[task] == -1).all(axis=1)
        assert abs(hidden.mean() - 0.7) < 0.05
        np.testing.assert_array_equal(labels[task][~hidden], y[~hidden])
        assert kernels[task].shape == (16, propagation_knn.TASKS[task])


def test_propagation_benchmark_prints_each_figure_and_its_ratio():
    import subprocess

    script = str(BENCHMARKS / "propagation_knn.py")
    done = subprocess.run(
        [sys.executable, script, "--n", "300", "--dim", "8"], capture_output=True, text=True, check=True
    )
    lines = done.stdout.splitlines()
    assert lines[1].startswith("baseline, blocked X @ X.T:")
    assert [line.split(":")[0].strip() for line in lines[2:4]] == ["nearest_neighbors(k=10)", "propagate_labels"]
    assert all("x baseline" in line and "peak RSS" in line for line in lines[2:4])
    assert "filled-label accuracy (kNN start): body" in lines[4]
    done = subprocess.run(
        [sys.executable, script, "--covariance-study", "--n", "200", "--dim", "8", "--seeds", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    assert len(rows) == 2 * 8 and "PCA 64 + Ledoit-Wolf" in rows[3]


def test_rerank_reid_quick_form_reports_the_ratio_and_equals_the_dense_reference(capsys):
    import rerank_reid

    rerank_reid.main(["--quick"])
    out = capsys.readouterr().out
    assert "300 queries x 2000 gallery, d=128" in out
    assert re.search(r"re-ranked / plain: [\d.]+ x wall, [\d.]+ x CPU \(goal <= 10\); peak RSS [\d.]+ GB", out)
    assert float(re.search(r"results differ by (\S+)", out).group(1)) <= 1e-4


def test_eval_reid_small_form_times_a_baseline_source_tree_and_agrees_with_torchreid(capsys):
    import eval_reid

    root = str(BENCHMARKS.parent)
    sizes = ["--queries", "300", "--gallery", "2000", "--dim", "64", "--subset", "100", "--repeat", "1"]
    eval_reid.main([*sizes, "--baseline-src", root])
    out = capsys.readouterr().out
    assert re.search(r"evaluate_reid \(full, macro\): .* = [\d.]+ x floor", out)
    # The baseline is this very tree: the same results.
    assert re.search(rf"baseline evaluate_reid \({re.escape(root)}\): .* results differ by 0.0e\+00", out)
    differences = [float(d) for d in re.findall(r"results differ by (\S+)", out)]
    assert len(differences) == 3 and max(differences) <= 1e-12


def test_embed_throughput_quick_form_reports_each_path_against_the_floor(capsys):
    import embed_throughput

    best = embed_throughput.main(["--quick"])
    out = capsys.readouterr().out
    assert "16 JPEGs, tiny at 64x32, batch 8" in out
    assert set(best) == {"embed", "search", "floor", "on_batch"} and all(rate > 0 for rate, _ in best.values())
    assert re.search(r"\| embed \| 16 \| tiny \| 64x32 \| 8 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", out)
    assert re.search(r"ratio embed / floor: [\d.]+", out) and re.search(r"ratio search / floor: [\d.]+", out)
