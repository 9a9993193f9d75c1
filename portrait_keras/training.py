"""Training a portrait model from a `Config`: strategy, data, compile, fit, run folder.

`train(config)` writes a run folder:

    RUN_DIR/config.json      the config, the data CSV, the number of ids, versions
    RUN_DIR/schema.json      the dataset's task schema
    RUN_DIR/history.csv      per-epoch losses (total and per task), s_i, lr, PIQ metrics
    RUN_DIR/metrics.json     final metrics (`portrait_keras.evaluate`)
    RUN_DIR/model.keras      the functional model (loads with safe_mode=True)
    RUN_DIR/saved_model/     SavedModel with the uint8 `serve` endpoint
    RUN_DIR/checkpoints/     weights of the last good epoch (and of the best PIQ)
    RUN_DIR/backup/          the training state while a run is unfinished
    RUN_DIR/tensorboard/     TensorBoard logs
    RUN_DIR/report/          training curves, F1 bars, confusion matrices, report.md/.html

Faults:
- Re-running the same command after a crash or kill resumes from `backup/` at the step the
  run had reached (`callbacks.BackupAndResume`): epoch `e` of the data is a function of the
  seed and `e` alone (`pipeline.epoch_indices`), so the resumed run sees the batches the
  uninterrupted one would, and with the same seed ends with the same weights. A half-done
  epoch is finished by a first `fit` over its remaining batches (its history row averages
  those only). The global step is the number of train batches run (counted by the callback,
  so a float16 step the loss scaler skipped still counts), and the last batch of an epoch is
  backed up only with its epoch end (PIQ, history row, checkpoints). `checkpoints/best.weights.h5`
  is replaced only by an epoch better than every PIQ in the kept rows of `history.csv`.
- A NaN/Inf loss stops training (`callbacks.NaNGuard`) with `TrainingDiverged` naming the
  task; `checkpoints/last.weights.h5` and `backup/` keep the last good state.
- A run folder that cannot be written, or a disk without room for the run's files, is
  reported before the first step.
- An unreadable image stops training with a `BadImageError` naming its CSV line and file,
  unless `data.skip_bad_images` leaves such files out (listed at every epoch end).
"""

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import warnings

import keras
import numpy as np

from portrait_keras.callbacks import (
    BackupAndResume,
    HistoryLogger,
    NaNGuard,
    PIQCallback,
    SkippedImagesLogger,
    UncertaintyLogger,
)
from portrait_keras.config import default_run_dir
from portrait_keras.schema import APPEARANCE, SINGLE

# Global steps between two backups of the training state (and at every epoch end).
BACKUP_EVERY = 1000
# Room needed beside the model files: TensorBoard logs, history, temporary files.
SPARE_BYTES = 64 * 2**20
# Copies of the model's weights a run keeps on disk at worst: model.keras, the SavedModel,
# and three checkpoints (last, best, backup) of weights plus two Adam moments each, one of
# them twice while it is being replaced.
WEIGHT_COPIES = 2 + 3 * 3 + 3


class TrainingDiverged(RuntimeError):
    """A task's loss became NaN or infinite."""


