import math
import os

import keras
import pytest

from portrait_keras.training.callbacks import NaNGuard, PIQCallback


class _Model:
    stop_training = False


@pytest.mark.parametrize(
    "logs, diverged",
    [
        ({"loss": 1.0, "loss_gender": 0.5, "loss_id": 2.0}, []),
        ({"loss": math.nan, "loss_gender": math.nan, "loss_id": 2.0}, ["gender"]),
        ({"loss": math.inf, "loss_gender": 0.5, "loss_arm": math.inf, "loss_id": math.nan}, ["arm", "id"]),
        ({"loss": math.nan}, ["<total>"]),
    ],
)
def test_nan_guard_names_the_diverged_tasks(logs, diverged, capsys):
    guard = NaNGuard()
    guard.set_model(_Model())
    guard.on_train_batch_end(3, logs)
    assert sorted(guard.diverged) == sorted(diverged)
    assert guard.model.stop_training is bool(diverged)
    err = capsys.readouterr().err
    assert all(name in err for name in diverged)


def test_piq_callback_runs_every_n_epochs_and_on_the_last():
    cb = PIQCallback(annotations=None, every=3, epochs=7)
    assert [e + 1 for e in range(7) if cb._due(e)] == [3, 6, 7]
    assert [e + 1 for e in range(4) if PIQCallback(None, every=0, epochs=4)._due(e)] == [4]
    with pytest.raises(ValueError, match="every must be >= 0"):
        PIQCallback(None, every=-1)
    assert isinstance(cb, keras.callbacks.Callback)


def test_history_logger_widens_an_existing_file_for_a_new_key(tmp_path):
    import csv

    from portrait_keras.training.callbacks import HistoryLogger

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,loss_gender\n0,2.0,1.5\n")
    logger = HistoryLogger(str(path))
    logger.on_train_begin()
    # A resumed run's first epoch logs a key the file has no column for (PIQ on the last epoch):
    # it gets one, and the earlier rows NA in it.
    logger.on_epoch_end(1, {"piq": 0.3, "loss_gender": 1.25, "loss": 1.75})
    logger.on_train_end()
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[1]) == ["epoch", "loss", "loss_gender", "piq"]
    assert rows == [
        {"epoch": "0", "loss": "2.0", "loss_gender": "1.5", "piq": "NA"},
        {"epoch": "1", "loss": "1.75", "loss_gender": "1.25", "piq": "0.3"},
    ]


def test_history_logger_adds_no_val_columns_without_validation_data(tmp_path):
    import csv

    from portrait_keras.training.callbacks import HistoryLogger

    path = tmp_path / "history.csv"
    logger = HistoryLogger(str(path))
    logger.on_train_begin()
    logger.on_epoch_end(0, {"loss": 2.0, "piq": 0.25})
    logger.on_epoch_end(1, {"loss": 1.5, "piq": 0.5})
    logger.on_train_end()
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "loss", "piq"]
    assert [r["piq"] for r in rows] == ["0.25", "0.5"]


def test_tensorboard_files_test_split_metrics_under_test(tmp_path):
    import tensorflow as tf

    from portrait_keras.training.callbacks import TestSplitTensorBoard

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    board = TestSplitTensorBoard(str(tmp_path), test_keys=lambda: {"piq", "reid_mAP"}, write_graph=False)
    board.set_model(model)
    board.on_train_begin()
    board.on_epoch_end(0, {"loss": 1.0, "piq": 0.4, "reid_mAP": 0.2})
    board.on_train_end()

    def tags(folder):
        found = set()
        for root, _, files in os.walk(tmp_path / folder):
            for name in files:
                for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                    found |= {v.tag for v in event.summary.value}
        return found

    assert {"epoch_piq", "epoch_reid_mAP"} <= tags("test")
    assert "epoch_loss" in tags("train") and not {"epoch_piq", "epoch_reid_mAP"} & tags("train")
