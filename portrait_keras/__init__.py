"""portrait_keras: Portrait Interpretation in Keras 3.

One model perceives a person image in three aspects: Appearance (re-identification,
gender, age, physique, height), Posture (body, arm) and Emotion (multi-label facial
expression), following "Portrait Interpretation and a Benchmark" (Portrait250K).
"""

__version__ = "0.1.0"

# `portrait_keras.evaluate(model, annotations)` is the function; `python -m portrait_keras.evaluate`
# runs the command-line module of the same name.
from portrait_keras.evaluation import evaluate  # noqa: E402,F401
from portrait_keras.schema import Schema, Task, default_schema  # noqa: E402,F401

# The rest load Keras/TensorFlow, so they are imported on first use.
_LAZY = {
    "read_annotations": "portrait_keras.data",
    "make_dataset": "portrait_keras.data",
    "build_portrait_model": "portrait_keras.models",
    "PortraitTrainer": "portrait_keras.trainer",
    "PIQCallback": "portrait_keras.callbacks",
    "train": "portrait_keras.training",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
