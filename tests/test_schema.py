import json

import pytest

from portrait_keras.schema import BASIC_EXPRESSIONS, Schema, SchemaError, Task, default_schema


def test_default_schema_groups_tasks_by_aspect():
    s = default_schema()
    assert [t.name for t in s.aspect_tasks("appearance")] == ["id", "gender", "age", "physique", "height"]
    assert [t.name for t in s.aspect_tasks("posture")] == ["body", "arm"]
    assert [t.name for t in s.aspect_tasks("emotion")] == ["expression"]
    assert s.task("expression").classes == BASIC_EXPRESSIONS
    assert s.task("expression").kind == "multi"
    assert s.identity_task.name == "id"
    assert "id" not in [t.name for t in s.classification_tasks]


def test_json_round_trip(tmp_path):
    s = default_schema()
    s.save(tmp_path / "schema.json")
    assert Schema.load(tmp_path / "schema.json") == s
    custom = Schema((Task("id", "appearance", "identity"), Task("hat", "appearance", "single", ("no", "yes"))))
    assert Schema.from_json(custom.to_json()) == custom


def test_unknown_task_and_class_name_the_allowed_values():
    s = default_schema()
    with pytest.raises(ValueError, match="Unknown task 'mood'.*gender"):
        s.task("mood")
    with pytest.raises(ValueError, match="Unknown class 'old' for task 'age'.*elderly"):
        s.task("age").index("old")
    assert s.task("age").index("elderly") == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="x", aspect="looks", kind="single", classes=("a", "b")), "aspect must be one of"),
        (dict(name="x", aspect="posture", kind="ordinal", classes=("a", "b")), "kind must be one of"),
        (dict(name="x", aspect="posture", kind="single", classes=("a",)), "at least 2 classes"),
        (dict(name="x", aspect="posture", kind="single", classes=("a", "a")), "duplicate class"),
        (dict(name="x", aspect="posture", kind="single", classes=("a", "b;c")), "without ';'"),
        (dict(name="x", aspect="appearance", kind="identity", classes=("a", "b")), "takes no class list"),
    ],
)
def test_invalid_tasks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Task(**kwargs)


def test_invalid_schemas(tmp_path):
    t = Task("hat", "appearance", "single", ("no", "yes"))
    with pytest.raises(ValueError, match="Duplicate task names"):
        Schema((t, t))
    with pytest.raises(ValueError, match="At most one identity task"):
        Schema((Task("id", "appearance", "identity"), Task("id2", "appearance", "identity")))
    with pytest.raises(ValueError, match="clash with annotation columns"):
        Schema((Task("split", "posture", "single", ("a", "b")),))
    bad = tmp_path / "schema.json"
    bad.write_text(json.dumps({"tasks": [{"name": "x", "aspect": "posture", "kind": "single", "colors": []}]}))
    with pytest.raises(ValueError, match="schema.json: invalid schema: .*unknown keys"):
        Schema.load(bad)


def task_json(**changes):
    task = {"name": "x", "aspect": "posture", "kind": "single", "classes": ["a", "b"]}
    task.update(changes)
    return json.dumps({"tasks": [task]}).encode()


@pytest.mark.parametrize(
    "data, words",
    [
        # Found by benchmarks/fuzz_annotations.py: each was a RecursionError, a
        # UnicodeDecodeError without the file name, a KeyError or TypeError message, or,
        # for a string of classes, no error at all.
        (b"[" * 100_000, "recursion"),
        (b'{"tasks": [\xff]}', "can't decode byte 0xff"),
        ('{"tasks": []}'.encode("utf-16"), "can't decode byte 0xff"),
        (json.dumps({"tasks": ["gender"]}).encode(), "Schema task #0: a task is a dict"),
        (json.dumps({"tasks": [{"name": "x", "aspect": "posture"}]}).encode(), "Schema task #0: missing keys ['kind']"),
        (task_json(classes="abc"), "'classes' must be a list. Received: 'abc'"),
        (task_json(classes=None), "'classes' must be a list"),
        (task_json(classes=[["a"], "b"]), "class names must be non-empty strings"),
        (task_json(classes=["a", "a"]), "duplicate class names"),
        (task_json(classes=[]), "at least 2 classes"),
        (task_json(kind="ordinal"), "kind must be one of"),
        (task_json(name=3), "name must be a non-empty string"),
        (b'{"tasks": [', "Expecting value"),
        (b"", "Expecting value"),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, bytes) else None,
)
def test_load_raises_one_schema_error_naming_the_file(tmp_path, data, words):
    path = tmp_path / "schema.json"
    path.write_bytes(data)
    with pytest.raises(SchemaError) as info:
        Schema.load(path)
    assert str(info.value).startswith(f"{path}: invalid schema: ") and words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_subset_keeps_schema_order():
    assert default_schema().subset(["arm", "gender"]).names == ("gender", "arm")