def check_run_dir(run_dir, needed_bytes=SPARE_BYTES):
    """Fails before training when `run_dir` cannot be written or its disk lacks `needed_bytes`.

    Raises: OSError naming the folder, with the free and the needed space.
    """
    try:
        os.makedirs(run_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write_test_"):
            pass
    except OSError as e:
        raise OSError(f"Run folder {run_dir!r} is not writable: {e.strerror or e}") from e
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise OSError(
            f"Run folder {run_dir!r}: only {free / 2**20:,.0f} MiB free on its disk, the run needs about "
            f"{needed_bytes / 2**20:,.0f} MiB (model files, checkpoints, backup, logs). Free some space "
            f"or choose another --run-dir."
        )


def run_bytes(model):
    """Disk space a run of `model` needs at worst (see `WEIGHT_COPIES`), in bytes."""
    weights = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    return WEIGHT_COPIES * weights + SPARE_BYTES


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


def train(
    config,
    *,
    run_dir=None,
    strategy=None,
    replicas=None,
    callbacks=(),
    verbose="auto",
    backup_every=BACKUP_EVERY,
    report=True,
):
    """Trains `config` and writes its run folder (module docstring).

    Args:
        config: `portrait_keras.config.Config`.
        run_dir: str. Run folder; defaults to `runs/<config.name>`. Re-running with the same
            folder resumes an interrupted run at the step it had reached.
        strategy: a `tf.distribute.Strategy`, or the name of one (`distribute.STRATEGIES`:
            `"auto"`, `"one"`, `"mirrored"`, `"multi_worker"`). Defaults to `"auto"`:
            MultiWorkerMirroredStrategy when TF_CONFIG names workers, MirroredStrategy with
            several GPUs or `replicas` > 1, else one device. Under JAX the names map to
            `keras.distribution.DataParallel`.
        replicas: int or None. Replicas of a named strategy; on a machine without GPUs the
            CPU is split into that many logical devices (before TensorFlow starts).
        callbacks: extra Keras callbacks, run after the metric callbacks.
        verbose: Keras `fit` verbosity.
        backup_every: int or None. Global steps between backups of the training state,
            besides one at every epoch end. Defaults to `BACKUP_EVERY`.
        report: bool. Write the run's figures and report page into `RUN_DIR/report/`
            (`portrait_keras.report.write_report`) at the end. Defaults to True.

    Under several replicas (`portrait_keras.distribute`) the loss, its gradients and the
    BatchNormalization statistics are those of the global batch, and only the chief worker
    writes `run_dir`; the other workers write to temporary folders of their own, removed at
    the end.

    Returns: dict of the final metrics (also in `metrics.json`).

    Raises:
        OSError: the run folder is not writable or its disk is too full (before training).
        ValueError: `backup/` holds an unfinished run of another config.
        DistributionError: a strategy that cannot be set up (bad TF_CONFIG, too few devices).
        AnnotationError, BadImageError: bad annotation rows or unreadable images.
        TrainingDiverged: a loss became NaN/Inf.
    """
    from portrait_keras import distribute

    run_dir = os.fspath(run_dir or default_run_dir(config))
    # First: logical CPU devices and MultiWorkerMirroredStrategy need a TensorFlow not yet started.
    if strategy is None or isinstance(strategy, str):
        strategy = distribute.make_strategy(strategy or "auto", replicas)
    distribution = distribute.describe(strategy, config.data.batch_size)  # before any file is written
    write_dir = distribute.worker_write_dir(run_dir)
    try:
        return _train(config, run_dir, write_dir, strategy, distribution, callbacks, verbose, backup_every, report)
    finally:
        if write_dir != run_dir:
            shutil.rmtree(write_dir, ignore_errors=True)


def _train(config, run_dir, write_dir, strategy, distribution, callbacks, verbose, backup_every, report):
    from portrait_keras import distribute
    from portrait_keras.data import default_dataset, make_dataset, read_annotations
    from portrait_keras.data.pipeline import naming_bad_images
    from portrait_keras.export import export_saved_model

    check_run_dir(write_dir)
    backup = BackupAndResume(
        os.path.join(write_dir, "backup"), every=backup_every, restore_dir=os.path.join(run_dir, "backup")
    )
    config = _with_seed(config, run_dir, backup.exists(), strategy)
    if backup.exists():
        _check_same_config(run_dir, config)
    keras.utils.set_random_seed(config.train.seed)
    set_precision(config.train.mixed_precision)

    csv_path = os.path.abspath(config.data.csv) if config.data.csv else os.fspath(default_dataset())
    annotations = read_annotations(csv_path)
    schema = annotations.schema
    num_ids = len(annotations.train_ids)
    d = config.data
    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    replicas = distribution["replicas"]
    # SyncBN unless turned off (None = on), and only where there is more than one replica.
    sync_bn = replicas > 1 and config.train.sync_batch_norm is not False
    distribution["sync_batch_norm"] = sync_bn
    _print_distribution(distribution)

    # Which epoch the data stream draws: the Keras epoch of the pass (set below), so that an
    # extra iterator (a peek, a resumed run) cannot shift it.
    data_epoch = {"epoch": 0}

    def train_dataset(**kwargs):
        return make_dataset(
            annotations,
            "train",
            batch_size=d.batch_size,
            training=True,
            sampler=d.sampler,
            image_size=tuple(d.image_size),
            p=d.p,
            k=d.k,
            seed=config.train.seed,
            deterministic=True,
            num_replicas=replicas,
            skip_bad_images=d.skip_bad_images,
            erasing_probability=d.erasing_probability,
            padding=d.padding,
            **kwargs,
        )

    train_ds = train_dataset(epoch=lambda: data_epoch["epoch"])
    steps_per_epoch = int(train_ds.cardinality())
    with scope():
        model, trainer = build_trainer(config, schema, num_ids, steps_per_epoch)
    # Evaluation, export and the report read a one-device copy of the weights under a TF
    # multi-replica strategy: the model that is saved, with no collective in its predict.
    eval_model = model
    if keras.backend.backend() == "tensorflow" and replicas > 1:
        eval_model = keras.models.clone_model(model)
    check_run_dir(write_dir, run_bytes(model))

    with scope():  # the optimizer's variables are built here when there is a state
        step = backup.restore(trainer)
    if distribute.broadcast_from_chief(strategy, step) != step:
        raise distribute.DistributionError(
            f"worker {distribute.worker_index()} resumes at step {step}, the chief at another one: every "
            f"worker must read the chief's {backup.restore_path} (a run folder they all share)."
        )
    start_epoch, skip = divmod(step, steps_per_epoch)
    if step:
        print(
            f"{run_dir}: resuming at epoch {start_epoch + 1}, batch {skip + 1} (global step {step}) "
            f"from {backup.restore_path}",
            file=sys.stderr,
            flush=True,
        )
    history_csv = os.path.join(write_dir, "history.csv")
    _trim_history(history_csv, start_epoch if backup.exists() else 0)
    _write_run_info(write_dir, config, csv_path, schema, num_ids, distribution)

    def inference_model():
        distribute.average_moving_statistics(strategy, model)
        if eval_model is not model:
            eval_model.set_weights(model.get_weights())
        return eval_model

    has_eval = {"query", "gallery"} <= set(annotations.splits)
    piq = PIQCallback(
        annotations,
        every=config.train.eval_every,
        batch_size=d.batch_size,
        epochs=config.train.epochs,
        skip_bad_images=d.skip_bad_images,
        model_fn=inference_model,
    )
    ckpt = os.path.join(write_dir, "checkpoints")
    os.makedirs(ckpt, exist_ok=True)
    guard = NaNGuard(last_good=os.path.join(ckpt, "last.weights.h5"))
    cbs = [keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: data_epoch.update(epoch=epoch))]
    cbs += [UncertaintyLogger()] + ([piq] if has_eval else [])
    if d.skip_bad_images:
        cbs.append(SkippedImagesLogger(train_ds.skipped_images, root=annotations.root))
    cbs.append(guard)
    if has_eval and config.train.eval_every:
        cbs.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(ckpt, "best.weights.h5"),
                save_weights_only=True,
                monitor="piq",
                mode="max",
                save_best_only=True,
                # A resumed run beats the best epoch before the kill, not a blank slate.
                initial_value_threshold=_best_logged(os.path.join(run_dir, "history.csv"), "piq"),
            )
        )
    cbs += [
        HistoryLogger(history_csv),
        keras.callbacks.TensorBoard(os.path.join(write_dir, "tensorboard"), write_graph=False),
        # After the CSV row, so a kill between the two repeats the row (trimmed on resume)
        # instead of losing it.
        backup,
        *callbacks,
    ]
    epochs = config.train.epochs
    with (
        naming_bad_images(annotations, ["train"] + (["query", "gallery"] if has_eval else [])),
        distribute.synchronized_batch_norm(model, sync_bn),
        distribute.multi_worker_workaround(trainer, strategy),
    ):
        if skip and start_epoch < epochs:
            # Finish the epoch the killed run left half done, from the batch it had reached.
            data_epoch["epoch"] = start_epoch
            rest = train_dataset(epoch=lambda: data_epoch["epoch"], skip_batches=skip)
            trainer.fit(
                rest, initial_epoch=start_epoch, epochs=start_epoch + 1, callbacks=cbs, verbose=verbose, shuffle=False
            )
            start_epoch += 1
        if not guard.diverged and start_epoch < epochs:
            data_epoch["epoch"] = start_epoch
            # shuffle=False: the sampler orders each epoch (Keras cannot shuffle a tf.data pipeline).
            trainer.fit(
                train_ds, initial_epoch=start_epoch, epochs=epochs, callbacks=cbs, verbose=verbose, shuffle=False
            )
    if guard.diverged:
        raise TrainingDiverged(
            f"Loss became NaN/Inf in task(s) {', '.join(guard.diverged)}; the weights of the last good epoch "
            f"are in {guard.last_good}" + ("" if os.path.exists(guard.last_good) else " (none: no epoch finished)")
        )

    final_model = inference_model()
    final_model.save(os.path.join(write_dir, "model.keras"))
    if keras.backend.backend() == "tensorflow":
        export_saved_model(final_model, schema, os.path.join(write_dir, "saved_model"))
    if has_eval:
        from portrait_keras.evaluation import evaluate

        final = piq.last or evaluate(
            final_model, annotations, batch_size=d.batch_size, skip_bad_images=d.skip_bad_images
        )
    else:
        final = {}
    final = {**final, **{f"s_{k}": v for k, v in trainer.uncertainties().items()}}
    with open(os.path.join(write_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(final, f, indent=2)
    backup.remove()  # a kill before this point resumes after the final step
    if report:
        _write_report(write_dir, annotations, final_model, d.batch_size)
    return final


def _with_seed(config, run_dir, resuming, strategy):
    """`config` with a seed: its own, else the unfinished run's (a resume), else a fresh one;
    under several workers, the chief's."""
    from portrait_keras import distribute

    seed = config.train.seed
    if seed is None:
        saved = (_saved_config(run_dir) if resuming else {}).get("train", {}).get("seed")
        seed = saved if isinstance(saved, int) else distribute.draw_seed()
        seed = distribute.broadcast_from_chief(strategy, seed)
        where = "the unfinished run's" if isinstance(saved, int) else "drawn"
        print(f"train.seed=null: seed {seed} ({where}; written to config.json)", file=sys.stderr, flush=True)
        return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    if distribute.broadcast_from_chief(strategy, seed) != seed:
        raise distribute.DistributionError(
            f"worker {distribute.worker_index()} has train.seed={seed}, the chief another: start every worker "
            f"with the same command."
        )
    return config


def _print_distribution(info):
    workers = f", worker {info['worker_index']} of {info['workers']}" if info["workers"] > 1 else ""
    sync = ", synchronized BatchNorm" if info["sync_batch_norm"] else ""
    print(
        f"Distribution: {info['strategy']} ({info['backend']}), {info['replicas']} replica(s){workers}; "
        f"global batch {info['global_batch']} = {info['replicas']} x {info['per_replica_batch']}{sync}",
        file=sys.stderr,
        flush=True,
    )


def _write_report(run_dir, annotations, model, batch_size):
    # The run itself is complete here: a failing figure must not lose it, but must be seen.
    from portrait_keras.report import write_report

    try:
        written = write_report(run_dir, annotations, model=model, batch_size=batch_size)
    except Exception as e:  # noqa: BLE001  (reported, and the command to retry is given)
        warnings.warn(
            f"{run_dir}: the training finished, but its report failed ({type(e).__name__}: {e}); "
            f"retry with: python -m portrait_keras report {run_dir}"
        )
        return
    print(f"Report: {written['html']}", file=sys.stderr, flush=True)


def _saved_config(run_dir):
    """The config.json of `run_dir` as a dict (`{}` when missing or unreadable)."""
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _check_same_config(run_dir, config):
    """Raises ValueError when the unfinished run in `run_dir` was started with another config."""
    saved = _saved_config(run_dir)
    if not saved:
        return
    current = json.loads(json.dumps(config.to_dict()))
    changed = sorted(
        f"{part}.{key}"
        for part, values in current.items()
        if isinstance(values, dict)
        for key in values
        if saved.get(part, {}).get(key) != values[key]
    )
    if changed:
        raise ValueError(
            f"Run folder {run_dir!r} holds an unfinished run of another config (differs in "
            f"{', '.join(changed)}); resuming it with this one would mix the two. Use another "
            f"--run-dir, or delete {os.path.join(run_dir, 'backup')} to start over."
        )


def _trim_history(history_csv, epochs):
    """Keeps the rows of the first `epochs` epochs in `history.csv` (a resumed run writes the
    later ones again); a fresh run (`epochs=0`) starts a fresh file."""
    if not os.path.exists(history_csv):
        return
    with open(history_csv, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    kept = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < epochs]
    if not kept:
        os.remove(history_csv)
        return
    with open(history_csv, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[:1] + kept)


def _best_logged(history_csv, key):
    """The highest finite value of column `key` in `history.csv`, or None (no such value)."""
    if not os.path.exists(history_csv):
        return None
    with open(history_csv, encoding="utf-8", newline="") as f:
        values = [_float(row.get(key)) for row in csv.DictReader(f)]
    return max((v for v in values if np.isfinite(v)), default=None)


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _write_run_info(run_dir, config, csv, schema, num_ids, distribution=None):
    import tensorflow as tf

    from portrait_keras import __version__

    info = {
        **config.to_dict(),
        "data_csv": csv,
        "num_ids": num_ids,
        "distribution": distribution or {},
        "versions": {"portrait_keras": __version__, "keras": keras.__version__, "tensorflow": tf.__version__},
    }
    with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    schema.save(os.path.join(run_dir, "schema.json"))
