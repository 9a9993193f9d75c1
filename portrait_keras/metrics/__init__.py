"""Metrics of portrait interpretation: functions of numpy arrays (paper §4.3)."""

from portrait_keras.metrics.classification import balanced_accuracy, macro_f1, par_metrics
from portrait_keras.metrics.long_tail import lts
from portrait_keras.metrics.quotient import piq
from portrait_keras.metrics.reid import average_reid, evaluate_reid, evaluate_reid_reference, reid_query_scores
from portrait_keras.metrics.rerank import rerank_dense

__all__ = [
    "average_reid",
    "balanced_accuracy",
    "evaluate_reid",
    "evaluate_reid_reference",
    "lts",
    "macro_f1",
    "par_metrics",
    "piq",
    "reid_query_scores",
    "rerank_dense",
]
