"""`portrait-keras report RUN_DIR`: figures, report.md and report.html of a run into RUN_DIR/report/."""

import argparse
import os

from portrait_keras.commands import _common


def build_parser():
    p = _common.parser(
        "report",
        "Training curves, per-task scores and confusion matrices of a run, as report.md and report.html.",
        ["portrait-keras report runs/smoke", "portrait-keras report runs/smoke --data other/annotations.csv"],
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `portrait-keras train`")
    p.add_argument(
        "--data", metavar="CSV", help="annotation CSV of the confusion matrices (default: the run's own data)"
    )
    p.add_argument("--batch-size", type=_common.positive, default=128)
    p.add_argument(
        "--skip-bad-images",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="leave unreadable test images out of the confusion matrices (default: the run's data.skip_bad_images)",
    )
    return p


def run(args):
    from portrait_keras.errors import InputError
    from portrait_keras.reporting.report import write_report
    from portrait_keras.serving.relation import is_relation_model

    annotations = None
    if args.data and is_relation_model(args.run_dir):
        raise InputError(
            f"{args.run_dir}: a relation run, whose report shows its metrics.json; --data is for a portrait "
            f"run's confusion matrices. Score it on other pairs with `portrait-keras evaluate {args.run_dir} "
            f"--data PAIRS.csv`"
        )
    if args.data:
        from portrait_keras.data import read_annotations
        from portrait_keras.schema import Schema

        schema_path = os.path.join(args.run_dir, "schema.json")
        if not os.path.isfile(schema_path):
            raise InputError(f"{args.run_dir}: not a run folder (no schema.json)")
        annotations = read_annotations(args.data, schema=Schema.load(schema_path))
    written = write_report(args.run_dir, annotations, batch_size=args.batch_size, skip_bad_images=args.skip_bad_images)
    print(written["markdown"])
    print(written["html"])
    return 0


def main(argv=None):
    return _common.run_reporting_errors(run, build_parser().parse_args(argv))
