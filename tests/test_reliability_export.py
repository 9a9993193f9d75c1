"""Security and model/data mismatches: model files load in safe mode and a tampered one is refused
clearly; no pickle anywhere; the served signature's input checks; a model or run evaluated on data
with another schema is refused naming both."""

import json
import os
import re
import tokenize
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from portrait_keras.commands.evaluate import main as evaluate_main
from portrait_keras.data import AnnotationError, read_annotations
from portrait_keras.evaluation.evaluator import SchemaMismatchError, check_model_fits_schema, evaluate
from portrait_keras.models import build_portrait_model
from portrait_keras.schema import Schema, Task, default_schema
from portrait_keras.serving.export import ModelFileError, UnsafeModelError, export_saved_model, load_keras_model
from tests.test_data_annotations import GOOD_ROWS, write_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def small_model():
    """A tiny 64x32 portrait model of the gender and expression tasks (random weights)."""
    schema = default_schema()  # the data's schema, which the model carries
    keras.utils.set_random_seed(0)
    tasks = ["id", "gender", "expression"]
    return build_portrait_model(schema, 3, tasks=tasks, backbone="tiny", input_shape=(64, 32, 3)), schema


def with_lambda_layer(source, target):
    """`source` (.keras) with its `normalize` layer swapped for a Lambda layer of the same name
    and inputs: what an attacker would do to run code when the file is loaded."""
    inputs = keras.Input((64, 32, 3))
    donor = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0, name="normalize")(inputs))  # noqa: TID251  (a tampered file)
    donor_path = os.path.join(os.path.dirname(target), "donor.keras")
    donor.save(donor_path)
    with zipfile.ZipFile(donor_path) as z:
        lambda_entry = next(
            layer for layer in json.loads(z.read("config.json"))["config"]["layers"] if layer["class_name"] == "Lambda"
        )
    with zipfile.ZipFile(source) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    if "layers" not in config["config"]:  # a PortraitModel: rewritten as the functional graph of its weights
        model = keras.models.load_model(source)
        functional = keras.Model(model.inputs, dict(zip(model.output_names, model.outputs)), name="portrait")
        functional.save(os.path.join(os.path.dirname(target), "functional.keras"))
        return with_lambda_layer(os.path.join(os.path.dirname(target), "functional.keras"), target)
    layers = config["config"]["layers"]
    index = next(i for i, layer in enumerate(layers) if layer["name"] == "normalize")
    layers[index] = {**lambda_entry, "inbound_nodes": layers[index]["inbound_nodes"]}
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_tampered_keras_file_with_a_lambda_layer_is_refused(small_model, tmp_path):
    model, _ = small_model
    # A PortraitModel's file holds constructor arguments, no layer list: an attacker writes the
    # functional graph of its weights instead, with a Lambda in it (`with_lambda_layer`).
    model.save(tmp_path / "model.keras")
    assert load_keras_model(tmp_path / "model.keras").count_params() == model.count_params()  # safe mode
    with_lambda_layer(tmp_path / "model.keras", tmp_path / "tampered.keras")
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras.models.load_model(tmp_path / "tampered.keras")  # Keras' default is safe mode
    with pytest.raises(UnsafeModelError) as info:
        load_keras_model(tmp_path / "tampered.keras")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'tampered.keras'}: refused to load: the file holds Python code")
    # The file is a working model when one opts out: the refusal is what protects.
    unsafe = keras.models.load_model(tmp_path / "tampered.keras", safe_mode=False)
    assert any(isinstance(layer, keras.layers.Lambda) for layer in unsafe.layers)  # noqa: TID251


@pytest.mark.parametrize(
    "content, words",
    [(None, "no such model file"), (b"not a zip", "not a .keras model archive")],
)
def test_unloadable_model_file_is_named(tmp_path, content, words):
    path = tmp_path / "model.keras"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=f"{re.escape(str(path))}: {words}"):
        load_keras_model(path)


# Code (strings and comments left out; tokens joined by one space) that could unpickle or run
# code on loading.
PICKLE_USES = re.compile(
    r"\bimport (c?pickle|dill|joblib|shelve|marshal)\b|\bfrom (c?pickle|dill|joblib) import|allow_pickle = True"
    r"|\. (read_pickle|to_pickle) \(|safe_mode = False|enable_unsafe_deserialization|layers \. Lambda\b"
    r"|torch \. load"
)


