"""A class name of a multi-label column (`expression`) in another case says so, as in a one-of column."""

import pytest
from PIL import Image

from portrait_keras.data import AnnotationError, read_annotations


def _problems(tmp_path, header, rows):
    """The lines of the `AnnotationError` of a CSV of `rows` (their images written)."""
    for row in rows:
        Image.new("RGB", (4, 8)).save(tmp_path / row.split(",")[0])
    (tmp_path / "data.csv").write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(AnnotationError) as e:
        read_annotations(tmp_path / "data.csv")
    return str(e.value).splitlines()


def test_a_multi_label_class_in_another_case_says_so(tmp_path):
    rows = ["a.jpg,train,1,Happy;sad", "b.jpg,train,2,happy;SAD;Angri", "c.jpg,train,3,happi"]
    lines = _problems(tmp_path, "path,split,id,expression", rows)
    (two,) = [x for x in lines if ":2: column 'expression'" in x]
    assert "unknown class 'Happy'" in two and "only the case differs from 'happy'" in two
    (three,) = [x for x in lines if ":3: column 'expression'" in x]
    assert "unknown class 'SAD', 'Angri'" in three and "only the case differs from 'sad')" in three
    (four,) = [x for x in lines if ":4: column 'expression'" in x]
    assert "unknown class 'happi'" in four and "case" not in four


def test_a_misspelt_class_names_the_nearest_one(tmp_path):
    rows = ["a.jpg,train,1,femal", "b.jpg,trian,2,male", "c.jpg,train,3,xyz"]
    lines = _problems(tmp_path, "path,split,id,gender", rows)
    assert any(":2: column 'gender': value 'femal'" in x and "(did you mean 'female'?)" in x for x in lines)
    assert any(":3: column 'split': value 'trian'" in x and "(did you mean 'train'?)" in x for x in lines)
    assert any(":4: column 'gender': value 'xyz'" in x and "did you mean" not in x for x in lines)
