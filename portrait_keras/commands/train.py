"""`portrait-keras train NAME`: trains a named experiment (`python experiments/run.py NAME` is the same).

Without `--data` it trains on the embedded SynthPortrait default (generated once into a cache
folder) with the CPU-sized setting of `experiments.synthetic_default`.
"""

import argparse
import atexit
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading

from portrait_keras import experiments as configs
from portrait_keras.commands.overrides import override
from portrait_keras.config import default_run_dir, rescale_epochs
from portrait_keras.training.run_dir import continued_run_dir

EXAMPLES = """examples:
  portrait-keras train smoke                      # 2 minutes on a CPU, embedded SynthPortrait
  portrait-keras train fss_uncert                 # the paper's FSS + uncertainty row (Table 4)
  portrait-keras train fss_uncert --data my/annotations.csv --set train.batch_size=64
  portrait-keras train fss_uncert --replicas 2    # MirroredStrategy over 2 devices
  portrait-keras train --resume-from runs/smoke --epochs 6   # 5 more epochs, into runs/smoke-6ep
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="portrait-keras train",
        description="Train a named experiment (Table 4/5 rows) into a run folder; re-run to resume.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", help=f"one of: {', '.join(configs.EXPERIMENTS)}")
    parser.add_argument(
        "--config",
        metavar="RUN_OR_JSON",
        help="re-launch the config of a run (its folder or config.json; NAME, --data, --set apply on top)",
    )
    parser.add_argument(
        "--init-from",
        metavar="RUN_OR_KERAS",
        help="fine-tune: start from the weights of a run folder or .keras file where names and shapes fit "
        "(same as --set model.init_from=...)",
    )
    parser.add_argument(
        "--resume-from",
        metavar="RUN",
        help="continue a finished run for more epochs (--epochs N or --set train.epochs=N) into a new folder "
        "(default RUN-<N>ep): its config, weights, optimizer state and schedule step go on",
    )
    parser.add_argument(
        "--data",
        action="append",
        help="annotation CSV (default: the embedded SynthPortrait); repeat it for several datasets as one",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="epochs; warm-up and decay steps scale along (with --resume-from: the total, schedule unchanged)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. model.backbone=resnet50 or train.mixed_precision=false (read as the field's type)",
    )
    parser.add_argument("--run-dir", help="run folder (default: runs/NAME); re-run to resume")
    parser.add_argument("--overwrite", action="store_true", help="train again into a finished run folder")
    parser.add_argument(
        "--strategy",
        choices=("auto", "one", "mirrored", "multi_worker"),
        default="auto",
        help="auto (default): multi_worker when TF_CONFIG names workers, mirrored with several GPUs or "
        "--replicas > 1, else one device; under KERAS_BACKEND=jax, mirrored is keras.distribution.DataParallel",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="replicas of the global batch; without GPUs the CPU is split into N devices (MirroredStrategy anywhere)",
    )
    parser.add_argument(
        "--tasks",
        metavar="T1,T2",
        help="the tasks to learn, e.g. id,gender (default: every task the data labels; = --set model.tasks=[...])",
    )
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("--quiet", action="store_true", help="one line per epoch")
    loud.add_argument("--verbose", action="store_true", help="every logged value after each epoch too")
    args = parser.parse_args(argv)
    if args.resume_from is not None:
        others = [f"--{o.replace('_', '-')}" for o in ("config", "init_from") if getattr(args, o)]
        if others:
            parser.error(f"--resume-from continues a run as it was; it takes no {' or '.join(others)}")
    elif args.name is None and args.config is None:
        parser.error("the experiment NAME (or --config RUN, or --resume-from RUN) is required")
    if args.replicas is not None and args.replicas < 1:
        parser.error(f"--replicas must be >= 1. Received: {args.replicas}")
    return args


def load_config_file(path, option="--config"):
    """The `Config` saved in a run folder's `config.json` (or in that file itself)."""
    from portrait_keras.config import Config

    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(file, encoding="utf-8") as f:
            saved = json.load(f)
        return Config.from_dict(saved)
    except FileNotFoundError:
        raise ValueError(f"{option} {path}: no such file{'' if file == path else ' ' + file}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{option} {file}: not a run's config.json: {e}") from None


