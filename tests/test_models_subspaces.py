"""Feature Space Split (paper §5): disjoint where it should be, shared where it should be."""

import numpy as np
import pytest

from portrait_keras.models import FeatureSpaceSplit, fss_blocks, fss_layout, make_layout
from portrait_keras.schema import Schema, Task, default_schema


def _dims(ranges):
    return set().union(*(range(a, b) for a, b in ranges))


@pytest.mark.parametrize("dim", [256, 2048, 97])
def test_default_layout_follows_the_paper(dim):
    schema = default_schema()
    layout = fss_layout(schema, dim)
    dims = {t: _dims(r) for t, r in layout.items()}
    appearance = ("gender", "age", "physique", "height")
    # Appearance attributes are pairwise disjoint; re-id reads them all plus free dims.
    for i, a in enumerate(appearance):
        for b in appearance[i + 1 :]:
            assert not dims[a] & dims[b]
        assert dims[a] < dims["id"]
    assert len(dims["id"]) > sum(len(dims[a]) for a in appearance)
    # Posture: body and arm share a block and each has its own dims.
    shared = dims["body"] & dims["arm"]
    assert shared and dims["body"] - shared and dims["arm"] - shared
    # The three aspects are disjoint and together cover [0, dim).
    aspects = [dims["id"], dims["body"] | dims["arm"], dims["expression"]]
    assert sum(len(a) for a in aspects) == dim and set().union(*aspects) == set(range(dim))


def test_blocks_tile_the_vector_with_sizes_proportional_to_class_counts():
    blocks = fss_blocks(default_schema(), 2048)
    assert blocks[0].start == 0 and blocks[-1].stop == 2048
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:]))
    sizes = {b.owner: b.size for b in blocks}
    # Weights: 2, 5, 3, 3, free 13 | 5, shared 5, 5 | 7 (Σ 48); 2048/48 = 42.67 dims per class.
    assert sizes == {
        "gender": 85, "age": 213, "physique": 128, "height": 128, "free": 557,
        "body": 213, "shared": 213, "arm": 213, "expression": 298,
    }  # fmt: skip
    per_class = {o: sizes[o] / w for o, w in [("gender", 2), ("age", 5), ("physique", 3), ("expression", 7)]}
    assert max(per_class.values()) - min(per_class.values()) < 1.0


def test_the_default_layout_at_256_dims_is_documented():
    assert fss_layout(default_schema(), 256) == {
        "id": [[0, 141]], "gender": [[0, 10]], "age": [[10, 36]], "physique": [[36, 52]],
        "height": [[52, 68]], "body": [[141, 193]], "arm": [[167, 219]], "expression": [[219, 256]],
    }  # fmt: skip


def test_ratios_resize_the_free_and_shared_blocks():
    base = {b.owner: b.size for b in fss_blocks(default_schema(), 480)}
    more = {b.owner: b.size for b in fss_blocks(default_schema(), 480, free_ratio=2.0, shared_ratio=0.0)}
    assert more["free"] > base["free"] and "shared" not in more
    assert fss_layout(default_schema(), 480, shared_ratio=0.0)["body"] != fss_layout(default_schema(), 480)["body"]


def test_the_rule_works_for_other_schemas():
    schema = Schema(
        (
            Task("a", "posture", "single", ("x", "y", "z")),
            Task("b", "posture", "single", ("x", "y")),
            Task("c", "posture", "multi", ("x", "y", "z", "w")),
            Task("e", "emotion", "single", ("x", "y")),
        )
    )
    layout = fss_layout(schema, 100)
    dims = {t: _dims(r) for t, r in layout.items()}
    shared = dims["a"] & dims["b"] & dims["c"]
    assert shared and all(dims[t] - shared for t in "abc")
    assert len(layout["c"]) == 2  # shared and own block are not adjacent: two ranges
    assert not (dims["a"] | dims["b"] | dims["c"]) & dims["e"]
    # Re-id alone in its aspect: its free block weighs as much as an average other aspect.
    alone = fss_blocks(default_schema(), 60, tasks=["id", "expression"])
    assert [(b.owner, b.size) for b in alone] == [("free", 30), ("expression", 30)]
    assert fss_layout(default_schema(), 64, tasks=["id"]) == {"id": [[0, 64]]}


def test_appearance_attributes_stay_disjoint_without_reid():
    # Without the identity task no free block either: gender and age split the vector 2:5.
    blocks = fss_blocks(default_schema(), 70, tasks=["gender", "age"])
    assert [(b.owner, b.start, b.stop) for b in blocks] == [("gender", 0, 20), ("age", 20, 70)]
    layout = fss_layout(default_schema(), 2048, tasks=["gender", "age", "physique", "height", "body", "arm"])
    appearance = [_dims(layout[t]) for t in ("gender", "age", "physique", "height")]
    assert sum(map(len, appearance)) == len(set().union(*appearance))
    assert _dims(layout["body"]) & _dims(layout["arm"])  # posture still shares


def test_layout_errors_are_explicit():
    with pytest.raises(ValueError, match="too small"):
        fss_blocks(default_schema(), 8)
    with pytest.raises(ValueError, match="Received: free_ratio=-1"):
        fss_blocks(default_schema(), 64, free_ratio=-1)
    with pytest.raises(ValueError, match="Unknown head.*Received: head='split'"):
        make_layout("split", default_schema(), 64)
    with pytest.raises(ValueError, match="exactly one task"):
        make_layout("single_task", default_schema(), 64, tasks=["id", "age"])


@pytest.mark.parametrize(
    "head, tasks, expected",
    [
        ("sim_mtl", None, {t: [[0, 64]] for t in default_schema().names}),
        ("sim_mtl", ["age", "arm"], {"age": [[0, 64]], "arm": [[0, 64]]}),
        ("single_task", ["arm"], {"arm": [[0, 64]]}),
    ],
)
def test_baseline_layouts_read_the_whole_vector(head, tasks, expected):
    assert make_layout(head, default_schema(), 64, tasks=tasks) == expected


def test_feature_space_split_concatenates_each_tasks_ranges():
    x = np.arange(12, dtype="float32").reshape(2, 6)
    out = FeatureSpaceSplit({"a": [[0, 2]], "b": [[1, 3], [4, 6]]})(x)
    np.testing.assert_array_equal(np.asarray(out["a"]), x[:, :2])
    np.testing.assert_array_equal(np.asarray(out["b"]), x[:, [1, 2, 4, 5]])


@pytest.mark.parametrize(
    "layout, match",
    [
        ({}, "non-empty dict"),
        ({"a": []}, "non-empty list"),
        ({"a": [[3, 2]]}, "0 ≤ start < stop"),
        ({"a": [[0, 1.5]]}, "ints"),
    ],
)
def test_feature_space_split_validates_its_layout(layout, match):
    with pytest.raises(ValueError, match=match):
        FeatureSpaceSplit(layout)


def test_feature_space_split_rejects_a_too_short_input():
    with pytest.raises(ValueError, match="reads dims up to 10"):
        FeatureSpaceSplit({"a": [[0, 10]]})(np.zeros((1, 6), "float32"))
