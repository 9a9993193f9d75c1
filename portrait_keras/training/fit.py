"""Training a portrait model from a `Config`: strategy, data, compile, fit, run folder.

`train(config)` writes a run folder (`portrait_keras.training.run_dir.RunDir` names its files:
config.json, schema.json, history.csv, metrics.json, model.keras, saved_model/, checkpoints/,
backup/, tensorboard/, report/). It runs in named steps: the seed and the config check of a
resumed run (`_with_seed`, `RunDir.check_resumable`), data and model (`_build`), the restored step
(`_restore`), callbacks (`_callbacks`), `fit` (`_fit`), with `train.ap_rounds` the rounds of
attribute propagation and fine-tuning of paper 004 (`propagation_rounds.run_rounds`), and the
saved model, SavedModel, metrics and report (`_finish`).

Faults:
- Re-running the same command after a crash or kill resumes from `backup/` at the step the
  run had reached (`callbacks.BackupAndResume`): epoch `e` of the data is a function of the
  seed and `e` alone (`pipeline.epoch_indices`), so the resumed run sees the batches the
  uninterrupted one would, and with the same seed ends with the same weights. A half-done
  epoch is finished by a first `fit` over its remaining batches (its history row averages
  those only). `resume_from` continues a finished run for more epochs in another folder: its
  last epoch's weights and optimizer state (`checkpoints/last.weights.h5`) at the global step
  it ended on, so the schedule and the data stream go on as if it had been asked for more
  epochs at the start. The global step is the number of train batches run (counted by the callback,
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
import dataclasses
import json
import os
import shutil
import sys
import warnings

import keras

from portrait_keras.config import default_run_dir, model_preprocessing
from portrait_keras.data import default_dataset, make_dataset
from portrait_keras.data.pipeline import naming_bad_images
from portrait_keras.data.sources import read_sources
from portrait_keras.evaluation.evaluator import evaluate
from portrait_keras.schema import APPEARANCE, SINGLE
from portrait_keras.serving.export import SavedModelExportError, export_saved_model, load_keras_model
from portrait_keras.training import distribute
from portrait_keras.training.callbacks import (
    BackupAndResume,
    HistoryLogger,
    NaNGuard,
    PIQCallback,
    SkippedImagesLogger,
    TestSplitTensorBoard,
    UncertaintyLogger,
)
from portrait_keras.training.progress import LEVELS, ProgressPrinter
from portrait_keras.training.propagation_rounds import run_rounds, total_epochs
from portrait_keras.training.run_dir import RunDir, RunDirError, run_bytes
from portrait_keras.training.tasks import trained_tasks

# Global steps between two backups of the training state (and at every epoch end).
BACKUP_EVERY = 1000


class TrainingDiverged(RuntimeError):
    """A task's loss became NaN or infinite."""


def set_precision(mixed):
    """float16 compute on GPU, bfloat16 on CPU when `mixed`, float32 otherwise."""
    if not mixed:
        keras.mixed_precision.set_global_policy("float32")
        return
    import tensorflow as tf

    gpu = bool(tf.config.list_logical_devices("GPU"))
    keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")


