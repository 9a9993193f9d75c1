"""Which tasks a run learns: those of `model.tasks`, or every task its data labels (no Keras here:
the command line calls it before TensorFlow starts)."""

import sys

from portrait_keras.errors import InputError


def trained_tasks(config, annotations, note=True):
    """The names of the tasks the model learns: `model.tasks`, or (when null) every task of the
    schema with at least one label in the train split. A head that never saw a label would
    predict noise and take Feature Space Split dims, so such a task is left out, with a note.

    `note`: print the note naming the tasks left out (stderr).

    Raises: InputError when a task named in `model.tasks` has no train label, or none has.
    """
    train = annotations.labels("train")
    labelled = [t.name for t in annotations.schema.tasks if bool((train[t.name] >= 0).any())]
    if config.model.tasks is not None:
        empty = [n for n in config.model.tasks if n not in labelled]
        if empty:
            raise InputError(
                f"model.tasks: {', '.join(empty)} has no label in the train split of {annotations.csv_path}; "
                f"tasks with labels: {', '.join(labelled) or 'none'}"
            )
        return tuple(config.model.tasks)
    if not labelled:
        raise InputError(f"{annotations.csv_path}: no task has a label in the train split")
    left_out = [t.name for t in annotations.schema.tasks if t.name not in labelled]
    if left_out and note:
        print(
            f"note: {', '.join(left_out)}: no label in the train split, left out of the model "
            f"(it learns {', '.join(labelled)})",
            file=sys.stderr,
            flush=True,
        )
    return tuple(labelled)
