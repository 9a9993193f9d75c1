"""Fuzz of the annotation reader: random mutations of a valid annotations.csv and schema.json.

Every case must end in an `Annotations` table whose labels lie within the schema and agree
with the CSV cells, in an `AnnotationError`, or in a `SchemaError` naming the schema.json;
anything else (another exception, a broken invariant) is a crash.

    python benchmarks/fuzz_annotations.py [--cases 5000] [--seed 0] [--out fuzz_crashes]

Prints the number of cases by outcome. Exits 1 when a case crashed, after saving each such
case (annotations.csv, schema.json when the case has one, mutations.txt, traceback.txt) in
`--out/case_N`; `read_annotations(".../case_N/annotations.csv")` reproduces it (the images of
the valid table are written there too). Case N of a seed is the same on every run.
"""

import argparse
import collections
import csv
import io
import json
import os
import posixpath
import random
import shutil
import sys
import tempfile
import traceback

import numpy as np
from PIL import Image

from portrait_keras.data.annotations import AnnotationError, read_annotations
from portrait_keras.schema import IDENTITY, SINGLE, SchemaError, default_schema

# The valid table of tests/test_data_annotations.py (`HEADER`, `GOOD_ROWS`).
HEADER = "path,split,id,gender,age,physique,height,body,arm,expression,source,frame,camera,group"
ROWS = (
    "a.jpg,train,5,female,child,thin,short,standing,arms_down,happy,m1,10,1,0",
    "b.jpg,train,-1,,elderly,,tall,lying,arms_crossed,,m1,11,1,0",
    "c.jpg,train,9,male,,heavy,,sitting,,sad;angry,m2,,,",
    "d.jpg,query,7,male,teenager,medium,medium,walking,one_arm_raised,surprise,m3,3,2,4",
    "e.jpg,gallery,7,male,teenager,medium,medium,squatting,hands_on_hips,neutral,m3,4,3,4",
    "f.jpg,gallery,-1,female,young_adult,thin,short,standing,both_arms_raised,fear;disgust,m3,9,3,5",
)
OUTCOMES = ("table", "annotation error", "schema error")

