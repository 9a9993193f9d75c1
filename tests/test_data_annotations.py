"""read_annotations: encoding of a good table, and one test per class of bad row."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from portrait_keras.data.annotations import AnnotationError, read_annotations, read_table
from portrait_keras.schema import Schema, SchemaError, Task, default_schema

HEADER = "path,split,id,gender,age,physique,height,body,arm,expression,source,frame,camera,group"
GOOD_ROWS = [
    "a.jpg,train,5,female,child,thin,short,standing,arms_down,happy,m1,10,1,0",
    "b.jpg,train,-1,,elderly,,tall,lying,arms_crossed,,m1,11,1,0",
    "c.jpg,train,9,male,,heavy,,sitting,,sad;angry,m2,,,",
    "d.jpg,query,7,male,teenager,medium,medium,walking,one_arm_raised,surprise,m3,3,2,4",
    "e.jpg,gallery,7,male,teenager,medium,medium,squatting,hands_on_hips,neutral,m3,4,3,4",
    "f.jpg,gallery,-1,female,young_adult,thin,short,standing,both_arms_raised,fear;disgust,m3,9,3,5",
]


def write_dataset(folder, rows, header=HEADER, images=None):
    """Writes `annotations.csv` and a tiny JPEG for every path in `images` (default:
    the first column of every row that looks like a relative path)."""
    os.makedirs(folder, exist_ok=True)
    if images is None:
        images = [r.split(",")[0] for r in rows]
        images = [p for p in images if p and not p.startswith("/") and ".." not in p]
    for path in images:
        full = os.path.join(folder, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        Image.new("RGB", (4, 8), (10, 20, 30)).save(full)
    csv_path = os.path.join(folder, "annotations.csv")
    with open(csv_path, "w") as f:
        f.write("\n".join([header] + rows) + "\n")
    return csv_path


def problems_of(csv_path, **kwargs):
    with pytest.raises(AnnotationError) as info:
        read_annotations(csv_path, **kwargs)
    return info.value


def assert_problem(error, csv_path, line, column, value, expected_words=()):
    """The error lists `FILE:LINE: column 'c': value 'v': ...` with `expected_words`."""
    prefix = f"{csv_path}:{line}: column {column!r}: value {value!r}: "
    lines = [text for text in str(error).splitlines() if text.startswith(prefix)]
    assert lines, f"{prefix!r} not in:\n{error}"
    for word in expected_words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert (line, column, value) in [p[:3] for p in error.problems]


def test_good_table_is_encoded(tmp_path):
    csv_path = write_dataset(tmp_path, GOOD_ROWS)
    ann = read_annotations(csv_path)
    assert ann.splits == ("train", "query", "gallery")
    assert [ann.num_images(s) for s in ann.splits] == [3, 1, 2]
    np.testing.assert_array_equal(ann.train_ids, [5, 9])
    labels = ann.labels("train")
    assert labels["id"].dtype == np.int64 and labels["gender"].dtype == np.int32
    np.testing.assert_array_equal(labels["id"], [5, -1, 9])
    np.testing.assert_array_equal(labels["gender"], [0, -1, 1])
    np.testing.assert_array_equal(labels["age"], [0, 4, -1])
    np.testing.assert_array_equal(labels["arm"], [0, 3, -1])
    assert labels["expression"].dtype == np.float32 and labels["expression"].shape == (3, 7)
    np.testing.assert_array_equal(labels["expression"][0], [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(labels["expression"][1], [-1] * 7)
    np.testing.assert_array_equal(labels["expression"][2], [1, 0, 0, 0, 1, 0, 0])
    assert list(ann.paths("query")) == [os.path.join(str(tmp_path), "d.jpg")]
    np.testing.assert_array_equal(ann.groups("train"), [0, 0, -1])
    np.testing.assert_array_equal(ann.cameras("gallery"), [3, 3])
    np.testing.assert_array_equal(ann.frames("train"), [10, 11, -1])
    assert list(ann.table.index) == [2, 3, 4, 5, 6, 7]  # CSV line numbers


def test_optional_columns_and_blank_lines(tmp_path):
    header = "path,split,id,gender,age,physique,height,body,arm,expression"
    rows = [",".join(r.split(",")[:10]) for r in GOOD_ROWS]
    csv_path = write_dataset(tmp_path, rows[:2] + [""] + rows[2:], header=header)
    ann = read_annotations(csv_path)
    assert ann.num_images("train") == 3
    np.testing.assert_array_equal(ann.groups("gallery"), [-1, -1])
    assert list(ann.table.index) == [2, 3, 5, 6, 7, 8]


def test_schema_json_beside_csv_and_root(tmp_path):
    schema = Schema((Task("id", "appearance", "identity"), Task("mood", "emotion", "multi", ("calm", "wild"))))
    images = tmp_path / "pics"
    csv_path = write_dataset(
        tmp_path,
        ["x.jpg,train,1,calm;wild", "y.jpg,query,2,", "z.jpg,gallery,2,wild"],
        header="path,split,id,mood",
        images=[],
    )
    write_dataset(images, [], images=["x.jpg", "y.jpg", "z.jpg"])
    schema.save(tmp_path / "schema.json")
    ann = read_annotations(csv_path, root=images)
    np.testing.assert_array_equal(ann.labels("train")["mood"], [[1, 1]])
    assert ann.paths("gallery")[0] == os.path.join(str(images), "z.jpg")


def test_invalid_schema_json_beside_the_csv(tmp_path):
    csv_path = write_dataset(tmp_path, GOOD_ROWS)
    (tmp_path / "schema.json").write_text('{"tasks": [{"name": "age", "aspect": "appearance", "kind": "single"}]}')
    with pytest.raises(SchemaError) as info:
        read_annotations(csv_path)
    assert str(info.value).startswith(f"{tmp_path / 'schema.json'}: invalid schema: ")
    assert "needs at least 2 classes" in str(info.value)


def test_missing_required_column(tmp_path):
    header = HEADER.replace(",gender", "")
    rows = [",".join(p for i, p in enumerate(r.split(",")) if i != 3) for r in GOOD_ROWS]
    csv_path = write_dataset(tmp_path, rows, header=header)
    # Without a schema.json the CSV's columns decide the tasks: gender is simply absent.
    assert "gender" not in read_annotations(csv_path).schema.names
    # A schema.json (or a schema passed in) that names the task requires its column.
    default_schema().save(os.path.join(tmp_path, "schema.json"))
    assert_problem(problems_of(csv_path), csv_path, 1, "gender", "", ["missing required column"])


def test_unknown_class(tmp_path):
    rows = list(GOOD_ROWS)
    rows[1] = rows[1].replace(",elderly,", ",ancient,")
    csv_path = write_dataset(tmp_path, rows)
    assert_problem(problems_of(csv_path), csv_path, 3, "age", "ancient", ["child, teenager", "elderly"])


@pytest.mark.parametrize(
    "value, words",
    [
        ("happy;;sad", ["an empty item"]),
        ("happy;happy", ["duplicate class 'happy'"]),
        ("happy;grumpy", ["unknown class 'grumpy'", "angry, disgust"]),
        ("happy;", ["an empty item"]),
    ],
)
def test_malformed_expression_list(tmp_path, value, words):
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace(",happy,", f",{value},")
    csv_path = write_dataset(tmp_path, rows)
    assert_problem(problems_of(csv_path), csv_path, 2, "expression", value, words)


def test_bad_split(tmp_path):
    rows = list(GOOD_ROWS)
    rows[2] = rows[2].replace(",train,", ",val,")
    csv_path = write_dataset(tmp_path, rows)
    assert_problem(problems_of(csv_path), csv_path, 4, "split", "val", ["train, query, gallery"])


@pytest.mark.parametrize(
    "column, index, value",
    [
        ("id", 2, "abc"),
        ("id", 2, "-2"),
        ("id", 2, ""),
        ("frame", 11, "1.5"),
        ("camera", 12, "x"),
        ("group", 13, "-7"),
        ("id", 2, "\u0663"),  # ARABIC-INDIC DIGIT THREE: \d matches it, pd.to_numeric does not
        ("id", 2, "\uff11\uff12"),  # FULLWIDTH 12
        ("frame", 11, "-\u0663"),
    ],
)
def test_non_integer_id_camera_group_frame(tmp_path, column, index, value):
    rows = list(GOOD_ROWS)
    cells = rows[0].split(",")
    cells[index] = value
    rows[0] = ",".join(cells)
    csv_path = write_dataset(tmp_path, rows)
    assert_problem(problems_of(csv_path), csv_path, 2, column, value, ["integer"])


def test_query_id_absent_from_gallery(tmp_path):
    rows = list(GOOD_ROWS)
    rows[3] = rows[3].replace(",query,7,", ",query,8,")
    csv_path = write_dataset(tmp_path, rows)
    assert_problem(problems_of(csv_path), csv_path, 5, "id", "8", ["absent from the gallery"])


def test_unknown_query_id(tmp_path):
    rows = list(GOOD_ROWS) + ["g.jpg,query,-1,male,,,,,,,m3,5,2,6"]
    csv_path = write_dataset(tmp_path, rows)
    assert_problem(problems_of(csv_path), csv_path, 8, "id", "-1", ["needs a known id"])


def test_id_in_train_and_test(tmp_path):
    rows = list(GOOD_ROWS)
    rows[4] = rows[4].replace(",gallery,7,", ",gallery,5,")
    rows[3] = rows[3].replace(",query,7,", ",query,5,")
    csv_path = write_dataset(tmp_path, rows)
    error = problems_of(csv_path)
    assert_problem(error, csv_path, 5, "id", "5", ["also in split 'train' (line 2)", "disjoint"])
    assert_problem(error, csv_path, 6, "id", "5", ["also in split 'train' (line 2)"])


def test_missing_image_file(tmp_path):
    csv_path = write_dataset(tmp_path, GOOD_ROWS)
    os.remove(tmp_path / "c.jpg")
    assert_problem(problems_of(csv_path), csv_path, 4, "path", "c.jpg", ["missing image file"])


def test_missing_image_folder(tmp_path):
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace("a.jpg", "nowhere/a.jpg")
    csv_path = write_dataset(tmp_path, rows, images=["b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    assert_problem(problems_of(csv_path), csv_path, 2, "path", "nowhere/a.jpg", ["missing image file"])


def test_absolute_path(tmp_path):
    rows = list(GOOD_ROWS)
    absolute = str(tmp_path / "a.jpg")
    rows[0] = rows[0].replace("a.jpg", absolute)
    csv_path = write_dataset(tmp_path, rows, images=["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    assert_problem(problems_of(csv_path), csv_path, 2, "path", absolute, ["relative to the dataset root"])


def test_every_path_absolute_is_reported_line_by_line(tmp_path):
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"]
    rows = [row.replace(n, str(tmp_path / n)) for row, n in zip(GOOD_ROWS, names)]
    csv_path = write_dataset(tmp_path, rows, images=names)
    problems = problems_of(csv_path).problems
    assert [line for line, column, _, _ in problems if column == "path"] == list(range(2, 2 + len(rows)))


def test_path_with_a_nul_character(tmp_path):
    # Found by benchmarks/fuzz_annotations.py: os.path.realpath raised ValueError.
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace("a.jpg", "su\x00b/a.jpg")
    csv_path = write_dataset(tmp_path, rows, images=["b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    error = problems_of(csv_path)
    assert_problem(error, csv_path, 2, "path", "su\x00b/a.jpg", ["expected a path without NUL characters"])
    assert len(error.problems) == 1


@pytest.mark.parametrize("path", ["x" * 300 + "/a.jpg", "a/" * 3000 + "a.jpg"], ids=["long name", "long path"])
def test_path_whose_folder_cannot_be_listed(tmp_path, path):
    # Found by benchmarks/fuzz_annotations.py: os.scandir raised OSError (file name too long).
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace("a.jpg", path)
    csv_path = write_dataset(tmp_path, rows, images=["b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    error = problems_of(csv_path)
    assert_problem(error, csv_path, 2, "path", path, ["cannot look for the image file: File name too long"])
    assert len(error.problems) == 1


def test_path_escaping_root(tmp_path):
    root = tmp_path / "data"
    write_dataset(tmp_path, [], images=["outside.jpg"])
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace("a.jpg", "sub/../../outside.jpg")
    csv_path = write_dataset(root, rows)
    error = problems_of(csv_path)
    assert_problem(error, csv_path, 2, "path", "sub/../../outside.jpg", ["escapes the dataset root"])


def test_symlink_out_of_root(tmp_path):
    root = tmp_path / "data"
    write_dataset(tmp_path / "elsewhere", [], images=["secret.jpg", "dir/x.jpg"])
    rows = GOOD_ROWS + ["link.jpg,train,-1,,,,,,,,m1,1,1,1", "linked/x.jpg,train,-1,,,,,,,,m1,1,1,1"]
    csv_path = write_dataset(root, rows, images=["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    os.symlink(tmp_path / "elsewhere" / "secret.jpg", root / "link.jpg")
    os.symlink(tmp_path / "elsewhere" / "dir", root / "linked")
    error = problems_of(csv_path)
    assert_problem(error, csv_path, 8, "path", "link.jpg", ["outside the dataset root"])
    assert_problem(error, csv_path, 9, "path", "linked/x.jpg", ["outside the dataset root"])
    assert len(error.problems) == 2


def test_symlink_inside_root_is_fine(tmp_path):
    rows = GOOD_ROWS[:5] + ["alias.jpg,gallery,-1,,,,,,,,m3,9,3,5"]
    csv_path = write_dataset(tmp_path, rows, images=["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    os.symlink(tmp_path / "a.jpg", tmp_path / "alias.jpg")
    assert read_annotations(csv_path).num_images("gallery") == 2


def test_duplicate_paths(tmp_path):
    rows = list(GOOD_ROWS)
    rows[5] = rows[5].replace("f.jpg", "./b.jpg")
    csv_path = write_dataset(tmp_path, rows)
    assert_problem(problems_of(csv_path), csv_path, 7, "path", "./b.jpg", ["duplicate path (first at line 3)"])


def test_empty_split_when_required(tmp_path):
    rows = [r for r in GOOD_ROWS if ",query," not in r]
    csv_path = write_dataset(tmp_path, rows)
    assert_problem(problems_of(csv_path, required_splits=("query",)), csv_path, 1, "split", "query", ["no rows"])
    ann = read_annotations(csv_path)
    assert ann.splits == ("train", "gallery") and ann.num_images("query") == 0
    with pytest.raises(AnnotationError, match=r"annotations.csv:1: column 'split': value 'query': no rows"):
        ann.labels("query")
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        ann.paths("val")


def test_unparsable_row(tmp_path):
    rows = list(GOOD_ROWS)
    rows[1] += ",extra"
    csv_path = write_dataset(tmp_path, rows)
    error = problems_of(csv_path)
    assert error.problems[0][0] == 3 and "Expected 14 fields" in str(error)


def test_short_and_long_rows_are_all_reported(tmp_path):
    # pandas pads a short row with "", which would read as "unknown label".
    rows = list(GOOD_ROWS)
    rows[0] = ",".join(rows[0].split(",")[:5])
    rows[2] += ",extra"
    rows[4] = ",".join(rows[4].split(",")[:2])
    csv_path = write_dataset(tmp_path, rows[:3] + [""] + rows[3:])  # a blank line is not short
    error = problems_of(csv_path)
    assert error.problems == [
        (2, "", "", "Expected 14 fields in line 2, saw 5"),
        (4, "", "", "Expected 14 fields in line 4, saw 15"),
        (7, "", "", "Expected 14 fields in line 7, saw 2"),
    ]
    assert f"{csv_path}:2: column '': value '': Expected 14 fields in line 2, saw 5" in str(error)


def test_a_quote_left_open_is_reported_where_it_opens(tmp_path):
    rows = list(GOOD_ROWS)
    rows[1] = rows[1].replace(",m1,", ',"m1,')
    csv_path = write_dataset(tmp_path, rows)
    error = problems_of(csv_path)
    assert [p[0] for p in error.problems] == [3]
    assert "Expected 14 fields in line 3, saw 11 (the record runs over lines 3-7: a quote left open?)" in str(error)


def test_lines_count_newlines_inside_quoted_fields(tmp_path):
    rows = list(GOOD_ROWS)
    rows[1] = rows[1].replace(",m1,", ',"m1\nsecond line",')
    ann = read_annotations(write_dataset(tmp_path / "good", rows))
    assert list(ann.table.index) == [2, 3, 5, 6, 7, 8]
    assert ann.table["source"].iloc[1] == "m1\nsecond line"
    rows[3] = rows[3].replace(",male,", ",robot,")
    rows[5] = rows[5].replace("f.jpg", "a.jpg")
    csv_path = write_dataset(tmp_path / "bad", rows)
    error = problems_of(csv_path)
    assert_problem(error, csv_path, 6, "gender", "robot", ["female, male"])
    assert_problem(error, csv_path, 8, "path", "a.jpg", ["duplicate path (first at line 2)"])


def test_file_not_utf8_names_every_bad_line_and_its_bytes(tmp_path):
    rows = list(GOOD_ROWS)
    rows[1] = rows[1].replace(",m1,", ",caf\u00e9,")
    rows[4] = rows[4].replace(",m3,", ",na\u00efve,")
    csv_path = write_dataset(tmp_path, rows)
    with open(csv_path, "w", encoding="latin-1") as f:
        f.write("\n".join([HEADER] + rows) + "\n")
    error = problems_of(csv_path)
    assert [p[:3] for p in error.problems] == [
        (3, "", "b.jpg,train,-1,,elderly,,tall,lying,arms_crossed,,caf\ufffd,11,1,0"),
        # Over 80 characters: the 80 around the bad byte.
        (6, "", "...allery,7,male,teenager,medium,medium,squatting,hands_on_hips,neutral,na\ufffdve,4,3,4"),
    ]
    assert f"{csv_path}:3: column '': value " in str(error)
    assert "bytes b'\\xe9' at byte 54 of the line are not UTF-8" in str(error)
    assert "bytes b'\\xef' at byte 79 of the line are not UTF-8" in str(error)


def test_utf8_byte_order_mark_is_fine(tmp_path):
    csv_path = write_dataset(tmp_path, GOOD_ROWS, header="\ufeff" + HEADER)
    assert read_annotations(csv_path).table.columns[0] == "path"


def write_bytes(folder, data):
    """Writes `annotations.csv` as the bytes `data`, beside the images of `GOOD_ROWS`."""
    csv_path = write_dataset(folder, GOOD_ROWS)
    with open(csv_path, "wb") as f:
        f.write(data)
    return csv_path


def table_problems(csv_path):
    with pytest.raises(AnnotationError) as info:
        read_table(csv_path)
    return info.value.problems


def test_cells_follow_the_csv_quoting_rules(tmp_path):
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace(",m1,", ',"m1, ""the"" film",')
    table = read_annotations(write_dataset(tmp_path, rows)).table
    assert table["source"].tolist()[:2] == ['m1, "the" film', "m1"]
    assert table.index.tolist() == [2, 3, 4, 5, 6, 7]
    assert all(str(dtype) == "str" for dtype in table.dtypes)


@pytest.mark.parametrize("end", ["\r\n", "\r"])
def test_crlf_and_cr_line_ends_count_lines_like_newlines(tmp_path, end):
    rows = list(GOOD_ROWS)
    rows[1] = rows[1].replace(",m1,", f',"m1{end}second line",')  # a line end inside quotes
    text = end.join([HEADER] + rows[:2] + [""] + rows[2:]) + end
    ann = read_annotations(write_bytes(tmp_path / "good", text.encode()))
    assert ann.table.index.tolist() == [2, 3, 6, 7, 8, 9]
    assert ann.table["source"].iloc[1] == f"m1{end}second line"
    rows[3] = rows[3].replace(",male,", ",robot,")
    text = end.join([HEADER] + rows[:2] + [""] + rows[2:]) + end
    error = problems_of(write_bytes(tmp_path / "bad", text.encode()))
    assert [p[:3] for p in error.problems] == [(7, "gender", "robot")]


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path, data):
    csv_path = write_bytes(tmp_path, data)
    assert problems_of(csv_path).problems == [(1, "", "", "empty file; expected a header line")]


def test_a_file_of_only_a_header_is_a_table_without_rows(tmp_path):
    csv_path = write_bytes(tmp_path, (HEADER + "\n\n").encode())
    table = read_table(csv_path)
    assert table.columns.tolist() == HEADER.split(",") and len(table) == 0 and table.index.name == "line"
    assert len(read_annotations(csv_path)) == 0
    assert_problem(problems_of(csv_path, required_splits=["train"]), csv_path, 1, "split", "train", ["no rows"])


def test_blank_column_names_are_numbered(tmp_path):
    # Each is a column of its own: two blank names do not make a duplicate.
    csv_path = write_dataset(tmp_path, [row + ",x, y" for row in GOOD_ROWS], header=HEADER + ', ," "')
    table = read_annotations(csv_path).table
    assert table.columns.tolist()[-3:] == ["group", "Unnamed: 14", "Unnamed: 15"]
    assert table["Unnamed: 15"].tolist() == ["y"] * 6


def test_one_column_file(tmp_path):
    assert read_table(write_bytes(tmp_path, b"path\na.jpg\n\nb.jpg")).to_dict() == {"path": {2: "a.jpg", 4: "b.jpg"}}
    problems = table_problems(write_bytes(tmp_path, b'path\na.jpg\n"b.jpg\n'))
    assert problems == [(3, "", "", "CSV Error: EOF inside string starting at line 3 (a quote left open?)")]


@pytest.mark.parametrize(
    "row, end, hint",
    [
        (5, "\n", "(a quote left open?)"),
        (5, "", "(a quote left open?)"),
        (4, "\n", "(the record runs over lines 6-7: a quote left open?)"),
    ],
)
def test_a_quote_open_at_the_end_of_the_file_is_reported_where_it_opens(tmp_path, row, end, hint):
    # The record has the right number of fields: its last one runs to the end of the file.
    rows = list(GOOD_ROWS)
    cells = rows[row].split(",")
    cells[-1] = '"' + cells[-1]
    rows[row] = ",".join(cells)
    csv_path = write_bytes(tmp_path, ("\n".join([HEADER] + rows) + end).encode())
    line = row + 2
    message = f"CSV Error: EOF inside string starting at line {line} {hint}"
    assert problems_of(csv_path).problems == [(line, "", "", message)]


def test_a_quote_open_in_the_header(tmp_path):
    csv_path = write_bytes(tmp_path, ('"' + "\n".join([HEADER] + GOOD_ROWS) + "\n").encode())
    message = "CSV Error: EOF inside string starting at line 1 (the record runs over lines 1-7: a quote left open?)"
    assert problems_of(csv_path).problems == [(1, "", "", message)]


def test_a_field_over_the_csv_field_size_limit(tmp_path):
    rows = list(GOOD_ROWS)
    rows[1] = rows[1].replace(",m1,", ',"m1,')  # the quote runs on over the limit
    rows += [f"x{i}.jpg,train,-1,,,,,,,,{'m' * 100},1,1,1" for i in range(2000)]
    csv_path = write_dataset(tmp_path, rows, images=[])
    message = f"CSV Error: field larger than field limit ({csv.field_size_limit()}) (a quote left open?)"
    assert problems_of(csv_path).problems == [(3, "", "", message)]


def test_a_utf16_file_is_not_utf8(tmp_path):
    error = problems_of(write_bytes(tmp_path, "\n".join([HEADER] + GOOD_ROWS).encode("utf-16")))
    assert error.problems[0][0] == 1 and "save the file as UTF-8" in error.problems[0][3]


@pytest.mark.parametrize("repeated", ["gender", "gender ", " gender"])
def test_duplicate_header_column(tmp_path, repeated):
    # pandas would rename the second one `gender.1`, and its values would go unread.
    rows = [r + ",robot" for r in GOOD_ROWS]
    csv_path = write_dataset(tmp_path, rows, header=HEADER + "," + repeated)
    error = problems_of(csv_path)
    assert [p[:3] for p in error.problems] == [(1, "gender", "gender")]
    assert_problem(error, csv_path, 1, "gender", "gender", ["duplicate column name (columns 4, 15)"])


def test_all_problems_listed_at_once(tmp_path):
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace(",female,", ",robot,").replace(",happy,", ",happy;;sad,")
    rows[1] = rows[1].replace(",train,", ",valid,")
    rows[2] = rows[2].replace("c.jpg", "missing.jpg").replace(",9,", ",nine,")
    rows[3] = rows[3].replace(",query,7,", ",query,8,")
    rows[5] = rows[5].replace("f.jpg", "a.jpg").replace(",m3,9,", ",m3,9.5,")
    csv_path = write_dataset(tmp_path, rows, images=["a.jpg", "b.jpg", "d.jpg", "e.jpg"])
    error = problems_of(csv_path)
    expected = [
        (2, "gender", "robot"),
        (2, "expression", "happy;;sad"),
        (3, "split", "valid"),
        (4, "path", "missing.jpg"),
        (4, "id", "nine"),
        (5, "id", "8"),
        (7, "path", "a.jpg"),
        (7, "frame", "9.5"),
    ]
    assert sorted(p[:3] for p in error.problems) == sorted(expected)
    assert str(error).startswith(f"8 problems in {csv_path}:")
    lines = [p[0] for p in error.problems]
    assert lines == sorted(lines)
    for line, column, value in expected:
        assert_problem(error, csv_path, line, column, value)


def test_long_problem_lists_are_cut_in_the_message(tmp_path):
    rows = [f"x{i}.jpg,train,-1,robot,,,,,,,m,1,1,1" for i in range(60)]
    csv_path = write_dataset(tmp_path, rows)
    error = problems_of(csv_path)
    assert len(error.problems) == 60
    assert "... and 10 more (see AnnotationError.problems)" in str(error)


@pytest.mark.slow
def test_reads_a_large_table_whole(tmp_path):
    # Correctness at scale; the speed at Portrait250K size is benchmarks/read_annotations.py.
    count = 20_000
    for d in range(100):
        os.makedirs(tmp_path / f"{d:03d}")
    rows = []
    for i in range(count):
        path = f"{i % 100:03d}/{i}.jpg"
        open(tmp_path / path, "w").close()
        split, ident = (
            ("train", i % 640)
            if i < 12_000
            else ("query", 1000 + i % 400)
            if i < 13_000
            else (
                "gallery",
                1000 + i % 400,
            )
        )
        labels = "male,elderly,thin,tall,standing,arms_down,happy;sad"
        rows.append(f"{path},{split},{ident},{labels},m,{i},-1,{i // 3}")
    ann = read_annotations(write_dataset(tmp_path, rows, images=[]))
    assert (ann.num_images("train"), ann.num_images("query"), ann.num_images("gallery")) == (12_000, 1_000, 7_000)
    assert len(ann.train_ids) == 640
    assert (ann.labels("gallery")["expression"].sum(axis=1) == 2).all()
