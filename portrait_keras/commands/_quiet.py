"""What native code (TensorFlow's C++ logs, libjpeg) writes to stderr, held to what a user asks.

`TF_CPP_MIN_LOG_LEVEL` (default "2": errors only) decides which TensorFlow log records show,
but TensorFlow's libraries print some while they load, before they read it ("I0000 ...
port.cc:153] oneDNN custom operations are on"), and libjpeg prints its own complaint about a
corrupt JPEG ("Improper call to JPEG library in state 201") whatever the level. `native_stderr`
captures file descriptor 2 (Python's own `sys.stderr` still writes through) and writes back
only the lines a filter keeps; `quiet_tensorflow` applies it to the import of TensorFlow and
`image_decoding` to reading image files, whose failures the commands report themselves.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# TensorFlow's C++ log records: severity letter, date, time, thread, file:line] message.
_LOG_RECORD = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ ]+:\d+\] ")
_SEVERITIES = "IWEF"
_ABSL_HEADER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def log_level():
    """`TF_CPP_MIN_LOG_LEVEL` as an int (0 info ... 3 fatal only), or None when it is not one."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return None


def below_level(text, level, others=True):
    """`text` without TensorFlow's log records below `level` (0 info, 1 warning, 2 error, 3 fatal),
    their continuation lines and absl's header; other lines are kept when `others`."""
    kept, dropping = [], not others
    for line in text.splitlines(keepends=True):
        record = _LOG_RECORD.match(line)
        if record:
            dropping = _SEVERITIES.index(record.group(1)) < level
        elif line.rstrip("\n") == _ABSL_HEADER:
            dropping = True
            continue
        elif not others:
            dropping = True
        if not dropping:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def native_stderr(keep):
    """Within the block, native writes to file descriptor 2 are captured; on leaving it (also
    by an exception), `keep(text)` of them is written back to it. Python's `sys.stderr` writes
    through meanwhile."""
    sys.stderr.flush()
    python_stderr = sys.stderr
    try:
        direct = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced (a test's capture): not fd 2
        direct = False
    saved = os.dup(2)
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, saved)
        if direct:  # Python's writes go to the real stderr, not into the capture
            through = stack.enter_context(open(saved, "w", buffering=1, closefd=False, errors="backslashreplace"))
            sys.stderr = through
        captured = stack.enter_context(tempfile.TemporaryFile())
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            sys.stderr = python_stderr
            captured.seek(0)
            kept = keep(captured.read().decode(errors="replace"))
            if kept:
                os.write(2, kept.encode())  # where native code wrote it


def image_decoding():
    """`native_stderr` for reading image files: TensorFlow records at or above the log level
    only; libjpeg's and libpng's own lines are left out (an unreadable file is reported by the
    command, `--skip-bad-images`)."""
    level = log_level()
    if level is None or level == 0:
        return contextlib.nullcontext()
    return native_stderr(lambda text: below_level(text, level, others=False))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `tensorflow` inside `native_stderr`, less the records below the log level."""

    def __init__(self, level):
        self.level = level
        self.loader = None

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.loader is not None:
            return None
        sys.meta_path.remove(self)  # the real finders answer from here on
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.loader
        with native_stderr(lambda text: below_level(text, self.level)):
            self.loader.exec_module(module)


def quiet_tensorflow():
    """`TF_CPP_MIN_LOG_LEVEL` "2" (errors only) unless the user set it, also for what
    TensorFlow's libraries print while they load (`_QuietTensorFlowImport`). Imports nothing:
    a command that never imports TensorFlow stays as fast."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    level = log_level()
    if level and "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlowImport(level))


def plain_warnings():
    """Python warnings on the command line as one `warning: ...` line each, without the
    `file:line: UserWarning:` prefix and the source line that mean nothing to a user."""
    import warnings

    def one_line(message, category, filename, lineno, line=None):
        return f"warning: {message}\n"

    warnings.formatwarning = one_line