# Cell values for the CSV reader, the label and integer parsers and the path checks.
ATOMS = (
    *("", " ", "  x ", "\t", '"', '""', '"a"', 'a"b', '"unclosed', 'x"', '"a""b"', ",", ",,", ";", ";;"),
    *("\n", "\r", "\r\n", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\ufeff", "\ue000", "\\"),
    *("-1", "-2", "0", "007", "+3", "1e3", "1.5", " 4", "4 ", "99999999999999999999", "-999999999999999999"),
    *("\u0663", "\uff11\uff12", "nan", "NaN", "None", "null", "True", "N/A", "#N/A", "Unnamed: 3"),
    *("a.jpg", "./a.jpg", "a.jpg/", "//a.jpg", "sub/../a.jpg", "../a.jpg", "/abs.jpg", "C:a.jpg", "\\a.jpg"),
    *(".", "..", "a.jpg\x00b", "\u00e9.jpg", "missing/a.jpg", "annotations.csv", "x" * 300 + "/a.jpg"),
    *("train", "query", "gallery", "TRAIN", "happy;sad", "happy;happy", " happy", "happy ;sad", "male"),
    *("caf\u00e9", "\u65e5\u672c", "\U0001f600", "\u0301", "\u202e", "a" * 5000),
)
# Folder and file names for the path column, which the reader looks up on disk.
PATH_PARTS = (
    *("a.jpg", "b.jpg", "sub", ".", "..", "", " ", "~", "*", "?", "C:", "\\", "\u00e9", "annotations.csv"),
    *("a.jpg\x00", "su\x00b", "x" * 256, "x" * 5000, "a.jpg\n", "\u202e", "\U0001f600", "%2e%2e", "con"),
)
HUGE = 140_000  # over csv.field_size_limit() (131072)


def make_case(rng, header=HEADER, rows=ROWS):
    """A random case: `(csv bytes, schema.json bytes or None, list of mutation names)`.

    Args:
        rng: `random.Random`.
        header: str. The valid table's header line.
        rows: sequence of str. Its rows (no quoting), one image each.
    """
    table = [header.split(",")] + [row.split(",") for row in rows]
    mutations = []
    for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
        mutation = rng.choice(_TABLE_MUTATIONS)
        mutation(rng, table)
        mutations.append(_name(mutation))
    text = _render(rng, table, mutations)
    for _ in range(rng.choice((0, 0, 0, 1, 2))):
        mutation = rng.choice(_TEXT_MUTATIONS)
        text = mutation(rng, text)
        mutations.append(_name(mutation))
    encoding = rng.choice(("utf-8",) * 9 + ("utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le", "utf-32"))
    if encoding != "utf-8":
        mutations.append(f"encode {encoding}")
    data = text.encode(encoding, errors="replace")
    for _ in range(rng.choice((0, 0, 0, 0, 1, 2))):
        mutation = rng.choice(_BYTE_MUTATIONS)
        data = mutation(rng, data)
        mutations.append(_name(mutation))
    schema, schema_mutations = _make_schema(rng, table[0])
    return data, schema, mutations + schema_mutations


def run_case(folder, data, schema):
    """Writes the case in `folder` (which holds the images) and reads it.

    Returns:
        One of `OUTCOMES`.

    Raises:
        AssertionError: a broken invariant (a label outside the schema, a line that does not
            exist, an error that does not name its file); any other exception is a crash too.
    """
    csv_path = os.path.join(folder, "annotations.csv")
    schema_path = os.path.join(folder, "schema.json")
    with open(csv_path, "wb") as f:
        f.write(data)
    if schema is None:
        if os.path.exists(schema_path):
            os.remove(schema_path)
    else:
        with open(schema_path, "wb") as f:
            f.write(schema)
    try:
        annotations = read_annotations(csv_path)
    except AnnotationError as e:
        _check_error(e, csv_path, data)
        return "annotation error"
    except SchemaError as e:
        assert schema is not None, f"SchemaError without a schema.json: {e}"
        assert str(e).startswith(f"{schema_path}: invalid schema: "), str(e)
        # Found by a check that says what is wrong, not by a KeyError or TypeError on the way.
        assert isinstance(e.__cause__, (ValueError, RecursionError)), repr(e.__cause__)
        return "schema error"
    _check_table(annotations, folder)
    return "table"


def write_images(folder, rows=ROWS):
    """A tiny JPEG for the path (first cell) of every row, in `folder`."""
    os.makedirs(folder, exist_ok=True)
    for row in rows:
        Image.new("RGB", (4, 8), (10, 20, 30)).save(os.path.join(folder, row.split(",")[0]))


def fuzz(folder, cases, seed, header=HEADER, rows=ROWS, on_crash=None):
    """Runs cases `0..cases-1` of `seed` in `folder`, which holds the images of `rows`.

    Args:
        folder: path-like. Where each case's annotations.csv and schema.json are written.
        cases: int. How many cases.
        seed: int. Case N of a seed is the same on every run.
        header, rows: the valid table the cases mutate (`HEADER`, `ROWS`).
        on_crash: callable `(index, data, schema, mutations, formatted traceback)` or None.

    Returns:
        `(collections.Counter of outcomes, list of crashing case indices)`.
    """
    folder = os.fspath(folder)
    counts, crashes = collections.Counter(), []
    for index in range(cases):
        data, schema, mutations = make_case(random.Random(f"{seed}:{index}"), header, rows)
        try:
            counts[run_case(folder, data, schema)] += 1
        except Exception:
            crashes.append(index)
            if on_crash is not None:
                on_crash(index, data, schema, mutations, traceback.format_exc())
    return counts, crashes


# === Invariants ===


def _check_error(error, csv_path, data):
    assert error.problems, "an AnnotationError without problems"
    assert str(error).startswith(f"{len(error.problems)} problem"), str(error)[:200]
    last = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n") + 1
    for line, column, value, message in error.problems:
        assert isinstance(line, int) and 1 <= line <= last, f"line {line!r} not in the file (1-{last})"
        assert isinstance(column, str) and isinstance(value, str) and message, (line, column, value, message)
    assert f"{csv_path}:{error.problems[0][0]}: column " in str(error)


def _check_table(annotations, folder):
    """Every label is within the schema and says what the CSV cell says."""
    table, schema = annotations.table, annotations.schema
    lines = table.index.to_numpy()
    assert table.index.name == "line" and (np.diff(lines) > 0).all() and (lines >= 2).all(), f"lines {lines}"
    assert sum(annotations.num_images(s) for s in annotations.splits) == len(table), "rows outside the splits"
    for split in annotations.splits:
        cells = table.iloc[annotations.rows(split)]
        assert (cells["split"] == split).all(), f"split {split}: {cells['split'].tolist()}"
        for path, written in zip(annotations.paths(split), cells["path"]):
            # The path is read as written once normalised: "a.jpg/x/.." is a.jpg.
            inside = os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)
            expected = os.path.join(os.path.realpath(folder), posixpath.normpath(written))
            assert os.path.isfile(path) and inside and os.path.realpath(path) == expected, (path, written)
        for column, values in (
            ("group", annotations.groups(split)),
            ("camera", annotations.cameras(split)),
            ("frame", annotations.frames(split)),
        ):
            written = cells[column].tolist() if column in cells else [""] * len(cells)
            assert values.dtype == np.int64 and values.tolist() == [int(v) if v else -1 for v in written], column
        labels = annotations.labels(split)
        for task in schema.tasks:
            got, written = labels[task.name], cells[task.name].tolist()
            if task.kind == IDENTITY:
                assert got.dtype == np.int64 and got.tolist() == [int(v) for v in written], (task.name, written)
            elif task.kind == SINGLE:
                inside = ((got >= -1) & (got < task.num_classes)).all()
                assert got.dtype == np.int32 and inside, (task.name, got.dtype, got, task.classes)
                assert [task.classes[i] if i >= 0 else "" for i in got] == written, (task.name, got, written)
            else:
                assert got.dtype == np.float32 and got.shape == (len(written), task.num_classes), (task.name, got)
                for hot, value in zip(got, written):
                    if value == "":
                        assert (hot == -1).all(), (task.name, hot)
                    else:
                        assert set(np.unique(hot)) <= {0.0, 1.0}, (task.name, hot)
                        names = {task.classes[i] for i in np.flatnonzero(hot)}
                        assert names == {v.strip() for v in value.split(";")}, (task.name, value, names)


