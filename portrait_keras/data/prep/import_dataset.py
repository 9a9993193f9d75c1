"""Import a public re-id dataset as an annotation CSV (the `read_annotations` format).

    portrait-keras import {market1501,dukemtmc} ROOT OUT.csv [--attributes FILE.mat]
                                       [--adult-age {young_adult,middle_aged,unknown}]

ROOT holds `bounding_box_train`, `query` and `bounding_box_test`; the `path` column is
relative to ROOT. `--attributes` adds the identity-level labels of
Market-1501-attribute (`market_attribute.mat`: gender, age) or DukeMTMC-attribute
(`duke_attribute.mat`: gender); the other tasks stay unknown. The mappings, and what
happens to Market-1501's junk (`-1`, dropped) and distractor (`0000`, unknown id)
images, are in `portrait_keras/data/adapters/market1501.py` and `dukemtmc.py`.

The written CSV is read back with `read_annotations` (root ROOT) before the summary
is printed. When OUT.csv is not in ROOT, later commands need `--root ROOT`
(`data_prep/dedup.py`, `data_prep/stats.py`) or `root=ROOT`.
"""

import argparse
import os
import sys

from portrait_keras.data.adapters import ADAPTERS, AdapterError
from portrait_keras.data.annotations import AnnotationError, read_annotations


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="portrait-keras import",
        description=__doc__.split("\n")[0],
        epilog="examples:\n"
        "  portrait-keras import market1501 Market-1501 Market-1501/market.csv --attributes market_attribute.mat",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=sorted(ADAPTERS), help="dataset layout")
    parser.add_argument("root", help="dataset folder (holds bounding_box_train, query, bounding_box_test)")
    parser.add_argument("out", help="annotation CSV to write")
    parser.add_argument("--attributes", help="identity attribute file (market_attribute.mat, duke_attribute.mat)")
    parser.add_argument(
        "--adult-age",
        choices=["young_adult", "middle_aged", "unknown"],
        default="young_adult",
        help="market1501: our age class for Market's 'adult' (default young_adult)",
    )
    args = parser.parse_args(argv)
    kwargs = {}
    if args.dataset == "market1501":
        kwargs["adult_age"] = None if args.adult_age == "unknown" else args.adult_age
    elif args.adult_age != "young_adult":
        parser.error(f"--adult-age applies to market1501 only. Received: {args.dataset}")

    try:
        imported = ADAPTERS[args.dataset](args.root, args.attributes, **kwargs)
    except AdapterError as e:
        sys.exit(f"error: {e}")
    imported.to_csv(args.out)
    try:
        annotations = read_annotations(args.out, root=args.root)
    except AnnotationError as e:
        sys.exit(f"error: the written table does not validate:\n{e}")
    print(imported.summary())
    print(f"wrote {len(annotations)} rows to {args.out}")
    if os.path.realpath(os.path.dirname(os.path.abspath(args.out))) != os.path.realpath(args.root):
        print(f"paths are relative to {args.root}: read with --root {args.root} (root= in Python)")


if __name__ == "__main__":
    main()
