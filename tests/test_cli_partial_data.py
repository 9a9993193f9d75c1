"""What a first try on a small real-data CSV of `path,split,id,gender` ran into: a train split
smaller than one batch (one `error:` line with a batch that fits, before TensorFlow starts), and
`evaluate` of such data without a schema.json (its columns decide its tasks, as in training)."""

import csv
import json
import shutil
import signal

import pytest
from PIL import Image

from portrait_keras.cli import main


def _people(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    for path, *_ in rows:
        Image.new("RGB", (20, 40), (10, 20, 30)).save(folder / path)
    with open(folder / "people.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "split", "id", "gender"], *rows])
    return folder / "people.csv"


def test_a_train_split_smaller_than_a_batch_is_one_error_line_naming_a_batch_that_fits(tmp_path, capsys):
    rows = [[f"{i}.png", "train", i // 2, "female"] for i in range(6)]
    data = _people(tmp_path / "data", rows)
    run = tmp_path / "run"
    assert main(["train", "smoke", "--data", str(data), "--run-dir", str(run)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]
    assert len(err) == 1 and err[0].startswith(f"error: --data {data}: its train split (6 images) cannot fill"), err
    assert "data.sampler=random (data.batch_size=32)" in err[0] and "--set data.batch_size=4" in err[0]
    assert main(["train", "smoke", "--data", str(data), "--run-dir", str(run), "--set", "data.sampler=pk"]) == 2
    assert "P-K sampling needs at least p identities" in capsys.readouterr().err
    assert not run.exists()


def test_evaluate_reads_a_csv_without_schema_json_by_its_task_columns(smoke_run_dir, tiny_synth, tmp_path, capsys):
    folder = tmp_path / "partial"
    shutil.copytree(tiny_synth.parent, folder)
    (folder / "schema.json").unlink()
    with open(tiny_synth, newline="") as f:
        table = list(csv.DictReader(f))
    with open(folder / "people.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "split", "id", "gender", "group"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    assert main(["evaluate", str(smoke_run_dir), "--data", str(folder / "people.csv"), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    metrics = json.loads((smoke_run_dir / "metrics.json").read_text())
    assert "its task columns id, gender" in captured.err and "only re-id, gender are evaluated" in captured.err
    for key in ("reid_mAP", "reid_micro_mAP", "f1_gender"):
        assert abs(result[key] - metrics[key]) < 1e-6, key
    assert not [k for k in result if k.endswith("_age")]


def test_ctrl_c_that_tensorflow_turns_into_another_error_still_ends_with_the_resume_line(tmp_path, capsys, monkeypatch):
    # Seen on a first try: Ctrl-C while the PIQ evaluation traced its tf.data map surfaced as
    # "AssertionError: Concurrent access?" and a 30-line traceback.
    run = tmp_path / "run"

    def interrupted_train(config, run_dir, **kwargs):
        (run / "backup").mkdir(parents=True)
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise AssertionError("Concurrent access?") from None

    monkeypatch.setattr("portrait_keras.training.fit.train", interrupted_train)
    assert main(["train", "smoke", "--run-dir", str(run)]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    again = f"portrait-keras train smoke --run-dir {run}"
    assert last == f"interrupted: {run} keeps its last backup; re-run `{again}` to resume."
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back

    def failing_train(config, run_dir, **kwargs):
        raise AssertionError("a real bug")

    monkeypatch.setattr("portrait_keras.training.fit.train", failing_train)
    with pytest.raises(AssertionError, match="a real bug"):
        main(["train", "smoke", "--run-dir", str(tmp_path / "other")])
