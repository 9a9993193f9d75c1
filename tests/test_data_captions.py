"""Captions from labels (`data/captions.py`) and the caption vocabulary of the toy CLIP."""

import numpy as np
import pytest

from portrait_keras.data.captions import caption, known_classes, split_captions
from portrait_keras.data.clip_tokenizer import ClipTokenizer, learn_merges, write_vocabulary
from portrait_keras.schema import MULTI, SINGLE, Schema, Task, default_schema
from portrait_keras.training.toy_clip import toy_tokenizer

SCHEMA = default_schema()


@pytest.mark.parametrize(
    "row, text",
    [
        (
            {"gender": "male", "age": "middle_aged", "physique": "medium", "height": "short", "body": "sitting"},
            "a medium-build short middle-aged male, sitting",
        ),
        ({"arm": "hands_on_hips", "expression": "fear"}, "a person, with hands on hips, looking afraid"),
        (
            {"id": "7", "gender": "", "age": "elderly", "expression": "happy;surprise"},
            "an elderly person, looking happy and surprised",
        ),
        ({}, "a person"),
    ],
)
def test_captions_say_the_known_labels_aspect_by_aspect(row, text):
    assert caption(row, SCHEMA) == text


def test_the_csv_row_and_the_encoded_labels_give_the_same_caption(tiny_annotations):
    for split in tiny_annotations.splits:
        rows = tiny_annotations.table.iloc[tiny_annotations.rows(split)]
        from_csv = [caption(row, SCHEMA) for _, row in rows.iterrows()]
        assert split_captions(tiny_annotations, split) == from_csv
    captions = split_captions(tiny_annotations, "train")
    # Unknown labels (about 10% in SynthPortrait) shorten a caption; two expressions lengthen it.
    assert any("person" in c for c in captions) and any(" and " in c for c in captions)
    assert len(set(captions)) > len(captions) // 2


def test_known_classes_reads_every_label_form_and_refuses_wrong_ones():
    expression = SCHEMA.task("expression")
    assert known_classes(expression, np.array([1, 0, 0, 1, 0, 0, 0], "float32")) == ["angry", "happy"]
    assert known_classes(expression, np.full(7, -1.0)) == []
    assert known_classes(SCHEMA.task("age"), np.int32(-1)) == []
    assert known_classes(SCHEMA.task("age"), float("nan")) == []
    with pytest.raises(ValueError, match="Unknown class 'ancient'"):
        caption({"age": "ancient"}, SCHEMA)
    with pytest.raises(ValueError, match="Received: 5"):
        caption({"age": 5}, SCHEMA)
    with pytest.raises(ValueError, match="7 entries"):
        caption({"expression": [1, 0]}, SCHEMA)


def test_another_schemas_classes_are_captioned_by_their_names():
    schema = Schema(
        (
            Task("bag", "appearance", SINGLE, ("backpack", "no_bag")),
            Task("gender", "appearance", SINGLE, ("woman", "man")),
            Task("mood", "emotion", MULTI, ("calm", "upset")),
        )
    )
    assert caption({"bag": 1, "gender": 0, "mood": [1, 1]}, schema) == "a no bag woman, looking calm and upset"


def test_the_toy_vocabulary_makes_every_caption_word_one_token(tiny_annotations, tmp_path):
    tokenizer = toy_tokenizer(SCHEMA)
    for text in set(split_captions(tiny_annotations, "train")):
        ids = tokenizer.encode(text)
        # One token per word and comma ("medium-build": medium, -, build; "middle-aged" alike).
        assert len(ids) == len(text.replace(",", " ,").replace("-", " - ").split()), text
        assert tokenizer.decode(ids).strip() == text.replace(",", " ,").replace("-", " - ")
    assert max((tokenizer(split_captions(tiny_annotations, "gallery")) > 0).sum(1)) <= tokenizer.context_length
    # Learned merges replay: a word seen once is one token too.
    path = write_vocabulary(tmp_path / "v.txt.gz", learn_merges(["zebra crossing"]))
    assert len(ClipTokenizer(path).encode("zebra crossing")) == 2
