"""Training and evaluating the interpersonal-relation model (paper 004 §5) from a `Config`.

`portrait-keras train relation` (and any config with `model.head="relation"`) comes here
instead of `training.fit.train`: the data are pairs of people (`data/pairs.py`), not portraits.
`train_relation(config)` reads the pair CSV (`config.data.csv`, else the SynthPortrait pairs
generated once into the cache), builds `RelationModel` (tied `config.model.backbone`, crops of
`config.data.image_size`; spatial cues when the pairs have boxes; `--init-from` a portrait run
starts the backbone from its weights, as §5 does), fits it with Adam on the
paper's warm-up/step schedule (`config.train`) and eq. 17's loss, and writes the run folder:

config.json   the config, the pair CSV, its form, the traits
history.csv   per-epoch loss (masked BCE + weight decay)
backup/       the model and optimizer state after the last finished epoch, while training
              (`BackupAndResume`); removed at the end
model.keras   the RelationModel (loads with safe_mode=True)
metrics.json  per-trait balanced accuracy on the test split (eq. 18), their mean, and the
              share of known positives of each trait there
report/       report.md and report.html: the loss curve and the per-trait scores
              (`reporting.report.write_relation_report`; `portrait-keras report RUN` again)

A killed run, started again with the same command, resumes after its last finished epoch and
ends as the uninterrupted run would: the training stream of every epoch is drawn from
`(train.seed, epoch)` alone (`make_pair_dataset`). `portrait-keras evaluate RUN [--data
PAIRS.csv]` scores a run again (`evaluate_relation`). Not (yet) done here as `fit.train` does:
resuming inside an epoch, several replicas, PIQ. A trait is predicted present when its probability is above its share of
positives in the train split (`positive_shares`, kept in the model as `thresholds`): with 0.5,
a rare trait (11% `warm` pairs) was never called and scored the 0.5 of chance.
"""

import json
import os
import sys

import numpy as np

from portrait_keras.training.run_dir import RunDir

THRESHOLD = 0.5


def pairs_csv(config):
    """The pair CSV of `config`: `data.csv`, else the default SynthPortrait pairs (generated once)."""
    if config.data.csv:
        return os.path.abspath(config.data.csv)
    from portrait_keras.data.synthportrait.pairs import default_pairs_dataset

    return os.fspath(default_pairs_dataset())


def check_pairs(config):
    """Reads and validates the pair CSV of `config` before TensorFlow starts.

    Returns: `Pairs`, or None when the default is still to be generated.
    Raises: ValueError (an `AnnotationError` too) naming the problem.
    """
    from portrait_keras.data.pairs import read_pairs

    if not config.data.csv:
        return None
    if not os.path.isfile(config.data.csv):
        raise ValueError(f"--data {config.data.csv}: no such file (a pair CSV: see `portrait_keras.data.pairs`)")
    pairs = read_pairs(config.data.csv)
    missing = {"train", "test"} - set(pairs.splits)
    if missing:
        raise ValueError(f"--data {config.data.csv}: no pairs in split {', '.join(sorted(missing))}")
    return pairs


def positive_shares(labels, low=0.05, high=0.95):
    """Per-trait share of positives among the known labels `[N, T]`, clipped to [low, high]:
    the thresholds a model trained on them calls a trait with (`RelationModel.thresholds`)."""
    labels = np.asarray(labels)
    known = labels >= 0
    shares = np.where(known, labels, 0).sum(0) / np.maximum(known.sum(0), 1)
    return tuple(float(v) for v in np.clip(np.where(known.any(0), shares, THRESHOLD), low, high))


def trait_metrics(labels, probabilities, traits, thresholds=THRESHOLD):
    """Per-trait balanced accuracy (paper 004 eq. 18) of `probabilities > thresholds`.

    Args:
        labels: float `[N, T]`, 1/0, -1 unknown (left out).
        probabilities: float `[N, T]`.
        traits: sequence of T names.
        thresholds: float, or one per trait. Defaults to 0.5.

    Returns: dict: `balanced_accuracy_<trait>`, `positive_share_<trait>` (known positives of
    that trait) and `balanced_accuracy_mean` (over the traits with known labels).
    """
    from portrait_keras.metrics.classification import balanced_accuracy

    labels = np.asarray(labels)
    predicted = (np.asarray(probabilities) > np.asarray(thresholds, np.float32)).astype(np.int64)
    metrics, scores = {}, []
    for j, trait in enumerate(traits):
        known = labels[:, j] >= 0
        if not known.any():
            continue
        score = balanced_accuracy(labels[known, j].astype(np.int64), predicted[known, j])
        metrics[f"balanced_accuracy_{trait}"] = score
        metrics[f"positive_share_{trait}"] = float(labels[known, j].mean())
        scores.append(score)
    metrics["balanced_accuracy_mean"] = float(np.mean(scores)) if scores else float("nan")
    return metrics


