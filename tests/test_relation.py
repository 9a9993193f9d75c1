"""The interpersonal-relation model of paper 004 §5: tied Siamese backbone, spatial cues, eq. 17's
loss, the pair CSV, the SynthPortrait pairs rule, `train relation` and `interpret --pair`."""

import csv
import json

import keras
import numpy as np
import pytest

from portrait_keras.data.annotations import AnnotationError
from portrait_keras.data.pairs import read_pairs
from portrait_keras.data.synthportrait.pairs import CAUSES, FLIP_RATE, HEIGHT, WIDTH, generate_pairs, trait_rule
from portrait_keras.losses.relation import masked_trait_bce
from portrait_keras.models.relation import RelationModel, SpatialCues
from portrait_keras.traits import TRAITS

SHAPE = (64, 32, 3)


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    """64 SynthPortrait pairs (seed 0)."""
    return generate_pairs(tmp_path_factory.mktemp("pairs"), pairs=64, seed=0)


@pytest.fixture(scope="module")
def relation_run(pairs_csv, tmp_path_factory):
    """The smoke form of `python experiments/run.py relation`: tiny backbone, 64x32 crops, 1 epoch."""
    from portrait_keras.commands.train import main

    run_dir = tmp_path_factory.mktemp("relation") / "run"
    args = ["relation", "--data", str(pairs_csv), "--epochs", "1", "--run-dir", str(run_dir)]
    assert main(args + ["--set", "data.image_size=[64,32]", "--set", "model.backbone=tiny"]) == 0
    return run_dir


def _inputs(batch=2, seed=0, boxes=True):
    rng = np.random.default_rng(seed)
    x = {
        "image_a": rng.uniform(0, 255, (batch, *SHAPE)).astype("float32"),
        "image_b": rng.uniform(0, 255, (batch, *SHAPE)).astype("float32"),
    }
    if boxes:
        x["boxes"] = rng.uniform(0.1, 0.5, (batch, 8)).astype("float32")
    return x


# === Model ===


def test_the_two_branches_share_one_backbone():
    model = RelationModel(input_shape=SHAPE)
    ids = [id(v) for v in model.weights]
    assert len(ids) == len(set(ids))
    assert all(any(v is w for w in model.weights) for v in model.backbone.weights)
    # Only the backbone, the projection W_R, the spatial encoder and the trait classifier hold weights.
    heads = ("shared_representation", "spatial_encoder", "trait_classifier")
    head = [w for name in heads for w in model.get_layer(name).weights]
    assert len(model.weights) == len(model.backbone.weights) + len(head)

    x = _inputs()
    x["image_b"] = x["image_a"].copy()
    before = model(x)
    np.testing.assert_allclose(before["feature_a"], before["feature_b"], rtol=1e-5, atol=1e-6)
    kernel = next(v for v in model.backbone.weights if v.path.endswith("kernel"))
    kernel.assign(kernel.numpy() * 3.0)
    after = model(x)
    # One change of the shared backbone moves both branches, alike.
    assert not np.allclose(before["feature_a"], after["feature_a"])
    np.testing.assert_allclose(after["feature_a"], after["feature_b"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial_cues", [True, False])
def test_relation_model_round_trips_config_and_safe_mode_file(tmp_path, spatial_cues):
    thresholds = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    model = RelationModel(
        input_shape=SHAPE, spatial_cues=spatial_cues, hidden=16, dropout=0.25, l2=1e-4, thresholds=thresholds
    )
    config = model.get_config()
    assert RelationModel.from_config(config).get_config() == config
    x = _inputs(boxes=spatial_cues)
    path = tmp_path / "relation.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    assert isinstance(loaded, RelationModel) and loaded.traits == TRAITS and loaded.thresholds == thresholds
    np.testing.assert_allclose(loaded(x)["traits"], model(x)["traits"], rtol=1e-5, atol=1e-5)
    assert tuple(model(x)["traits"].shape) == (2, len(TRAITS))
    assert ("boxes" in model.input) == spatial_cues


def test_spatial_cues_are_the_boxes_relative_position_and_scale_ratio():
    boxes = np.asarray([[0.1, 0.2, 0.2, 0.5, 0.5, 0.3, 0.1, 0.25]], np.float32)
    cues = keras.ops.convert_to_numpy(SpatialCues()(boxes))[0]
    np.testing.assert_allclose(cues[:8], boxes[0])
    np.testing.assert_allclose(cues[8:], [(0.1 - 0.5) / 0.2, (0.2 - 0.3) / 0.5, 0.2 / 0.1], rtol=1e-6)
    layer = SpatialCues(min_size=0.01)
    assert SpatialCues.from_config(layer.get_config()).min_size == 0.01


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden": 0}, "hidden"),
        ({"dropout": 1.0}, "dropout"),
        ({"traits": ()}, "traits"),
        ({"traits": ("warm", "warm")}, "traits"),
        ({"spatial_cues": 1}, "spatial_cues"),
        ({"l2": -1.0}, "l2"),
        ({"input_shape": (64, 32)}, "input_shape"),
        ({"preprocessing": "imagenett"}, "preprocessing"),
        ({"thresholds": (0.5,) * 7}, "thresholds"),
        ({"thresholds": (1.0,) * 8}, "thresholds"),
    ],
)
def test_relation_model_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"{message}.*Received|Received.*{message}"):
        RelationModel(**{"input_shape": SHAPE, **kwargs})
    with pytest.raises(ValueError, match="Received"):
        SpatialCues(min_size=0)


