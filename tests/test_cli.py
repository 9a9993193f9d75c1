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