def predict_traits(model, dataset):
    """`(labels, probabilities)` over a pair dataset: float `[N, T]` each."""
    import keras

    labels, probabilities = [], []
    for inputs, targets in dataset:
        logits = model(inputs, training=False)["traits"]
        probabilities.append(keras.ops.convert_to_numpy(keras.ops.sigmoid(logits)))
        labels.append(np.asarray(targets["traits"]))
    return np.concatenate(labels), np.concatenate(probabilities)


def evaluate_relation(model, pairs, batch_size=32):
    """Per-trait balanced accuracy (eq. 18) of a trained `RelationModel` on a pair CSV, with the
    model's thresholds: on the `test` split, or on every pair when the CSV has none.

    Pairs with boxes feed a model without spatial cues their crops alone.

    Returns: dict as `metrics.json` of a relation run (`test_pairs`: the pairs scored).
    Raises: `InputError` when the model reads spatial cues and the pairs have no boxes.
    """
    from portrait_keras.data.pairs import make_pair_dataset
    from portrait_keras.errors import InputError

    if model.spatial_cues and not pairs.has_boxes:
        raise InputError(
            f"{pairs.csv_path}: two crops per pair (path_a, path_b), no boxes, and the model reads the spatial "
            f"cues of §5: give pairs with path, box_a, box_b"
        )
    split = "test" if pairs.num_pairs("test") else None
    dataset = make_pair_dataset(pairs, split, batch_size, tuple(model.image_shape[:2]))
    if not model.spatial_cues and pairs.has_boxes:
        dataset = dataset.map(lambda x, y: ({k: v for k, v in x.items() if k != "boxes"}, y))
    labels, probabilities = predict_traits(model, dataset)
    return {**trait_metrics(labels, probabilities, pairs.traits, model.thresholds), "test_pairs": int(len(labels))}


def build_relation(config, spatial_cues):
    """The `RelationModel` of `config` (tied `model.backbone`, crops of `data.image_size`)."""
    from portrait_keras.config import model_preprocessing
    from portrait_keras.models.relation import RelationModel

    m = config.model
    return RelationModel(
        backbone=m.backbone,
        input_shape=(*config.data.image_size, 3),
        spatial_cues=spatial_cues,
        backbone_weights=m.backbone_weights,
        backbone_kwargs=dict(m.backbone_kwargs),
        preprocessing=model_preprocessing(m),
    )


