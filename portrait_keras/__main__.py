"""`python -m portrait_keras COMMAND`: use a trained portrait model from the command line.

Commands:

    interpret MODEL IMAGE... [--json] [--threshold 0.5]
        Describe each image by aspect: appearance, posture, emotion (`portrait_keras.inference`).
    search MODEL --gallery DIR_OR_CSV --query IMAGE [-k 10] [--plot out.png] [--json]
        The gallery images nearest to the query by the re-id embedding (`portrait_keras.search`).
    report RUN_DIR [--data CSV]
        Figures, report.md and report.html of a run into RUN_DIR/report/ (`portrait_keras.report`).
    evaluate RUN_DIR [--data CSV] [--json]
        The metrics table of a run (`python -m portrait_keras.evaluate`).

MODEL is a run folder, a `.keras` file (with its run's schema.json beside it) or a SavedModel
folder. IMAGE may be a file, a folder (every image below it) or a glob pattern. A bad input
prints `error: ...` naming it and exits with status 2.
"""

import argparse
import json
import sys

from portrait_keras.data.annotations import AnnotationError
from portrait_keras.evaluation import SchemaMismatchError
from portrait_keras.inference import DEFAULT_THRESHOLD, InputError

USER_ERRORS = (InputError, AnnotationError, SchemaMismatchError)  # BadImageError is an AnnotationError


def _is_user_error(error):
    if isinstance(error, USER_ERRORS):
        return True
    # A ModelFileError can only come from an imported export module (which imports keras, too
    # slow to import up front).
    export = sys.modules.get("portrait_keras.export")
    return export is not None and isinstance(error, export.ModelFileError)


def _threshold(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1). Received: {text!r}")
    return value


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m portrait_keras",
        description="Interpret images, search a gallery, report or evaluate a run of a portrait model.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("interpret", help="describe images by appearance, posture and emotion")
    p.add_argument("model", metavar="MODEL", help="run folder, .keras file or SavedModel folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=DEFAULT_THRESHOLD,
        help="name an expression when its probability is above this (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=_positive, default=32)

    p = commands.add_parser("search", help="nearest gallery images to a query by the re-id embedding")
    p.add_argument("model", metavar="MODEL", help="run folder, .keras file or SavedModel folder")
    p.add_argument(
        "--gallery", required=True, metavar="DIR_OR_CSV", help="image folder, or annotation CSV (its gallery split, else all rows)"
    )
    p.add_argument("--query", required=True, metavar="IMAGE", help="query image file")
    p.add_argument("-k", type=_positive, default=10, help="number of results (default: %(default)s)")
    p.add_argument("--plot", metavar="PNG", help="draw the query and its results into this PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the gallery embedding cache")
    p.add_argument("--batch-size", type=_positive, default=64)

    p = commands.add_parser("report", help="figures, report.md and report.html of a run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by experiments/run.py")
    p.add_argument("--data", metavar="CSV", help="annotation CSV of the confusion matrices (default: the run's own data)")
    p.add_argument("--batch-size", type=_positive, default=128)
    p.add_argument(
        "--skip-bad-images",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="leave unreadable test images out of the confusion matrices (default: the run's data.skip_bad_images)",
    )

    commands.add_parser(
        "evaluate", help="metrics table of a run (python -m portrait_keras.evaluate -h)", add_help=False
    )
    return parser


def interpret_command(args):
    from portrait_keras import inference

    inference.model_kind(args.model)  # a wrong model path fails before any image is read
    paths = inference.expand_image_paths(args.images)
    predictor = inference.load_predictor(args.model)
    results = inference.interpret(predictor, paths, args.threshold, args.batch_size)
    if args.json:
        print(json.dumps({"model": args.model, "threshold": args.threshold, "images": results}, indent=2))
    else:
        print("\n\n".join(inference.format_description(r, args.threshold) for r in results))
    return 0


def search_command(args):
    from portrait_keras import inference, search

    inference.model_kind(args.model)
    queries = inference.expand_image_paths([args.query])
    if len(queries) != 1:
        raise InputError(f"{args.query}: the query is one image file. Received: {len(queries)} files")
    query = queries[0]
    gallery = search.load_gallery(args.gallery)
    predictor = inference.load_predictor(args.model)
    result = search.search(
        predictor, gallery, query, args.k, batch_size=args.batch_size, use_cache=not args.no_cache
    )
    if args.plot:
        from portrait_keras import plots

        figure = plots.rank_list(
            result.query, result.paths, result.distances, result.same_id, result.query_id, result.ids
        )
        plots.save(figure, args.plot)
    if args.json:
        print(json.dumps({"model": args.model, "gallery": args.gallery, **result.to_dict()}, indent=2))
    else:
        print(result.format())
        if args.plot:
            print(f"rank list: {args.plot}")
    return 0


def report_command(args):
    import os

    from portrait_keras.report import write_report

    annotations = None
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


COMMANDS = {"interpret": interpret_command, "search": search_command, "report": report_command}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "evaluate":
        from portrait_keras.evaluate import main as evaluate_main

        return evaluate_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except Exception as e:
        if not _is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
