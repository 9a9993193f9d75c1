"""A task without any train label is left out of the model (with a note), not trained as noise."""

import dataclasses

import pytest

from portrait_keras import experiments as configs
from portrait_keras.data import read_annotations
from portrait_keras.errors import InputError
from portrait_keras.training.tasks import trained_tasks
from tests.test_data_annotations import GOOD_ROWS, write_dataset


def _without_train_labels(column):
    """GOOD_ROWS with `column` (index) emptied in the train rows."""
    rows = []
    for row in GOOD_ROWS:
        cells = row.split(",")
        if cells[1] == "train":
            cells[column] = "-1" if column == 2 else ""
        rows.append(",".join(cells))
    return rows


def _config(tasks=None):
    config = configs.get("fss")
    return dataclasses.replace(config, model=dataclasses.replace(config.model, tasks=tasks))


def test_a_task_without_train_labels_is_left_out_with_a_note(tmp_path, capsys):
    annotations = read_annotations(write_dataset(tmp_path, _without_train_labels(3)))  # gender
    tasks = trained_tasks(_config(), annotations)
    assert "gender" not in tasks and tasks == tuple(n for n in annotations.schema.names if n != "gender")
    err = capsys.readouterr().err
    assert err.startswith("note: gender: no label in the train split, left out of the model")
    assert trained_tasks(_config(), annotations, note=False) == tasks
    assert capsys.readouterr().err == ""


def test_every_labelled_task_is_kept(tmp_path, capsys):
    annotations = read_annotations(write_dataset(tmp_path, GOOD_ROWS))
    assert trained_tasks(_config(), annotations) == tuple(annotations.schema.names)
    assert capsys.readouterr().err == ""


def test_a_named_task_without_train_labels_is_an_error(tmp_path):
    annotations = read_annotations(write_dataset(tmp_path, _without_train_labels(2)))  # id
    with pytest.raises(InputError, match=r"model\.tasks: id has no label in the train split of .*annotations\.csv"):
        trained_tasks(_config(("id", "gender")), annotations)
    assert trained_tasks(_config(("gender",)), annotations) == ("gender",)


def test_the_model_built_for_such_data_has_no_head_for_the_task(tmp_path):
    from portrait_keras.training.fit import build_trainer

    annotations = read_annotations(write_dataset(tmp_path, _without_train_labels(3)))
    config = configs.synthetic_default(_config())
    tasks = trained_tasks(config, annotations, note=False)
    model, trainer = build_trainer(config, annotations.schema, len(annotations.train_ids), 1, tasks=tasks)
    assert "gender" not in model.tasks and "gender" not in model.output_names
    assert [t.name for t in trainer.tasks] == list(tasks)
