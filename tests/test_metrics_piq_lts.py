import numpy as np
import pytest

from portrait_keras.metrics import lts, piq
from portrait_keras.schema import Schema, Task

PAPER_FSS_UNCERT = {  # paper Table 4, FSS + BR + uncertainty: PIQ 0.495
    "reid_mAP": 0.351,
    "reid_rank1": 0.536,
    "gender": 0.823,
    "age": 0.685,
    "physique": 0.444,
    "height": 0.650,
    "body": 0.561,
    "arm": 0.530,
    "expression": 0.340,
}


def test_piq_hand_case_reproduces_the_paper():
    result = piq(PAPER_FSS_UNCERT)
    assert result["reid"] == pytest.approx((0.351 + 0.536) / 2)
    assert result["appearance"] == pytest.approx((0.823 + 0.685 + 0.444 + 0.650) / 4)
    assert result["posture"] == pytest.approx((0.561 + 0.530) / 2)
    assert result["emotion"] == pytest.approx(0.340)
    assert result["piq"] == pytest.approx(0.495, abs=5e-4)
    assert list(result) == ["piq", "reid", "appearance", "posture", "emotion"]


def test_piq_with_a_custom_schema_and_no_identity_task():
    schema = Schema(
        (
            Task("hat", "appearance", "single", ("no", "yes")),
            Task("glasses", "appearance", "single", ("no", "yes")),
            Task("mood", "emotion", "multi", ("calm", "tense")),
        )
    )
    result = piq({"hat": 0.5, "glasses": 0.7, "mood": 0.2, "unused": 3.0}, schema)
    assert result == pytest.approx({"piq": (0.6 + 0.2) / 2, "appearance": 0.6, "emotion": 0.2})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"expression": None}, r"needs the metrics \['expression'\]"),
        ({"reid_rank1": None, "arm": None}, r"needs the metrics \['reid_rank1', 'arm'\]"),
        ({"age": 1.5}, "'age' must be in \\[0, 1\\]. Received: 1.5"),
        ({"age": float("nan")}, "'age' must be in"),
        ({"age": "high"}, "'age' must be a number"),
    ],
)
def test_piq_errors(change, message):
    metrics = dict(PAPER_FSS_UNCERT)
    for key, value in change.items():
        if value is None:
            del metrics[key]
        else:
            metrics[key] = value
    with pytest.raises(ValueError, match=message):
        piq(metrics)


def test_piq_argument_types():
    with pytest.raises(ValueError, match="schema must be a portrait_keras Schema"):
        piq(PAPER_FSS_UNCERT, schema="default")
    with pytest.raises(ValueError, match="metrics must be a mapping"):
        piq([0.5] * 9)


def test_lts_hand_cases():
    assert lts([7] * 10) == 1.0  # uniform: 2 of 10 labels hold 20 %
    assert lts([1] * 15) == 1.0  # k N = 3 exactly, despite 0.2 * 15 rounding above 3
    assert lts([3] * 7) == pytest.approx(2 / 1.4)  # ceil(k N) / (k N) when k N is not an integer
    assert lts([100] + [1] * 99) == pytest.approx(1 / 20)  # one dominant label
    assert lts([1, 100, 5, 0], k=0.5) == pytest.approx(1 / 2)  # order does not matter, zeros count in N
    assert lts(np.array([5, 4, 3, 2, 1]), k=0.6) == pytest.approx(2 / 3)  # 5 + 4 = 9 >= 9


@pytest.mark.parametrize(
    "counts, k, message",
    [
        ([1, 2], 0, "k must be a number in \\(0, 1\\). Received: k=0"),
        ([1, 2], 1.0, "k must be"),
        ([1, 2], True, "k must be"),
        ([1, -2], 0.2, "non-negative"),
        ([0, 0], 0.2, "at least one sample"),
        ([], 0.2, "non-empty"),
        ([[1, 2]], 0.2, "1-D"),
    ],
)
def test_lts_errors(counts, k, message):
    with pytest.raises(ValueError, match=message):
        lts(counts, k)


def test_piq_reads_the_f1_names_of_metrics_json():
    scores = {"gender": 0.8, "age": 0.7, "physique": 0.5, "height": 0.6, "body": 0.6, "arm": 0.6, "expression": 0.2}
    as_written = {"reid_mAP": 0.4, "reid_rank1": 0.6, **{f"f1_{k}": v for k, v in scores.items()}}
    assert piq(as_written) == pytest.approx(piq({"reid_mAP": 0.4, "reid_rank1": 0.6, **scores}))