# === Mutations of the table (cells), the text and the bytes ===


def _random_string(rng):
    kind = rng.random()
    if kind < 0.5:
        return rng.choice(ATOMS)
    if kind < 0.8:
        # Any code point but the surrogates, which no encoding writes.
        chars = (
            rng.choice((rng.randrange(32, 127), rng.randrange(0xD800), rng.randrange(0xE000, 0x110000)))
            for _ in range(rng.randrange(1, 12))
        )
        return "".join(map(chr, chars))
    return rng.choice(ATOMS) + rng.choice(ATOMS)


def _replace_cell(rng, table):
    row = rng.choice(table)
    if row:
        row[rng.randrange(len(row))] = _random_string(rng)


def _replace_label(rng, table):
    """A value from the schema in another column or row: valid cells in the wrong place."""
    names = [c for t in default_schema().tasks for c in t.classes] + ["train", "query", "gallery", "-1", "3", "7"]
    row = rng.choice(table[1:] or table)
    if row:
        row[rng.randrange(len(row))] = rng.choice(names) if rng.random() < 0.7 else ";".join(rng.sample(names, 2))


def _relabel(rng, table):
    """Another valid label in a task column: the table stays valid, the labels change."""
    tasks = {t.name: t for t in default_schema().classification_tasks}
    columns = [i for i, name in enumerate(table[0]) if name in tasks]
    if columns and len(table) > 1:
        row, column = rng.choice(table[1:]), rng.choice(columns)
        classes = tasks[table[0][column]].classes
        if column < len(row):
            row[column] = rng.choice(("", ";".join(rng.sample(classes, rng.randrange(1, 3))), rng.choice(classes)))


