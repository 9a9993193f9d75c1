"""Training a portrait model from a `Config`: strategy, data, compile, fit, run folder.

`train(config)` writes a run folder:

    RUN_DIR/config.json      the config, the data CSV, the number of ids, versions
    RUN_DIR/schema.json      the dataset's task schema
    RUN_DIR/history.csv      per-epoch losses (total and per task), s_i, lr, PIQ metrics
    RUN_DIR/metrics.json     final metrics (`portrait_keras.evaluate`)
    RUN_DIR/model.keras      the functional model (loads with safe_mode=True)
    RUN_DIR/saved_model/     SavedModel with the uint8 `serve` endpoint
    RUN_DIR/checkpoints/     last (and best-PIQ) weights
    RUN_DIR/backup/          BackupAndRestore state while a run is unfinished
    RUN_DIR/tensorboard/     TensorBoard logs

Re-running the same command after a crash resumes from `backup/`.
"""

import json
import os
import shutil
import tempfile

import keras

from portrait_keras.callbacks import NaNGuard, PIQCallback, UncertaintyLogger
from portrait_keras.schema import APPEARANCE, SINGLE

MIN_FREE_BYTES = 200 * 2**20


class TrainingDiverged(RuntimeError):
    """A task's loss became NaN or infinite."""


def choose_strategy():
    """`MultiWorkerMirroredStrategy` when `TF_CONFIG` names workers, `MirroredStrategy` with
    more than one GPU, else the default (single-device) strategy."""
    import tensorflow as tf

    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if tf_config.get("cluster", {}).get("worker"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def check_run_dir(run_dir):
    """Fails before training when `run_dir` cannot be written or its disk is nearly full."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write_test_"):
            pass
    except OSError as e:
        raise OSError(f"Run folder {run_dir!r} is not writable: {e.strerror or e}") from e
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise OSError(
            f"Run folder {run_dir!r}: only {free / 2**20:.0f} MiB free, need at least "
            f"{MIN_FREE_BYTES / 2**20:.0f} MiB for checkpoints and the exported model."
        )


def set_precision(mixed):
    """float16 compute on GPU, bfloat16 on CPU when `mixed`, float32 otherwise."""
    if not mixed:
        keras.mixed_precision.set_global_policy("float32")
        return
    import tensorflow as tf

    gpu = bool(tf.config.list_logical_devices("GPU"))
    keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")


def build_trainer(config, schema, num_ids, steps_per_epoch):
    """The functional model and its `PortraitTrainer`, compiled with the paper's optimiser."""
    from portrait_keras.models import build_portrait_model
    from portrait_keras.schedules import paper_schedule
    from portrait_keras.trainer import PortraitTrainer

    m = config.model
    tasks = schema.tasks if m.tasks is None else tuple(schema.task(n) for n in m.tasks)
    model = build_portrait_model(
        schema,
        num_ids,
        backbone=m.backbone,
        head=m.head,
        tasks=None if m.tasks is None else [t.name for t in tasks],
        input_shape=(*config.data.image_size, 3),
        backbone_weights=m.backbone_weights,
        backbone_kwargs=dict(m.backbone_kwargs),
    )
    hfe_tasks = [t for t in schema.aspect_tasks(APPEARANCE) if t.kind == SINGLE]
    trainer = PortraitTrainer(
        model,
        tasks,
        metric=config.loss.metric,
        lam=config.loss.lam,
        multitask=config.loss.multitask,
        triplet_margin=config.loss.triplet_margin,
        label_smoothing=config.loss.label_smoothing,
        hfe_tasks=hfe_tasks if config.loss.metric == "hfe" else (),
        total_steps=config.train.epochs * steps_per_epoch,
    )
    trainer.compile(
        optimizer=keras.optimizers.Adam(paper_schedule(config.train, steps_per_epoch)),
        jit_compile=config.train.jit_compile,
    )
    return model, trainer


def train(config, *, run_dir=None, strategy=None, callbacks=(), verbose="auto"):
    """Trains `config` and writes its run folder (module docstring).

    Args:
        config: `portrait_keras.config.Config`.
        run_dir: str. Run folder; defaults to `runs/<config.name>`. Re-running with the same
            folder resumes an interrupted run.
        strategy: a `tf.distribute.Strategy`; defaults to `choose_strategy()`.
        callbacks: extra Keras callbacks, run after the metric callbacks.
        verbose: Keras `fit` verbosity.

    Returns: dict of the final metrics (also in `metrics.json`).
    """
    from portrait_keras.data import default_dataset, make_dataset, read_annotations
    from portrait_keras.export import export_saved_model

    run_dir = os.fspath(run_dir or os.path.join("runs", config.name))
    check_run_dir(run_dir)
    keras.utils.set_random_seed(config.train.seed)
    set_precision(config.train.mixed_precision)

    csv = os.path.abspath(config.data.csv) if config.data.csv else os.fspath(default_dataset())
    annotations = read_annotations(csv)
    schema = annotations.schema
    num_ids = len(annotations.train_ids)
    strategy = strategy or choose_strategy()

    d = config.data
    train_ds = make_dataset(
        annotations,
        "train",
        batch_size=d.batch_size,
        training=True,
        sampler=d.sampler,
        image_size=tuple(d.image_size),
        p=d.p,
        k=d.k,
        seed=config.train.seed,
        num_replicas=strategy.num_replicas_in_sync,
    )
    steps_per_epoch = int(train_ds.cardinality())
    with strategy.scope():
        model, trainer = build_trainer(config, schema, num_ids, steps_per_epoch)

    backup_dir = os.path.join(run_dir, "backup")
    resuming = os.path.isdir(backup_dir) and bool(os.listdir(backup_dir))
    history_csv = os.path.join(run_dir, "history.csv")
    if not resuming and os.path.exists(history_csv):
        os.remove(history_csv)  # a fresh run starts a fresh history
    _write_run_info(run_dir, config, csv, schema, num_ids)

    has_eval = {"query", "gallery"} <= set(annotations.splits)
    piq = PIQCallback(annotations, every=config.train.eval_every, batch_size=d.batch_size, epochs=config.train.epochs)
    guard = NaNGuard()
    ckpt = os.path.join(run_dir, "checkpoints")
    os.makedirs(ckpt, exist_ok=True)
    cbs = [UncertaintyLogger()] + ([piq] if has_eval else []) + [guard]
    cbs += [
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.ModelCheckpoint(os.path.join(ckpt, "last.weights.h5"), save_weights_only=True),
    ]
    if has_eval and config.train.eval_every:
        cbs.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(ckpt, "best.weights.h5"),
                save_weights_only=True,
                monitor="piq",
                mode="max",
                save_best_only=True,
            )
        )
    cbs += [
        keras.callbacks.CSVLogger(history_csv, append=True),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        *callbacks,
    ]
    trainer.fit(train_ds, epochs=config.train.epochs, callbacks=cbs, verbose=verbose)
    if guard.diverged:
        raise TrainingDiverged(
            f"Loss became NaN/Inf in task(s) {', '.join(guard.diverged)}; "
            f"the last good weights are in {ckpt}/last.weights.h5"
        )

    model.save(os.path.join(run_dir, "model.keras"))
    if keras.backend.backend() == "tensorflow":
        export_saved_model(model, schema, os.path.join(run_dir, "saved_model"))
    if has_eval:
        from portrait_keras.evaluation import evaluate

        final = piq.last or evaluate(model, annotations, batch_size=d.batch_size)
    else:
        final = {}
    final = {**final, **{f"s_{k}": v for k, v in trainer.uncertainties().items()}}
    with open(os.path.join(run_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(final, f, indent=2)
    return final


def _write_run_info(run_dir, config, csv, schema, num_ids):
    import tensorflow as tf

    from portrait_keras import __version__

    info = {
        **config.to_dict(),
        "data_csv": csv,
        "num_ids": num_ids,
        "versions": {"portrait_keras": __version__, "keras": keras.__version__, "tensorflow": tf.__version__},
    }
    with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    schema.save(os.path.join(run_dir, "schema.json"))
