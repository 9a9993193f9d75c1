"""Tasks, aspects and class lists of Portrait Interpretation.

The paper (§3) groups eight sub-tasks into three aspects:

- appearance: ``id`` (re-identification), ``gender``, ``age``, ``physique``, ``height``;
- posture: ``body``, ``arm``;
- emotion: ``expression`` (multi-label over the 7 basic expressions).

The paper's own label lists exist only as pictures (its Figure 2), so the default class
lists below are our choice for Portrait250K-style film stills, ordered from one end of
each scale to the other. A dataset brings its own lists in a ``schema.json``
(`Schema.save` / `Schema.load`); everything downstream reads class lists from the schema.

Default classes:

| task       | classes                                                        |
|------------|----------------------------------------------------------------|
| gender     | female, male                                                   |
| age        | child, teenager, young_adult, middle_aged, elderly             |
| physique   | thin, medium, heavy                                            |
| height     | short, medium, tall                                            |
| body       | standing, walking, sitting, squatting, lying                   |
| arm        | arms_down, one_arm_raised, both_arms_raised, arms_crossed, hands_on_hips |
| expression | angry, disgust, fear, happy, sad, surprise, neutral (multi-label) |
"""

import dataclasses
import json
import os

APPEARANCE = "appearance"
POSTURE = "posture"
EMOTION = "emotion"
ASPECTS = (APPEARANCE, POSTURE, EMOTION)

# Task kinds.
IDENTITY = "identity"  # integer id, -1 = unknown; classes are the training ids.
SINGLE = "single"  # one class name per image, empty = unknown.
MULTI = "multi"  # a set of class names per image, empty = unknown.
KINDS = (IDENTITY, SINGLE, MULTI)

BASIC_EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# How an image with a person `mask` (CSV column) shows its background (paper 002 §6.3):
# as it is, in its mean colour, or blurred.
BACKGROUNDS = ("keep", "mean", "blur")
TASK_KEYS = ("name", "aspect", "kind", "classes")


class SchemaError(ValueError):
    """A schema file that cannot be read: not UTF-8, not JSON, or not a valid schema.

    The message is `PATH: invalid schema: what is wrong`.
    """


@dataclasses.dataclass(frozen=True)
class Task:
    """One sub-task of portrait interpretation.

    Args:
        name: str. Column name in the annotation table, e.g. `"gender"`.
        aspect: str. One of `"appearance"`, `"posture"`, `"emotion"`.
        kind: str. `"identity"` (re-id), `"single"` (one label) or `"multi"`
            (multi-label).
        classes: tuple of str. Class names; empty for the identity task, whose
            classes are the training ids of a dataset.
    """

    name: str
    aspect: str
    kind: str
    classes: tuple = ()

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"Task name must be a non-empty string. Received: name={self.name!r}")
        if self.aspect not in ASPECTS:
            raise ValueError(f"Task {self.name!r}: aspect must be one of {ASPECTS}. Received: aspect={self.aspect!r}")
        if self.kind not in KINDS:
            raise ValueError(f"Task {self.name!r}: kind must be one of {KINDS}. Received: kind={self.kind!r}")
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.kind == IDENTITY:
            if self.classes:
                raise ValueError(
                    f"Task {self.name!r}: an identity task takes no class list (its classes "
                    f"are the training ids). Received: classes={self.classes!r}"
                )
            return
        if len(self.classes) < 2:
            raise ValueError(f"Task {self.name!r}: needs at least 2 classes. Received: classes={self.classes!r}")
        for c in self.classes:
            if not isinstance(c, str) or not c or c != c.strip() or ";" in c:
                raise ValueError(
                    f"Task {self.name!r}: class names must be non-empty strings without "
                    f"';' or surrounding spaces. Received: {c!r}"
                )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"Task {self.name!r}: duplicate class names. Received: classes={self.classes!r}")

    @property
    def num_classes(self):
        """Number of classes; 0 for the identity task (known only from data)."""
        return len(self.classes)

    def index(self, class_name):
        """Index of `class_name`; `ValueError` naming the allowed values otherwise."""
        try:
            return self.classes.index(class_name)
        except ValueError:
            raise ValueError(
                f"Unknown class {class_name!r} for task {self.name!r}. Allowed: {', '.join(self.classes)}"
            ) from None


def _default_tasks():
    return (
        Task("id", APPEARANCE, IDENTITY),
        Task("gender", APPEARANCE, SINGLE, ("female", "male")),
        Task("age", APPEARANCE, SINGLE, ("child", "teenager", "young_adult", "middle_aged", "elderly")),
        Task("physique", APPEARANCE, SINGLE, ("thin", "medium", "heavy")),
        Task("height", APPEARANCE, SINGLE, ("short", "medium", "tall")),
        Task("body", POSTURE, SINGLE, ("standing", "walking", "sitting", "squatting", "lying")),
        Task(
            "arm",
            POSTURE,
            SINGLE,
            ("arms_down", "one_arm_raised", "both_arms_raised", "arms_crossed", "hands_on_hips"),
        ),
        Task("expression", EMOTION, MULTI, BASIC_EXPRESSIONS),
    )


