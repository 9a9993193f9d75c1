"""A `model.keras` is enough on its own; an older functional one still loads with its run's schema.json."""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from portrait_keras.cli import main
from portrait_keras.serving.predictor import load_predictor


@pytest.fixture(scope="module")
def lone_model(smoke_run_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("alone")
    shutil.copy(smoke_run_dir / "model.keras", folder / "copied.keras")
    return folder / "copied.keras"


def test_a_copied_model_file_alone_is_interpreted(lone_model, tiny_annotations, capsys):
    image = os.path.join(tiny_annotations.root, tiny_annotations.table["path"].iloc[0])
    assert sorted(p.name for p in lone_model.parent.iterdir()) == ["copied.keras"]
    assert main(["interpret", str(lone_model), image, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["images"][0]
    assert set(result) == {"path", "appearance", "posture", "emotion"}
    assert set(result["appearance"]["gender"]["probabilities"]) == {"female", "male"}


def test_a_copied_model_file_alone_is_evaluated_like_its_run(lone_model, smoke_run_dir, tiny_synth, capsys):
    assert main(["evaluate", str(lone_model), "--data", str(tiny_synth), "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(smoke_run_dir), "--json"]) == 0
    assert alone == json.loads(capsys.readouterr().out)


def test_a_model_file_alone_needs_data_to_evaluate(lone_model, capsys):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(lone_model)])
    assert info.value.code == 2 and "--data CSV" in capsys.readouterr().err


def test_an_older_functional_model_loads_with_the_schema_beside_it(smoke_run_dir, tiny_annotations, tmp_path, capsys):
    new = keras.models.load_model(smoke_run_dir / "model.keras")
    old = keras.Model(new.inputs, dict(zip(new.output_names, new.outputs)), name="portrait")  # as runs wrote before
    old.save(tmp_path / "model.keras")
    with pytest.raises(Exception, match="does not carry its schema.*schema.json"):
        load_predictor(tmp_path / "model.keras")
    shutil.copy(smoke_run_dir / "schema.json", tmp_path / "schema.json")
    older = load_predictor(tmp_path)
    assert "note:" in capsys.readouterr().err
    assert older.schema == new.schema and [t.name for t in older.tasks] == [
        t.name for t in load_predictor(smoke_run_dir).tasks
    ]
    images = np.zeros((2, *older.image_size, 3), np.uint8)
    current = load_predictor(smoke_run_dir).predict(images)
    for key, value in older.predict(images).items():
        np.testing.assert_allclose(value, current[key], rtol=1e-5, atol=1e-6)