def test_a_portrait_model_initialises_both_branches(tmp_path):
    """§5 starts K_l = K_r from the DCN of §4: `--init-from` a portrait run fills the tied backbone."""
    from portrait_keras.models import PortraitModel
    from portrait_keras.schema import default_schema
    from portrait_keras.training.fit import _init_from

    portrait = PortraitModel(default_schema(), 5, backbone="tiny", input_shape=(64, 32, 3))
    portrait.save(tmp_path / "portrait.keras")
    model = RelationModel(input_shape=SHAPE)
    _init_from(model, tmp_path / "portrait.keras")
    donor = {w.path: w.numpy() for w in portrait.get_layer("tiny").weights}
    assert len(donor) == len(model.backbone.weights)
    for w in model.backbone.weights:
        np.testing.assert_array_equal(w.numpy(), donor[w.path])


# === Loss (eq. 17) ===


def test_masked_trait_bce_counts_known_cells_only():
    labels = np.asarray([[1, 0, -1], [-1, -1, -1], [0, -1, 1]], np.float32)
    logits = np.asarray([[2.0, -1.0, 50.0], [9.0, 9.0, 9.0], [0.5, -30.0, 1.5]], np.float32)

    def bce(y, x):
        p = 1 / (1 + np.exp(-x))
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))

    # Sum over a pair's known traits, mean over the two pairs with a known trait.
    expected = ((bce(1, 2.0) + bce(0, -1.0)) + (bce(0, 0.5) + bce(1, 1.5))) / 2
    assert float(masked_trait_bce(labels, logits)) == pytest.approx(expected, rel=1e-5)
    assert float(masked_trait_bce(-np.ones((2, 3)), logits[:2])) == 0.0


def test_weight_decay_is_eq17_prior_with_the_tied_backbone_counted_twice():
    model = RelationModel(input_shape=SHAPE, hidden=8, l2=1e-3)
    backbone = sum(float(np.sum(v.numpy() ** 2)) for v in model.backbone.trainable_weights if v.path.endswith("kernel"))
    names = ("shared_representation", "spatial_encoder", "trait_classifier")
    heads = sum(float(np.sum(model.get_layer(n).kernel.numpy() ** 2)) for n in names)
    assert float(model.weight_decay()) == pytest.approx(1e-3 * (2 * backbone + heads), rel=1e-4)
    assert float(RelationModel(input_shape=SHAPE, l2=0.0).weight_decay()) == 0.0


