"""portrait_keras: Portrait Interpretation in Keras 3.

One model perceives a person image in three aspects: Appearance (re-identification,
gender, age, physique, height), Posture (body, arm) and Emotion (multi-label facial
expression), following "Portrait Interpretation and a Benchmark" (Portrait250K).
"""

__version__ = "0.1.0"

from portrait_keras.schema import Schema, Task, default_schema  # noqa: E402,F401
