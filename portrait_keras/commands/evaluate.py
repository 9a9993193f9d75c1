"""`portrait-keras evaluate RUN_DIR [--data CSV] [--json] [--skip-bad-images]`: the metrics table of a saved run.

Loads the run's `model.keras` (safe mode; it carries its schema) and evaluates on the run's own
data or `--data` (`portrait_keras.evaluation.evaluator.evaluate`). RUN_DIR may also be a `.keras`
file alone (then `--data` names the data). A data set labelled with another schema than the
model's is refused up front, with the differences listed.
"""

import argparse
import json
import os
import sys

from portrait_keras.evaluation.evaluator import SchemaMismatchError, evaluate, format_table, schema_differences


def data_schema(csv_path):
    """The schema `read_annotations(csv_path)` would use: `schema.json` beside it, else the default."""
    from portrait_keras.schema import Schema, default_schema

    beside = os.path.join(os.path.dirname(os.path.abspath(csv_path)), "schema.json")
    return (Schema.load(beside), beside) if os.path.exists(beside) else (default_schema(), "the default schema")


def check_same_schema(run_schema, run_schema_path, csv_path):
    """Raises `SchemaMismatchError` naming both sides when the data's schema is not the run's."""
    schema, source = data_schema(csv_path)
    differences = schema_differences(run_schema, schema, "the model", "the data")
    if differences:
        raise SchemaMismatchError(
            f"The model ({run_schema_path}) and the data {csv_path} (schema: {source}) are labelled "
            f"differently: " + "; ".join(differences)
        )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="portrait-keras evaluate",
        description="The metrics table of a trained run: Macro mAP/CMC, Macro F1 per task, PIQ.",
        epilog="examples:\n  portrait-keras evaluate runs/fss_uncert\n"
        "  portrait-keras evaluate runs/fss_uncert --data other/annotations.csv --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR_OR_KERAS", help="run folder of `portrait-keras train`, or a .keras file"
    )
    parser.add_argument("--data", help="annotation CSV (default: the run's own data)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--skip-bad-images",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="leave unreadable images out (with a warning) instead of failing "
        "(default: the run's data.skip_bad_images)",
    )
    args = parser.parse_args(argv)

    from portrait_keras.data import AnnotationError
    from portrait_keras.serving.export import ModelFileError

    try:
        return _evaluate(parser, args)
    except (AnnotationError, SchemaMismatchError, ModelFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _evaluate(parser, args):
    from portrait_keras.data import read_annotations
    from portrait_keras.serving.export import load_model

    if os.path.isfile(args.run_dir) and args.run_dir.endswith(".keras"):
        model_path, run_dir = args.run_dir, os.path.dirname(os.path.abspath(args.run_dir))
    else:
        model_path, run_dir = os.path.join(args.run_dir, "model.keras"), args.run_dir
    if not os.path.exists(model_path):
        parser.error(f"{model_path} does not exist: is {args.run_dir!r} a finished run folder or a .keras file?")
    run_config = {}
    config_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            run_config = json.load(f)
    csv = args.data or run_config.get("data_csv")
    if csv is None:
        parser.error(f"{model_path} has no run folder (config.json) beside it: name the data with --data CSV")
    model = load_model(model_path)
    check_same_schema(model.schema, model_path, csv)
    skip = args.skip_bad_images
    if skip is None:
        skip = bool(run_config.get("data", {}).get("skip_bad_images", False))
    annotations = read_annotations(csv, schema=model.schema)
    result = evaluate(model, annotations, batch_size=args.batch_size, skip_bad_images=skip)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
