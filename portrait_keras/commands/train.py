"""`portrait-keras train NAME`: trains a named experiment (`python experiments/run.py NAME` is the same).

Without `--data` it trains on the embedded SynthPortrait default (generated once into a cache
folder) with the CPU-sized setting of `experiments.synthetic_default`.
"""

import argparse
import dataclasses
import os
import sys

from portrait_keras import experiments as configs
from portrait_keras.commands.overrides import override
from portrait_keras.config import default_run_dir, rescale_epochs

EXAMPLES = """examples:
  portrait-keras train smoke                      # 2 minutes on a CPU, embedded SynthPortrait
  portrait-keras train fss_uncert                 # the paper's FSS + uncertainty row (Table 4)
  portrait-keras train fss_uncert --data my/annotations.csv --set train.batch_size=64
  portrait-keras train fss_uncert --replicas 2    # MirroredStrategy over 2 devices
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="portrait-keras train",
        description="Train a named experiment (Table 4/5 rows) into a run folder; re-run to resume.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help=f"one of: {', '.join(configs.EXPERIMENTS)}")
    parser.add_argument("--data", help="annotation CSV (default: the embedded SynthPortrait)")
    parser.add_argument("--epochs", type=int, help="epochs; warm-up and decay steps scale along")
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
    args = parser.parse_args(argv)
    if args.replicas is not None and args.replicas < 1:
        parser.error(f"--replicas must be >= 1. Received: {args.replicas}")
    return args


def build_config(args):
    config = configs.get(args.name)
    if args.data:
        config = override(config, "data.csv", os.path.abspath(args.data))
    else:
        config = configs.synthetic_default(config)
    if args.epochs is not None:
        config = dataclasses.replace(config, train=rescale_epochs(config.train, args.epochs))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE. Received: {item!r}")
        config = override(config, key, value)
    return config


def main(argv=None):
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = args.run_dir or default_run_dir(config)
    from portrait_keras.training.run_dir import RunDir

    if RunDir(run_dir).is_finished() and not args.overwrite:
        # A re-run resumes a killed run; a finished one would silently start over.
        print(
            f"error: {run_dir} holds a finished run (metrics.json). Evaluate it with "
            f"`portrait-keras evaluate {run_dir}`, or pass --overwrite (or another "
            f"--run-dir) to train again.",
            file=sys.stderr,
        )
        return 2
    if config.model.backbone in ("hrnet_w32", "resnet50") and not config.model.backbone_weights:
        print(
            f"note: {config.model.backbone} starts from random weights (the paper starts from ImageNet; "
            f"see model.backbone_weights in the README).",
            file=sys.stderr,
        )
    from portrait_keras.training.distribute import DistributionError, prepare_host_devices

    prepare_host_devices(args.replicas)  # before JAX starts
    from portrait_keras.data import AnnotationError
    from portrait_keras.training.fit import train

    try:
        metrics = train(config, run_dir=run_dir, strategy=args.strategy, replicas=args.replicas)
    except (AnnotationError, DistributionError) as e:  # no traceback needed: the message says it all
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Run folder: {run_dir}")
    from portrait_keras.reporting.report import ordered_metrics

    for key, value in ordered_metrics(metrics):
        print(f"  {key:<13} {value:.4f}")
    return 0
