"""Export: `.keras` file and a SavedModel with explicit inference endpoints; safe loading.

The SavedModel's `serve` endpoint (also `serving_default`, what TF-Serving calls) takes uint8
RGB images `[B, h, w, 3]` of any size and returns, per classification task, class
probabilities (softmax; sigmoid for multi-label tasks) and the re-id `embedding`. Images of
another size than the model's input `(H, W)` are resized in the graph by the input pipeline's
own resize (`data.images.resize`: bilinear, antialiased, rounded to whole pixel values), so a
served image gives what evaluation gives. The model is called with `training=False`, so no
training-only layer fires.

Float images are refused, not cast: `loaded.serve(x)` with a float array or tensor (NumPy or
TensorFlow, any float dtype) raises `InvalidArgumentError` "serve takes uint8 images ...",
since TensorFlow would otherwise convert a NumPy array to the signature's uint8, turning
pixels in [0, 1] into zeros (the endpoint holds a refusing trace per float dtype; the call
picks the trace of its input's dtype). Any other dtype or channel count finds no trace:
TensorFlow's error lists the `TensorSpec(shape=(None, None, None, 3), dtype=tf.uint8,
name='images')` expected. `serve_float` takes float32 pixel values in 0..255 at the model's
own size `[B, H, W, 3]` (no resize) and returns the same. Calling the typed signature
`loaded.signatures["serve"](images=...)` instead converts a NumPy argument to uint8 before
the graph sees it (TensorFlow's conversion, out of the model's reach): pass it uint8 arrays.

Written under `KERAS_BACKEND=tensorflow` or `jax`: under JAX the model's part (`serve_float`)
is converted by jax2tf (`keras.export.ExportArchive`), for CPU and CUDA, and the resize
around it is TensorFlow's, so the SavedModel serves the same under TensorFlow.

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
    """The model's part of serving: float32 images `[B, H, W, 3]` (pixel values 0..255, the
    model's input size) → dict of probabilities and the embedding, in keras.ops (jax2tf
    converts it under JAX)."""
    from keras import ops

    tasks = [t for t in schema.tasks if t.name in model.output_names and t.kind != IDENTITY]

    def serve_float(images):
        outputs = model(images, training=False)
        # float32 before softmax/sigmoid: a mixed-precision model gives bfloat16 logits.
        result = probabilities({t.name: ops.cast(outputs[t.name], "float32") for t in tasks}, schema)
        if "embedding" in outputs:
            result["embedding"] = ops.cast(outputs["embedding"], "float32")
        return result

    return serve_float


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def uint8_endpoint(serve_float, image_size, channels=3):
    """The `serve` endpoint: a `tf.function` traced for uint8 images `[B, h, w, channels]` of
    any size, resized to `image_size` and given to `serve_float`, and for each float dtype, where
    it raises `InvalidArgumentError` saying what it takes (module docstring)."""
    import tensorflow as tf

    from portrait_keras.data.images import resize

    height, width = image_size

    @tf.function(autograph=False)
    def serve(images):
        if images.dtype != tf.uint8:
            tf.debugging.Assert(
                False,
                [
                    f"serve takes uint8 images [B, h, w, {channels}] (pixel values 0-255). Received: "
                    f"{images.dtype.name}. Float pixels in [0, 1]: multiply by 255 and cast to uint8; float "
                    f"pixel values 0-255 at the model's size {height}x{width}: call serve_float."
                ],
            )
            return {}
        same = tf.reduce_all(tf.shape(images)[1:3] == tf.constant([height, width]))
        images = tf.cond(same, lambda: images, lambda: resize(images, (height, width)))
        return serve_float(tf.cast(tf.ensure_shape(images, [None, height, width, channels]), tf.float32))

    for dtype in ("uint8", *FLOAT_DTYPES):  # uint8 first: the `serve` signature
        serve.get_concrete_function(tf.TensorSpec([None, None, None, channels], dtype, name="images"))
    return serve


class SavedModelExportError(RuntimeError):
    """A SavedModel this Keras backend cannot write; the message says why."""


def export_saved_model(model, schema, path):
    """Writes a SavedModel at `path` with the `serve` and `serve_float` endpoints (module docstring).

    The schema goes beside it as `path/assets/schema.json` so the class names travel with it.

    Raises: `SavedModelExportError` under a backend other than TensorFlow and JAX, or when
        jax2tf cannot convert the model.
    """
    import tensorflow as tf

    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise SavedModelExportError(f"a SavedModel needs KERAS_BACKEND=tensorflow or jax. Received: {backend!r}")
    height, width, channels = model.input_shape[1:]
    archive = keras.export.ExportArchive()
    archive.track(model)
    jax_options = {}
    if backend == "jax":
        # Lowered for CPU and CUDA: it serves on either, whichever device exported it. No
        # gradient (serving asks none; its custom-gradient functions warn on every load).
        jax_options = {"jax2tf_kwargs": {"native_serialization_platforms": ("cpu", "cuda"), "with_gradient": False}}
    try:
        serve_float = archive.add_endpoint(
            name="serve_float",
            fn=serving_fn(model, schema),
            input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="images")],
            **jax_options,
        )
    except Exception as e:  # jax2tf fails in many ways on an op it cannot convert
        if backend != "jax":
            raise
        raise SavedModelExportError(f"jax2tf could not convert the model ({type(e).__name__}: {e})") from e
    serve = uint8_endpoint(serve_float, (height, width), channels)
    archive.add_endpoint("serve", serve)
    archive.add_endpoint("serving_default", serve)  # else ExportArchive names the first endpoint, serve_float
    archive.write_out(os.fspath(path), verbose=False)
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    schema.save(os.path.join(path, "assets", "schema.json"))
    with open(os.path.join(path, "assets", "signature.json"), "w", encoding="utf-8") as f:
        # `input` is the model's own size; other sizes are resized to it (module docstring).
        # `background`: how images with a person mask were shown in training (PortraitModel).
        signature = {"input": [height, width, channels], "dtype": "uint8", "resized_to_input": True}
        json.dump({**signature, "background": getattr(model, "background", "keep")}, f)
    return path
