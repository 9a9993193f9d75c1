"""The annotation reader under a fuzz (benchmarks/fuzz_annotations.py, run longer as a script).

A few hundred random mutations of a valid annotations.csv and schema.json (bytes, cells,
quotes, encodings, line ends, huge fields, header columns, schema kinds and class lists): each
must end in a table whose labels lie within the schema, an `AnnotationError` or a `SchemaError`.
"""

import json
import random

import fuzz_annotations

from portrait_keras.data import read_annotations
from portrait_keras.schema import default_schema
from tests.test_data_annotations import GOOD_ROWS, HEADER, write_dataset


def test_every_case_ends_in_a_table_or_a_documented_error(tmp_path):
    write_dataset(tmp_path, GOOD_ROWS)
    crashes = []
    counts, crashed = fuzz_annotations.fuzz(
        tmp_path, 300, seed=0, header=HEADER, rows=GOOD_ROWS, on_crash=lambda *case: crashes.append(case)
    )
    assert not crashes, f"case {crashes[0][0]} ({', '.join(crashes[0][3])}):\n{crashes[0][4]}"
    assert sum(counts.values()) == 300 and crashed == []
    # The cases reach every outcome, so the label checks of a returned table run too.
    assert all(counts[outcome] >= 20 for outcome in fuzz_annotations.OUTCOMES), counts


def test_cases_are_the_same_for_a_seed_and_mutate_the_valid_table():
    first = [fuzz_annotations.make_case(random.Random(f"0:{i}"), HEADER, GOOD_ROWS) for i in range(50)]
    again = [fuzz_annotations.make_case(random.Random(f"0:{i}"), HEADER, GOOD_ROWS) for i in range(50)]
    assert first == again
    valid = ("\n".join([HEADER, *GOOD_ROWS]) + "\n").encode()
    assert 30 <= sum(data != valid for data, _, _ in first) < 50
    default = json.dumps({"tasks": default_schema().to_dict()["tasks"]}).encode()
    schemas = [schema for _, schema, _ in first]
    assert None in schemas and default in schemas and any(s not in (None, default) for s in schemas)


def test_a_label_that_disagrees_with_its_cell_is_a_crash(tmp_path, monkeypatch):
    # The invariant itself: a reader that shifts every age label by one must be caught.
    write_dataset(tmp_path, GOOD_ROWS)
    valid = ("\n".join([HEADER, *GOOD_ROWS]) + "\n").encode()
    assert fuzz_annotations.run_case(tmp_path, valid, None) == "table"

    def shifted(*args, **kwargs):
        annotations = read_annotations(*args, **kwargs)
        annotations._encoded["age"] = annotations._encoded["age"] + 1
        return annotations

    monkeypatch.setattr(fuzz_annotations, "read_annotations", shifted)
    try:
        fuzz_annotations.run_case(tmp_path, valid, None)
    except AssertionError as e:
        assert "age" in str(e)
    else:
        raise AssertionError("a label outside its cell passed the fuzz's checks")
