"""portrait_keras: Portrait Interpretation in Keras 3.

One model perceives a person image in three aspects: Appearance (re-identification,
gender, age, physique, height), Posture (body, arm) and Emotion (multi-label facial
expression), following "Portrait Interpretation and a Benchmark" (Portrait250K).

Importing the package registers every serializable class (layers, `PortraitModel`, losses,
schedules) with Keras, so `keras.models.load_model("model.keras")` works in safe mode after
`import portrait_keras`. Keras itself (and so TensorFlow) is not imported here: the classes
register when Keras is first imported, or at once when it already is.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

from portrait_keras.evaluation.evaluator import evaluate  # noqa: E402
from portrait_keras.schema import Schema, SchemaError, Task, default_schema  # noqa: E402

# The rest load Keras/TensorFlow, so they are imported on first use.
_LAZY = {
    "read_annotations": "portrait_keras.data",
    "make_dataset": "portrait_keras.data",
    "PortraitModel": "portrait_keras.models",
    "build_portrait_model": "portrait_keras.models",
    "PortraitTrainer": "portrait_keras.training",
    "PIQCallback": "portrait_keras.training",
    "train": "portrait_keras.training",
    "load_model": "portrait_keras.serving.export",
    "load_predictor": "portrait_keras.serving.predictor",
}

__all__ = ["Schema", "SchemaError", "Task", "__version__", "default_schema", "evaluate", *_LAZY]

# Modules whose import registers a serializable class (keras.saving.register_keras_serializable).
SERIALIZABLE_MODULES = ("portrait_keras.models", "portrait_keras.losses", "portrait_keras.training.schedules")


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register_serializables():
    for module in SERIALIZABLE_MODULES:
        importlib.import_module(module)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when `keras` is imported, runs `_register_serializables` right after."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        exec_keras = spec.loader.exec_module

        def exec_module(module):
            exec_keras(module)
            _register_serializables()

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_serializables()
elif not any(isinstance(f, _RegisterAfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
