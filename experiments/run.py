"""Runs a named experiment: `python experiments/run.py NAME [--data CSV] [--epochs N] [--set k=v ...]`.

Without `--data` it trains on the embedded SynthPortrait default (generated once into a cache
folder) with the CPU-sized setting of `configs.synthetic_default`.
"""

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import configs  # noqa: E402
from portrait_keras.config import override, rescale_epochs  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    return parser.parse_args(argv)


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
    from portrait_keras.training import train

    metrics = train(config, run_dir=args.run_dir)
    run_dir = args.run_dir or os.path.join("runs", config.name)
    print(f"Run folder: {run_dir}")
    for key in ("piq", "reid", "appearance", "posture", "emotion", "reid_mAP", "reid_rank1"):
        if key in metrics:
            print(f"  {key:<11} {metrics[key]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
