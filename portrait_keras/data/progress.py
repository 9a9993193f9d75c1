"""`CountProgress`: a short progress line for long data loops (SynthPortrait, pHash).

The conventions of the training progress (`portrait_keras.training.progress.ProgressPrinter`),
without Keras: on a terminal one line `LABEL: done/total UNIT  rate UNIT/s  ETA h:mm:ss`
rewritten in place (at most every `refresh` seconds); into a file or a pipe the same line as
plain text at each quarter of the work; at the end one line with the count, time and rate;
nothing at all when `quiet`.
"""

import shutil
import sys
import time


def clock(seconds):
    """`h:mm:ss` of a duration in seconds."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class CountProgress:
    """Counts work done towards a known total and prints it (module docstring).

    Args:
        total: int. Units of work in all (>= 0).
        label: str. What is counted for, e.g. `"SynthPortrait"`.
        unit: str. The unit's plural name. Defaults to `"images"`.
        stream: file or None. Where to print. Defaults to `sys.stderr` (read when printing).
        quiet: bool. Print nothing. Defaults to False.
        refresh: float. Seconds between two rewrites of the line on a terminal. Defaults to 0.5.

    Example:
    >>> with CountProgress(3, "demo", stream=io.StringIO()) as progress:  # doctest: +SKIP
    ...     for _ in range(3):
    ...         progress.update()
    """

    def __init__(self, total, label, unit="images", stream=None, quiet=False, refresh=0.5):
        if int(total) < 0:
            raise ValueError(f"total must be >= 0. Received: total={total}")
        self.total = int(total)
        self.label = str(label)
        self.unit = unit
        self.stream = stream
        self.quiet = bool(quiet)
        self.refresh = float(refresh)
        self.done = 0
        self._start = self._last = time.perf_counter()
        self._quarter = 0
        self._open_line = False

    @property
    def _out(self):
        return self.stream if self.stream is not None else sys.stderr

    @property
    def _tty(self):
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        self.close(finished=kind is None)

    def update(self, n=1):
        """Counts `n` more units done; prints the line when it is due."""
        self.done += int(n)
        if self.quiet or self.done >= self.total:
            return  # the end line follows
        now = time.perf_counter()
        if self._tty:
            if now - self._last < self.refresh:
                return
        else:
            quarter = 4 * self.done // max(self.total, 1)
            if quarter <= self._quarter:
                return
            self._quarter = quarter
        self._last = now
        self._write(self._line(now), in_place=self._tty)

    def close(self, finished=True):
        """Ends the line: the count, time and rate when `finished`, else only clears it."""
        if self.quiet:
            return
        if not finished:  # an error or Ctrl-C: its message starts on a clean line
            if self._open_line:
                width = max(shutil.get_terminal_size((100, 20)).columns - 1, 20)
                self._out.write("\r" + " " * width + "\r")
                self._out.flush()
                self._open_line = False
            return
        elapsed = time.perf_counter() - self._start
        rate = f" ({self.done / elapsed:.1f} {self.unit}/s)" if elapsed > 0 and self.done else ""
        self._write(f"{self.label}: {self.done} {self.unit} in {clock(elapsed)}{rate}")

    def _line(self, now):
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return f"{self.label}: {self.done}/{self.total} {self.unit}  {rate:.1f} {self.unit}/s  ETA {clock(left)}"

    def _write(self, text, in_place=False):
        self._open_line = write_line(self._out, self._tty, text, in_place, self._open_line)


def write_line(out, tty, text, in_place, open_line):
    """Writes one progress line to `out`: on a terminal (`tty`), cut to its width and, when
    `in_place`, rewritten over the open line; elsewhere a plain line. Returns whether a line
    is left open (to be cleared by the next line that is not in place)."""
    if tty:
        width = max(shutil.get_terminal_size((100, 20)).columns - 1, 20)
        text = text[:width]
        if in_place:
            out.write("\r" + text.ljust(width))
            out.flush()
            return True
        if open_line:
            out.write("\r" + " " * width + "\r")
    out.write(text + "\n")
    out.flush()
    return False
