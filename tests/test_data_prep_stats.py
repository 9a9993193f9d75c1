import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from portrait_keras.data.annotations import read_annotations
from portrait_keras.data.prep import stats

ROOT = Path(__file__).resolve().parents[1]

ROWS = [  # split, id, age, expression
    ("train", 1, "child", "happy"),
    ("train", 1, "elderly", "happy;sad"),
    ("train", 1, "", ""),
    ("train", 2, "child", "neutral"),
    ("query", 3, "child", "sad"),
    ("query", 3, "teenager", ""),
    ("query", 4, "child", "happy"),
    ("gallery", 3, "elderly", "happy"),
    ("gallery", 4, "", "neutral"),
    ("gallery", 4, "child", "neutral"),
    ("gallery", 4, "child", "neutral"),
    ("gallery", -1, "child", "neutral"),
    ("gallery", 5, "child", "neutral"),
    ("gallery", 6, "child", "neutral"),
]


def _dataset(tmp_path):
    lines = ["path,split,id,gender,age,physique,height,body,arm,expression"]
    for i, (split, identity, age, expression) in enumerate(ROWS):
        (tmp_path / f"{i}.jpg").touch()  # the reader checks that files exist, not their content
        lines.append(f"{i}.jpg,{split},{identity},,{age},,,,,{expression}")
    csv = tmp_path / "annotations.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def test_id_lts_per_split(tmp_path):
    table = stats.id_lts_table(read_annotations(_dataset(tmp_path)))
    assert table["split"].tolist() == ["train", "query", "gallery"]
    assert table["images"].tolist() == [4, 3, 7]
    assert table["images_with_id"].tolist() == [4, 3, 6]
    assert table["ids"].tolist() == [2, 2, 4]
    # train [3, 1]: 1 of 2 ids hold 20 %; query [2, 1] likewise; gallery [3, 1, 1, 1]: 1 of 4.
    assert table["lts"].tolist() == pytest.approx([1 / 0.4, 1 / 0.4, 1 / 0.8])


def test_label_counts(tmp_path):
    counts = stats.label_counts(read_annotations(_dataset(tmp_path)))
    age = counts["age"]
    assert age.loc["child"].tolist() == [2, 2, 5]
    assert age.loc["elderly"].tolist() == [1, 0, 1]
    assert age.loc["unknown"].tolist() == [1, 0, 1]
    expression = counts["expression"]
    assert expression.loc["happy"].tolist() == [2, 1, 1]
    assert expression.loc["sad"].tolist() == [1, 1, 0]
    assert expression.loc["unknown"].tolist() == [1, 1, 0]
    assert counts["id"].index.tolist()[:2] == ["4", "1"]  # most images first
    assert counts["id"].loc["unknown"].tolist() == [0, 0, 1]


def test_cli_writes_tables_and_charts(tmp_path):
    csv = _dataset(tmp_path)
    out = tmp_path / "stats"
    result = subprocess.run(
        [sys.executable, str(ROOT / "data_prep/stats.py"), str(csv), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "LTS_0.2" in result.stdout
    lts_table = pd.read_csv(out / "lts.csv")
    assert lts_table["LTS_0.2"].tolist() == pytest.approx([2.5, 2.5, 1.25])
    assert (out / "lts.md").read_text().startswith("| split | images | images_with_id | ids | LTS_0.2 |")
    long = pd.read_csv(out / "label_counts.csv", keep_default_na=False)
    assert long.query("task == 'age' and `class` == 'child' and split == 'gallery'")["images"].item() == 5
    for task in ("id", "gender", "age", "physique", "height", "body", "arm", "expression"):
        assert (out / f"labels_{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_without_an_identity_task_writes_the_label_charts(tmp_path, capsys):
    from portrait_keras.schema import default_schema

    default_schema().subset(["gender", "age"]).save(tmp_path / "schema.json")
    (tmp_path / "0.jpg").touch()
    (tmp_path / "1.jpg").touch()
    csv = tmp_path / "annotations.csv"
    csv.write_text("path,split,gender,age\n0.jpg,train,male,child\n1.jpg,gallery,female,\n")
    stats.main([str(csv), str(tmp_path / "stats")])
    out = capsys.readouterr().out
    assert "LTS (images per identity) left out" in out
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == [
        "label_counts.csv",
        "labels_age.png",
        "labels_gender.png",
    ]
