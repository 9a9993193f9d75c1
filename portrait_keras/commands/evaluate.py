"""`portrait-keras evaluate RUN_DIR [--data CSV] [--flip] [--rerank] [--json] ...`: the metrics of a saved run.

Loads the run's `model.keras` (safe mode; it carries its schema) and evaluates on the run's own
data or `--data` (`portrait_keras.evaluation.evaluator.evaluate`). RUN_DIR may also be a `.keras`
file alone (then `--data` names the data). Data labelled with another schema than the model's
(another dataset) is evaluated on what both share (`evaluator.shared_tasks`: re-id when both have
an identity task, and the tasks with the same class list), with one `note:` line naming what is
left out; without re-id in common it is refused, with the differences listed. `--rerank` ranks
the re-id gallery by the k-reciprocal re-ranked distance (Zhong et al. 2017, `metrics/rerank.py`;
`--k1`, `--k2`, `--lambda` set its parameters).
"""

import argparse
import json
import os
import sys

from portrait_keras.commands import _common
from portrait_keras.evaluation.evaluator import SchemaMismatchError, evaluate, schema_differences, shared_tasks
from portrait_keras.evaluation.tables import format_table


def data_schema(csv_path):
    """The schema `read_annotations(csv_path)` would use: `schema.json` beside it, else the tasks
    of the default schema whose columns the CSV has (all of them when it has none)."""
    import csv

    from portrait_keras.schema import Schema, default_schema

    beside = os.path.join(os.path.dirname(os.path.abspath(csv_path)), "schema.json")
    if os.path.exists(beside):
        return Schema.load(beside), beside
    schema = default_schema()
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            header = {name.strip() for name in next(csv.reader(f), [])}
    except (OSError, UnicodeDecodeError, csv.Error):
        return schema, "the default schema"  # read_annotations names the problem
    present = [name for name in schema.names if name in header]
    if present and len(present) < len(schema.names):
        return schema.subset(present), f"its task columns {', '.join(present)}"
    return schema, "the default schema"


def tasks_to_evaluate(model, model_path, csv_path):
    """The data's schema and the names of its tasks to evaluate (None: all the model predicts).

    The same schema: all. Another one: `shared_tasks`, with a `note:` line on stderr naming what
    is left out. Raises `SchemaMismatchError` naming both sides when they share no re-id.
    """
    schema, source = data_schema(csv_path)
    differences = schema_differences(model.schema, schema, "the model", "the data")
    if not differences:
        return model.schema, None
    names, left_out = shared_tasks(model.schema, schema, model.output_names)
    identity = schema.identity_task
    if identity is None or identity.name not in names:
        raise SchemaMismatchError(
            f"The model ({model_path}) and the data {csv_path} (schema: {source}) are labelled "
            f"differently: " + "; ".join(differences)
        )
    if left_out:
        evaluated = ", ".join(["re-id", *(n for n in names if n != identity.name)])
        print(
            f"note: the data {csv_path} (schema: {source}) is labelled differently from the model, "
            f"so only {evaluated} are evaluated; left out: " + "; ".join(left_out),
            file=sys.stderr,
        )
    return schema, names


