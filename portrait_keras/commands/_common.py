"""What every command shares: argument types and the one-line `error:` for a user's mistake."""

import argparse
import sys

from portrait_keras.data.annotations import AnnotationError
from portrait_keras.errors import InputError
from portrait_keras.evaluation.evaluator import SchemaMismatchError
from portrait_keras.schema import SchemaError

USER_ERRORS = (InputError, AnnotationError, SchemaMismatchError, SchemaError)  # BadImageError is an AnnotationError


def is_user_error(error):
    """Whether `error` is a mistake in the user's input (printed as one line, exit 2)."""
    if isinstance(error, USER_ERRORS):
        return True
    # A ModelFileError can only come from an imported export module (which imports Keras, too
    # slow to import up front).
    export = sys.modules.get("portrait_keras.serving.export")
    return export is not None and isinstance(error, export.ModelFileError)


def run_reporting_errors(command, args):
    """`command(args)`; a user error becomes `error: ...` on stderr and status 2."""
    try:
        return command(args)
    except Exception as e:
        if not is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def parser(prog, description, examples):
    """An `ArgumentParser` for `portrait-keras PROG` whose help ends with `examples`."""
    return argparse.ArgumentParser(
        prog=f"portrait-keras {prog}",
        description=description,
        epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def threshold(text):
    """argparse type: a probability in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1). Received: {text!r}")
    return value


def fraction(text):
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1]. Received: {text!r}")
    return value


def positive(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text!r}")
    return value


SKIP_HINT = "Rerun with --skip-bad-images to leave unreadable images out."


def add_skip_bad_images(p, what="image"):
    """The `--skip-bad-images` option of the commands that read image files."""
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help=f"leave out {what} files that cannot be read or decoded (empty, truncated, corrupt, not an "
        f"image), listed once on stderr, instead of stopping at the first",
    )


def with_skip_hint(error):
    """An `InputError` of a bad image's `error` that says `--skip-bad-images` exists."""
    return InputError(f"{str(error).rstrip('.')}. {SKIP_HINT}")


def report_skipped(skipped):
    """Prints the one line naming the images left out (`--skip-bad-images`), if any; returns
    them as the `"skipped"` list of `--json` output."""
    from portrait_keras.data.images import skipped_images_line

    if skipped:
        print(skipped_images_line(skipped), file=sys.stderr, flush=True)
    return [{"path": b.path, "reason": b.reason} for b in skipped]
