"""`portrait-keras interpret MODEL IMAGE...`: describe images by appearance, posture and emotion."""

import json

from portrait_keras.commands import _common, _quiet
from portrait_keras.serving.predictor import DEFAULT_THRESHOLD

MODEL_HELP = "run folder, .keras file or SavedModel folder"


def build_parser():
    p = _common.parser(
        "interpret",
        "Describe each image by aspect: appearance, posture, emotion. IMAGE may be a file, a folder "
        "(every image below it) or a glob pattern.",
        [
            "portrait-keras interpret runs/smoke photo.jpg",
            "portrait-keras interpret runs/smoke/model.keras 'photos/*.png' --json",
            "portrait-keras interpret runs/smoke phone_photos/ --skip-bad-images",
            "portrait-keras interpret runs/relation --pair left.jpg right.jpg   # relation traits (paper 004 §5)",
        ],
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders or glob patterns")
    p.add_argument(
        "--pair", nargs=2, metavar=("A", "B"), help="a relation run: the 8 relation traits of two people's crops"
    )
    p.add_argument("--pairs", metavar="CSV", help="a relation run: the traits of every pair of a pair CSV")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--threshold",
        type=_common.threshold,
        default=DEFAULT_THRESHOLD,
        help="name an expression when its probability is above this (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=_common.positive, default=32)
    _common.add_skip_bad_images(p)
    return p


def run(args):
    from portrait_keras.data.images import ImageFileError
    from portrait_keras.errors import InputError
    from portrait_keras.serving import interpret, predictor, relation

    if args.pair or args.pairs or not args.images or relation.is_relation_model(args.model):
        return _relation(args)
    predictor.model_kind(args.model)  # a wrong model path fails before any image is read
    paths = predictor.expand_image_paths(args.images)
    loaded = predictor.load_predictor(args.model)
    skipped = []
    on_bad_image = skipped.append if args.skip_bad_images else None
    try:
        with _quiet.image_decoding():
            results = interpret.interpret(loaded, paths, args.threshold, args.batch_size, on_bad_image=on_bad_image)
    except ImageFileError as e:
        raise _common.with_skip_hint(e) from None
    skipped = _common.report_skipped(skipped)
    if not results:
        raise InputError(f"none of the {len(paths)} images could be read")
    if args.json:
        report = {"model": args.model, "threshold": args.threshold, "images": results, "skipped": skipped}
        print(json.dumps(report, indent=2))
    else:
        print("\n\n".join(interpret.format_description(r, args.threshold) for r in results))
    return 0


def _relation(args):
    """`--pair A B` / `--pairs CSV`: the relation traits of a `RelationModel` (serving/relation.py),
    each called present above the model's own threshold (not `--threshold`)."""
    from portrait_keras.errors import InputError
    from portrait_keras.serving import relation

    if not (args.pair or args.pairs) or args.images:
        raise InputError(
            f"{args.model}: give IMAGE... for a portrait model, --pair A B or --pairs CSV for a relation model"
        )
    model = relation.load_relation_model(args.model)
    with _quiet.image_decoding():
        results = [relation.interpret_pair(model, *args.pair)] if args.pair else []
        if args.pairs:
            results += relation.interpret_pairs_csv(model, args.pairs)
    if args.json:
        print(json.dumps({"model": args.model, "pairs": results}, indent=2))
    else:
        print("\n\n".join(relation.format_result(r) for r in results))
    return 0


def main(argv=None):
    return _common.run_reporting_errors(run, build_parser().parse_args(argv))
