"""SynthPortrait with structured missing labels: several "source" datasets, each labelled for
its own subset of tasks (paper 004 §4.1: AFLW, CelebA and ExpW each annotate different
attributes, and their union is trained as one dataset).

`portrait-keras synth OUT --sources 3` draws the same images and plan as without it, assigns
each identity (and each unknown-id run) to one of three sources, and blanks in
`annotations.csv` every label its source does not annotate (besides the usual ~10 % of
random gaps). The hidden truth, every label of every image, is written beside it as
`truth.csv` (same columns, no gaps), for measuring filled labels and test predictions
(`benchmarks/ap_demo.py`). Both tables carry a `dataset` column naming the source.

| source       | labels (besides the identity)        | like      |
|--------------|--------------------------------------|-----------|
| `attributes` | gender, age, physique, height        | CelebA    |
| `posture`    | body, arm, gender                    | AFLW      |
| `expression` | expression, age                      | ExpW      |

So physique, height, body, arm and expression are annotated on about a third of the
images, gender and age on about two thirds; every task meets every other in some source
except the posture-expression pairs.
"""

import numpy as np

from portrait_keras import schema as schema_lib
from portrait_keras.data.synthportrait.plan import ATTRIBUTE_TASKS, COLUMNS, SCENE_TASKS

SOURCE_TASKS = {
    "attributes": ("gender", "age", "physique", "height"),
    "posture": ("body", "arm", "gender"),
    "expression": ("expression", "age"),
}
SOURCE_COLUMN = "dataset"
TRUTH_FILE = "truth.csv"
COLUMNS_WITH_SOURCE = COLUMNS + (SOURCE_COLUMN,)
ALLOWED_SOURCES = (0, len(SOURCE_TASKS))


def check_sources(sources):
    """`sources` is 0 (one fully labelled dataset) or 3 (`SOURCE_TASKS`)."""
    if sources not in ALLOWED_SOURCES:
        raise ValueError(
            f"`sources` must be one of {', '.join(map(str, ALLOWED_SOURCES))}. Received: sources={sources!r}"
        )


def source_rows(runs, seed):
    """The annotation rows and the truth rows of `runs` split into `SOURCE_TASKS`.

    Args:
        runs: list of `plan.Run` (`plan_runs`).
        seed: int. Draws the source of each identity (and of each unknown-id run); the
            plan's own draws are untouched, so the images are those of the same seed
            without sources.

    Returns:
        `(rows, truth)`: two lists of dicts (`COLUMNS_WITH_SOURCE` → str), in file order;
        `rows` keep only the labels of their source (and the plan's random gaps), `truth`
        holds every label.
    """
    rng = np.random.default_rng([seed, 1])
    names = list(SOURCE_TASKS)
    people = sorted({run.person for run in runs if run.person >= 0})
    by_person = dict(zip(people, rng.integers(len(names), size=len(people)).tolist()))
    per_run = rng.integers(len(names), size=len(runs)).tolist()
    rows, truth = [], []
    for run, drawn in zip(runs, per_run):
        source = names[by_person[run.person] if run.person >= 0 else drawn]
        full = dict(run.attrs, body=run.body, arm=run.arm)
        full["expression"] = ";".join(sorted(run.expression, key=schema_lib.BASIC_EXPRESSIONS.index))
        for row in run.rows:
            kept = {t: (row[t] if t in SOURCE_TASKS[source] else "") for t in ATTRIBUTE_TASKS + SCENE_TASKS}
            rows.append({**row, **kept, SOURCE_COLUMN: source})
            truth.append({**row, **full, SOURCE_COLUMN: source})
    return rows, truth
