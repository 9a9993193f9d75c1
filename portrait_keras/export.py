"""Export: `.keras` file and a SavedModel with an explicit inference endpoint.

The SavedModel's `serve` signature takes uint8 images `[B, H, W, 3]` and returns, per
classification task, class probabilities (softmax; sigmoid for multi-label tasks) and the
re-id `embedding`. It calls the model with `training=False`, so no training-only layer fires.
TensorFlow backend only (SavedModel is a TensorFlow format).
"""

import json
import os

import keras

from portrait_keras.schema import IDENTITY, MULTI


def serving_fn(model, schema):
    """A function uint8 images → dict of probabilities and embedding, in keras.ops."""
    from keras import ops

    tasks = [t for t in schema.tasks if t.name in model.output_names and t.kind != IDENTITY]

    def serve(images):
        outputs = model(ops.cast(images, "float32"), training=False)
        result = {}
        for t in tasks:
            logits = ops.cast(outputs[t.name], "float32")
            result[t.name] = ops.sigmoid(logits) if t.kind == MULTI else ops.softmax(logits, axis=-1)
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
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")],
    )
    archive.write_out(os.fspath(path), verbose=False)
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    schema.save(os.path.join(path, "assets", "schema.json"))
    with open(os.path.join(path, "assets", "signature.json"), "w", encoding="utf-8") as f:
        json.dump({"input": [height, width, channels], "dtype": "uint8"}, f)
    return path