def train_relation(config, *, run_dir=None, pairs=None, verbose=1):
    """Trains the relation model of `config` and writes its run folder (module docstring).

    Args:
        config: `Config` (`model.head="relation"`).
        run_dir: str. Defaults to `runs/<config.name>`.
        pairs: `Pairs` already read (the command line reads them first), or None.
        verbose: 0 silent, 1 a line per epoch. Defaults to 1.

    Returns: dict of the final metrics (also in `metrics.json`).
    """
    import keras

    from portrait_keras.config import default_run_dir
    from portrait_keras.data.pairs import epoch_steps, make_pair_dataset, read_pairs
    from portrait_keras.losses.relation import MaskedTraitCrossentropy
    from portrait_keras.reporting.report import write_relation_report
    from portrait_keras.training.callbacks import BackupAndResume
    from portrait_keras.training.schedules import paper_schedule

    run = RunDir(os.fspath(run_dir or default_run_dir(config)))
    csv_path = pairs_csv(config)
    if pairs is None or os.path.abspath(pairs.csv_path) != csv_path:
        pairs = read_pairs(csv_path)
    run.check_writable()
    run.check_resumable(config)  # an unfinished run of another config is not mixed in
    backup = BackupAndResume(run.backup_dir)  # at epoch ends
    resuming = backup.exists()
    seed = config.train.seed if config.train.seed is not None else 0
    keras.utils.set_random_seed(seed)
    d, t = config.data, config.train
    steps = epoch_steps(pairs, "train", d.batch_size)
    model = build_relation(config, pairs.has_boxes)
    if config.model.init_from and not resuming:
        # §5: "we first initialize K_l and K_r by the representation we learn in Sec. 4": the
        # backbone weights of a portrait run, matched by name and shape as `fit` does.
        from portrait_keras.training.fit import _init_from

        _init_from(model, config.model.init_from)
    model.compile(
        optimizer=keras.optimizers.Adam(paper_schedule(t, steps)),
        loss={"traits": MaskedTraitCrossentropy()},
        jit_compile=t.jit_compile,
    )
    start = 0
    if resuming:
        start = backup.restore(model) // steps
        print(f"{run.path}: resuming after epoch {start} of {t.epochs} (backup/)", file=sys.stderr, flush=True)
    run.trim_history(start)
    train_ds = make_pair_dataset(
        pairs, "train", d.batch_size, d.image_size, training=True, seed=seed, epochs=(start, t.epochs)
    )
    info = {**config.to_dict(), "data_csv": csv_path, "pair_form": pairs.form, "traits": list(pairs.traits)}
    with open(run.config_file, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    # The backup first: a kill in a later callback resumes after this epoch.
    callbacks = [backup, keras.callbacks.CSVLogger(run.history_file, append=start > 0)]
    if verbose:
        callbacks.append(
            keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: _epoch_line(epoch, t.epochs, logs))
        )
    print(
        f"relation: {pairs.num_pairs('train')} train / {pairs.num_pairs('test')} test pairs ({pairs.form}), "
        f"backbone {config.model.backbone} tied, crops {d.image_size[0]}x{d.image_size[1]}, "
        f"spatial cues {'on' if pairs.has_boxes else 'off'}",
        file=sys.stderr,
        flush=True,
    )
    fit_args = dict(epochs=t.epochs, initial_epoch=start, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
    model.fit(train_ds, shuffle=False, **fit_args)  # the stream shuffles, by epoch
    model.thresholds = positive_shares(pairs.labels("train"))
    model.save(run.model_file)
    metrics = evaluate_relation(model, pairs, d.batch_size)
    run.write_metrics(metrics)
    write_relation_report(run.path)
    backup.remove()  # finished: a re-run is refused, not resumed
    return metrics


def _epoch_line(epoch, epochs, logs):
    loss = (logs or {}).get("loss", float("nan"))
    print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}", file=sys.stderr, flush=True)


def format_trait_table(metrics, traits):
    """The per-trait balanced accuracies of `metrics` as a text table."""
    lines = [f"{'trait':<14} {'balanced acc.':>13} {'positives':>9}"]
    for trait in traits:
        key = f"balanced_accuracy_{trait}"
        if key in metrics:
            lines.append(f"{trait:<14} {metrics[key]:>13.3f} {metrics[f'positive_share_{trait}']:>9.2f}")
    lines.append(f"{'mean':<14} {metrics['balanced_accuracy_mean']:>13.3f}")
    return "\n".join(lines)


def train_command(config, run_dir, pairs, args=None):
    """`portrait-keras train` for a relation config: trains, prints the run folder and the table.

    The options this trainer does not have (`--replicas`, `--strategy`, `--tasks`, `--quiet`,
    `--verbose`) are named in a note rather than silently dropped.
    """
    from portrait_keras.traits import TRAITS

    if args is not None:
        unused = [
            flag
            for flag, given in (
                ("--replicas", getattr(args, "replicas", None) is not None),
                ("--strategy", getattr(args, "strategy", "auto") != "auto"),
                ("--tasks", bool(getattr(args, "tasks", None))),
                ("--quiet", getattr(args, "quiet", False)),
                ("--verbose", getattr(args, "verbose", False)),
            )
            if given
        ]
        if unused:
            print(f"note: a relation run ignores {', '.join(unused)} (one device, 8 traits)", file=sys.stderr)

    metrics = train_relation(config, run_dir=run_dir, pairs=pairs, verbose=1)
    print(f"Run folder: {run_dir}")
    print(format_trait_table(metrics, TRAITS))
    return 0
