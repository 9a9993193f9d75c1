"""`portrait-keras search MODEL --gallery DIR_OR_CSV --query IMAGE`: nearest gallery images by re-id."""

import json

from portrait_keras.commands import _common, _quiet
from portrait_keras.commands.interpret import MODEL_HELP


def build_parser():
    p = _common.parser(
        "search",
        "The gallery images nearest to a query by the re-id embedding (cosine distance); the "
        "gallery's embeddings are cached beside it.",
        [
            "portrait-keras search runs/smoke --gallery photos/ --query me.jpg -k 5",
            "portrait-keras search runs/smoke --gallery data/annotations.csv --query q.jpg --plot ranks.png",
        ],
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument(
        "--gallery",
        required=True,
        metavar="DIR_OR_CSV",
        help="image folder, or annotation CSV (its gallery split, else all rows)",
    )
    p.add_argument("--query", required=True, metavar="IMAGE", help="query image file")
    p.add_argument("-k", type=_common.positive, default=10, help="number of results (default: %(default)s)")
    p.add_argument("--plot", metavar="PNG", help="draw the query and its results into this PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the gallery embedding cache")
    p.add_argument("--batch-size", type=_common.positive, default=64)
    _common.add_skip_bad_images(p, "gallery image")
    return p


def run(args):
    from portrait_keras.data.images import ImageFileError
    from portrait_keras.errors import InputError
    from portrait_keras.serving import predictor, search

    predictor.model_kind(args.model)
    queries = predictor.expand_image_paths([args.query])
    if len(queries) != 1:
        raise InputError(f"{args.query}: the query is one image file. Received: {len(queries)} files")
    query = queries[0]
    gallery = search.load_gallery(args.gallery)
    loaded = predictor.load_predictor(args.model)
    skipped = []
    try:
        with _quiet.image_decoding():
            result = search.search(
                loaded,
                gallery,
                query,
                args.k,
                batch_size=args.batch_size,
                use_cache=not args.no_cache,
                on_bad_image=skipped.append if args.skip_bad_images else None,
            )
    except ImageFileError as e:
        if e.path == query:  # never skipped: it is what is searched for
            raise InputError(f"{e} (the query; --skip-bad-images leaves out gallery images only)") from None
        raise _common.with_skip_hint(e) from None
    finally:
        skipped = _common.report_skipped(skipped)
    if args.plot:
        from portrait_keras.reporting import plots

        figure = plots.rank_list(
            result.query, result.paths, result.distances, result.same_id, result.query_id, result.ids
        )
        plots.save(figure, args.plot)
    if args.json:
        report = {"model": args.model, "gallery": args.gallery, **result.to_dict(), "skipped": skipped}
        print(json.dumps(report, indent=2))
    else:
        print(result.format())
        if args.plot:
            print(f"rank list: {args.plot}")
    return 0


def main(argv=None):
    return _common.run_reporting_errors(run, build_parser().parse_args(argv))
