"""The lint rules that keep models loadable and backend-neutral (pyproject.toml, models|losses/ruff.toml)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ruff(source, filename):
    """`ruff check` of `source` as if it were the file `filename` (its folder's config applies)."""
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--stdin-filename", filename, "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "source",
    [
        "import tensorflow as tf\n\ntf.constant(1)\n",
        "from tensorflow import nn\n\nnn.relu(1)\n",
        "import jax\n\njax.numpy.ones(1)\n",
    ],
)
@pytest.mark.parametrize("folder", ["models", "losses"])
def test_backend_imports_are_refused_in_models_and_losses(source, folder):
    result = ruff(source, f"portrait_keras/{folder}/probe.py")
    assert result.returncode == 1 and "TID251" in result.stdout, result.stdout


def test_backend_imports_are_allowed_in_data_and_training():
    for folder in ("data", "training"):
        result = ruff("import tensorflow as tf\n\ntf.constant(1)\n", f"portrait_keras/{folder}/probe.py")
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "source",
    [
        "import keras\n\nkeras.layers.Lambda(abs)\n",
        "from keras.layers import Lambda\n\nLambda(abs)\n",
        "import pickle\n\npickle.dumps(1)\n",
    ],
)
@pytest.mark.parametrize(
    "where", ["portrait_keras/models/probe.py", "portrait_keras/serving/probe.py", "tests/probe.py"]
)
def test_lambda_and_pickle_are_refused_everywhere(source, where):
    result = ruff(source, where)
    assert result.returncode == 1 and "TID251" in result.stdout, result.stdout