def build_parser():
    p = _common.parser(
        "evaluate",
        "The metrics of a trained run on its query/gallery splits: the paper's Macro mAP/CMC,\n"
        "Market-1501 mAP/CMC and mINP, Macro F1 and attribute metrics per task, PIQ.",
        [
            "portrait-keras evaluate runs/fss_uncert",
            "portrait-keras evaluate runs/fss_uncert --flip --json",
            "portrait-keras evaluate runs/fss_uncert --rerank             # k1=20, k2=6, lambda=0.3",
            "portrait-keras evaluate runs/fss_uncert --data market1501/annotations.csv   # another dataset",
            "portrait-keras evaluate runs/relation                    # per-trait balanced accuracy of its pairs",
        ],
    )
    p.add_argument("run_dir", metavar="RUN_DIR_OR_KERAS", help="run folder of `portrait-keras train`, or a .keras file")
    p.add_argument("--data", help="annotation CSV (default: the run's own data)")
    p.add_argument("--flip", action="store_true", help="average each image with its horizontal mirror")
    p.add_argument("--rerank", action="store_true", help="rank re-id by k-reciprocal re-ranking (Zhong et al. 2017)")
    p.add_argument("--k1", type=_common.positive, help="re-ranking: k-reciprocal neighbourhood size (default 20)")
    p.add_argument("--k2", type=_common.positive, help="re-ranking: neighbours of the query expansion (default 6)")
    p.add_argument(
        "--lambda",
        dest="lambda_value",
        type=_common.fraction,
        help="re-ranking: weight of the original distance, in [0, 1] (default 0.3)",
    )
    p.add_argument("--batch-size", type=_common.positive, default=128)
    p.add_argument("--json", action="store_true", help="print JSON (the metrics.json keys) instead of tables")
    p.add_argument(
        "--skip-bad-images",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="leave unreadable images out (with a warning) instead of failing "
        "(default: the run's data.skip_bad_images)",
    )
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return _common.run_reporting_errors(lambda a: _evaluate(parser, a), args)


def _evaluate(parser, args):
    from portrait_keras.data import read_annotations
    from portrait_keras.serving.export import load_model

    rerank_args = {
        k: v for k, v in (("k1", args.k1), ("k2", args.k2), ("lambda_value", args.lambda_value)) if v is not None
    }
    if rerank_args and not args.rerank:
        parser.error("--k1, --k2 and --lambda only apply with --rerank")

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
    from portrait_keras.serving.relation import is_relation_model

    if is_relation_model(model_path):
        return _evaluate_relation(parser, args, model_path, run_config)
    csv = args.data or run_config.get("data_csv")
    if csv is None:
        parser.error(f"{model_path} has no run folder (config.json) beside it: name the data with --data CSV")
    model = load_model(model_path)
    extra = [] if args.data else list(run_config.get("data", {}).get("extra_csvs") or [])
    skip = args.skip_bad_images
    if skip is None:
        skip = bool(run_config.get("data", {}).get("skip_bad_images", False))
    if extra:  # trained on several datasets: evaluated on them joined, as training did
        from portrait_keras.data.sources import read_sources

        annotations, tasks = read_sources([csv, *extra]), None
    else:
        schema, tasks = tasks_to_evaluate(model, model_path, csv)
        annotations = read_annotations(csv, schema=schema)
    # As trained: the model carries it (PortraitModel.background); an older one, its run's config.
    background = getattr(model, "background", None) or run_config.get("data", {}).get("background", "keep")
    annotations = annotations.with_background(background)
    result = evaluate(
        model,
        annotations,
        tasks=tasks,
        batch_size=args.batch_size,
        skip_bad_images=skip,
        flip=args.flip,
        rerank=args.rerank,
        **rerank_args,
    )
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _evaluate_relation(parser, args, model_path, run_config):
    """`evaluate` of a relation run (paper 004 §5): per-trait balanced accuracy on the test
    split of its pair CSV (or `--data PAIRS.csv`), with the model's thresholds."""
    from portrait_keras.data.pairs import read_pairs
    from portrait_keras.serving.relation import load_relation_model
    from portrait_keras.training.relation import evaluate_relation, format_trait_table

    flags = (("--flip", args.flip), ("--rerank", args.rerank), ("--skip-bad-images", args.skip_bad_images is not None))
    given = [flag for flag, on in flags if on]
    if given:
        parser.error(f"{', '.join(given)} apply to portrait models; {model_path} is a relation model")
    csv = args.data or run_config.get("data_csv")
    if csv is None:
        parser.error(f"{model_path} has no run folder (config.json) beside it: name the pair CSV with --data")
    if not os.path.isfile(csv):
        parser.error(f"{csv}: no such pair CSV")
    pairs = read_pairs(csv)
    model = load_relation_model(model_path)
    metrics = evaluate_relation(model, pairs, args.batch_size)
    print(json.dumps(metrics, indent=2) if args.json else format_trait_table(metrics, model.traits))
    return 0