def build_config(args):
    if args.resume_from:
        # The run's own config; only the total of epochs moves (its schedule stays as it was).
        if not os.path.isdir(args.resume_from):
            raise ValueError(f"--resume-from {args.resume_from}: no such run folder")
        config = load_config_file(args.resume_from, option="--resume-from")
        if args.name:
            config = dataclasses.replace(config, name=args.name)
        if args.data:
            config = _with_data(config, args.data)
        if args.epochs is not None:
            config = override(config, "train.epochs", str(args.epochs))
    elif args.config:
        config = load_config_file(args.config)
        if args.name:
            config = dataclasses.replace(config, name=args.name)
        if args.data:
            config = _with_data(config, args.data)
    else:
        config = configs.get(args.name)
        if args.data:
            config = _with_data(config, args.data)
        else:
            config = configs.synthetic_default(config)
    if args.init_from:
        config = override(config, "model.init_from", os.path.abspath(args.init_from))
    if args.tasks:
        config = override(config, "model.tasks", [t.strip() for t in args.tasks.split(",") if t.strip()])
    if args.epochs is not None and not args.resume_from:
        config = dataclasses.replace(config, train=rescale_epochs(config.train, args.epochs))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE. Received: {item!r}")
        config = override(config, key, value)
    return config


def _with_data(config, data):
    """`config` on the `--data` CSVs: the first is `data.csv`, the others `data.extra_csvs`."""
    paths = [os.path.abspath(p) for p in data]
    return override(override(config, "data.csv", paths[0]), "data.extra_csvs", tuple(paths[1:]))


def check_data(*csvs):
    """Reads the `--data` CSVs (and the schema.json beside each) before TensorFlow starts.

    Returns: the `Annotations` (`data.sources.read_sources`: several CSVs as one).
    Raises: ValueError (an `AnnotationError` too) naming the problem.
    """
    from portrait_keras.data.sources import read_sources

    for csv in csvs:
        if not os.path.exists(csv):
            raise ValueError(f"--data {csv}: no such file")
        if os.path.isdir(csv):
            inside = sorted(f for f in os.listdir(csv) if f.lower().endswith(".csv"))
            hint = f", e.g. --data {os.path.join(csv, inside[0])}" if inside else " (it holds no .csv file)"
            raise ValueError(f"--data {csv}: a folder; pass the annotation CSV inside it{hint}")
    return read_sources(csvs)


def _sources_note(annotations):
    """One line per dataset: its tasks and images, then the joint tasks."""
    lines = [f"note: {len(annotations.sources)} datasets trained as one (ids kept apart per dataset):"]
    for name, ann in annotations.sources:
        sizes = ", ".join(f"{s} {ann.num_images(s)}" for s in ann.splits)
        lines.append(f"  {name}: tasks {', '.join(ann.schema.names)}; {sizes}")
    lines.append(f"  tasks of the model: {', '.join(annotations.schema.names)}")
    return "\n".join(lines)


def check_batches(config, annotations, replicas=None):
    """The train split fills at least one batch of `data.sampler` (numpy only: before TensorFlow starts)."""
    import numpy as np

    from portrait_keras.data.samplers import UNKNOWN, build_sampler

    if "train" not in annotations.splits:
        return  # the data's own error comes later
    d, n = config.data, annotations.num_images("train")
    identity = annotations.schema.identity_task
    ids = annotations.labels("train")[identity.name] if identity is not None else np.full(n, UNKNOWN)
    try:
        build_sampler(d.sampler, ids, batch_size=d.batch_size, p=d.p, k=d.k, num_replicas=replicas or 1)
    except ValueError as e:
        hint = ""
        if d.sampler == "random" and n < d.batch_size:
            hint = f"; a smaller batch fits, e.g. --set data.batch_size={2 ** int(np.log2(n))}"
        raise ValueError(
            f"--data {config.data.csv}: its train split ({n} images) cannot fill one batch of data.sampler="
            f"{d.sampler} (data.batch_size={d.batch_size}): {e}{hint}"
        ) from None


def check_tasks(config, schema):
    """`model.tasks` names tasks of the schema (with the nearest spelling when not)."""
    from portrait_keras.config import unknown_choice_message

    for name in config.model.tasks or ():
        if name not in schema.names:
            raise ValueError(unknown_choice_message("model.tasks", name, tuple(schema.names)))


