"""Evaluation of a trained model on the query/gallery and test splits (paper §4.3).

    evaluator.py   evaluate(model, annotations): Macro and micro mAP/CMC, mINP, Macro F1, PAR
                   metrics, PIQ; schema checks; test-time flip
    tables.py      the metrics grouped into sections for the printed table and the report
    baselines.py   the pixel / majority baseline every score should beat

`evaluate` needs no TensorFlow until it runs.
"""

from portrait_keras.evaluation.evaluator import SchemaMismatchError, evaluate
from portrait_keras.evaluation.tables import format_table

__all__ = ["SchemaMismatchError", "evaluate", "format_table"]
