"""Data: annotation tables and the SynthPortrait generator."""

from portrait_keras.data.annotations import AnnotationError, Annotations, read_annotations
from portrait_keras.data.synthetic import default_dataset, generate

__all__ = ["AnnotationError", "Annotations", "default_dataset", "generate", "read_annotations"]