def check_run_dir(run_dir, config, overwrite):
    """The run folder can be created and takes this run (finished, or another config's backup)."""
    from portrait_keras.training.run_dir import RunDir

    run = RunDir(run_dir)
    if run.is_finished() and not overwrite:
        # A re-run resumes a killed run; a finished one would silently start over.
        data = run.saved_config().get("data_csv") or "unknown data"
        same = os.path.abspath(data) == os.path.abspath(config.data.csv) if config.data.csv else None
        raise ValueError(
            f"{run_dir} holds a finished run of {run.saved_config().get('name', '?')} on {data}"
            + ("" if same in (None, True) else " (other data than this run's)")
            + f". Evaluate it with `portrait-keras evaluate {run_dir}`; to train again, choose another "
            f"--run-dir, or pass --overwrite to replace it."
        )
    if not overwrite:
        run.check_resumable(config)
    weights = config.model.backbone_weights
    if weights == "imagenet":
        from portrait_keras.config import keras_imagenet_weights

        keras_imagenet_weights()
    elif weights and not os.path.isfile(weights):
        raise ValueError(f"model.backbone_weights: no such file: {weights}")
    init = config.model.init_from
    if init and not os.path.isfile(os.path.join(init, "model.keras") if os.path.isdir(init) else init):
        raise ValueError(f"model.init_from {init}: no model.keras there (a finished run folder or a .keras file)")
    # check_writable creates the folder (and missing parents): removed again while empty, so a
    # run refused later leaves nothing. rmdir, never rmtree: another worker may be filling it.
    created, folder = [], os.path.abspath(run_dir)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    run.check_writable()
    with run.lock():  # another process training into it is named now, not after start-up
        pass
    if created:
        os.remove(run.file(".lock"))
    for folder in created:
        try:
            os.rmdir(folder)
        except OSError:
            break


def _relation():
    from portrait_keras.training import relation

    return relation


def check_continued(source, run_dir, config):
    """`--resume-from SOURCE` into `run_dir`: a finished run that `config` continues, and another folder."""
    from portrait_keras.training.run_dir import RunDir

    if os.path.abspath(run_dir) == os.path.abspath(source):
        raise ValueError(
            f"--resume-from {source} --run-dir {run_dir}: a continued run goes into another folder, so the "
            f"original stays as it was; leave --run-dir out (default {continued_run_dir(source, config.train.epochs)})"
        )
    RunDir(source).continued_epochs(config)


@contextlib.contextmanager
def _noting_ctrl_c(received):
    """Appends to the list `received` when SIGINT arrives (which still raises KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        received.append(signum)
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _silence_stderr():
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)


def _end_now(status):
    """At exit after Ctrl-C (the first exit handler to run): flushes the output, silences
    stderr (tf.data's threads log their own interruption: the resume line stays the last
    line) and ends the process without Python's finalisation, in which the destructor of an
    interrupted tf.data iterator can wait forever for its map threads (seen in CI: the
    main thread blocked in `MapAndBatchDatasetOp::Dataset::Iterator::~Iterator`)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    _silence_stderr()
    os._exit(status)


