"""`portrait-keras`: the command list, each command's help, unknown commands, the scripts beside it."""

import os
import subprocess
import sys

import pytest

from portrait_keras.cli import COMMANDS, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, summary) in COMMANDS.items():
        assert f"  {name}" in out and summary in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_help_is_short_names_its_prog_and_loads_no_tensorflow(name):
    code = (
        "import sys; from portrait_keras.cli import main\n"
        "try:\n    main([sys.argv[1], '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print('TF', 'tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"portrait-keras {name}" in result.stdout
    if name != "convert-hrnet":  # it builds the HRNet to list its weights
        assert "TF False" in result.stdout
    assert len(result.stdout.splitlines()) < 60


def test_unknown_command_is_one_error_line_with_the_nearest_name(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'trian'. Did you mean 'train'?") and len(err.splitlines()) == 1
    assert main([]) == 2


def test_console_script_and_module_and_scripts_reach_the_same_commands():
    for command in (["portrait-keras", "--help"], [sys.executable, "-m", "portrait_keras", "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "commands:" in result.stdout, command
    for script, prog in [
        ("experiments/run.py", "train"),
        ("data_prep/dedup.py", "dedup"),
        ("data_prep/import_dataset.py", "import"),
        ("data_prep/validate.py", "validate"),
    ]:
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0 and f"portrait-keras {prog}" in result.stdout, script


def test_tensorflow_log_records_below_the_level_are_left_out():
    from portrait_keras.commands._quiet import below_level

    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796604414.694728    9586 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1796604414.777735    9586 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
        "To enable the following instructions: AVX2 FMA, rebuild TensorFlow.\n"
        "W0000 00:00:1796604458.942237    5299 local_rendezvous.cc:412] Local rendezvous is aborting\n"
        "E0000 00:00:1796604734.787990   13607 util.cc:131] oneDNN supports DT_UINT8 only with AVX-512.\n"
        "something else entirely\n"
    )
    lines = text.splitlines(keepends=True)
    assert below_level(text, 2) == lines[5] + lines[6]
    assert below_level(text, 1) == "".join(lines[4:])
    assert below_level(text, 3) == ""  # the last line continues the error record
    assert below_level("plain output\n", 3) == "plain output\n"
    # While images are read: TensorFlow's records at the level only, not libjpeg's own lines.
    libjpeg = "Improper call to JPEG library in state 201\n"
    assert below_level(libjpeg + text + libjpeg, 2, others=False) == lines[5]


def test_images_that_decode_fine_print_nothing_on_stderr(smoke_run_dir, tmp_path):
    """TIFF, animated WebP and GIF (first frame), 16-bit PNG, CMYK JPEG, palette PNG with
    transparency, through the command line as a user runs it, from a .keras and a SavedModel;
    a truncated JPEG shows only as skipped."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (rng.random((60, 30, 3)) * 255).astype(np.uint8)
    folder = tmp_path / "fine"
    folder.mkdir()
    Image.fromarray(pixels).save(folder / "a.tiff")
    frames = [Image.fromarray(np.roll(pixels, i, axis=0)) for i in range(3)]
    for name in ("anim.webp", "anim.gif"):
        frames[0].save(folder / name, save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(folder / "gray16.png")
    Image.fromarray(pixels).convert("CMYK").save(folder / "cmyk.jpg")
    palette = Image.fromarray(pixels).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.save(folder / "palette.png", transparency=0)
    with Image.open(folder / "palette.png") as image:
        assert image.mode == "P" and "transparency" in image.info
    # libjpeg complains about a truncated JPEG on stderr itself: only the skipped line shows.
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(pixels).save(bad / "whole.jpg")
    (bad / "truncated.jpg").write_bytes((bad / "whole.jpg").read_bytes()[:300])
    code = (
        "import sys; from portrait_keras.cli import main\n"
        "for model in sys.argv[1:3]:\n"
        "    assert main(['interpret', model, sys.argv[3], '--json']) == 0\n"
        "print('---', file=sys.stderr, flush=True)\n"
        "assert main(['interpret', sys.argv[1], sys.argv[4], '--json', '--skip-bad-images']) == 0\n"
    )
    models = [str(smoke_run_dir / "model.keras"), str(smoke_run_dir / "saved_model")]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    result = subprocess.run(
        [sys.executable, "-c", code, *models, str(folder), str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    good, bad_run = result.stderr.split("---\n")
    assert good == ""
    reason = "corrupt or truncated JPEG data (Invalid JPEG data or crop window.)"
    assert bad_run == f"skipped 1 unreadable image: {bad / 'truncated.jpg'} ({reason})\n"
    described = [json.loads("{" + part) for part in ("\n" + result.stdout).split("\n{")[1:]]
    assert [len(d["images"]) for d in described] == [6, 6, 1]


def test_command_line_warnings_are_one_plain_line():
    import warnings

    from portrait_keras.commands import _quiet

    before = warnings.formatwarning
    try:
        _quiet.plain_warnings()
        text = warnings.formatwarning("data.csv: no 'group' column", UserWarning, "/x/evaluator.py", 148)
    finally:
        warnings.formatwarning = before
    assert text == "warning: data.csv: no 'group' column\n"
