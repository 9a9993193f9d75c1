"""`portrait-keras evaluate`: the grouped table, --flip, --rerank, and data labelled with another schema."""

import json
import re
import shutil

import pytest

from portrait_keras.cli import main
from portrait_keras.schema import Schema, Task, default_schema


@pytest.fixture(scope="module")
def run_metrics(smoke_run_dir):
    """The smoke run's `metrics.json` (its final evaluation on its own data)."""
    return json.loads((smoke_run_dir / "metrics.json").read_text())


def other_dataset(tiny_synth, folder, tasks):
    """A copy of the tiny dataset labelled with a schema of `tasks` (schema.json beside it)."""
    shutil.copytree(tiny_synth.parent, folder)
    Schema(tuple(tasks)).save(folder / "schema.json")
    return folder / "annotations.csv"


def test_another_schema_with_an_identity_task_evaluates_re_id_and_the_matching_tasks(
    smoke_run_dir, tiny_synth, run_metrics, tmp_path, capsys
):
    gender3 = Task("gender", "appearance", "single", ("female", "male", "other"))
    tasks = [gender3 if t.name == "gender" else t for t in default_schema().tasks if t.name != "arm"]
    csv = other_dataset(tiny_synth, tmp_path / "other", tasks)
    assert main(["evaluate", str(smoke_run_dir), "--data", str(csv), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, captured.err
    assert "only re-id, age, physique, height, body, expression are evaluated" in notes[0]
    assert "task 'gender' has classes (female, male) in the model, (female, male, other) in the data" in notes[0]
    assert "task 'arm' only in the model" in notes[0]
    # The same images and identities as the run's own data: the same re-id and age scores.
    for key in ("reid_mAP", "reid_rank1", "reid_micro_mAP", "reid_mINP", "f1_age", "par_accuracy_age"):
        assert result[key] == pytest.approx(run_metrics[key], abs=1e-6), key
    assert not [k for k in result if k.endswith(("_gender", "_arm"))]
    assert "piq" not in result  # PIQ needs every task of the data's schema


def test_another_schema_with_the_same_tasks_in_another_order_needs_no_note(
    smoke_run_dir, tiny_synth, run_metrics, tmp_path, capsys
):
    csv = other_dataset(tiny_synth, tmp_path / "reordered", reversed(default_schema().tasks))
    assert main(["evaluate", str(smoke_run_dir), "--data", str(csv), "--json"]) == 0
    captured = capsys.readouterr()
    assert "note:" not in captured.err
    result = json.loads(captured.out)
    assert result["piq"] == pytest.approx(run_metrics["piq"], abs=1e-6)
    assert result["f1_gender"] == pytest.approx(run_metrics["f1_gender"], abs=1e-6)


def test_flip_reaches_the_evaluation_and_the_table_groups_the_metrics(smoke_run_dir, capsys, monkeypatch):
    from portrait_keras.commands import evaluate as command

    flips = []
    real = command.evaluate

    def spy(*args, **kwargs):
        flips.append(kwargs["flip"])
        return real(*args, **kwargs)

    monkeypatch.setattr(command, "evaluate", spy)
    assert main(["evaluate", str(smoke_run_dir), "--flip"]) == 0
    out = capsys.readouterr().out
    assert flips == [True]
    titles = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert [t.split(" ")[0] for t in titles] == ["PIQ", "Re-id,", "Re-id,", "Macro", "Attributes"]
    assert "Macro" in titles[1] and "Market-1501" in titles[2]
    market = out.split(titles[2])[1].split("\n\n")[0]
    assert [line.split()[0] for line in market.strip().splitlines()] == [
        "reid_micro_mAP",
        "reid_micro_rank1",
        "reid_micro_rank5",
        "reid_micro_rank10",
        "reid_mINP",
    ]


def test_rerank_and_its_parameters_reach_the_evaluation(smoke_run_dir, run_metrics, capsys, monkeypatch):
    from portrait_keras.commands import evaluate as command

    calls = []
    real = command.evaluate

    def spy(*args, **kwargs):
        calls.append({k: v for k, v in kwargs.items() if k in ("rerank", "k1", "k2", "lambda_value")})
        return real(*args, **kwargs)

    monkeypatch.setattr(command, "evaluate", spy)
    assert main(["evaluate", str(smoke_run_dir), "--rerank", "--json"]) == 0
    reranked = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(smoke_run_dir), "--rerank", "--k1", "4", "--k2", "2", "--lambda", "1", "--json"]) == 0
    original = json.loads(capsys.readouterr().out)
    assert calls == [{"rerank": True}, {"rerank": True, "k1": 4, "k2": 2, "lambda_value": 1.0}]
    assert reranked["reid_mAP"] != pytest.approx(run_metrics["reid_mAP"], abs=1e-6)
    assert reranked["f1_gender"] == pytest.approx(run_metrics["f1_gender"], abs=1e-6)
    # λ = 1 ranks by the scaled squared original distance, in the original order.
    assert original["reid_mAP"] == pytest.approx(run_metrics["reid_mAP"], abs=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--k1", "5"], "--k1, --k2 and --lambda only apply with --rerank"),
        (["--rerank", "--lambda", "1.5"], r"argument --lambda: must be a number in \[0, 1\]. Received: '1.5'"),
        (["--rerank", "--k2", "0"], "argument --k2: must be a positive integer"),
    ],
)
def test_rerank_arguments_are_checked(smoke_run_dir, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(smoke_run_dir), *args])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
