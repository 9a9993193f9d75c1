"""Check a whole dataset before training: every check of the reader, plus decoding every image.

    portrait-keras validate ANNOTATIONS.csv [--root DIR] [--splits train,query,gallery]
                                 [--examples 3]

Runs `portrait_keras.data.read_annotations` (columns, class names, label lists, splits, id
rules, paths: missing, duplicate, escaping the root, symlinks out of it) and decodes every
image file the table names, in parallel, with the decoder of the training input pipeline
(`portrait_keras.data.images.find_bad_images`: zero-byte, non-image, truncated or corrupt
files), so what passes here also passes in training. Prints a table of the problems by kind
with the first examples of each (`FILE:LINE: column 'x': value 'v': what is wrong`) and exits
with status 1 when there is any problem, 0 otherwise (2 for a bad command line).
"""

import argparse
import collections
import os
import posixpath
import re
import sys

import pandas as pd

from portrait_keras.data.annotations import SPLITS, AnnotationError, read_annotations, read_table

# (kind, pattern of the problem message, column or None for any): the first match names the kind.
KINDS = (
    ("missing column", r"missing required column", None),
    ("unparsable CSV", r"Expected \d+ fields|empty file|Error", ""),
    ("empty split", r"no rows in split", "split"),
    ("missing image file", r"missing image file", "path"),
    ("path outside the dataset root", r"escapes the dataset root|resolves outside|relative to the dataset", "path"),
    ("unusable path", r"without NUL characters|cannot look for the image file", "path"),
    ("duplicate path", r"duplicate path", "path"),
    ("empty path", r"expected an image path", "path"),
    ("zero-byte image", r"unreadable image: zero bytes", "path"),
    ("not an image file", r"unreadable image: not an image", "path"),
    ("corrupt or truncated image", r"unreadable image: corrupt", "path"),
    ("unreadable image", r"unreadable image", "path"),
    ("bad split name", r"expected one of", "split"),
    ("query id not in the gallery", r"absent from the gallery", None),
    ("query image without id", r"needs a known id", None),
    ("id in train and in query/gallery", r"also in split 'train'", None),
    ("not an integer", r"expected an integer", None),
    ("malformed label list", r"an empty item|unknown class|duplicate class", None),
    ("unknown class", r"expected one of", None),
)


def kind_of(column, message):
    """The kind of one problem (first matching row of `KINDS`), `"other"` when none matches."""
    for kind, pattern, only in KINDS:
        if (only is None or only == column) and re.search(pattern, message):
            return kind
    return "other"


def decode_problems(csv_path, root, flagged_lines):
    """`(line, "path", value, message)` for each image of the CSV that cannot be decoded.

    Rows the reader already flagged on their path (`flagged_lines`) are not decoded.
    """
    from portrait_keras.data.images import find_bad_images

    try:
        # The reader's own table: the same lines (a quoted newline moves them) and no crash
        # on a file it rejects as a whole.
        table = read_table(csv_path)
    except AnnotationError:
        return []
    if "path" not in table.columns:
        return []
    rows = [
        (line, value)
        for line, value in table["path"].items()
        if value and line not in flagged_lines and not value.startswith("/")
    ]
    files = [os.path.join(root, posixpath.normpath(value)) for _, value in rows]
    return [
        (rows[bad.index][0], "path", rows[bad.index][1], f"unreadable image: {bad.reason}")
        for bad in find_bad_images(files)
    ]


def validate(csv_path, root=None, splits=SPLITS):
    """Every problem of the dataset: the reader's and the images' (module docstring).

    Args:
        csv_path: str. Annotation table.
        root: str or None. Dataset root (default: the CSV's folder).
        splits: sequence of str. Splits that must have rows.

    Returns:
        `(rows, problems)`: number of data rows read (0 when the CSV cannot be parsed) and
        a list of `(line, column, value, message)` sorted by line.
    """
    root = os.path.abspath(root or os.path.dirname(os.path.abspath(csv_path)))
    try:
        annotations = read_annotations(csv_path, root=root, required_splits=splits)
        problems, rows = [], len(annotations)
    except AnnotationError as e:
        problems, rows = list(e.problems), None
    flagged = {line for line, column, _, _ in problems if column == "path"}
    problems += decode_problems(csv_path, root, flagged)
    if rows is None:
        try:
            rows = len(pd.read_csv(csv_path, dtype=str, keep_default_na=False))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            rows = 0
    return rows, sorted(problems, key=lambda p: p[0])


def summary_table(csv_path, problems, examples=3):
    """The problems by kind: count and the first `examples` of each, as text lines."""
    by_kind = collections.OrderedDict()
    for problem in problems:
        by_kind.setdefault(kind_of(problem[1], problem[3]), []).append(problem)
    width = max([len("kind")] + [len(k) for k in by_kind])
    lines = [f"{'kind':<{width}}  {'count':>7}  first examples"]
    for kind, items in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        shown = [
            f"{csv_path}:{line}: column {column!r}: value {value!r}: {text}"
            for line, column, value, text in items[:examples]
        ]
        lines.append(f"{kind:<{width}}  {len(items):>7,}  {shown[0]}")
        lines += [f"{'':<{width}}  {'':>7}  {text}" for text in shown[1:]]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="portrait-keras validate",
        description=__doc__.split("\n")[0],
        epilog="examples:\n  portrait-keras validate data/annotations.csv\n"
        "  portrait-keras validate data/annotations.csv --splits query,gallery",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("csv", help="annotation table")
    parser.add_argument("--root", help="dataset root (default: the CSV's folder)")
    parser.add_argument(
        "--splits",
        default=",".join(SPLITS),
        help="comma-separated splits that must have rows (default: %(default)s; '' for none)",
    )
    parser.add_argument("--examples", type=int, default=3, help="examples shown per kind (default: %(default)s)")
    args = parser.parse_args(argv)
    splits = [s for s in args.splits.split(",") if s]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        parser.error(f"--splits takes names from {', '.join(SPLITS)}. Received: {args.splits!r}")
    if not os.path.isfile(args.csv):
        parser.error(f"{args.csv}: no such file")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the table below says what failed

    rows, problems = validate(args.csv, args.root, splits)
    if not problems:
        print(f"{args.csv}: {rows:,} rows, every check passed and every image decodes.")
        return 0
    print(f"{args.csv}: {rows:,} rows, {len(problems):,} problem{'s' if len(problems) != 1 else ''}:\n")
    print("\n".join(summary_table(args.csv, problems, args.examples)))
    return 1


if __name__ == "__main__":
    sys.exit(main())