def _replace_path(rng, table):
    if "path" in table[0] and len(table) > 1:
        row, column = rng.choice(table[1:]), table[0].index("path")
        parts = (
            rng.choice(PATH_PARTS) if rng.random() < 0.7 else _random_string(rng) for _ in range(rng.randrange(1, 4))
        )
        if column < len(row):
            row[column] = "/".join(parts)


def _huge_cell(rng, table):
    row = rng.choice(table)
    if row:
        size = rng.choice((HUGE, 100_000))
        row[rng.randrange(len(row))] = rng.choice(('"', "", '"x,')) + "y" * size


def _shuffle_header(rng, table):
    rng.shuffle(table[0])


def _shuffle_columns(rng, table):
    order = list(range(len(table[0])))
    rng.shuffle(order)
    for i, row in enumerate(table):
        table[i] = [row[j] for j in order if j < len(row)]


def _duplicate_header_column(rng, table):
    header = table[0]
    if header:
        header.insert(rng.randrange(len(header) + 1), rng.choice(header))


def _duplicate_column(rng, table):
    column = rng.randrange(len(table[0]) or 1)
    for row in table:
        if column < len(row):
            row.append(row[column])


def _remove_header_column(rng, table):
    if table[0]:
        del table[0][rng.randrange(len(table[0]))]


def _remove_column(rng, table):
    column = rng.randrange(len(table[0]) or 1)
    for row in table:
        if column < len(row):
            del row[column]


def _rename_header_column(rng, table):
    if table[0]:
        table[0][rng.randrange(len(table[0]))] = _random_string(rng)


def _extra_or_missing_field(rng, table):
    row = rng.choice(table)
    if rng.random() < 0.5 and row:
        row.pop()
    else:
        row.append(_random_string(rng))


def _duplicate_row(rng, table):
    table.insert(rng.randrange(1, len(table) + 1), list(rng.choice(table)))


def _remove_row(rng, table):
    if len(table) > 1:
        del table[rng.randrange(1, len(table))]


def _shuffle_rows(rng, table):
    rows = table[1:]
    rng.shuffle(rows)
    table[1:] = rows


def _blank_row(rng, table):
    table.insert(rng.randrange(len(table) + 1), rng.choice(([], [""], ["", ""], [" "], [""] * len(table[0]))))


def _change_split(rng, table):
    """Breaks the re-id split rules: ids shared by train and test, queries not in the gallery."""
    if "split" in table[0] and len(table) > 1:
        column = table[0].index("split")
        row = rng.choice(table[1:])
        if column < len(row):
            row[column] = rng.choice(("train", "query", "gallery", ""))


_TABLE_MUTATIONS = (
    # Weighted by repeating: the first ones keep the table valid more often than not.
    *(_relabel, _relabel, _relabel, _relabel, _shuffle_columns, _shuffle_rows, _blank_row, _remove_row),
    *(_replace_cell, _replace_cell, _replace_label, _replace_path, _replace_path, _huge_cell, _change_split),
    *(_shuffle_header, _duplicate_header_column, _duplicate_column, _remove_header_column, _remove_column),
    *(_rename_header_column, _extra_or_missing_field, _duplicate_row),
)


