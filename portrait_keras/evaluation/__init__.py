"""Evaluation of a trained model on the query/gallery and test splits (paper §4.3).

    evaluator.py   evaluate(model, annotations): Macro mAP/CMC, Macro F1, PIQ; schema checks
    baselines.py   the pixel / majority baseline every score should beat

`evaluate` needs no TensorFlow until it runs.
"""

from portrait_keras.evaluation.evaluator import SchemaMismatchError, evaluate, format_table

__all__ = ["SchemaMismatchError", "evaluate", "format_table"]
