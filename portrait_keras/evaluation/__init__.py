"""Evaluation of a trained model on the query/gallery and test splits (paper §4.3).

    evaluator.py   evaluate(model, annotations): Macro and micro mAP/CMC, mINP, Macro F1, PAR
                   metrics, PIQ; schema checks; test-time flip
    tables.py      the metrics grouped into sections for the printed table and the report
    baselines.py   the pixel / majority baseline every score should beat
    zero_shot.py   zero_shot_evaluate(clip_model, tokenizer, annotations): CLIP's zero-shot row

`evaluate` and `zero_shot_evaluate` need no TensorFlow until they run.
"""

from portrait_keras.evaluation.evaluator import SchemaMismatchError, evaluate
from portrait_keras.evaluation.tables import format_table
from portrait_keras.evaluation.zero_shot import zero_shot_evaluate

__all__ = ["SchemaMismatchError", "evaluate", "format_table", "zero_shot_evaluate"]