def _render(rng, table, mutations):
    """The table as text: cells joined as they are, or quoted by csv.writer where needed."""
    if rng.random() < 0.3:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n", quoting=rng.choice((csv.QUOTE_MINIMAL, csv.QUOTE_ALL))).writerows(table)
        mutations.append("csv.writer")
        return out.getvalue()
    return "\n".join(",".join(row) for row in table) + rng.choice(("\n", "\n", ""))


def _line_ends(rng, text):
    end = rng.choice(("\r\n", "\r", "\n\n", "\n\r"))
    if rng.random() < 0.5:
        return text.replace("\n", end)
    first, *parts = text.split("\n")
    return first + "".join(rng.choice((end, "\n")) + part for part in parts)  # mixed line ends


def _byte_order_mark(rng, text):
    return "\ufeff" + text


def _truncate_text(rng, text):
    return text[: rng.randrange(len(text) + 1)]


def _insert_quote(rng, text):
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(('"', '""', '","', '"\n', ',"')) + text[at:]


def _insert_text(rng, text):
    at = rng.randrange(len(text) + 1)
    return text[:at] + _random_string(rng) + text[at:]


_TEXT_MUTATIONS = (_line_ends, _byte_order_mark, _truncate_text, _insert_quote, _insert_text)


def _flip_bytes(rng, data):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def _insert_bytes(rng, data):
    at = rng.randrange(len(data) + 1)
    new = rng.choice((b"\x00", b"\xff", b"\xc3", b"\xe9", b"\xef\xbb\xbf", b"\r", b'"', bytes([rng.randrange(256)])))
    return data[:at] + new * rng.randrange(1, 3) + data[at:]


def _delete_bytes(rng, data):
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[at + rng.randrange(1, 40) :]


def _truncate_bytes(rng, data):
    return data[: rng.randrange(len(data) + 1)]


_BYTE_MUTATIONS = (_flip_bytes, _insert_bytes, _delete_bytes, _truncate_bytes)


# === schema.json ===


def _make_schema(rng, header):
    """`(schema.json bytes or None, mutation names)`: none, the default, or a mutated one."""
    kind = rng.random()
    if kind < 0.45:
        return None, []
    document = {"tasks": default_schema().to_dict()["tasks"]}
    if kind < 0.7:
        return json.dumps(document).encode(), ["schema.json"]
    mutations = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        mutation = rng.choice(_SCHEMA_MUTATIONS)
        document["tasks"] = mutation(rng, document["tasks"], header)
        mutations.append(f"schema: {_name(mutation)}")
    if rng.random() < 0.1:
        document = rng.choice((None, 3, "tasks", [document], {"task": []}, {"tasks": None}, {"tasks": {"a": 1}}))
        mutations.append("schema: top level")
    data = json.dumps(document).encode()
    if rng.random() < 0.25:
        mutation = rng.choice(_SCHEMA_BYTE_MUTATIONS)
        data = mutation(rng, data)
        mutations.append(f"schema: {_name(mutation)}")
    return data, mutations


def _some_task(rng, tasks):
    """A task of the list that is a dict (a mutation may have put other things there), or {}."""
    dicts = [t for t in tasks if isinstance(t, dict)]
    return rng.choice(dicts) if dicts else {}


def _odd_value(rng):
    return rng.choice((None, 0, 1.5, True, "", " ", "x", [], {}, ["a"], {"a": 1}, "identity", float("nan")))


def _task_field(rng, tasks, header):
    _some_task(rng, tasks)[rng.choice(("name", "aspect", "kind", "classes"))] = _odd_value(rng)
    return tasks


def _wrong_kind(rng, tasks, header):
    _some_task(rng, tasks)["kind"] = rng.choice(("identity", "single", "multi", "ordinal", "Single", 3))
    return tasks