# === Pair CSV ===


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_pair_csv_problems_name_file_line_column_and_value(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    header = ["path", "box_a", "box_b", "split", *TRAITS]
    good = ["a.jpg", "0 0 10 20", "10 0 10 20", "train", *["1"] * 8]
    rows = [
        good,
        ["a.jpg", "0 0 10", "10 0 10 20", "train", *["1"] * 8],
        ["b.jpg", "0 0 10 20", "10 0 0 20", "test", *["1"] * 8],
        ["a.jpg", "0 0 10 20", "10 0 10 20", "validation", "yes", *["0"] * 7],
    ]
    csv_path = _write(tmp_path / "pairs.csv", header, rows)
    with pytest.raises(AnnotationError) as info:
        read_pairs(csv_path)
    text = str(info.value)
    assert "4 problems" not in text and "5 problems" in text
    assert f"{csv_path}:3: column 'box_a': value '0 0 10': expected 'x y w h'" in text
    assert f"{csv_path}:4: column 'path': value 'b.jpg': missing image file" in text
    assert f"{csv_path}:4: column 'box_b': value '10 0 0 20'" in text
    assert f"{csv_path}:5: column 'split': value 'validation': expected one of train, test" in text
    assert f"{csv_path}:5: column 'dominant': value 'yes': expected 1 (present), 0 (absent) or empty" in text


def test_pair_csv_forms_columns_and_missing_traits(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    crops = _write(
        tmp_path / "crops.csv",
        ["path_a", "path_b", "split", *TRAITS],
        [["a.jpg", "a.jpg", "test", "1", "", "0", *[""] * 5]],
    )
    pairs = read_pairs(crops)
    assert pairs.form == "crops" and not pairs.has_boxes and pairs.splits == ("test",)
    np.testing.assert_array_equal(pairs.labels("test"), [[1, -1, 0, -1, -1, -1, -1, -1]])
    with pytest.raises(AnnotationError, match="no pairs in this split"):
        pairs.labels("train")
    no_form = _write(tmp_path / "x.csv", ["image", "split"], [["a.jpg", "train"]])
    with pytest.raises(AnnotationError, match="expected columns path, box_a, box_b .* or path_a, path_b"):
        read_pairs(no_form)
    no_trait = _write(
        tmp_path / "y.csv", ["path_a", "path_b", "split", *TRAITS[:-1]], [["a.jpg", "a.jpg", "train", *["0"] * 7]]
    )
    with pytest.raises(AnnotationError, match="column 'assured': value '': missing required column"):
        read_pairs(no_trait)


# === SynthPortrait pairs ===


def test_generated_traits_follow_the_documented_rule_plus_noise(pairs_csv):
    with open(pairs_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    agree = known = 0
    for row in rows:
        rule = trait_rule(**{c: row[c] for c in CAUSES})
        for trait in TRAITS:
            if row[trait] != "":
                known += 1
                agree += int(row[trait]) == rule[trait]
        for column in ("box_a", "box_b"):
            x, y, w, h = map(int, row[column].split())
            assert x >= 0 and y >= 0 and x + w <= WIDTH and y + h <= HEIGHT and w > 0 and h > 0
    assert 0.8 * known < known < len(rows) * len(TRAITS)  # about 10% missing
    assert agree / known > 1 - 3 * FLIP_RATE
    assert agree < known  # the noise is there
    # The rule in words: close pairs are attached; a stander with a sitter is dominant.
    assert trait_rule("happy", "happy", "standing", "sitting", "arms_down", "arms_down", "close") == {
        "dominant": 1, "competitive": 0, "trusting": 1, "warm": 1, "friendly": 1, "attached": 1,
        "demonstrative": 1, "assured": 1,
    }  # fmt: skip
    assert trait_rule("angry", "sad", "sitting", "sitting", "arms_crossed", "arms_down", "far") == {
        "dominant": 0, "competitive": 1, "trusting": 0, "warm": 0, "friendly": 0, "attached": 0,
        "demonstrative": 0, "assured": 0,
    }  # fmt: skip


def test_generated_pairs_are_deterministic_and_read_back(pairs_csv, tmp_path):
    again = generate_pairs(tmp_path, pairs=64, seed=0)
    assert again.read_bytes() == pairs_csv.read_bytes()
    assert (tmp_path / "images" / "pair_000005.jpg").read_bytes() == (
        pairs_csv.parent / "images" / "pair_000005.jpg"
    ).read_bytes()
    pairs = read_pairs(pairs_csv)
    assert pairs.form == "image" and set(pairs.splits) == {"train", "test"}


def test_pair_dataset_crops_both_people_and_normalises_boxes(pairs_csv):
    from portrait_keras.data.pairs import make_pair_dataset

    pairs = read_pairs(pairs_csv)
    inputs, targets = next(iter(make_pair_dataset(pairs, "test", 4, (64, 32))))
    assert tuple(inputs["image_a"].shape) == (4, 64, 32, 3) and inputs["image_a"].dtype == "float32"
    expected = pairs.boxes("test")[:4] / np.asarray([WIDTH, HEIGHT, WIDTH, HEIGHT] * 2)
    np.testing.assert_allclose(inputs["boxes"].numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(targets["traits"].numpy(), pairs.labels("test")[:4])


def test_training_pairs_swap_a_and_b_with_their_boxes(pairs_csv):
    from portrait_keras.data.pairs import make_pair_dataset

    pairs = read_pairs(pairs_csv)
    n = pairs.num_pairs("train")
    shuffled, plain = (next(iter(make_pair_dataset(pairs, "train", n, (32, 16), training=t)))[0] for t in (True, False))
    order = {tuple(np.round(b, 5)) for b in plain["boxes"].numpy()}
    swapped = 0
    for b in shuffled["boxes"].numpy():
        straight, turned = tuple(np.round(b, 5)), tuple(np.round(np.concatenate([b[4:], b[:4]]), 5))
        assert straight in order or turned in order
        swapped += straight not in order
    assert 0.2 * n < swapped < 0.8 * n


def test_each_training_epoch_is_drawn_from_the_seed_and_its_number(pairs_csv):
    from portrait_keras.data.pairs import epoch_steps, make_pair_dataset

    pairs = read_pairs(pairs_csv)
    steps = epoch_steps(pairs, "train", 8)

    def batches(epochs, seed=0):
        ds = make_pair_dataset(pairs, "train", 8, (32, 16), training=True, seed=seed, epochs=epochs)
        return [(x["boxes"].numpy(), x["image_a"].numpy(), y["traits"].numpy()) for x, y in ds]

    whole = batches((0, 3))
    assert len(whole) == 3 * steps and all(len(b[0]) == 8 for b in whole)
    later = batches((2, 3))  # a run resumed at epoch 2 streams what the whole run did there
    for got, want in zip(later, whole[2 * steps :], strict=True):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    # Epochs differ from each other, and another seed draws another order.
    assert not np.array_equal(whole[0][0], whole[steps][0])
    assert not np.array_equal(batches((0, 1), seed=1)[0][0], whole[0][0])


def test_a_killed_relation_run_resumes_after_its_last_epoch_and_ends_as_uninterrupted(
    pairs_csv, tmp_path, monkeypatch, capsys
):
    from portrait_keras.commands.train import main
    from portrait_keras.training import relation

    def args(run):
        sets = ["--set", "data.image_size=[64,32]", "--set", "model.backbone=tiny", "--set", "data.batch_size=16"]
        return ["relation", "--data", str(pairs_csv), "--epochs", "3", "--run-dir", str(tmp_path / run), *sets]

    assert main(args("whole")) == 0
    line = relation._epoch_line

    class Killed(Exception):
        pass

    def killed_after_epoch_2(epoch, epochs, logs):
        line(epoch, epochs, logs)
        if epoch == 1:
            raise Killed  # after the backup of epoch 2 (the first callback)

    monkeypatch.setattr(relation, "_epoch_line", killed_after_epoch_2)
    with pytest.raises(Killed):
        main(args("killed"))
    killed = tmp_path / "killed"
    assert (killed / "backup").is_dir() and not (killed / "metrics.json").exists()
    monkeypatch.setattr(relation, "_epoch_line", line)
    capsys.readouterr()
    assert main(args("killed")) == 0
    assert f"{killed}: resuming after epoch 2 of 3 (backup/)" in capsys.readouterr().err
    assert not (killed / "backup").exists()
    rows = [r["epoch"] for r in csv.DictReader(open(killed / "history.csv"))]
    assert rows == ["0", "1", "2"]
    whole, resumed = (keras.models.load_model(tmp_path / r / "model.keras", compile=False) for r in ("whole", "killed"))
    for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert json.loads((killed / "metrics.json").read_text()) == pytest.approx(
        json.loads((tmp_path / "whole" / "metrics.json").read_text()), abs=1e-6
    )
    # A finished run is not trained again without --overwrite.
    assert main(args("killed")) == 2
    assert "holds a finished run of relation" in capsys.readouterr().err


def test_thresholds_are_the_train_positive_shares_and_score_rare_traits():
    from portrait_keras.training.relation import positive_shares, trait_metrics

    labels = np.asarray([[1, 0], [0, 0], [0, -1], [0, 0]], np.float32)
    assert positive_shares(labels) == pytest.approx((0.25, 0.05))
    # A rare trait: p = 0.3 is under 0.5 but above its 0.25 share.
    probabilities = np.asarray([[0.3, 0.1], [0.1, 0.1], [0.2, 0.9], [0.1, 0.1]])
    assert trait_metrics(labels, probabilities, ("a", "b"))["balanced_accuracy_a"] == 0.5
    assert trait_metrics(labels, probabilities, ("a", "b"), (0.25, 0.5))["balanced_accuracy_a"] == 1.0


# === Experiment and interpret ===


def test_relation_experiment_smoke_writes_per_trait_balanced_accuracy(relation_run):
    metrics = json.loads((relation_run / "metrics.json").read_text())
    for trait in TRAITS:
        assert 0.0 <= metrics[f"balanced_accuracy_{trait}"] <= 1.0
    assert metrics["test_pairs"] > 0
    config = json.loads((relation_run / "config.json").read_text())
    assert config["model"]["head"] == "relation" and config["pair_form"] == "image"
    model = keras.models.load_model(relation_run / "model.keras", safe_mode=True, compile=False)
    assert isinstance(model, RelationModel) and model.spatial_cues


def test_interpret_pair_prints_the_eight_traits(relation_run, pairs_csv, capsys):
    from portrait_keras.commands.interpret import main

    image = pairs_csv.parent / "images" / "pair_000000.jpg"
    assert main([str(relation_run), "--pair", str(image), str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["pairs"][0]
    assert set(result["traits"]) == set(TRAITS) and result["boxes"] == "side by side (assumed)"
    assert main([str(relation_run), "--pairs", str(pairs_csv)]) == 0
    text = capsys.readouterr().out
    assert text.count("\n  relation: ") == 64 and "spatial cues: given" in text
    model = keras.models.load_model(relation_run / "model.keras", safe_mode=True, compile=False)
    assert result["thresholds"] == dict(zip(TRAITS, model.thresholds))
    assert result["present"] == [t for t in TRAITS if result["traits"][t] > result["thresholds"][t]]


def test_a_pair_csv_is_run_in_batches_with_each_pairs_own_result(relation_run, pairs_csv):
    from portrait_keras.data.images import decode_image_file
    from portrait_keras.serving import relation

    model = keras.models.load_model(relation_run / "model.keras", safe_mode=True, compile=False)
    batched = relation.interpret_pairs_csv(model, pairs_csv, batch_size=5)  # 64 pairs: a last batch of 4
    pairs = read_pairs(pairs_csv)
    assert [r["line"] for r in batched] == [int(line) for line in pairs.lines(None)]
    for result, path, boxes in zip(batched[::9], pairs.paths(None)[0][::9], pairs.boxes(None)[::9]):
        image = decode_image_file(path)
        alone = relation.predict(model, relation.pair_inputs(model, image, image, boxes)[0])
        np.testing.assert_allclose(list(result["traits"].values()), alone, atol=1e-4)


def test_a_relation_run_is_evaluated_and_reported(relation_run, pairs_csv, tmp_path, capsys):
    from portrait_keras.commands.evaluate import main as evaluate
    from portrait_keras.commands.report import main as report

    saved = json.loads((relation_run / "metrics.json").read_text())
    assert (relation_run / "report" / "report.md").is_file()  # written at the end of training
    capsys.readouterr()
    assert evaluate([str(relation_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(saved, abs=1e-6)
    assert evaluate([str(relation_run)]) == 0
    table = capsys.readouterr().out
    assert all(t in table for t in TRAITS) and f"{saved['balanced_accuracy_mean']:.3f}" in table
    # Pairs of two crops carry no boxes, which this model reads.
    rows = [[f"images/pair_{i:06d}.jpg", f"images/pair_{i:06d}.jpg", "test", *"10" * 4] for i in range(4)]
    crops = _write(pairs_csv.parent / "crops_eval.csv", ["path_a", "path_b", "split", *TRAITS], rows)
    assert evaluate([str(relation_run), "--data", str(crops)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no boxes" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as code:
        evaluate([str(relation_run), "--flip"])
    assert code.value.code == 2 and "--flip apply to portrait models" in capsys.readouterr().err

    assert report([str(relation_run)]) == 0
    page = (relation_run / "report" / "report.md").read_text()
    assert "Balanced accuracy per trait (paper 004 eq. 18)" in page and all(f"| {t} |" in page for t in TRAITS)
    assert f"| mean | {saved['balanced_accuracy_mean']:.4f} |" in page
    assert {p.name for p in (relation_run / "report").glob("*.png")} == {"curves_loss.png", "f1_bars.png"}
    assert report([str(relation_run), "--data", str(pairs_csv)]) == 2
    assert "a relation run" in capsys.readouterr().err


def test_relation_commands_report_user_errors_in_one_line(relation_run, tmp_path, capsys):
    from portrait_keras.commands.interpret import main as interpret
    from portrait_keras.commands.train import main as train

    bad = _write(
        tmp_path / "bad.csv", ["path_a", "path_b", "split", *TRAITS], [["x.jpg", "x.jpg", "train", *["2"] * 8]]
    )
    assert train(["relation", "--data", str(bad), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{bad}:2: column 'path_a': value 'x.jpg': missing image file" in err
    assert interpret([str(relation_run), "--pair", str(tmp_path / "no.jpg"), str(tmp_path / "no.jpg")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    # A relation run given portrait-style images says what it takes.
    assert interpret([str(relation_run), str(tmp_path / "no.jpg")]) == 2
    assert "--pair A B or --pairs CSV for a relation model" in capsys.readouterr().err


def test_a_two_crop_pair_csv_trains_a_model_without_spatial_cues(pairs_csv, tmp_path, capsys):
    from portrait_keras.commands.interpret import main as interpret
    from portrait_keras.commands.train import main as train

    rows = [
        [f"images/pair_{i:06d}.jpg", f"images/pair_{i + 1:06d}.jpg", "train" if i < 12 else "test", *"10" * 4]
        for i in range(16)
    ]
    crops = _write(pairs_csv.parent / "crops.csv", ["path_a", "path_b", "split", *TRAITS], rows)
    args = ["relation", "--data", str(crops), "--epochs", "1", "--run-dir", str(tmp_path / "run")]
    assert train(args + ["--set", "data.image_size=[64,32]", "--set", "model.backbone=tiny"]) == 0
    model = keras.models.load_model(tmp_path / "run" / "model.keras", safe_mode=True, compile=False)
    assert not model.spatial_cues and "boxes" not in model.input
    capsys.readouterr()
    assert interpret([str(tmp_path / "run"), "--pairs", str(crops)]) == 0
    assert capsys.readouterr().out.count("spatial cues: not used by this model") == 16


@pytest.mark.slow
def test_relation_learns_above_chance(tmp_path):
    """240 pairs, 30 epochs of batch 16 at 64x32, rate 3e-3: `attached` (close: readable from the
    boxes) is learnt."""
    from portrait_keras.commands.train import main

    csv_path = generate_pairs(tmp_path / "pairs", pairs=240, seed=1)
    run_dir = tmp_path / "run"
    args = ["relation", "--data", str(csv_path), "--epochs", "30", "--run-dir", str(run_dir), "--set", "train.lr=3e-3"]
    sizes = ["--set", "data.image_size=[64,32]", "--set", "data.batch_size=16", "--set", "model.backbone=tiny"]
    assert main(args + sizes) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["balanced_accuracy_attached"] > 0.75
    assert metrics["balanced_accuracy_mean"] > 0.55
