"""Data: annotation tables, the SynthPortrait generator, the tf.data input pipeline.

`read_annotations` needs no TensorFlow; `generate` and `default_dataset` (SynthPortrait)
and `make_dataset` and `split_labels` (TensorFlow) are imported on first use.
"""

from portrait_keras.data.annotations import AnnotationError, Annotations, read_annotations

__all__ = [
    "AnnotationError",
    "Annotations",
    "default_dataset",
    "generate",
    "make_dataset",
    "read_annotations",
    "split_labels",
]
# Lazy: TensorFlow is heavy, and `portrait-keras synth` must not find
# its module already imported by this package.
_LAZY = {
    "generate": "synthportrait",
    "default_dataset": "synthportrait",
    "make_dataset": "pipeline",
    "split_labels": "pipeline",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
