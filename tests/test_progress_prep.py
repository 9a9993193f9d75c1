"""Progress of the data loops (SynthPortrait generation, pHash): plain lines at each quarter and
one end line when not on a terminal, one line rewritten in place on a terminal, nothing when quiet."""

import io
import re

import numpy as np
from PIL import Image

from portrait_keras.data.prep.phash import phash_images
from portrait_keras.data.progress import CountProgress
from portrait_keras.data.synthportrait import generate

LINE = re.compile(r"^demo: (\d+)/100 images  \d+\.\d images/s  ETA \d:\d\d:\d\d$")
END = re.compile(r"^(\w+): (\d+) images in \d:\d\d:\d\d( \(\d+\.\d images/s\))?$")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_not_a_terminal_gets_a_line_per_quarter_and_an_end_line():
    out = io.StringIO()
    with CountProgress(100, "demo", stream=out) as progress:
        for _ in range(100):
            progress.update()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert [int(LINE.match(line).group(1)) for line in lines[:-1]] == [25, 50, 75]
    assert END.match(lines[-1]).group(2) == "100"


def test_a_terminal_gets_one_line_rewritten_in_place():
    out = Terminal()
    with CountProgress(100, "demo", stream=out, refresh=0) as progress:
        for _ in range(100):
            progress.update()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") >= 99  # 99 rewrites, then the end line
    assert "demo: 99/100 images" in text and END.match(text.rsplit("\r", 1)[-1].strip())


def test_quiet_prints_nothing_and_an_error_leaves_no_end_line():
    out = io.StringIO()
    with CountProgress(10, "demo", stream=out, quiet=True) as progress:
        progress.update(10)
    assert out.getvalue() == ""
    out = Terminal()
    try:
        with CountProgress(10, "demo", stream=out, refresh=0) as progress:
            progress.update(3)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert "images in" not in out.getvalue() and out.getvalue().endswith("\r")  # the line is cleared


def test_synthportrait_and_phash_report_their_count_on_stderr(tmp_path, capsys):
    csv_path = generate(tmp_path / "synth", identities=4, images_per_identity=2, workers=1)
    count = len(csv_path.read_text().splitlines()) - 1
    err = capsys.readouterr().err.splitlines()
    assert END.match(err[-1]).groups()[:2] == ("SynthPortrait", str(count))

    for i in range(5):
        Image.fromarray(np.full((16, 16, 3), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
    paths = [f"{i}.png" for i in range(5)]
    phash_images(paths, tmp_path, workers=1)
    assert END.match(capsys.readouterr().err.splitlines()[-1]).groups()[:2] == ("pHash", "5")
    phash_images(paths, tmp_path, workers=1)  # all from the cache: nothing hashed, nothing said
    assert capsys.readouterr().err == ""
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "new.png")
    phash_images([*paths, "new.png"], tmp_path, workers=1, quiet=True)
    assert capsys.readouterr().err == ""
    generate(tmp_path / "quiet", identities=4, images_per_identity=2, workers=1, quiet=True)
    assert capsys.readouterr().err == ""
