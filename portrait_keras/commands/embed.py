"""`portrait-keras embed MODEL DATA --out FEATS.npz`: embeddings and probabilities of a dataset."""

import argparse

from portrait_keras.commands import _common
from portrait_keras.commands.interpret import MODEL_HELP

SPLITS = ("train", "query", "gallery")


def split_list(text):
    """argparse type: comma-separated split names, e.g. `query,gallery`."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SPLITS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"splits are {', '.join(SPLITS)}, comma-separated. Received: {text!r}")
    return list(dict.fromkeys(names))


def build_parser():
    p = _common.parser(
        "embed",
        "The re-id embeddings and class probabilities of every image of an annotation CSV or image\n"
        "folder, written to an .npz file (from a CSV with ids, cameras, groups and splits).",
        [
            "portrait-keras embed runs/smoke data/annotations.csv --out feats.npz --split query,gallery",
            "portrait-keras embed runs/smoke/model.keras photos/ --out photos.npz --flip",
        ],
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("data", metavar="DATA", help="annotation CSV or image folder")
    p.add_argument("--out", required=True, metavar="FEATS.npz", help="the .npz file to write")
    p.add_argument("--split", type=split_list, metavar="SPLITS", help="CSV only: e.g. query,gallery (default: all)")
    p.add_argument("--flip", action="store_true", help="average each image with its horizontal mirror")
    p.add_argument("--batch-size", type=_common.positive, default=64)
    p.add_argument("--skip-bad-images", action="store_true", help="leave unreadable images out (with a warning)")
    return p


def run(args):
    from portrait_keras.serving import embed, predictor

    predictor.model_kind(args.model)  # a wrong model path fails before any image is read
    loaded = predictor.load_predictor(args.model)
    arrays = embed.embed_data(
        loaded,
        args.data,
        splits=args.split,
        flip=args.flip,
        batch_size=args.batch_size,
        skip_bad_images=args.skip_bad_images,
    )
    embed.write_npz(args.out, arrays)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items() if k == "embeddings" or k.startswith("prob_"))
    counts = ""
    if "splits" in arrays:
        splits = arrays["splits"].tolist()
        counts = " (" + ", ".join(f"{s} {splits.count(s)}" for s in dict.fromkeys(splits)) + ")"
    print(f"{args.out}: {len(arrays['embeddings'])} images{counts}; {shapes}")
    return 0


def main(argv=None):
    return _common.run_reporting_errors(run, build_parser().parse_args(argv))
