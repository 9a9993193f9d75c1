"""Zero-shot CLIP attributes (`evaluation/zero_shot.py`): prompts, logits, and the evaluator's scores.

No real CLIP weights here: the end-to-end test uses random tiny towers, and checks that the row
is what the evaluator's metrics give for CLIP's decisions computed another way, not its values.
"""

import keras
import numpy as np
import pytest

from portrait_keras import metrics
from portrait_keras.data.images import read_images
from portrait_keras.evaluation.evaluator import classification_predictions
from portrait_keras.evaluation.zero_shot import (
    DEFAULT_TEMPLATE,
    prompts,
    zero_shot_evaluate,
    zero_shot_logits,
)
from portrait_keras.models import CLIP_MEAN, CLIP_STD, clip_model
from portrait_keras.schema import MULTI, SINGLE, Task, default_schema
from portrait_keras.training.toy_clip import toy_tokenizer

SCHEMA = default_schema()


def test_default_prompts_read_as_english():
    assert prompts(SCHEMA.task("gender")) == [["a photo of a female person."], ["a photo of a male person."]]
    assert [p[0] for p in prompts(SCHEMA.task("age"))][2:] == [
        "a photo of a young adult person.",
        "a photo of a middle aged person.",
        "a photo of an elderly person.",
    ]
    assert prompts(SCHEMA.task("body"))[4] == ["a photo of a person lying."]
    assert prompts(SCHEMA.task("arm"))[1] == ["a photo of a person with one arm raised."]
    assert prompts(SCHEMA.task("expression"))[0] == ["a photo of a person with an angry expression."]
    other = Task("bag", "appearance", SINGLE, ("backpack", "no_bag"))
    assert prompts(other) == [[DEFAULT_TEMPLATE.format("backpack")], [DEFAULT_TEMPLATE.format("no bag")]]


def test_templates_replace_the_defaults_and_lists_ensemble():
    texts = prompts(SCHEMA.task("gender"), {"gender": ["a {}.", "a photo of a {}, a person."]})
    assert texts == [["a female.", "a photo of a female, a person."], ["a male.", "a photo of a male, a person."]]
    assert prompts(SCHEMA.task("body"), {"gender": "x {}"})[0] == ["a photo of a person standing."]
    for bad in ("no slot", "{} and {}", [], ["ok {}", 3]):
        with pytest.raises(ValueError, match="Received: templates\\['gender'\\]"):
            prompts(SCHEMA.task("gender"), {"gender": bad})
    with pytest.raises(ValueError, match="identity task"):
        prompts(SCHEMA.task("id"))


def test_logits_are_scaled_cosines_and_multi_label_keeps_the_top_class():
    model = clip_model("tiny")
    model.logit_scale.assign(np.log(10.0))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 16)).astype("float32")
    images /= np.linalg.norm(images, axis=-1, keepdims=True)
    classes = rng.normal(size=(7, 16)).astype("float32")
    classes /= np.linalg.norm(classes, axis=-1, keepdims=True)
    images[0] = classes[2]  # a sure row; the random ones are unsure
    single = zero_shot_logits(model, images, classes[:5], SCHEMA.task("age"))
    np.testing.assert_allclose(single, 10.0 * images @ classes[:5].T, rtol=1e-5)

    multi = zero_shot_logits(model, images, classes, SCHEMA.task("expression"))
    cos = 10.0 * images @ classes.T
    softmax = np.exp(cos - cos.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    np.testing.assert_allclose(1 / (1 + np.exp(-multi)), softmax, rtol=1e-4, atol=1e-6)
    # The evaluator's multi-label decision on these logits is CLIP's top-1, with or without a
    # class above 0.5 (a confident row and an unsure one).
    decided = classification_predictions(SCHEMA.task("expression"), multi)
    np.testing.assert_array_equal(decided, np.eye(7, dtype=int)[cos.argmax(-1)])
    assert (softmax.max(-1) > 0.5).any() and (softmax.max(-1) < 0.5).any()


@pytest.fixture(scope="module")
def tiny_clip():
    tokenizer = toy_tokenizer(SCHEMA)
    keras.utils.set_random_seed(3)
    model = clip_model(
        "tiny", input_shape=(64, 32, 3), vocab_size=tokenizer.vocabulary_size, context_length=tokenizer.context_length
    )
    return model, tokenizer


def _expected_predictions(model, tokenizer, annotations, split):
    """CLIP's decisions computed apart from zero_shot.py: read, normalise, encode, argmax."""
    pixels = read_images(annotations.paths(split), (64, 32)).astype("float32")
    images = np.asarray(model.encode_image((pixels / 255.0 - CLIP_MEAN) / CLIP_STD, normalize=True))
    out = {}
    for task in SCHEMA.classification_tasks:
        texts = [p[0] for p in prompts(task)]
        text = np.asarray(model.encode_text(tokenizer(texts), normalize=True))
        best = (images @ text.T).argmax(-1)
        out[task.name] = np.eye(task.num_classes, dtype=int)[best] if task.kind == MULTI else best
    return out


def test_zero_shot_scores_clips_decisions_with_the_evaluators_metrics(tiny_clip, tiny_annotations):
    model, tokenizer = tiny_clip
    both = ("query", "gallery")
    result = zero_shot_evaluate(model, tokenizer, tiny_annotations, split=both)
    expected = {s: _expected_predictions(model, tokenizer, tiny_annotations, s) for s in both}
    varied = 0
    for task in SCHEMA.classification_tasks:
        y_true = np.concatenate([tiny_annotations.labels(s)[task.name] for s in both])
        y_pred = np.concatenate([expected[s][task.name] for s in both])
        varied += len(np.unique(y_pred, axis=0)) > 1
        assert result[f"f1_{task.name}"] == pytest.approx(metrics.macro_f1(y_true, y_pred), abs=1e-9), task.name
    assert varied >= 3  # random towers still tell images apart, so a misaligned row would show
    # Both splits: the image embeddings are the re-id features, so the row has re-id and PIQ.
    assert {"reid_mAP", "reid_rank1", "piq", "reid", "appearance", "posture", "emotion"} <= set(result)
    f1 = {t: result[f"f1_{t}"] for t in ("body", "arm")}
    assert result["posture"] == pytest.approx((f1["body"] + f1["arm"]) / 2)


def test_one_split_has_no_reid_so_the_row_gives_the_aspects(tiny_clip, tiny_annotations):
    model, tokenizer = tiny_clip
    result = zero_shot_evaluate(model, tokenizer, tiny_annotations)  # the gallery
    assert not {"reid_mAP", "piq", "reid"} & set(result)
    appearance = [result[f"f1_{t}"] for t in ("gender", "age", "physique", "height")]
    assert result["appearance"] == pytest.approx(np.mean(appearance))
    assert result["emotion"] == result["f1_expression"]
    with pytest.raises(ValueError, match="Received: split='train'"):
        zero_shot_evaluate(model, tokenizer, tiny_annotations, split="train")
    with pytest.raises(ValueError, match="Received: \\['gendr'\\]"):
        zero_shot_evaluate(model, tokenizer, tiny_annotations, templates={"gendr": "a {}"})
