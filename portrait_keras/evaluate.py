"""`python -m portrait_keras.evaluate RUN_DIR [--data CSV] [--json]`: the metrics table of a saved run.

Loads the run's `model.keras` (safe mode) and `schema.json` and evaluates on the run's own data
or `--data` (`portrait_keras.evaluation.evaluate`).
"""

import argparse
import json
import os
import sys

from portrait_keras.evaluation import evaluate, format_table


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m portrait_keras.evaluate", description=__doc__.split("\n")[0].strip("`"))
    parser.add_argument("run_dir", help="run folder written by experiments/run.py")
    parser.add_argument("--data", help="annotation CSV (default: the run's own data)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    import keras

    from portrait_keras.data import read_annotations
    from portrait_keras.schema import Schema

    model_path = os.path.join(args.run_dir, "model.keras")
    if not os.path.exists(model_path):
        parser.error(f"{model_path} does not exist: is {args.run_dir!r} a finished run folder?")
    with open(os.path.join(args.run_dir, "config.json"), encoding="utf-8") as f:
        run_config = json.load(f)
    csv = args.data or run_config["data_csv"]
    schema = Schema.load(os.path.join(args.run_dir, "schema.json"))
    model = keras.models.load_model(model_path)
    result = evaluate(model, read_annotations(csv, schema=schema), batch_size=args.batch_size)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