def main(argv=None, program=None):
    """Runs `portrait-keras train` with `argv` (default `sys.argv[1:]`); returns the exit status.

    `program`: whether this call is the whole process (default: `argv is None`, as the command
    line calls it). Only then does Ctrl-C end the process at once (`_end_now`); a caller that
    goes on (a test, a notebook) gets 130 back.
    """
    program = argv is None if program is None else program
    args = parse_args(argv)
    try:
        config = build_config(args)
        run_dir = args.run_dir or default_run_dir(config)
        if args.resume_from:
            run_dir = args.run_dir or continued_run_dir(args.resume_from, config.train.epochs)
            check_continued(args.resume_from, run_dir, config)
        check_run_dir(run_dir, config, args.overwrite)
        relation = config.model.head == "relation"  # pairs of people (paper 004 §5): own reader, trainer
        if relation and config.data.extra_csvs:
            raise ValueError("the relation experiment reads one pair CSV; pass --data once")
        pairs = _relation().check_pairs(config) if relation else None
        data = (config.data.csv, *config.data.extra_csvs)
        annotations = check_data(*data) if config.data.csv and not relation else None
        if annotations is not None:
            if len(annotations.sources) > 1:
                print(_sources_note(annotations), file=sys.stderr)
            elif annotations.schema_source == "columns":
                print(
                    f"note: no schema.json beside {config.data.csv}: the tasks are its task columns, "
                    f"{', '.join(annotations.schema.names)}",
                    file=sys.stderr,
                )
            check_tasks(config, annotations.schema)
            from portrait_keras.training.tasks import trained_tasks

            trained_tasks(config, annotations, note=False)  # its error before TensorFlow starts
            check_batches(config, annotations, args.replicas)
        else:
            from portrait_keras.schema import default_schema

            check_tasks(config, default_schema())
    except ValueError as e:  # InputError, RunDirError and a bad schema.json too
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.overwrite and os.path.isdir(os.path.join(run_dir, "backup")):
        shutil.rmtree(os.path.join(run_dir, "backup"))  # start over: the old state must not be resumed
    if relation:
        return _relation().train_command(config, run_dir, pairs, args)
    pretrained = {"hrnet_w32": "the paper starts from ImageNet", "resnet50": "the paper starts from ImageNet"}
    pretrained["vit_b16"] = "CLIP-ReID starts from CLIP's; convert them with convert_clip"
    if config.model.backbone in pretrained and not config.model.backbone_weights:
        print(
            f"note: {config.model.backbone} starts from random weights ({pretrained[config.model.backbone]}; "
            f"see model.backbone_weights in the README).",
            file=sys.stderr,
        )
    from portrait_keras.training.distribute import DistributionError, prepare_host_devices

    prepare_host_devices(args.replicas)  # before JAX starts
    from portrait_keras.data import AnnotationError
    from portrait_keras.training.fit import train
    from portrait_keras.training.run_dir import RunDirError

    level = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    ctrl_c = []
    try:
        with _noting_ctrl_c(ctrl_c):
            metrics = train(
                config,
                run_dir=run_dir,
                strategy=args.strategy,
                replicas=args.replicas,
                annotations=annotations,
                verbose=level,
                resume_from=args.resume_from,
            )
    except (AnnotationError, DistributionError, RunDirError) as e:  # the message says it all
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:  # noqa: BLE001  (only Ctrl-C is handled here; the rest goes on up)
        # Ctrl-C inside TensorFlow's tracing can surface as another exception ("AssertionError:
        # Concurrent access?" while a tf.data map is traced): the signal decides, not the type.
        if not (isinstance(e, KeyboardInterrupt) or ctrl_c):
            raise
        again = " ".join(["portrait-keras train", *(argv if argv is not None else sys.argv[1:])])
        resumable = os.path.isdir(os.path.join(run_dir, "backup"))
        print(
            f"\ninterrupted: {run_dir} keeps its last backup; re-run `{again}` to resume."
            if resumable
            else "\ninterrupted before the first backup: re-running the same command starts over.",
            file=sys.stderr,
            flush=True,
        )
        # tf.data's threads log their own interruption as the process ends: keep this line last.
        if program:
            atexit.register(_end_now, 130)
        else:
            atexit.register(_silence_stderr)
        return 130
    print(f"Run folder: {run_dir}")
    if metrics:
        from portrait_keras.evaluation.tables import format_table

        print(format_table(metrics))
    by_source = os.path.join(run_dir, "metrics_by_source.json")
    if os.path.isfile(by_source):
        with open(by_source, encoding="utf-8") as f:
            print("\n" + format_sources(json.load(f)))
    return 0


def format_sources(by_source):
    """The per-dataset figures of `metrics_by_source.json` as one table (a row a dataset)."""
    columns = ["piq", "reid_mAP", "reid_rank1", "reid_micro_mAP", "reid_micro_rank1"]
    width = max(len("dataset"), *map(len, by_source))
    lines = ["Per dataset (metrics_by_source.json; mean F1 over the dataset's attribute tasks)"]
    heads = [*columns, "mean F1"]
    lines.append(f"  {'dataset':<{width}}" + "".join(f"  {c:>{max(len(c), 6)}}" for c in heads))
    for name, metrics in by_source.items():
        f1 = [v for k, v in metrics.items() if k.startswith("f1_")]
        cells = [metrics.get(c) for c in columns] + [sum(f1) / len(f1) if f1 else None]
        text = ["-" if v is None else f"{v:.4f}" for v in cells]
        lines.append(f"  {name:<{width}}" + "".join(f"  {t:>{max(len(c), 6)}}" for t, c in zip(text, heads)))
    return "\n".join(lines)
