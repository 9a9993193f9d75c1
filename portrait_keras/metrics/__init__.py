"""Metrics of portrait interpretation: functions of numpy arrays (paper §4.3)."""

from portrait_keras.metrics.reid import evaluate_reid

__all__ = ["evaluate_reid"]