def code_only(path):
    """The Python source at `path` as its tokens joined by one space, with every string
    literal emptied and comments left out."""
    with open(path, encoding="utf-8") as f:
        tokens = list(tokenize.generate_tokens(f.readline))
    skipped = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    fstring_middle = getattr(tokenize, "FSTRING_MIDDLE", None)
    return " ".join(
        "''" if kind == tokenize.STRING else text
        for kind, text, *_ in tokens
        if kind not in skipped and kind != fstring_middle
    )


def test_no_pickle_or_unsafe_loading_in_the_package():
    offenders = []
    for folder in ("portrait_keras", "data_prep", "experiments"):
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(root, name)
                text = code_only(path)
                offenders += [f"{path}: {m.group(0)}" for m in PICKLE_USES.finditer(text)]
                # Every numpy load refuses pickled object arrays.
                for call in re.finditer(r"np \. load \((.*?)\)", text):
                    if "allow_pickle = False" not in call.group(1):
                        offenders.append(f"{path}: {call.group(0)}")
    assert offenders == []
    # The scan sees what it looks for.
    assert PICKLE_USES.search("import pickle") and PICKLE_USES.search("load_model ( p , safe_mode = False )")


@pytest.fixture(scope="module")
def served(small_model, tmp_path_factory):
    model, schema = small_model
    path = export_saved_model(model, schema, tmp_path_factory.mktemp("export") / "saved_model")
    return tf.saved_model.load(str(path)), model


def test_serving_any_image_size_resizes_as_the_input_pipeline(served, tmp_path):
    from portrait_keras.data.images import decode

    loaded, model = served
    rng = np.random.default_rng(0)
    same = rng.integers(0, 256, (2, 64, 32, 3), dtype=np.uint8)
    out = loaded.serve(tf.constant(same))
    ref = keras.ops.convert_to_numpy(model(same.astype("float32"), training=False)["embedding"])
    np.testing.assert_allclose(out["embedding"].numpy(), ref, atol=1e-5)
    odd = rng.integers(0, 256, (1, 101, 47, 3), dtype=np.uint8)
    tf.io.write_file(str(tmp_path / "odd.png"), tf.io.encode_png(odd[0]))
    pipeline = decode(tf.constant(str(tmp_path / "odd.png")), (64, 32)).numpy()[None].astype("float32")
    ref = keras.ops.convert_to_numpy(model(pipeline, training=False)["embedding"])
    np.testing.assert_allclose(loaded.serve(tf.constant(odd))["embedding"].numpy(), ref, atol=1e-4)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 64, 32, 3), np.int64),  # integer pixels of another type
        np.zeros((2, 64, 32, 1), np.uint8),  # grayscale
        np.zeros((2, 64, 32, 4), np.uint8),  # RGBA
        np.zeros((64, 32, 3), np.uint8),  # no batch axis
    ],
    ids=["int64", "one-channel", "four-channel", "unbatched"],
)
def test_serving_refuses_other_dtypes_and_shapes_quoting_the_signature(served, images):
    loaded, _ = served
    with pytest.raises((TypeError, ValueError)) as info:
        loaded.serve(tf.constant(images))
    assert "TensorSpec(shape=(None, None, None, 3), dtype=tf.uint8, name='images')" in str(info.value)


def float_images():
    """Float images as a caller holds them: pixels in [0, 1], NumPy or TensorFlow, any float type."""
    pixels = np.random.default_rng(1).random((2, 64, 32, 3))
    return [
        pixels.astype(np.float32),
        pixels,  # float64
        pixels.astype(np.float16),
        tf.constant(pixels, tf.float32),
        tf.constant(pixels, tf.bfloat16),
        tf.constant(pixels * 255, tf.float32),
        pixels.astype(np.float32).tolist(),
    ]


@pytest.mark.parametrize("images", float_images(), ids=["np32", "np64", "np16", "tf32", "tfbf16", "tf32x255", "list"])
def test_serving_refuses_float_images_instead_of_casting_them(served, images):
    loaded, _ = served
    dtype = getattr(images, "dtype", "float16")  # a list of floats converts to the first float trace
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        loaded.serve(images)
    message = str(info.value)
    received = tf.as_dtype(dtype).name
    assert f"serve takes uint8 images [B, h, w, 3] (pixel values 0-255). Received: {received}." in message
    assert "multiply by 255 and cast to uint8" in message and "call serve_float" in message


