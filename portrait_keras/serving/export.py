"""Export: `.keras` file and a SavedModel with an explicit inference endpoint; safe loading.

The SavedModel's `serve` signature takes uint8 RGB images `[B, h, w, 3]` of any size and
returns, per classification task, class probabilities (softmax; sigmoid for multi-label
tasks) and the re-id `embedding`. Images of another size than the model's input `(H, W)`
are resized in the graph as the input pipeline resizes them (bilinear, antialiased,
rounded to whole pixel values), so a served image gives what evaluation gives. It calls
the model with `training=False`, so no training-only layer fires. Any other dtype or
channel count is refused by TensorFlow when the signature is called, with a message
quoting the expected `TensorSpec(shape=(None, None, None, 3), dtype=tf.uint8,
name='images')`. TensorFlow backend only (SavedModel is a TensorFlow format).

`load_keras_model` loads a `.keras` file in safe mode (no Lambda layer, no pickled code:
the files this package writes never need either) and says so clearly when a file is refused;
`load_model` also gives an older functional model (no schema inside) the `schema.json` of its run.
"""

import json
import os
import sys
import zipfile

import keras

from portrait_keras.models.heads import probabilities
from portrait_keras.schema import IDENTITY, Schema


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names it and says why."""


class UnsafeModelError(ModelFileError):
    """A model file that would run code on loading (a Lambda layer, a pickled function)."""


def load_keras_model(path):
    """Loads a `.keras` model file with `safe_mode=True` (portrait layers registered).

    Args:
        path: str. A `.keras` file (e.g. `RUN_DIR/model.keras`).

    Returns: the `keras.Model`, not compiled.

    Raises:
        UnsafeModelError: the file holds a Lambda layer or other serialized Python code,
            which safe mode does not run; the files this package writes never do, so such
            a file was changed or comes from elsewhere.
        ModelFileError: no such file, not a `.keras` archive, or one that does not load;
            the message names `path`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a .keras model archive (a .keras file is a zip archive)")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except ValueError as e:
        if "safe_mode" in str(e):
            raise UnsafeModelError(
                f"{path}: refused to load: the file holds Python code (a Lambda layer or another "
                f"serialized function), which could run anything on loading. Models written by "
                f"portrait_keras never do, so this file was changed or comes from elsewhere. Only if "
                f"you trust its source: keras.models.load_model(path, safe_mode=False)."
            ) from None
        raise ModelFileError(f"{path}: cannot load this .keras file: {e}") from e


def load_model(path):
    """Loads a `.keras` file (safe mode) as a model with `schema` and `tasks` attributes.

    A `PortraitModel` carries both. A functional model written before the model carried its
    schema takes the `schema.json` beside it (its run folder's), with a note on stderr.

    Raises: `ModelFileError` as `load_keras_model`, or when an older model has no `schema.json`
        beside it.
    """
    model = load_keras_model(path)
    if getattr(model, "schema", None) is not None:
        return model
    path = os.fspath(path)
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), "schema.json")
    if not os.path.isfile(beside):
        raise ModelFileError(
            f"{path}: an older functional model, which does not carry its schema, and no schema.json "
            f"beside it: copy the schema.json of the run that trained it next to it ({beside})"
        )
    try:
        schema = Schema.load(beside)
    except ValueError as e:
        raise ModelFileError(str(e)) from None
    print(
        f"note: {path} is an older functional model; its class names come from {beside}. Re-save it "
        f"with portrait_keras.models.PortraitModel to carry them inside.",
        file=sys.stderr,
    )
    model.schema, model.schema_path = schema, beside
    model.tasks = tuple(n for n in schema.names if n in model.output_names)
    return model


def serving_fn(model, schema):
    """A function uint8 images `[B, h, w, 3]` → dict of probabilities and embedding, in keras.ops.

    Images whose `(h, w)` differ from the model's input size are resized as in the input pipeline.
    """
    from keras import ops

    tasks = [t for t in schema.tasks if t.name in model.output_names and t.kind != IDENTITY]
    height, width = model.input_shape[1:3]

    def resize(images):
        resized = ops.image.resize(images, (height, width), interpolation="bilinear", antialias=True)
        return ops.clip(ops.round(resized), 0.0, 255.0)

    def serve(images):
        images = ops.cast(images, "float32")
        shape = ops.shape(images)
        same = ops.logical_and(ops.equal(shape[1], height), ops.equal(shape[2], width))
        images = ops.reshape(ops.cond(same, lambda: images, lambda: resize(images)), (-1, height, width, 3))
        outputs = model(images, training=False)
        # float32 before softmax/sigmoid: a mixed-precision model gives bfloat16 logits.
        result = probabilities({t.name: ops.cast(outputs[t.name], "float32") for t in tasks}, schema)
        if "embedding" in outputs:
            result["embedding"] = ops.cast(outputs["embedding"], "float32")
        return result

    return serve


def export_saved_model(model, schema, path):
    """Writes a SavedModel at `path` with the `serve` endpoint (module docstring).

    The schema goes beside it as `path/assets/schema.json` so the class names travel with it.
    """
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"SavedModel export needs KERAS_BACKEND=tensorflow. Received backend: {keras.backend.backend()!r}"
        )
    height, width, channels = model.input_shape[1:]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=serving_fn(model, schema),
        input_signature=[tf.TensorSpec([None, None, None, channels], tf.uint8, name="images")],
    )
    archive.write_out(os.fspath(path), verbose=False)
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    schema.save(os.path.join(path, "assets", "schema.json"))
    with open(os.path.join(path, "assets", "signature.json"), "w", encoding="utf-8") as f:
        # `input` is the model's own size; other sizes are resized to it (module docstring).
        json.dump({"input": [height, width, channels], "dtype": "uint8", "resized_to_input": True}, f)
    return path