def build_trainer(config, schema, num_ids, steps_per_epoch, tasks=None):
    """The functional model and its `PortraitTrainer`, compiled with the paper's optimiser.

    `tasks` (names) overrides `config.model.tasks` (`trained_tasks` gives them).
    """
    from portrait_keras.models import build_portrait_model
    from portrait_keras.training.schedules import paper_schedule
    from portrait_keras.training.trainer import PortraitTrainer

    m = config.model
    names = tasks if tasks is not None else m.tasks
    tasks = schema.tasks if names is None else tuple(schema.task(n) for n in names)
    model = build_portrait_model(
        schema,
        num_ids,
        backbone=m.backbone,
        head=m.head,
        tasks=None if names is None else [t.name for t in tasks],
        input_shape=(*config.data.image_size, 3),
        backbone_weights=m.backbone_weights,
        backbone_kwargs=dict(m.backbone_kwargs),
        preprocessing=model_preprocessing(m),
        background=config.data.background,
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
    annotations=None,
    resume_from=None,
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
        verbose: progress printed (`training.progress.ProgressPrinter`): `0` none, `"quiet"`
            (a line per epoch), `"normal"` (or `"auto"`, `1`: a short line during the epoch and
            a per-task table after it) or `"verbose"` (`2`: every logged value too).
        backup_every: int or None. Global steps between backups of the training state,
            besides one at every epoch end. Defaults to `BACKUP_EVERY`.
        report: bool. Write the run's figures and report page into `RUN_DIR/report/`
            (`portrait_keras.reporting.report.write_report`) at the end. Defaults to True.
        annotations: `Annotations` of `config.data.csv` already read (the command line reads
            them before TensorFlow starts), or None to read them here.
        resume_from: str or None. A finished run folder to continue for more epochs
            (`config.train.epochs` > its epochs; `run_dir` another folder): its weights,
            optimizer state and global step, its history rows and best checkpoint. Its
            model and data must be those of `config` (`RunDir.continued_epochs`). When
            `run_dir` holds a backup (a continued run was killed), that backup is resumed.

    Under several replicas (`portrait_keras.training.distribute`) the loss, its gradients and the
    BatchNormalization statistics are those of the global batch, and only the chief worker
    writes `run_dir`; the other workers write to temporary folders of their own, removed at
    the end.

    Returns: dict of the final metrics (also in `metrics.json`).

    Raises:
        RunDirError: the run folder is not writable, its disk is too full, its `backup/`
            holds an unfinished run of another config, or `resume_from` cannot be continued
            by `config` (all before training). A folder this
            call created is removed again when the run fails before its first step.
        DistributionError: a strategy that cannot be set up (bad TF_CONFIG, too few devices).
        AnnotationError, BadImageError: bad annotation rows or unreadable images.
        TrainingDiverged: a loss became NaN/Inf.
    """
    run_dir = os.fspath(run_dir or default_run_dir(config))
    # First: logical CPU devices and MultiWorkerMirroredStrategy need a TensorFlow not yet started.
    if strategy is None or isinstance(strategy, str):
        strategy = distribute.make_strategy(strategy or "auto", replicas)
    distribution = distribute.describe(strategy, config.data.batch_size)  # before any file is written
    write_dir = distribute.worker_write_dir(run_dir)
    run, out = RunDir(run_dir), RunDir(write_dir)
    if resume_from is not None:
        resume_from = os.fspath(resume_from)
        if os.path.abspath(resume_from) == os.path.abspath(run_dir):
            raise RunDirError(f"resume_from {resume_from}: continue it into another run_dir (it stays as it was)")
        RunDir(resume_from).continued_epochs(config)  # refused before any file is written
    created = not os.path.exists(write_dir)
    try:
        with out.lock():  # one process a folder
            try:
                return _train(
                    config,
                    run,
                    out,
                    strategy,
                    distribution,
                    callbacks,
                    verbose,
                    backup_every,
                    report,
                    annotations,
                    resume_from,
                )
            except BaseException:
                if created and not out.started:
                    shutil.rmtree(write_dir, ignore_errors=True)  # a run that never started leaves nothing
                raise
    finally:
        if write_dir != run_dir:
            shutil.rmtree(write_dir, ignore_errors=True)


@dataclasses.dataclass
class _Run:
    """What the steps of one training run share (`_build` makes it)."""

    config: object
    strategy: object
    distribution: dict
    annotations: object
    csv_path: str
    model: object  # the PortraitModel being trained (under the strategy)
    trainer: object  # its PortraitTrainer
    eval_model: object  # the model evaluated and saved: `model`, or its one-device copy
    steps_per_epoch: int
    sync_bn: bool
    data_epoch: dict  # {"epoch": e}: the epoch the data stream draws (set by a callback)
    train_ds: object = None

    @property
    def scope(self):
        return self.strategy.scope if self.strategy is not None else contextlib.nullcontext

    @property
    def has_eval(self):
        return {"query", "gallery"} <= set(self.annotations.splits)

    def train_dataset(self, **kwargs):
        d = self.config.data
        return make_dataset(
            self.annotations,
            "train",
            batch_size=d.batch_size,
            training=True,
            sampler=d.sampler,
            image_size=tuple(d.image_size),
            p=d.p,
            k=d.k,
            seed=self.config.train.seed,
            deterministic=True,
            num_replicas=self.distribution["replicas"],
            skip_bad_images=d.skip_bad_images,
            erasing_probability=d.erasing_probability,
            padding=d.padding,
            # The Keras epoch of the pass (set by a callback), so that an extra iterator (a
            # peek, a resumed run) cannot shift the epoch drawn.
            epoch=lambda: self.data_epoch["epoch"],
            **kwargs,
        )

    def inference_model(self):
        """The trained weights, moving statistics averaged over replicas, in `eval_model`."""
        distribute.average_moving_statistics(self.strategy, self.model)
        if self.eval_model is not self.model:
            self.eval_model.set_weights(self.model.get_weights())
        return self.eval_model


def _train(
    config, run, out, strategy, distribution, callbacks, verbose, backup_every, report, annotations, resume_from=None
):
    """`train` on `run` (the shared run folder) writing into `out` (this worker's folder)."""
    out.check_writable()
    backup = BackupAndResume(out.backup_dir, every=backup_every, restore_dir=run.backup_dir)
    resuming = backup.exists()
    continuing = resume_from if not resuming else None
    if continuing and config.train.seed is None:  # the data stream of the run continued
        seed = RunDir(continuing).saved_config().get("train", {}).get("seed")
        if isinstance(seed, int):
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    config = _with_seed(config, run, resuming, strategy)
    if resuming:
        run.check_resumable(config)
    keras.utils.set_random_seed(config.train.seed)
    set_precision(config.train.mixed_precision)

    level = progress_level(verbose)
    state = _build(config, strategy, distribution, annotations, quiet=level in (None, "quiet"))
    out.check_writable(run_bytes(state.model))
    if config.model.init_from and not resuming and not continuing:
        _init_from(state.model, config.model.init_from)
    if continuing:
        start_epoch, skip = _continue(state, backup, out, continuing), 0
    else:
        start_epoch, skip = _restore(state, backup, run)
    out.trim_history(start_epoch if resuming or continuing else 0)
    first_csv = os.path.abspath(config.data.csv) if config.data.csv else state.csv_path  # the others: data.extra_csvs
    out.write_run_info(config, first_csv, state.annotations.schema, state.model.num_ids, distribution, _versions())
    piq, guard, cbs = _callbacks(state, run, out, backup, callbacks, level)
    out.started = True
    _fit(state, cbs, guard, start_epoch, skip)
    if not guard.diverged:  # stage 2 of paper 004's Algorithm 1 (train.ap_rounds)
        run_rounds(state, run, out, guard, lambda e, s, end: _fit(state, cbs, guard, e, s, end), start_epoch, skip)
    if guard.diverged:
        raise TrainingDiverged(
            f"Loss became NaN/Inf in task(s) {', '.join(guard.diverged)}; the weights of the last good epoch "
            f"are in {guard.last_good}" + ("" if os.path.exists(guard.last_good) else " (none: no epoch finished)")
        )
    return _finish(state, out, piq, backup, report)


def _build(config, strategy, distribution, annotations=None, quiet=False):
    """The data, the model and its trainer (under the strategy), and the one-device copy."""
    paths = [os.path.abspath(p) for p in (config.data.csv, *config.data.extra_csvs)] if config.data.csv else []
    csv_path = " + ".join(paths) if paths else os.fspath(default_dataset(quiet=quiet))
    if annotations is None or annotations.csv_path != csv_path:
        annotations = read_sources(paths or [csv_path])
    annotations = annotations.with_background(config.data.background)  # training and evaluation alike
    replicas = distribution["replicas"]
    # SyncBN unless turned off (None = on), and only where there is more than one replica.
    sync_bn = replicas > 1 and config.train.sync_batch_norm is not False
    distribution["sync_batch_norm"] = sync_bn
    _print_distribution(distribution)
    state = _Run(config, strategy, distribution, annotations, csv_path, None, None, None, 0, sync_bn, {"epoch": 0})
    state.train_ds = state.train_dataset()
    state.steps_per_epoch = int(state.train_ds.cardinality())
    with state.scope():
        state.model, state.trainer = build_trainer(
            config,
            annotations.schema,
            len(annotations.train_ids),
            state.steps_per_epoch,
            tasks=trained_tasks(config, annotations),
        )
    # Evaluation, export and the report read a one-device copy of the weights under a TF
    # multi-replica strategy: the model that is saved, with no collective in its predict.
    state.eval_model = state.model
    if keras.backend.backend() == "tensorflow" and replicas > 1:
        state.eval_model = type(state.model).from_config(state.model.get_config())
    return state


def _init_from(model, source):
    """Copies into `model` every weight of the model in `source` (a run folder or `.keras`)
    with the same path and shape; prints how many, and which were left at their fresh start."""
    path = os.path.join(source, "model.keras") if os.path.isdir(source) else source
    donor = {w.path: w for w in load_keras_model(path).weights}
    loaded, skipped = 0, []
    for weight in model.weights:
        other = donor.get(weight.path)
        if other is not None and tuple(other.shape) == tuple(weight.shape):
            weight.assign(other)
            loaded += 1
        else:
            skipped.append(weight.path)
    if not loaded:
        raise RunDirError(f"model.init_from {source}: no weight of that model fits this one (another backbone?)")
    shown = ", ".join(skipped[:4]) + (f" and {len(skipped) - 4} more" if len(skipped) > 4 else "")
    print(
        f"init_from {source}: {loaded} of {len(model.weights)} weights loaded"
        + (f"; fresh: {shown}" if skipped else ""),
        file=sys.stderr,
        flush=True,
    )


def _restore(state, backup, run):
    """`(epoch, batch)` where the run resumes: the backup's step, the same on every worker."""
    with state.scope():  # the optimizer's variables are built here when there is a state
        step = backup.restore(state.trainer)
    if distribute.broadcast_from_chief(state.strategy, step) != step:
        raise distribute.DistributionError(
            f"worker {distribute.worker_index()} resumes at step {step}, the chief at another one: every "
            f"worker must read the chief's {backup.restore_path} (a run folder they all share)."
        )
    start_epoch, skip = divmod(step, state.steps_per_epoch)
    if step:
        print(
            f"{run.path}: resuming at epoch {start_epoch + 1}, batch {skip + 1} (global step {step}) "
            f"from {backup.restore_path}",
            file=sys.stderr,
            flush=True,
        )
    return start_epoch, skip


def _continue(state, backup, out, source):
    """Loads the finished run in `source` (`train(resume_from=...)`) into the trainer and copies
    its history rows and best checkpoint into `out`; returns the epochs it had trained."""
    src = RunDir(source)
    epochs = src.continued_epochs(state.config)
    trainer = state.trainer
    with state.scope():
        if not trainer.optimizer.built:
            trainer.optimizer.build(trainer.trainable_variables)
        try:
            trainer.load_weights(src.checkpoint("last"))  # the model's and the optimizer's
        except (ValueError, OSError) as e:
            raise RunDirError(
                f"resume_from {source}: its training state does not fit this model ({e}); fine-tune from its "
                f"weights with model.init_from instead"
            ) from e
    step = epochs * state.steps_per_epoch
    backup.start_at(step)
    if os.path.exists(src.history_file):
        shutil.copyfile(src.history_file, out.history_file)  # trimmed to `epochs` rows by the caller
    if os.path.exists(src.checkpoint("best")):
        os.makedirs(out.checkpoints_dir, exist_ok=True)
        shutil.copyfile(src.checkpoint("best"), out.checkpoint("best"))  # replaced only by a better epoch
    print(
        f"{out.path}: continuing {source} at epoch {epochs + 1} of {state.config.train.epochs} (global step {step})",
        file=sys.stderr,
        flush=True,
    )
    return epochs


def progress_level(verbose):
    """`train`'s `verbose` as a `ProgressPrinter` level, or None for silence."""
    levels = {0: None, None: None, "auto": "normal", 1: "normal", 2: "verbose"}  # False is 0, True is 1
    if verbose in LEVELS:
        return verbose
    try:
        return levels[verbose]
    except (KeyError, TypeError):
        allowed = "0, 1, 2, 'auto', " + ", ".join(repr(v) for v in LEVELS)
        raise ValueError(f"verbose must be one of {allowed}. Received: verbose={verbose!r}") from None


def _callbacks(state, run, out, backup, extra, level):
    """The PIQ callback, the NaN guard and the whole callback list, in their order."""
    config, d = state.config, state.config.data
    piq = PIQCallback(
        state.annotations,
        verbose=False,  # the progress printer shows its figures
        every=config.train.eval_every,
        batch_size=d.batch_size,
        epochs=total_epochs(config.train),
        skip_bad_images=d.skip_bad_images,
        model_fn=state.inference_model,
    )
    os.makedirs(out.checkpoints_dir, exist_ok=True)
    guard = NaNGuard(last_good=out.checkpoint("last"))
    cbs = [keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: state.data_epoch.update(epoch=epoch))]
    cbs += [UncertaintyLogger()] + ([piq] if state.has_eval else [])
    if d.skip_bad_images:
        cbs.append(SkippedImagesLogger(state.train_ds.skipped_images, root=state.annotations.root))
    cbs.append(guard)
    if state.has_eval and config.train.eval_every:
        cbs.append(
            keras.callbacks.ModelCheckpoint(
                out.checkpoint("best"),
                save_weights_only=True,
                monitor="piq",
                mode="max",
                save_best_only=True,
                # A resumed run beats the best epoch before the kill, not a blank slate.
                initial_value_threshold=run.best_logged("piq"),
            )
        )
    cbs += [
        HistoryLogger(out.history_file),
        TestSplitTensorBoard(out.tensorboard_dir, test_keys=lambda: piq.last, write_graph=False),
        *(
            []
            if level is None
            else [ProgressPrinter(state.steps_per_epoch, d.batch_size, level, tasks=state.model.tasks)]
        ),
        # After the CSV row, so a kill between the two repeats the row (trimmed on resume)
        # instead of losing it.
        backup,
        *extra,
    ]
    return piq, guard, cbs


def _fit(state, cbs, guard, start_epoch, skip, end=None):
    """`fit` from `(start_epoch, skip)` to epoch `end` (a half-done epoch first); `end`
    defaults to the last epoch of stage 1, `train.epochs`."""
    epochs = state.config.train.epochs if end is None else end
    splits = ["train"] + (["query", "gallery"] if state.has_eval else [])
    with (
        naming_bad_images(state.annotations, splits),
        distribute.synchronized_batch_norm(state.model, state.sync_bn),
        distribute.multi_worker_workaround(state.trainer, state.strategy),
    ):
        if skip and start_epoch < epochs:
            # Finish the epoch the killed run left half done, from the batch it had reached.
            state.data_epoch["epoch"] = start_epoch
            rest = state.train_dataset(skip_batches=skip)
            state.trainer.fit(
                rest, initial_epoch=start_epoch, epochs=start_epoch + 1, callbacks=cbs, verbose=0, shuffle=False
            )
            start_epoch += 1
        if not guard.diverged and start_epoch < epochs:
            state.data_epoch["epoch"] = start_epoch
            # shuffle=False: the sampler orders each epoch (Keras cannot shuffle a tf.data pipeline).
            state.trainer.fit(
                state.train_ds, initial_epoch=start_epoch, epochs=epochs, callbacks=cbs, verbose=0, shuffle=False
            )


def _finish(state, out, piq, backup, report):
    """Writes model.keras, the SavedModel, metrics.json and the report; returns the metrics."""
    final_model = state.inference_model()
    final_model.save(out.model_file)
    schema, d = state.annotations.schema, state.config.data
    try:
        export_saved_model(final_model, schema, out.saved_model_dir)
    except SavedModelExportError as e:  # the run is complete without it
        print(
            f"note: {out.saved_model_dir} not written: {e}. model.keras serves every command; for a "
            f"SavedModel run portrait_keras.serving.export.export_saved_model on it under KERAS_BACKEND=tensorflow.",
            file=sys.stderr,
            flush=True,
        )
    final = {}
    if state.has_eval:
        final = piq.last or evaluate(
            final_model, state.annotations, batch_size=d.batch_size, skip_bad_images=d.skip_bad_images
        )
    final = {**final, **{f"s_{k}": v for k, v in state.trainer.uncertainties().items()}}
    out.write_metrics(final)
    if len(state.annotations.sources) > 1:
        _evaluate_sources(state, final_model, out)
    backup.remove()  # a kill before this point resumes after the final step
    if report:
        _write_report(out.path, state.annotations, final_model, d.batch_size)
    return final


def _evaluate_sources(state, model, out):
    """Several datasets trained as one: each dataset's test splits evaluated alone, written to
    `metrics_by_source.json` (a dataset without both test splits is left out)."""
    d = state.config.data
    by_source = {}
    for name, ann in state.annotations.sources:
        if {"query", "gallery"} <= set(ann.splits):
            ann = ann.with_background(d.background)
            by_source[name] = evaluate(model, ann, batch_size=d.batch_size, skip_bad_images=d.skip_bad_images)
    with open(os.path.join(out.path, "metrics_by_source.json"), "w", encoding="utf-8") as f:
        json.dump(by_source, f, indent=2)
    return by_source


def _versions():
    import tensorflow as tf

    from portrait_keras import __version__

    return {"portrait_keras": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def _with_seed(config, run, resuming, strategy):
    """`config` with a seed: its own, else the unfinished run's (a resume), else a fresh one;
    under several workers, the chief's."""

    seed = config.train.seed
    if seed is None:
        saved = (run.saved_config() if resuming else {}).get("train", {}).get("seed")
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
    from portrait_keras.reporting.report import write_report

    try:
        written = write_report(run_dir, annotations, model=model, batch_size=batch_size)
    except Exception as e:  # noqa: BLE001  (reported, and the command to retry is given)
        warnings.warn(
            f"{run_dir}: the training finished, but its report failed ({type(e).__name__}: {e}); "
            f"retry with: python -m portrait_keras report {run_dir}"
        )
        return
    print(f"Report: {written['html']}", file=sys.stderr, flush=True)