def test_serving_takes_uint8_from_numpy_and_tensorflow_and_float_0_255_at_serve_float(served):
    loaded, model = served
    images = np.random.default_rng(2).integers(0, 256, (3, 64, 32, 3), dtype=np.uint8)
    expected = {k: keras.ops.convert_to_numpy(v) for k, v in model(images.astype("float32"), training=False).items()}
    gender = keras.ops.convert_to_numpy(keras.ops.softmax(expected["gender"]))
    for given in (images, tf.constant(images)):
        out = loaded.serve(given)
        np.testing.assert_allclose(out["embedding"].numpy(), expected["embedding"], atol=1e-5)
        np.testing.assert_allclose(out["gender"].numpy(), gender, atol=1e-6)
    as_float = loaded.serve_float(images.astype(np.float32))
    for key, value in loaded.serve(images).items():
        np.testing.assert_allclose(as_float[key].numpy(), value.numpy(), atol=1e-6, err_msg=key)
    # TF-Serving's default signature is the uint8 one.
    for name in ("serve", "serving_default"):
        [spec] = loaded.signatures[name].structured_input_signature[1].values()
        assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]


def test_model_with_other_class_lists_than_the_data_is_refused(small_model, tmp_path):
    model, _ = small_model
    gender3 = Task("gender", "appearance", "single", ("female", "male", "other"))
    schema = Schema(tuple(gender3 if t.name == "gender" else t for t in default_schema().tasks))
    with pytest.raises(SchemaMismatchError, match=r"'gender': model 2 classes, schema 3 \(female, male, other\)"):
        check_model_fits_schema(model, schema, "data.csv")
    schema.save(tmp_path / "schema.json")
    rows = [r.replace(",male,", ",other,") for r in GOOD_ROWS]
    ann = read_annotations(write_dataset(tmp_path, rows))
    with pytest.raises(SchemaMismatchError, match=re.escape(str(tmp_path / "annotations.csv"))):
        evaluate(model, ann)
    no_overlap = Schema((Task("mood", "emotion", "multi", ("calm", "wild")),))
    with pytest.raises(SchemaMismatchError, match="share no task"):
        check_model_fits_schema(model, no_overlap)


def write_run(model, folder, config):
    """A minimal run folder of `model` for the evaluate command: model.keras, schema.json, config.json."""
    folder.mkdir()
    model.save(folder / "model.keras")
    default_schema().save(folder / "schema.json")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_evaluate_command_refuses_data_of_another_schema_and_a_tampered_model(small_model, tmp_path, capsys):
    model, schema = small_model
    data = write_dataset(tmp_path / "data", [r.replace(",male,", ",other,") for r in GOOD_ROWS])
    data_schema = tmp_path / "data" / "schema.json"
    gender3 = Task("gender", "appearance", "single", ("female", "male", "other"))
    # Without an identity task the data shares no re-id with the model (with one, re-id and the
    # matching tasks are evaluated: tests/test_cli_evaluate.py).
    tasks = tuple(gender3 if t.name == "gender" else t for t in default_schema().tasks if t.name != "id")
    Schema(tasks).save(data_schema)
    run = write_run(model, tmp_path / "run", {"data_csv": data})
    assert evaluate_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert f"error: The model ({run / 'model.keras'}) and the data {data} (schema: {data_schema})" in err
    assert "task 'gender' has classes (female, male) in the model, (female, male, other) in the data" in err
    assert "task 'id' only in the model" in err and "Traceback" not in err
    os.remove(tmp_path / "data" / "schema.json")
    with_lambda_layer(run / "model.keras", run / "tampered.keras")
    os.replace(run / "tampered.keras", run / "model.keras")
    data = write_dataset(tmp_path / "data2", GOOD_ROWS)
    assert evaluate_main([str(run), "--data", data]) == 2
    assert "model.keras: refused to load: the file holds Python code" in capsys.readouterr().err


def test_evaluating_without_the_splits_re_id_needs_names_them(small_model, tmp_path, capsys):
    model, schema = small_model
    run = write_run(model, tmp_path / "run", {})
    no_query = write_dataset(tmp_path / "no_query", [r for r in GOOD_ROWS if ",query," not in r])
    assert evaluate_main([str(run), "--data", no_query]) == 2
    err = capsys.readouterr().err
    assert f"error: 1 problem in {no_query}" in err and "Traceback" not in err
    assert f"{no_query}:1: column 'split': value 'query': no rows in this split" in err
    assert "splits present: gallery, train" in err
    train_only = write_dataset(tmp_path / "train_only", [r for r in GOOD_ROWS if ",train," in r])
    with pytest.raises(AnnotationError, match="value 'gallery': no rows in this split") as info:
        evaluate(model, read_annotations(train_only))
    assert len(info.value.problems) == 2
    # Without re-id, either split is enough for the F1 scores.
    attributes = keras.Model(model.input, {k: v for k, v in model.output.items() if k.startswith("gender")})
    result = evaluate(attributes, read_annotations(no_query))
    assert set(result) >= {"f1_gender"}