@dataclasses.dataclass(frozen=True)
class Schema:
    """The tasks a dataset is labelled with, in a fixed order.

    Exactly one task may be of kind `"identity"`; every aspect that has tasks is
    scored by PIQ (paper eq. 2).

    Example:
    >>> schema = default_schema()
    >>> schema.task("age").index("elderly")
    4
    >>> [t.name for t in schema.aspect_tasks("posture")]
    ['body', 'arm']
    """

    tasks: tuple

    def __post_init__(self):
        tasks = tuple(self.tasks)
        object.__setattr__(self, "tasks", tasks)
        if not tasks:
            raise ValueError("A schema needs at least one task. Received: tasks=()")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"Duplicate task names. Received: {names}")
        reserved = {"path", "split", "source", "frame", "camera", "group"}
        clash = reserved.intersection(names)
        if clash:
            raise ValueError(f"Task names {sorted(clash)} clash with annotation columns {sorted(reserved)}")
        ids = [t.name for t in tasks if t.kind == IDENTITY]
        if len(ids) > 1:
            raise ValueError(f"At most one identity task. Received: {ids}")

    @property
    def names(self):
        """Task names in schema order."""
        return tuple(t.name for t in self.tasks)

    @property
    def identity_task(self):
        """The re-id task, or None when the dataset has no identities."""
        return next((t for t in self.tasks if t.kind == IDENTITY), None)

    @property
    def classification_tasks(self):
        """Tasks with a class list (single- and multi-label), in schema order."""
        return tuple(t for t in self.tasks if t.kind != IDENTITY)

    def task(self, name):
        """The task called `name`; `ValueError` naming the allowed tasks otherwise."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise ValueError(f"Unknown task {name!r}. Allowed: {', '.join(self.names)}")

    def aspect_tasks(self, aspect):
        """Tasks of one aspect, in schema order."""
        if aspect not in ASPECTS:
            raise ValueError(f"Unknown aspect {aspect!r}. Allowed: {', '.join(ASPECTS)}")
        return tuple(t for t in self.tasks if t.aspect == aspect)

    def subset(self, names):
        """A schema of only the tasks `names` (order kept), e.g. for single-task models."""
        wanted = [self.task(n).name for n in names]
        return Schema(tuple(t for t in self.tasks if t.name in wanted))

    def to_dict(self):
        return {
            "tasks": [
                {"name": t.name, "aspect": t.aspect, "kind": t.kind, "classes": list(t.classes)} for t in self.tasks
            ]
        }

    @classmethod
    def from_dict(cls, data):
        """The schema of `to_dict()`'s form; `ValueError` naming the task and key otherwise."""
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
            raise ValueError(f"A schema is a dict with a 'tasks' list. Received: {data!r:.200}")
        tasks = []
        for i, t in enumerate(data["tasks"]):
            if not isinstance(t, dict):
                raise ValueError(
                    f"Schema task #{i}: a task is a dict with keys {list(TASK_KEYS)}. Received: {t!r:.200}"
                )
            unknown = set(t) - set(TASK_KEYS)
            if unknown:
                raise ValueError(f"Schema task #{i}: unknown keys {sorted(unknown)}")
            missing = [key for key in TASK_KEYS[:3] if key not in t]
            if missing:
                raise ValueError(f"Schema task #{i}: missing keys {missing}")
            classes = t.get("classes", [])
            # A string is a sequence too: "abc" must not become the classes a, b, c.
            if not isinstance(classes, list):
                raise ValueError(f"Schema task #{i}: 'classes' must be a list. Received: {classes!r:.200}")
            tasks.append(Task(t["name"], t["aspect"], t["kind"], tuple(classes)))
        return cls(tuple(tasks))

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path):
        """The schema saved in the JSON file `path` (by `save`).

        Raises:
            SchemaError: the file is not UTF-8, not JSON or not a valid schema; the message
                is `PATH: invalid schema: what is wrong`.
        """
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_json(f.read())
        # ValueError covers UnicodeDecodeError and json.JSONDecodeError; RecursionError is
        # json's answer to brackets nested too deep. KeyError and TypeError are a safety net:
        # from_dict checks the keys and types itself.
        except (ValueError, RecursionError, KeyError, TypeError) as e:
            raise SchemaError(f"{os.fspath(path)}: invalid schema: {e}") from e


def default_schema():
    """The Portrait250K-style schema with the default class lists (module docstring)."""
    return Schema(_default_tasks())
