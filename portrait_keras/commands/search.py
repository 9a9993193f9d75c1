"""`portrait-keras search`: gallery images nearest to a query image (re-id), ranked by attribute
values (`--where`), or by a text with CLIP (`--text`)."""

import argparse
import json

from portrait_keras.commands import _common, _quiet
from portrait_keras.commands.interpret import MODEL_HELP


def build_parser():
    p = _common.parser(
        "search",
        "The gallery images nearest to a query by the re-id embedding (cosine distance), ranked by the "
        "joint probability of attribute values (--where; with --query: (1 - d/2) * P(where)^alpha), or "
        "by a text with CLIP's towers (--text). The gallery's embeddings and probabilities are cached "
        "beside it.",
        [
            "portrait-keras search runs/smoke --gallery photos/ --query me.jpg -k 5",
            "portrait-keras search runs/smoke --gallery data/annotations.csv --query q.jpg --plot ranks.png",
            "portrait-keras search runs/smoke --gallery photos/ --where gender=female --where age=elderly "
            "--where body=sitting --where expression=happy -k 20",
            "portrait-keras search runs/smoke --gallery photos/ --query me.jpg --where body=sitting",
            'portrait-keras search --gallery photos/ --text "an elderly man sitting" '
            "--clip clip_vit_b_16.weights.h5 --vocab bpe_simple_vocab_16e6.txt.gz",
        ],
    )
    p.add_argument("model", metavar="MODEL", nargs="?", help=f"{MODEL_HELP} (not with --text)")
    p.add_argument(
        "--gallery",
        required=True,
        metavar="DIR_OR_CSV",
        help="image folder, or annotation CSV (its gallery split, else all rows)",
    )
    p.add_argument("--query", metavar="IMAGE", help="query image file")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="TASK=VALUE",
        help="rank by the probability of this value (repeatable: the product over tasks; values of one "
        "single-label task are alternatives, of a multi-label task all required)",
    )
    p.add_argument(
        "--attribute-weight",
        type=_nonnegative,
        default=1.0,
        metavar="ALPHA",
        help="with --query and --where: the exponent of P(where) (0: re-id alone) (default: %(default)s)",
    )
    p.add_argument("--text", help="rank by CLIP's similarity to this text (needs --clip and --vocab)")
    p.add_argument("--clip", metavar="WEIGHTS", help="CLIP .weights.h5 file (portrait-keras convert-clip)")
    p.add_argument("--vocab", metavar="BPE", help="CLIP's vocabulary, bpe_simple_vocab_16e6.txt.gz")
    p.add_argument(
        "--clip-config",
        default="ViT-B-16-quickgelu",
        help="the CLIP weights' sizes and activation (default: %(default)s, OpenAI's ViT-B/16)",
    )
    p.add_argument("-k", type=_common.positive, default=10, help="number of results (default: %(default)s)")
    p.add_argument("--plot", metavar="PNG", help="draw the query and its results into this PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the gallery embedding cache")
    p.add_argument("--batch-size", type=_common.positive, default=64)
    _common.add_skip_bad_images(p, "gallery image")
    return p


def _nonnegative(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0. Received: {text!r}")
    return value


def _check_modes(args):
    """One `error:` line for a combination of options that says nothing or too much."""
    from portrait_keras.errors import InputError

    if args.text is not None:
        extra = [o for o, v in (("MODEL", args.model), ("--query", args.query), ("--where", args.where)) if v]
        if extra:
            raise InputError(f"--text ranks by CLIP alone; leave out {', '.join(extra)}")
        missing = [o for o, v in (("--clip", args.clip), ("--vocab", args.vocab)) if not v]
        if missing:
            raise InputError(f"--text needs {' and '.join(missing)} (the CLIP weights file and its vocabulary)")
        return
    if args.clip or args.vocab:
        raise InputError("--clip and --vocab go with --text")
    if args.model is None:
        raise InputError("MODEL is missing (a run folder, .keras file or SavedModel)")
    if args.query is None and not args.where:
        raise InputError("nothing to search for: give --query IMAGE, --where TASK=VALUE or --text TEXT")


def run(args):
    from portrait_keras.data.images import ImageFileError
    from portrait_keras.errors import InputError
    from portrait_keras.serving import predictor, search

    _check_modes(args)
    if args.model is not None:
        predictor.model_kind(args.model)
    query = None
    if args.query is not None:
        queries = predictor.expand_image_paths([args.query])
        if len(queries) != 1:
            raise InputError(f"{args.query}: the query is one image file. Received: {len(queries)} files")
        query = queries[0]
    gallery = search.load_gallery(args.gallery)
    skipped = []
    options = dict(
        batch_size=args.batch_size,
        use_cache=not args.no_cache,
        on_bad_image=skipped.append if args.skip_bad_images else None,
    )
    try:
        if args.text is not None:
            from portrait_keras.serving import text_search

            clip, tokenizer = text_search.load_clip(args.clip, args.vocab, args.clip_config)
            with _quiet.image_decoding():
                result = text_search.search_by_text(clip, tokenizer, gallery, args.text, args.k, **options)
        else:
            loaded = predictor.load_predictor(args.model)
            with _quiet.image_decoding():
                if args.where:
                    result = search.by_attributes(
                        loaded,
                        gallery,
                        search.parse_where(args.where, loaded.tasks, "--where"),
                        args.k,
                        query=query,
                        attribute_weight=args.attribute_weight,
                        **options,
                    )
                else:
                    result = search.search(loaded, gallery, query, args.k, **options)
    except ImageFileError as e:
        if e.path == query:  # never skipped: it is what is searched for
            raise InputError(f"{e} (the query; --skip-bad-images leaves out gallery images only)") from None
        raise _common.with_skip_hint(e) from None
    finally:
        skipped = _common.report_skipped(skipped)
    if args.plot:
        from portrait_keras.reporting import plots

        scored = isinstance(result, search.ScoredResult)
        figure = plots.rank_list(
            result.query,
            result.paths,
            result.scores if scored else result.distances,
            result.same_id,
            result.query_id,
            result.ids,
            score="score" if scored else "distance",
        )
        plots.save(figure, args.plot)
    if args.json:
        source = {"clip": args.clip} if args.text is not None else {"model": args.model}
        report = {**source, "gallery": args.gallery, **result.to_dict(), "skipped": skipped}
        print(json.dumps(report, indent=2))
    else:
        print(result.format())
        if args.plot:
            print(f"rank list: {args.plot}")
    return 0


def main(argv=None):
    return _common.run_reporting_errors(run, build_parser().parse_args(argv))
