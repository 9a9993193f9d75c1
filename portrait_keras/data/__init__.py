"""Data: annotation tables (read and validate)."""

from portrait_keras.data.annotations import AnnotationError, Annotations, read_annotations

__all__ = ["AnnotationError", "Annotations", "read_annotations"]
