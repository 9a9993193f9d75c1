"""Attribute queries (`search --where`, `serving.search.by_attributes`) and text search over a
gallery (`search --text`, `serving.text_search.search_by_text`), and `convert-clip`."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from portrait_keras.cli import main
from portrait_keras.errors import InputError
from portrait_keras.schema import default_schema
from portrait_keras.serving.search import (
    attribute_match,
    by_attributes,
    cache_path,
    gallery_outputs,
    load_gallery,
    parse_where,
    reweighted_similarity,
)

TASKS = default_schema().classification_tasks
GENDER = {"female": [1.0, 0.0], "male": [0.0, 1.0]}


class FixedPredictor:
    """A model whose outputs are fixed per image: image `i` is filled with the value `10 * i`.

    Attributes as `Predictor`; `predicted` counts the images run."""

    def __init__(self, probabilities, embeddings, fingerprint="fixed"):
        self.probabilities, self.embeddings = probabilities, np.asarray(embeddings, np.float32)
        self.path, self.image_size, self.tasks = "fixed-model", (16, 8), TASKS
        self.has_embedding, self.fingerprint, self.predicted = True, fingerprint, 0
        self.background = "keep"

    def predict(self, images, batch_size=32):
        index = np.round(images[:, 0, 0, 0] / 10).astype(int)
        self.predicted += len(images)
        out = {t.name: np.asarray(self.probabilities[t.name], np.float32)[index] for t in self.tasks}
        return {**out, "embedding": self.embeddings[index]}


def _probabilities(rows):
    """Per-task `[n, C]` probabilities: uniform, except the tasks each row (a dict) sets."""
    out = {}
    for task in TASKS:
        fill = 0.5 if task.kind == "multi" else 1 / task.num_classes
        table = np.full((len(rows), task.num_classes), fill)
        for i, row in enumerate(rows):
            if task.name in row:
                table[i] = row[task.name]
        out[task.name] = table
    return out


def _age(**values):
    return [values.get(c, 0.0) for c in TASKS[1].classes]


def _expression(**values):
    return [values.get(c, 0.0) for c in TASKS[6].classes]


# Five people; what the model "sees" in each. Expected P(female, elderly, happy):
# 0: 0.9 * 0.8 * 0.9 = 0.648   1: 0.2 * 0.8 * 0.9 = 0.144   2: 0.9 * 0.1 * 0.9 = 0.081
# 3: 0.9 * 0.8 * 0.1 = 0.072   4: 0.9 * 0.8 * 0.9 = 0.648 (a tie with 0: gallery order)
ROWS = [
    {"gender": [0.9, 0.1], "age": _age(elderly=0.8, middle_aged=0.2), "expression": _expression(happy=0.9)},
    {"gender": [0.2, 0.8], "age": _age(elderly=0.8, middle_aged=0.2), "expression": _expression(happy=0.9)},
    {"gender": [0.9, 0.1], "age": _age(elderly=0.1, middle_aged=0.9), "expression": _expression(happy=0.9)},
    {"gender": [0.9, 0.1], "age": _age(elderly=0.8, middle_aged=0.2), "expression": _expression(happy=0.1)},
    {"gender": [0.9, 0.1], "age": _age(elderly=0.8, middle_aged=0.2), "expression": _expression(happy=0.9, sad=0.6)},
]
EMBEDDINGS = [[1, 0], [1, 0], [0, 1], [1, 1], [-1, 0.1]]


@pytest.fixture
def hand_made(tmp_path):
    """`(predictor, gallery)`: five images whose outputs are `ROWS`, `EMBEDDINGS`."""
    folder = tmp_path / "gallery"
    folder.mkdir()
    for i in range(len(ROWS)):
        Image.fromarray(np.full((16, 8, 3), 10 * i, np.uint8)).save(folder / f"{i}.png")
    return FixedPredictor(_probabilities(ROWS), EMBEDDINGS), load_gallery(folder)


def _names(result):
    return [os.path.basename(p) for p in result.paths]


def test_gallery_ranked_by_the_joint_probability(hand_made):
    predictor, gallery = hand_made
    result = by_attributes(predictor, gallery, ["gender=female", "age=elderly", "expression=happy"], k=5)
    assert _names(result) == ["0.png", "4.png", "1.png", "2.png", "3.png"]
    np.testing.assert_allclose(result.scores, [0.648, 0.648, 0.144, 0.081, 0.072], rtol=1e-5)
    assert result.conditions == ["gender=female", "age=elderly", "expression=happy"]
    np.testing.assert_allclose(result.matches[2], [0.2, 0.8, 0.9], rtol=1e-6)
    assert result.distances is None and result.ids is None
    # A mapping says the same; k cuts the list.
    again = by_attributes(predictor, gallery, {"gender": "female", "age": "elderly", "expression": "happy"}, k=2)
    assert _names(again) == ["0.png", "4.png"]


def test_values_of_one_task_are_alternatives_or_all_required():
    where = parse_where(["age=middle_aged", "age=elderly", "expression=happy", "expression=sad"], TASKS)
    joint, per_condition = attribute_match(_probabilities(ROWS), where)
    # Single-label: P(middle_aged or elderly) = 1 for every row; multi-label: happy AND sad.
    np.testing.assert_allclose(joint, [0, 0, 0, 0, 0.9 * 0.6], atol=1e-6)
    assert per_condition.shape == (5, 4)


def test_a_query_image_is_reweighted_by_the_attribute_match(hand_made, tmp_path):
    predictor, gallery = hand_made
    query = tmp_path / "query.png"
    shutil.copy(gallery.paths[0], query)  # embedding [1, 0]
    result = by_attributes(predictor, gallery, ["gender=female"], k=5, query=str(query))
    # (1 - d/2) * P(female): d = 0, 0, 1, 1 - 1/√2, 1 + 1/√1.01.
    d = np.array([0, 0, 1, 1 - 2**-0.5, 1 + 1 / np.sqrt(1.01)])
    expected = (1 - d / 2) * np.array([0.9, 0.2, 0.9, 0.9, 0.9])
    order = np.argsort(-expected, kind="stable")
    assert _names(result) == [f"{i}.png" for i in order]
    np.testing.assert_allclose(result.scores, expected[order], atol=1e-6)
    np.testing.assert_allclose(result.distances, d[order], atol=1e-6)
    # α = 0 is re-id alone.
    plain = by_attributes(predictor, gallery, ["gender=female"], k=5, query=str(query), attribute_weight=0)
    np.testing.assert_allclose(plain.scores, 1 - np.sort(d) / 2, atol=1e-6)
    np.testing.assert_allclose(reweighted_similarity([0.0, 2.0], np.array([0.5, 1.0]), 2.0), [0.25, 0.0])


@pytest.mark.parametrize(
    "where, message",
    [
        (
            ["gendr=female"],
            "where gendr=female: unknown task 'gendr'. Allowed: gender, age, physique, height, "
            "body, arm, expression (did you mean 'gender'?)",
        ),
        (
            ["age=eldery"],
            "where age=eldery: unknown value 'eldery' for age. Allowed: child, teenager, "
            "young_adult, middle_aged, elderly (did you mean 'elderly'?)",
        ),
        (["id=3"], "where id=3: unknown task 'id'. Allowed: gender,"),
        (["female"], "where 'female': expected TASK=VALUE, e.g. gender=female"),
        ([], "where: no condition given"),
    ],
)
def test_unknown_tasks_and_values_name_the_allowed_ones(hand_made, where, message):
    predictor, gallery = hand_made
    with pytest.raises(InputError) as error:
        by_attributes(predictor, gallery, where)
    assert str(error.value).startswith(message)
    assert predictor.predicted == 0  # checked before any image is read


def test_probabilities_are_cached_with_the_embeddings(hand_made):
    predictor, gallery = hand_made
    first = gallery_outputs(predictor, gallery)
    assert predictor.predicted == 5 and sorted(first.probabilities) == sorted(t.name for t in TASKS)
    again = gallery_outputs(predictor, gallery)
    assert again.embedded == 0 and predictor.predicted == 5
    for task in TASKS:
        np.testing.assert_array_equal(again.probabilities[task.name], first.probabilities[task.name])
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    # A cache written before probabilities were cached (embeddings only) is rebuilt.
    path = cache_path(gallery, predictor)
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if not k.startswith("prob_")}
    np.savez(path, **old)
    assert gallery_outputs(predictor, gallery).embedded == 5
    assert by_attributes(predictor, gallery, ["body=sitting"]).embedded == 0


# === On the smoke run ===


@pytest.fixture(scope="module")
def gallery_csv(tiny_synth, tmp_path_factory):
    folder = tmp_path_factory.mktemp("where") / "data"
    shutil.copytree(os.path.dirname(tiny_synth), folder)
    return folder / "annotations.csv"


def test_search_where_on_the_smoke_run(smoke_run_dir, gallery_csv, tmp_path, capsys):
    from portrait_keras.data import read_annotations
    from portrait_keras.serving.predictor import load_predictor
    from portrait_keras.serving.search import predict_files

    where = ["--where", "gender=female", "--where", "age=elderly", "--where", "body=sitting"]
    where += ["--where", "expression=happy"]
    plot = tmp_path / "where.png"
    args = ["search", str(smoke_run_dir), "--gallery", str(gallery_csv), *where]
    assert main([*args, "-k", "20", "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["where"] == ["gender=female", "age=elderly", "body=sitting", "expression=happy"]
    hits = report["results"]
    assert len(hits) == 20 and [h["rank"] for h in hits] == list(range(1, 21))
    # The scores are the product of the model's probabilities, in decreasing order.
    paths = list(read_annotations(gallery_csv).paths("gallery"))
    probs = predict_files(load_predictor(smoke_run_dir), paths)
    tasks = {t.name: t for t in TASKS}
    joint = np.ones(len(paths))
    for name, value in (("gender", "female"), ("age", "elderly"), ("body", "sitting"), ("expression", "happy")):
        joint *= probs[name][:, tasks[name].index(value)]
    expected = np.argsort(-joint, kind="stable")[:20]
    assert [h["path"] for h in hits] == [paths[i] for i in expected]
    np.testing.assert_allclose([h["score"] for h in hits], joint[expected], rtol=1e-4)
    assert set(hits[0]["match"]) == set(report["where"])
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (2800, 340)  # 20 tiles, no query

    # Text output; with --query the re-id similarity is re-weighted.
    assert main([*args[:4], "--where", "body=sitting", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "where: body=sitting" and len(lines) == 4 and "sitting=" in lines[1]
    query = paths[5]
    assert main([*args[:4], "--where", "body=sitting", "--query", query, "-k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    scores = [(1 - h["distance"] / 2) * h["match"]["body=sitting"] for h in hits]
    np.testing.assert_allclose([h["score"] for h in hits], scores, rtol=1e-5)
    assert scores == sorted(scores, reverse=True)


def test_search_where_errors_are_one_line(smoke_run_dir, gallery_csv, capsys):
    args = ["search", str(smoke_run_dir), "--gallery", str(gallery_csv)]
    assert main([*args, "--where", "expresion=happy"]) == 2
    assert capsys.readouterr().err == (
        "error: --where expresion=happy: unknown task 'expresion'. Allowed: gender, age, physique, height, body, "
        "arm, expression (did you mean 'expression'?)\n"
    )
    assert main([*args, "--where", "body=siting"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --where body=siting: unknown value 'siting' for body. Allowed: standing,")
    assert err.endswith("(did you mean 'sitting'?)\n") and len(err.splitlines()) == 1
    assert main(args) == 2
    assert "nothing to search for" in capsys.readouterr().err


# === Text search over a gallery, convert-clip ===

TEXTS = ["a photo of an elderly man sitting", "a young woman standing with arms crossed", "a happy child walking"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """`(weights, vocabulary, model, tokenizer)`: random tiny towers for a tiny vocabulary."""
    from portrait_keras.data.clip_tokenizer import ClipTokenizer, learn_merges, write_vocabulary
    from portrait_keras.models import clip_model
    from portrait_keras.models.clip import CLIP_CONFIGS

    folder = tmp_path_factory.mktemp("clip")
    vocabulary = write_vocabulary(str(folder / "vocab.txt.gz"), learn_merges(TEXTS))
    tokenizer = ClipTokenizer(vocabulary, context_length=CLIP_CONFIGS["tiny"]["context_length"])
    model = clip_model("tiny", vocab_size=tokenizer.vocabulary_size)
    weights = str(folder / "tiny.weights.h5")
    model.save_weights(weights)
    return weights, vocabulary, model, tokenizer


@pytest.fixture
def folder_gallery(tiny_annotations, tmp_path):
    for i, path in enumerate(tiny_annotations.paths("gallery")[:12]):
        (tmp_path / "gallery").mkdir(exist_ok=True)
        shutil.copy(path, tmp_path / "gallery" / f"{i:02d}.jpg")
    return tmp_path / "gallery"


def test_search_text_ranks_the_gallery_with_the_clip_towers(tiny_clip, folder_gallery, capsys):
    from portrait_keras.data.images import read_images
    from portrait_keras.serving.text_search import embed_images, rank_by_text

    weights, vocabulary, model, tokenizer = tiny_clip
    args = ["search", "--gallery", str(folder_gallery), "--text", TEXTS[0], "--clip", weights, "--vocab", vocabulary]
    args += ["--clip-config", "tiny", "-k", "5", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["text"] == TEXTS[0] and report["clip"] == weights
    paths = load_gallery(folder_gallery).paths
    indices, scores = rank_by_text(model, tokenizer, TEXTS[0], embed_images(model, read_images(paths, (32, 32))), 5)
    assert [h["path"] for h in report["results"]] == [paths[i] for i in indices[0]]
    np.testing.assert_allclose([h["score"] for h in report["results"]], scores[0], atol=1e-5)
    caches = [n for n in os.listdir(folder_gallery) if n.startswith(".portrait_embeddings-clip-")]
    assert len(caches) == 1

    # Another text over the same gallery reads the cached image embeddings.
    from portrait_keras.serving import text_search

    clip, tokenizer = text_search.load_clip(weights, vocabulary, "tiny")
    result = text_search.search_by_text(clip, tokenizer, load_gallery(folder_gallery), TEXTS[1], k=3)
    assert result.embedded == 0 and len(result.paths) == 3
    assert main([*args[:4], TEXTS[2], *args[5:-1]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"text: {TEXTS[2]}" and len(lines) == 6


def test_search_text_errors_are_one_line(tiny_clip, folder_gallery, smoke_run_dir, tmp_path, capsys):
    from portrait_keras.data.clip_tokenizer import learn_merges, write_vocabulary

    weights, vocabulary, _, _ = tiny_clip
    other = write_vocabulary(str(tmp_path / "other.txt.gz"), learn_merges(["a man"]))  # a smaller vocabulary
    base = ["search", "--gallery", str(folder_gallery), "--text", "a man"]
    cases = [
        (base, "error: --text needs --clip and --vocab (the CLIP weights file and its vocabulary)"),
        ([*base, "--clip", weights, "--vocab", str(tmp_path / "none.gz")], f"error: {tmp_path / 'none.gz'}: no such"),
        ([*base, "--clip", weights, "--vocab", other, "--clip-config", "tiny"], f"error: {weights}: not CLIP tiny"),
        ([*base, "--clip", weights, "--vocab", vocabulary, "--clip-config", "ViT-B-8"], "error: unknown CLIP config"),
        ([*base, "--where", "age=elderly"], "error: --text ranks by CLIP alone; leave out --where"),
        (["search", str(smoke_run_dir), "--gallery", str(folder_gallery), "--clip", weights], "error: --clip and"),
    ]
    for args, start in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(start) and len(err.splitlines()) == 1, err


def test_convert_clip_command(tmp_path, capsys):
    from portrait_keras.models import clip_model
    from portrait_keras.models.convert_clip import state_dict_shapes

    rng = np.random.default_rng(0)
    state = {k: rng.normal(size=s).astype("float32") for k, s in state_dict_shapes("tiny").items()}
    np.savez(tmp_path / "tiny.npz", **state)
    out = tmp_path / "tiny.weights.h5"
    assert main(["convert-clip", str(tmp_path / "tiny.npz"), str(out), "--config", "tiny"]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: ")
    model = clip_model("tiny", weights=str(out))
    np.testing.assert_array_equal(np.asarray(model.logit_scale), state["logit_scale"])
    # A state_dict of other sizes: every key is checked, one error line.
    del state["logit_scale"]
    np.savez(tmp_path / "bad.npz", **state)
    assert main(["convert-clip", str(tmp_path / "bad.npz"), str(tmp_path / "bad.weights.h5"), "--config", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "logit_scale" in err and len(err.splitlines()) == 1
