"""Captions from labels: the text a person's labels say, for text search and CLIP training.

`caption` writes one English phrase per image from its labels, aspect by aspect (paper §3):
appearance as adjectives before the gender ("a thin tall young adult female"; "person" when
the gender is unknown), posture after a comma ("standing with arms crossed"), emotion as
"looking happy" ("looking happy and surprised" for two expressions). Unknown labels are left
out, the identity is never said. Class names read as their phrase in `CLASS_PHRASES` (default
schema: "middle-aged", "medium-build", "disgusted", ...), else with underscores as spaces, so
another schema's classes are captioned too. "a" becomes "an" before a vowel.

Example: "a thin tall young adult female, standing with arms crossed, looking happy".
"""

import numpy as np

from portrait_keras.schema import APPEARANCE, EMOTION, IDENTITY, MULTI, POSTURE

# Phrases of the default schema's classes where the class name does not read well in a caption.
CLASS_PHRASES = {
    "age": {"teenager": "teenage", "middle_aged": "middle-aged"},
    "physique": {"medium": "medium-build"},
    "height": {"medium": "medium-height"},
    "arm": {
        "arms_down": "with arms down",
        "one_arm_raised": "with one arm raised",
        "both_arms_raised": "with both arms raised",
        "arms_crossed": "with arms crossed",
        "hands_on_hips": "with hands on hips",
    },
    "expression": {"disgust": "disgusted", "fear": "afraid", "surprise": "surprised"},
}
# Adjective order before the noun (size and shape before age, as English has it); the
# appearance tasks not named here follow in schema order.
ADJECTIVE_ORDER = ("physique", "height", "age")
NOUN_TASK = "gender"
VOWELS = "aeiou"


def class_phrase(task, class_name):
    """How a class of `task` reads in a caption (`CLASS_PHRASES`, else underscores as spaces)."""
    return CLASS_PHRASES.get(task.name, {}).get(class_name, class_name.replace("_", " "))


def known_classes(task, label):
    """The class names a label holds: `[]` when unknown.

    Args:
        task: `schema.Task` with classes.
        label: the label as `Annotations.labels` encodes it (single: class index, `-1` unknown;
            multi: multi-hot row, all `-1` unknown) or as the CSV writes it (a class name,
            `;`-separated names for multi-label, `""` unknown).

    Returns:
        list of str, in class order for multi-hot rows.
    """
    if label is None or (isinstance(label, float) and np.isnan(label)):
        return []
    if isinstance(label, str):
        names = [n.strip() for n in label.split(";")] if task.kind == MULTI else [label.strip()]
        names = [n for n in names if n]
        for n in names:
            task.index(n)  # a ValueError naming the allowed classes
        return names
    values = np.asarray(label)
    if task.kind == MULTI:
        if values.shape != (task.num_classes,):
            raise ValueError(
                f"Task {task.name!r}: a multi-label row has {task.num_classes} entries. Received: {label!r}"
            )
        return [task.classes[i] for i in np.flatnonzero(values == 1)]
    index = int(values)
    if index == -1:
        return []
    if not 0 <= index < task.num_classes:
        raise ValueError(f"Task {task.name!r}: class index in [0, {task.num_classes}) or -1. Received: {label!r}")
    return [task.classes[index]]


def caption(labels_row, schema):
    """The caption of one image's labels (module docstring).

    Args:
        labels_row: mapping task name → label (`known_classes` says which forms), e.g. a row of
            `Annotations.table` or `{task: labels[task][i]}` of `Annotations.labels`. Tasks
            missing from it are unknown.
        schema: `Schema`.

    Returns:
        str.

    Example:
    >>> from portrait_keras.schema import default_schema
    >>> row = {"gender": "female", "age": "young_adult", "physique": "thin", "height": "tall",
    ...        "body": "standing", "arm": "arms_crossed", "expression": "happy"}
    >>> caption(row, default_schema())
    'a thin tall young adult female, standing with arms crossed, looking happy'
    >>> caption({"age": 4, "expression": [0, 1, 0, 0, 0, 1, 0]}, default_schema())
    'an elderly person, looking disgusted and surprised'
    """
    phrases = {}
    for task in schema.tasks:
        if task.kind == IDENTITY or task.name not in labels_row:
            continue
        names = known_classes(task, labels_row[task.name])
        if names:
            phrases[task.name] = " and ".join(class_phrase(task, n) for n in names)
    appearance = [t.name for t in schema.aspect_tasks(APPEARANCE) if t.name in phrases and t.name != NOUN_TASK]
    appearance.sort(key=lambda n: ADJECTIVE_ORDER.index(n) if n in ADJECTIVE_ORDER else len(ADJECTIVE_ORDER))
    words = [phrases[n] for n in appearance] + [phrases.get(NOUN_TASK, "person")]
    article = "an" if words[0][:1] in VOWELS else "a"
    text = f"{article} {' '.join(words)}"
    posture = [phrases[t.name] for t in schema.aspect_tasks(POSTURE) if t.name in phrases]
    if posture:
        text += ", " + " ".join(posture)
    emotion = [phrases[t.name] for t in schema.aspect_tasks(EMOTION) if t.name in phrases]
    if emotion:
        text += ", looking " + " and ".join(emotion)
    return text


def split_captions(annotations, split):
    """The caption of every image of a split, in file order (list of str)."""
    labels = annotations.labels(split)
    return [
        caption({name: values[i] for name, values in labels.items()}, annotations.schema)
        for i in range(annotations.num_images(split))
    ]
