"""`python -m portrait_keras interpret`: descriptions by aspect from the three model forms."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from portrait_keras.cli import main
from portrait_keras.data import read_annotations
from portrait_keras.data.images import read_image
from portrait_keras.errors import InputError
from portrait_keras.schema import MULTI, Schema
from portrait_keras.serving.interpret import describe, format_description, interpret
from portrait_keras.serving.predictor import expand_image_paths, load_predictor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def keras_model(smoke_run_dir):
    return keras.models.load_model(smoke_run_dir / "model.keras")


@pytest.fixture(scope="module")
def predictor(smoke_run_dir):
    return load_predictor(smoke_run_dir)


@pytest.fixture(scope="module")
def sample_images(tiny_annotations):
    """Three gallery images of the tiny dataset (256x128 JPEGs, so interpret resizes them)."""
    return list(tiny_annotations.paths("gallery")[:3])


@pytest.fixture
def pixels():
    """A 300x150 RGB picture with structure (gradients and a block), uint8."""
    y, x = np.mgrid[0:300, 0:150]
    image = np.stack([(x * 255 // 149), (y * 255 // 299), ((x + y) % 256)], axis=-1).astype(np.uint8)
    image[100:200, 40:110] = [200, 30, 60]
    return image


def reference_probabilities(model, schema, path):
    """What the Keras model gives for `path` decoded as the training pipeline decodes it."""
    from portrait_keras.data.images import decode

    image = decode(str(path), tuple(model.input_shape[1:3])).numpy()[None].astype("float32")
    outputs = model(image, training=False)
    probs = {}
    for task in schema.classification_tasks:
        logits = keras.ops.convert_to_numpy(outputs[task.name])[0]
        probs[task.name] = 1 / (1 + np.exp(-logits)) if task.kind == MULTI else np.exp(logits) / np.exp(logits).sum()
    return probs


def flat(result):
    """Every probability of an `interpret` result, in order."""
    entries = [e for a in ("appearance", "posture", "emotion") for e in result[a].values()]
    return np.array([p for e in entries for p in e["probabilities"].values()])


def run_cli(args, capsys):
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_json_gives_the_keras_model_probabilities_for_every_task(
    smoke_run_dir, predictor, keras_model, sample_images, capsys
):
    rc, out, _ = run_cli(["interpret", str(smoke_run_dir), *sample_images, "--json"], capsys)
    assert rc == 0
    report = json.loads(out)
    assert [r["path"] for r in report["images"]] == sample_images
    predictor_schema = predictor.schema
    for result in report["images"]:
        ref = reference_probabilities(keras_model, predictor_schema, result["path"])
        for task in predictor_schema.classification_tasks:
            entry = result[task.aspect][task.name]
            got = np.array([entry["probabilities"][c] for c in task.classes])
            np.testing.assert_allclose(got, ref[task.name], atol=1e-5, err_msg=task.name)
            if task.kind == MULTI:
                above = [task.classes[i] for i in np.argsort(-ref[task.name]) if ref[task.name][i] > 0.5]
                assert entry["labels"] == (above or [task.classes[int(np.argmax(ref[task.name]))]])
                assert entry["fallback"] == (not above)
            else:
                assert entry["label"] == task.classes[int(np.argmax(ref[task.name]))]
                assert entry["probability"] == pytest.approx(ref[task.name].max(), abs=1e-5)
        assert set(result) == {"path", "appearance", "posture", "emotion"}
        assert list(result["appearance"]) == ["gender", "age", "physique", "height"]
        assert list(result["posture"]) == ["body", "arm"] and list(result["emotion"]) == ["expression"]


def test_run_folder_keras_file_and_saved_model_agree(smoke_run_dir, tmp_path, pixels):
    path = tmp_path / "big.png"
    Image.fromarray(pixels).save(path)
    results = {}
    for form in (smoke_run_dir, smoke_run_dir / "model.keras", smoke_run_dir / "saved_model"):
        predictor = load_predictor(form)
        assert predictor.image_size == (128, 64)
        [results[form.name]] = interpret(predictor, [str(path)])
    assert load_predictor(smoke_run_dir / "saved_model").kind == "saved_model"
    a, b, c = results.values()
    for aspect in ("appearance", "posture", "emotion"):
        for task, entry in a[aspect].items():
            for other in (b, c):
                for cls, p in entry["probabilities"].items():
                    assert other[aspect][task]["probabilities"][cls] == pytest.approx(p, abs=1e-4)


def test_threshold_chooses_the_expressions_named(smoke_run_dir, predictor, sample_images, capsys):
    probs = interpret(predictor, sample_images[:1])[0]["emotion"]["expression"]["probabilities"]
    values = sorted(probs.values())
    threshold = (values[2] + values[3]) / 2  # between the 3rd and 4th lowest: 4 classes above
    args = ["interpret", str(smoke_run_dir), sample_images[0], "--json", "--threshold", str(threshold)]
    rc, out, _ = run_cli(args, capsys)
    assert rc == 0
    named = json.loads(out)["images"][0]["emotion"]["expression"]["labels"]
    assert named == sorted((c for c, p in probs.items() if p > threshold), key=lambda c: -probs[c])
    assert len(named) == 4
    # Text: the same classes on the expression line; a threshold above all names none.
    [result] = interpret(predictor, sample_images[:1], threshold)
    line = next(x for x in format_description(result, threshold).splitlines() if x.strip().startswith("expression"))
    assert [w for w in line.split() if w in probs] == named
    [result] = interpret(predictor, sample_images[:1], 0.999)
    best = max(probs, key=probs.get)
    assert f"none above 0.999 (most probable: {best} {probs[best]:.2f})" in format_description(result, 0.999)


def test_text_groups_by_aspect_with_probabilities(smoke_run_dir, predictor, sample_images, capsys):
    [result] = interpret(predictor, sample_images[:1])
    rc, text, _ = run_cli(["interpret", str(smoke_run_dir), *sample_images[:2]], capsys)
    assert rc == 0
    first, second = text.split("\n\n")
    assert second.splitlines()[0] == sample_images[1]
    lines = [line.strip() for line in first.splitlines()]
    assert lines[0] == sample_images[0]
    assert lines.index("appearance") < lines.index("posture") < lines.index("emotion")
    gender = next(line for line in lines if line.startswith("gender"))
    top = result["appearance"]["gender"]
    assert gender.split()[1:3] == [top["label"], f"{top['probability']:.2f}"]


def test_describe_names_expressions_above_the_threshold_only(tiny_annotations):
    schema = tiny_annotations.schema
    probs = {t.name: np.full(t.num_classes, 1.0 / t.num_classes) for t in schema.classification_tasks}
    probs["age"] = np.array([0.1, 0.1, 0.6, 0.1, 0.1])
    probs["expression"] = np.array([0.2, 0.1, 0.1, 0.7, 0.1, 0.9, 0.4])
    d = describe(probs, schema, threshold=0.5)
    assert d["appearance"]["age"]["label"] == "young_adult" and d["appearance"]["age"]["probability"] == 0.6
    assert d["emotion"]["expression"]["labels"] == ["surprise", "happy"]
    assert describe(probs, schema, threshold=0.3)["emotion"]["expression"]["labels"] == ["surprise", "happy", "neutral"]
    assert not d["emotion"]["expression"]["fallback"]
    # None above: the most probable one, marked, as the evaluation decides.
    none_above = describe(probs, schema, threshold=0.95)["emotion"]["expression"]
    assert none_above["labels"] == ["surprise"] and none_above["fallback"]
    with pytest.raises(ValueError, match="threshold"):
        describe(probs, schema, threshold=1.5)


def test_folders_and_globs_expand_to_their_image_files(tmp_path, pixels):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "a" / "one.png")
    Image.fromarray(pixels).save(tmp_path / "a" / "b" / "two.JPG")
    Image.fromarray(pixels).save(tmp_path / "a" / ".hidden.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    one, two = str(tmp_path / "a" / "one.png"), str(tmp_path / "a" / "b" / "two.JPG")
    assert expand_image_paths([tmp_path / "a"]) == [two, one]
    assert expand_image_paths([str(tmp_path / "a" / "**" / "*.png")]) == [one]
    assert expand_image_paths([one, str(tmp_path / "a")]) == [one, two]  # no repeats


def test_any_size_and_format_reads_like_its_png(predictor, tmp_path, pixels):
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(pixels).save(tmp_path / "rgb.webp", lossless=True)  # decoded by Pillow
    Image.fromarray(pixels).save(tmp_path / "rgb.tiff")
    rgba = np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    gray = pixels[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    Image.fromarray(np.repeat(gray[..., None], 3, axis=-1)).save(tmp_path / "gray_rgb.png")
    names = ["rgb.png", "rgb.webp", "rgb.tiff", "rgba.png", "gray.png", "gray_rgb.png"]
    results = interpret(predictor, [str(tmp_path / n) for n in names])
    rgb, webp, tiff, rgba_result, gray_result, gray_rgb = (flat(r) for r in results)
    for same in (webp, tiff, rgba_result):
        np.testing.assert_allclose(same, rgb, atol=1e-5)
    np.testing.assert_allclose(gray_result, gray_rgb, atol=1e-5)
    assert not np.allclose(gray_rgb, rgb, atol=1e-4)  # a different picture gives different output


def test_undecodable_image_is_a_clear_error(smoke_run_dir, sample_images, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    rc, out, err = run_cli(["interpret", str(smoke_run_dir), sample_images[0], str(bad)], capsys)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and str(bad) in err and "decode" in err
    assert "Traceback" not in err
    assert "not an image (starts with b'this is ')" in err  # the input pipeline's words
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(sample_images[0], "rb").read()[:400])
    for path, words in ((zero, "zero bytes"), (truncated, "corrupt or truncated JPEG data")):
        rc, _, err = run_cli(["interpret", str(smoke_run_dir), str(path)], capsys)
        assert rc == 2 and f"{path}: cannot decode this file as an image: {words}" in err, err


def test_a_keras_file_alone_carries_its_schema_and_a_stray_schema_json_changes_nothing(
    smoke_run_dir, sample_images, tmp_path, capsys
):
    lonely = tmp_path / "model.keras"
    shutil.copy(smoke_run_dir / "model.keras", lonely)
    rc, alone, _ = run_cli(["interpret", str(lonely), sample_images[0], "--json"], capsys)
    assert rc == 0 and json.loads(alone)["images"][0]["path"] == sample_images[0]
    schema = json.loads((smoke_run_dir / "schema.json").read_text())
    schema["tasks"] = schema["tasks"][:2]
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    rc, out, _ = run_cli(["interpret", str(lonely), sample_images[0], "--json"], capsys)
    assert rc == 0 and out == alone


@pytest.mark.parametrize("case", ["missing_image", "empty_folder", "not_a_model", "pattern_matches_nothing"])
def test_user_errors_exit_non_zero_without_traceback(case, smoke_run_dir, sample_images, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    model, images = str(smoke_run_dir), [sample_images[0]]
    if case == "missing_image":
        named = str(tmp_path / "nope.jpg")
        images.append(named)
    elif case == "empty_folder":
        named = str(empty)
        images.append(named)
    elif case == "not_a_model":
        model = named = str(empty)
    else:
        named = str(tmp_path / "*.png")
        images.append(named)
    result = subprocess.run(
        [sys.executable, "-m", "portrait_keras", "interpret", model, *images],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and named in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_evaluate_is_forwarded_and_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    assert "portrait-keras evaluate" in capsys.readouterr().out
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_a_keras_file_that_is_no_model_is_a_clear_error(smoke_run_dir, sample_images, tmp_path, capsys):
    shutil.copy(smoke_run_dir / "schema.json", tmp_path / "schema.json")
    (tmp_path / "model.keras").write_bytes(b"not a zip archive")
    rc, _, err = run_cli(["interpret", str(tmp_path / "model.keras"), sample_images[0]], capsys)
    assert rc == 2 and err.startswith("error: ") and str(tmp_path / "model.keras") in err
    assert "Traceback" not in err


def test_expressions_named_are_the_evaluations_decision(tiny_annotations):
    from portrait_keras.evaluation.evaluator import classification_predictions

    schema = tiny_annotations.schema
    task = next(t for t in schema.classification_tasks if t.kind == MULTI)
    rng = np.random.default_rng(0)
    logits = rng.normal(-1.5, 1.5, (200, task.num_classes)).astype(np.float32)
    logits[:50] = -np.abs(logits[:50]) - 0.1  # none above 0.5 for these
    decisions = classification_predictions(task, logits.copy())
    for row, decision in zip(logits, decisions):
        entry = describe({task.name: 1 / (1 + np.exp(-row))}, schema)[task.aspect][task.name]
        assert sorted(entry["labels"]) == sorted(task.classes[i] for i in np.flatnonzero(decision))
        assert entry["fallback"] == (not (row > 0).any())


def test_16_and_32_bit_images_read_like_their_8_bit_picture(tmp_path, pixels):
    gray = pixels[..., 1]
    Image.fromarray(gray, "L").save(tmp_path / "gray8.png")
    wide = gray.astype(np.uint16) * 257  # the same picture in 16 bits
    Image.fromarray(wide).save(tmp_path / "gray16.tiff")  # Pillow: mode I;16
    Image.fromarray(wide).save(tmp_path / "gray16.png")  # TensorFlow, as the training pipeline
    Image.fromarray(wide.astype(np.int32), "I").save(tmp_path / "gray_i.tiff")
    Image.fromarray(gray.astype(np.float32) / 255, "F").save(tmp_path / "gray_f.tiff")
    expected = read_image(tmp_path / "gray8.png", (128, 64))
    assert expected.std() > 10
    for name in ("gray16.tiff", "gray16.png", "gray_i.tiff", "gray_f.tiff"):
        np.testing.assert_array_equal(read_image(tmp_path / name, (128, 64)), expected, err_msg=name)
    # A 16-bit value keeps its high byte, as TensorFlow decodes a 16-bit PNG.
    odd = np.full((4, 4), 0x1280, np.uint16)
    Image.fromarray(odd).save(tmp_path / "odd16.tiff")
    Image.fromarray(odd).save(tmp_path / "odd16.png")
    assert read_image(tmp_path / "odd16.tiff", (4, 4)).max() == read_image(tmp_path / "odd16.png", (4, 4)).max() == 0x12
    Image.fromarray(wide.astype(np.int32) * 1000, "I").save(tmp_path / "deep.tiff")
    with pytest.raises(InputError, match=f"{tmp_path / 'deep.tiff'}: .*no range to scale"):
        read_image(tmp_path / "deep.tiff", (128, 64))


def test_an_image_too_large_for_pillow_is_a_clear_error(smoke_run_dir, tmp_path, pixels, capsys, monkeypatch):
    path = tmp_path / "huge.tiff"
    Image.fromarray(pixels).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 300x150 picture plays a 20000x10000 one
    rc, out, err = run_cli(["interpret", str(smoke_run_dir), str(path)], capsys)
    assert rc == 2 and out == "" and err.startswith(f"error: {path}: ") and "too large" in err


def test_a_corrupt_saved_model_is_a_clear_error(smoke_run_dir, sample_images, tmp_path, capsys):
    (tmp_path / "assets").mkdir()
    shutil.copy(smoke_run_dir / "saved_model" / "assets" / "schema.json", tmp_path / "assets")
    (tmp_path / "saved_model.pb").write_bytes(b"garbage!")
    rc, out, err = run_cli(["interpret", str(tmp_path), sample_images[0]], capsys)
    assert rc == 2 and out == "" and err.startswith(f"error: {tmp_path}: cannot load this SavedModel")


def test_a_schema_that_does_not_fit_an_older_model_is_a_clear_error(smoke_run_dir, sample_images, tmp_path, capsys):
    new = keras.models.load_model(smoke_run_dir / "model.keras")
    # A functional model without its schema, as runs wrote before PortraitModel.
    keras.Model(new.inputs, dict(zip(new.output_names, new.outputs))).save(tmp_path / "model.keras")
    schema = json.loads((smoke_run_dir / "schema.json").read_text())
    age = next(t for t in schema["tasks"] if t["name"] == "age")
    age["classes"] = age["classes"][:-1]  # a class dropped
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    rc, out, err = run_cli(["interpret", str(tmp_path), sample_images[0]], capsys)
    assert rc == 2 and out == ""
    assert err.splitlines()[-1].startswith(
        f"error: {tmp_path / 'model.keras'} does not match its schema {tmp_path / 'schema.json'}"
    )
    assert f"task 'age' has 5 outputs in the model but {len(age['classes'])} classes in the schema" in err


def test_mixed_precision_probabilities_are_computed_in_float32(smoke_run_dir, tmp_path):
    schema = Schema.load(smoke_run_dir / "schema.json")
    inputs = keras.Input((8, 4, 3))
    features = keras.layers.Flatten()(inputs)
    outputs = {
        t.name: keras.layers.Dense(
            t.num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02, seed=i),
            dtype="mixed_bfloat16",
            name=t.name,
        )(features)
        for i, t in enumerate(schema.classification_tasks)
    }
    keras.Model(inputs, outputs).save(tmp_path / "model.keras")
    shutil.copy(smoke_run_dir / "schema.json", tmp_path / "schema.json")
    predictor = load_predictor(tmp_path)
    images = np.random.default_rng(0).integers(0, 256, (16, 8, 4, 3), dtype=np.uint8)
    logits = predictor._model.predict_on_batch(images.astype(np.float32))
    probs = predictor.predict(images)
    for task in predictor.tasks:
        assert logits[task.name].dtype.name == "bfloat16"
        z = np.asarray(logits[task.name], np.float64)
        expected = 1 / (1 + np.exp(-z)) if task.kind == MULTI else np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        np.testing.assert_allclose(probs[task.name], expected, atol=1e-6, err_msg=task.name)


@pytest.fixture
def folder_with_bad_files(sample_images, tmp_path):
    """A folder of two good images and three unreadable ones: `(folder, good, bad)`, bad as
    `{path: reason}` in folder order."""
    folder = tmp_path / "photos"
    folder.mkdir()
    good = [str(shutil.copy(p, folder / f"good{i}.jpg")) for i, p in enumerate(sample_images[:2])]
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_bytes(b"hello, no picture")
    (folder / "truncated.jpg").write_bytes(open(sample_images[0], "rb").read()[:400])
    bad = {
        str(folder / "empty.jpg"): "zero bytes",
        str(folder / "notes.png"): "not an image (starts with b'hello, n')",
        str(folder / "truncated.jpg"): "corrupt or truncated JPEG data (",
    }
    return folder, good, bad


def test_without_skip_bad_images_the_first_bad_file_is_one_error_naming_the_option(
    smoke_run_dir, folder_with_bad_files, capsys
):
    folder, _, bad = folder_with_bad_files
    rc, out, err = run_cli(["interpret", str(smoke_run_dir), str(folder)], capsys)
    empty = next(iter(bad))
    assert rc == 2 and out == ""
    assert err == (
        f"error: {empty}: cannot decode this file as an image: zero bytes. "
        "Rerun with --skip-bad-images to leave unreadable images out.\n"
    )


def test_skip_bad_images_answers_every_good_image_and_lists_the_bad_ones_once(
    smoke_run_dir, predictor, folder_with_bad_files, capsys
):
    folder, good, bad = folder_with_bad_files
    rc, out, err = run_cli(["interpret", str(smoke_run_dir), str(folder), "--skip-bad-images", "--json"], capsys)
    assert rc == 0
    report = json.loads(out)
    assert report["images"] == json.loads(json.dumps(interpret(predictor, good)))  # as without the bad files
    assert [s["path"] for s in report["skipped"]] == list(bad)
    for entry, reason in zip(report["skipped"], bad.values()):
        assert entry["reason"].startswith(reason), entry
    [line] = err.splitlines()
    assert line.startswith("skipped 3 unreadable images: ")
    assert f"{list(bad)[0]} (zero bytes), {list(bad)[1]} (not an image (starts with b'hello, n')), " in line

    rc, out, err = run_cli(["interpret", str(smoke_run_dir), str(folder), "--skip-bad-images"], capsys)
    assert rc == 0 and [block.splitlines()[0] for block in out.split("\n\n")] == good
    assert err.startswith("skipped 3 unreadable images: ") and len(err.splitlines()) == 1

    rc, out, err = run_cli(["interpret", str(smoke_run_dir), *bad, "--skip-bad-images"], capsys)
    assert rc == 2 and out == "" and err.splitlines()[-1] == "error: none of the 3 images could be read"


def test_a_photo_stored_sideways_is_predicted_as_its_upright_picture_everywhere(
    smoke_run_dir, predictor, keras_model, pixels, tmp_path
):
    """EXIF Orientation=6 (turn right to show): interpret, search (gallery and query, folder and
    CSV) and the evaluation's input pipeline all see the upright picture."""
    import tensorflow as tf

    from portrait_keras.evaluation.evaluator import predict_split
    from portrait_keras.serving.search import load_gallery, search
    from tests.test_data_annotations import GOOD_ROWS, write_dataset

    folder = tmp_path / "data"
    rows = [r.replace("e.jpg", "sideways.jpg").replace("f.jpg", "upright.png") for r in GOOD_ROWS]
    csv_path = write_dataset(folder, rows)
    stored = np.ascontiguousarray(np.rot90(pixels, 1))  # the camera's pixels: turned left
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "sideways.jpg", quality=95, exif=exif)
    Image.fromarray(stored).save(folder / "plain.jpg", quality=95)  # the same pixels, no EXIF
    decoded = tf.io.decode_jpeg((folder / "sideways.jpg").read_bytes()).numpy()  # as stored
    np.testing.assert_array_equal(decoded, tf.io.decode_jpeg((folder / "plain.jpg").read_bytes()).numpy())
    Image.fromarray(np.rot90(decoded, -1)).save(folder / "upright.png")  # turned right: lossless
    paths = [str(folder / n) for n in ("sideways.jpg", "upright.png", "plain.jpg")]

    sideways, upright, plain = (flat(r) for r in interpret(predictor, paths))
    np.testing.assert_allclose(sideways, upright, atol=1e-6)
    assert not np.allclose(plain, upright, atol=1e-3)  # without the tag: another picture

    annotations = read_annotations(csv_path)
    assert list(annotations.paths("gallery")) == paths[:2]
    outputs, _ = predict_split(keras_model, annotations, "gallery")
    for name, value in outputs.items():
        np.testing.assert_allclose(value[0], value[1], rtol=1e-5, atol=1e-5, err_msg=name)
    served = predictor.predict(np.stack([read_image(paths[1], predictor.image_size)]))["embedding"][0]
    np.testing.assert_allclose(outputs["embedding"][0], served, rtol=1e-5, atol=1e-5)

    for gallery in (load_gallery(csv_path), load_gallery(folder)):
        for query in paths[:2]:
            result = search(predictor, gallery, query, k=3, use_cache=False)
            near = {p: d for p, d in zip(result.paths, result.distances)}
            assert near[paths[0]] == pytest.approx(0, abs=1e-5) and near[paths[1]] == pytest.approx(0, abs=1e-5)