def _classes(rng, tasks, header):
    task = _some_task(rng, tasks)
    classes = task.get("classes") if isinstance(task.get("classes"), list) else ["a", "b"]
    task["classes"] = rng.choice(
        (
            [],
            classes[:1],
            classes + classes[:1],  # a duplicate class name
            classes + [""],
            classes + [" x"],
            classes + ["a;b"],
            classes + [3],
            classes + [["a"]],
            "abc",
            {"a": 1},
            [_random_string(rng) for _ in classes],
        )
    )
    return tasks


def _task_name(rng, tasks, header):
    _some_task(rng, tasks)["name"] = rng.choice(header + ["path", "split", "group", "line", "id", "x", "Unnamed: 3"])
    return tasks


def _keys(rng, tasks, header):
    task = _some_task(rng, tasks)
    if task and rng.random() < 0.5:
        del task[rng.choice(sorted(task))]
    else:
        task["colors"] = []
    return tasks


def _task_list(rng, tasks, header):
    choice = rng.randrange(5)
    if choice == 0:
        return []
    if choice == 1 and tasks:
        return tasks + [rng.choice(tasks)]  # a task twice
    if choice == 2 and tasks:
        return rng.sample(tasks, rng.randrange(1, len(tasks) + 1))
    if choice == 3:
        return [_odd_value(rng)] + tasks
    return tasks + [{"name": "id2", "aspect": "appearance", "kind": "identity", "classes": []}]


def _shuffle_classes(rng, tasks, header):
    """A valid schema with the classes of a task in another order: other label indices."""
    task = _some_task(rng, tasks)
    if isinstance(task.get("classes"), list):
        rng.shuffle(task["classes"])
    return tasks


def _rename_class(rng, tasks, header):
    """A valid schema that no longer matches the CSV's labels."""
    task = _some_task(rng, tasks)
    if isinstance(task.get("classes"), list):
        task["classes"] = [f"{c}_" for c in task["classes"]]
    return tasks


_SCHEMA_MUTATIONS = (
    _task_field,
    _wrong_kind,
    _classes,
    _task_name,
    _keys,
    _task_list,
    _rename_class,
    _shuffle_classes,
    _shuffle_classes,
)


def _nested(rng, data):
    return b"[" * rng.choice((10, 100_000)) + data


def _utf_16(rng, data):
    return data.decode().encode("utf-16")


def _byte_order_mark_bytes(rng, data):
    return b"\xef\xbb\xbf" + data


def _empty(rng, data):
    return b""


_SCHEMA_BYTE_MUTATIONS = (
    _truncate_bytes,
    _flip_bytes,
    _insert_bytes,
    _utf_16,
    _byte_order_mark_bytes,
    _nested,
    _empty,
)


def _name(mutation):
    return mutation.__name__.strip("_").replace("_", " ")


# === Script ===


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="fuzz_crashes", help="folder for the crashing cases")
    args = parser.parse_args(argv)

    def save(index, data, schema, mutations, trace):
        case = os.path.join(args.out, f"case_{index}")
        write_images(case)
        with open(os.path.join(case, "annotations.csv"), "wb") as f:
            f.write(data)
        if schema is not None:
            with open(os.path.join(case, "schema.json"), "wb") as f:
                f.write(schema)
        with open(os.path.join(case, "mutations.txt"), "w") as f:
            f.write(f"seed {args.seed} case {index}\n" + "\n".join(mutations) + "\n")
        with open(os.path.join(case, "traceback.txt"), "w") as f:
            f.write(trace)
        print(f"case {index} crashed ({', '.join(mutations)}), saved in {case}:\n{trace}", file=sys.stderr)

    folder = tempfile.mkdtemp()
    try:
        write_images(folder)
        counts, crashes = fuzz(folder, args.cases, args.seed, on_crash=save)
    finally:
        shutil.rmtree(folder)
    outcomes = ", ".join(f"{name} {counts[name]}" for name in OUTCOMES)
    print(f"cases: {args.cases} (seed {args.seed}): {outcomes}, crashes {len(crashes)}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
