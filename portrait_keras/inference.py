"""Inference on image files: load a trained model, read images, predict, describe.

`load_predictor(path)` accepts the three things a run leaves behind:

- a run folder (`schema.json` with `model.keras`, or with `saved_model/`);
- a `.keras` file, with the `schema.json` of its run beside it;
- a SavedModel folder written by `portrait_keras.export` (schema in `assets/schema.json`).

`read_image` decodes any image file (JPEG, PNG, BMP and GIF as the training pipeline does; other
formats through Pillow; 16- and 32-bit images scaled to 8 bits: `decode_image_file`) and resizes
it to the model's input size. `describe` turns one image's probabilities into the paper's three
aspects: appearance, posture and emotion (§3).

Example:
>>> predictor = load_predictor("runs/fss_uncert")  # doctest: +SKIP
>>> [result] = interpret(predictor, ["person.jpg"])  # doctest: +SKIP
>>> result["appearance"]["gender"]["label"]  # doctest: +SKIP
'female'
>>> print(format_description(result))  # doctest: +SKIP
"""

import glob
import hashlib
import io
import json
import os

import numpy as np

from portrait_keras.schema import ASPECTS, IDENTITY, MULTI, Schema

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DEFAULT_THRESHOLD = 0.5
KERAS, SAVED_MODEL = "keras", "saved_model"


class InputError(ValueError):
    """A user input (model path, image file, gallery) that cannot be used; the message names it."""


# === Model ===


def model_kind(path):
    """Which of the three model forms `path` is (module docstring), before loading anything.

    Returns: `(kind, model_path, schema_path)` with `kind` `"keras"` or `"saved_model"`.
    Raises: `InputError` naming `path` when it is none of them or its schema is missing.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such model file or folder")
    if os.path.isfile(path):
        if not path.endswith(".keras"):
            raise InputError(
                f"{path}: not a model. Expected a run folder, a .keras file or a SavedModel folder."
            )
        schema = os.path.join(os.path.dirname(os.path.abspath(path)), "schema.json")
        if not os.path.isfile(schema):
            raise InputError(
                f"{path}: no schema.json beside it; the class names of a .keras model come from the "
                f"schema.json of its run folder ({schema})"
            )
        return KERAS, path, schema
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        schema = os.path.join(path, "assets", "schema.json")
        if not os.path.isfile(schema):
            raise InputError(f"{path}: a SavedModel without assets/schema.json (not written by portrait_keras.export)")
        return SAVED_MODEL, path, schema
    schema = os.path.join(path, "schema.json")
    keras_file = os.path.join(path, "model.keras")
    saved = os.path.join(path, "saved_model")
    if os.path.isfile(schema) and os.path.isfile(keras_file):
        return KERAS, keras_file, schema
    if os.path.isfile(schema) and os.path.isfile(os.path.join(saved, "saved_model.pb")):
        return SAVED_MODEL, saved, schema
    raise InputError(
        f"{path}: not a model. Expected a run folder (schema.json with model.keras or saved_model/), "
        f"a .keras file or a SavedModel folder (saved_model.pb)."
    )


def _saved_model_input_size(path, model):
    """The model's input `(height, width)`: `assets/signature.json` (`export_saved_model`), else the
    `serve` signature's fixed image shape."""
    signature = os.path.join(path, "assets", "signature.json")
    if os.path.isfile(signature):
        with open(signature, encoding="utf-8") as f:
            return tuple(int(s) for s in json.load(f)["input"][:2])
    spec = next(iter(model.signatures["serve"].structured_input_signature[1].values()))
    if None in spec.shape[1:3]:
        raise InputError(f"{path}: the SavedModel states no input size (no assets/signature.json)")
    return tuple(int(s) for s in spec.shape[1:3])


def _file_stats(kind, model_path):
    """Path, size, modification and change times and inode of every model file (what the
    fingerprint hashes), or None when a file vanished (it is being replaced)."""
    files = [model_path]
    if kind == SAVED_MODEL:
        files = [os.path.join(model_path, "saved_model.pb")]
        variables = os.path.join(model_path, "variables")
        try:
            files += [os.path.join(variables, n) for n in sorted(os.listdir(variables))]
        except FileNotFoundError:
            pass  # a SavedModel without variables
        except OSError:
            return None
    stats = []
    for f in files:
        try:
            stats.append([os.path.abspath(f), *file_identity(f)])
        except OSError:
            return None
    return stats


def file_identity(path):
    """`(size, mtime_ns, ctime_ns, inode)` of a file: any rewrite changes it. ctime and inode
    too, as `touch -d`/`cp -p` can restore a rewritten file's mtime, not these. Raises OSError."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _fingerprint(kind, file_stats, image_size):
    """Short hash of the model files' `_file_stats` (cache key)."""
    text = json.dumps({"kind": kind, "files": file_stats, "image_size": list(image_size)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _output_widths(kind, model):
    """Output name → last dimension (number of classes for a task) of the model's outputs."""
    if kind == KERAS:
        return {name: t.shape[-1] for name, t in zip(model.output_names, model.outputs)}
    return {name: spec.shape[-1] for name, spec in model.signatures["serve"].structured_outputs.items()}


class Predictor:
    """A trained portrait model that maps uint8 images to probabilities and the re-id embedding.

    Built by `load_predictor`.

    Attributes:
        path: str. The model file or folder that was loaded.
        kind: str. `"keras"` or `"saved_model"`.
        schema: `Schema`. Tasks and class names.
        image_size: (int, int). The model's input `(height, width)`.
        tasks: tuple of `Task`. The classification tasks the model predicts, in schema order.
        has_embedding: bool. Whether the model outputs the re-id `embedding`.
        fingerprint: str or None. Hash of the model files (paths, sizes, times, inodes) as they
            were while the model loaded: changes when they do. None when they kept changing
            during `load_predictor`: then no embedding cache is used.

    Raises: `InputError` naming the model and `schema_path` when an output of a task has
        another number of classes than the schema says.
    """

    def __init__(self, path, kind, schema, model, schema_path=None, file_stats=None):
        self.path = os.fspath(path)
        self.kind = kind
        self.schema = schema
        self._model = model
        if kind == KERAS:
            self.image_size = tuple(int(s) for s in model.input_shape[1:3])
            names = set(model.output_names)
            self.has_embedding = "embedding" in names
        else:
            self.image_size = _saved_model_input_size(self.path, model)
            names = set(model.signatures["serve"].structured_outputs)
            self.has_embedding = "embedding" in names
        self.tasks = tuple(t for t in schema.tasks if t.kind != IDENTITY and t.name in names)
        widths = _output_widths(kind, model)
        wrong = [
            f"task {t.name!r} has {widths[t.name]} outputs in the model but {t.num_classes} classes in the schema"
            for t in self.tasks
            if widths[t.name] is not None and int(widths[t.name]) != t.num_classes
        ]
        if wrong:
            raise InputError(
                f"{self.path} does not match its schema {schema_path or '(the one given)'}: {'; '.join(wrong)}. "
                f"Use the schema.json of the run that trained the model."
            )
        if file_stats is None:
            file_stats = _file_stats(kind, self.path)
        self.fingerprint = None if file_stats is None else _fingerprint(kind, file_stats, self.image_size)

    def __repr__(self):
        return f"Predictor({self.path!r}, kind={self.kind!r}, image_size={self.image_size})"

    def predict(self, images, batch_size=32):
        """Probabilities and embedding of a batch of images.

        Args:
            images: uint8 `[N, H, W, 3]` at `image_size` (`read_images`).
            batch_size: int. Images per forward pass. Defaults to `32`.

        Returns:
            dict of float32 numpy arrays: `"<task>"` `[N, C]` class probabilities (softmax;
            sigmoid for multi-label tasks) per task of `tasks`, and `"embedding"` `[N, D]`
            when the model has one.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:3]) != self.image_size:
            raise ValueError(
                f"images must be uint8 [N, {self.image_size[0]}, {self.image_size[1]}, 3]. "
                f"Received: dtype={images.dtype}, shape={images.shape}"
            )
        keys = [t.name for t in self.tasks] + (["embedding"] if self.has_embedding else [])
        parts = [self._predict_batch(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        if not parts:
            return {k: np.zeros((0, 0), np.float32) for k in keys}
        return {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in keys}

    def _predict_batch(self, images):
        if self.kind == SAVED_MODEL:
            import tensorflow as tf

            out = self._model.serve(tf.constant(images))
            return {k: v.numpy() for k, v in out.items()}
        import keras

        from portrait_keras.models import probabilities

        # predict_on_batch runs the compiled inference function (training=False).
        outputs = self._model.predict_on_batch(images.astype(np.float32))
        # A mixed-precision model gives bfloat16 logits: softmax/sigmoid in float32, as
        # export.serving_fn does, so both forms give the same probabilities and labels.
        logits = {t.name: np.asarray(outputs[t.name], np.float32) for t in self.tasks}
        result = {k: keras.ops.convert_to_numpy(v) for k, v in probabilities(logits, self.schema).items()}
        if self.has_embedding:
            result["embedding"] = np.asarray(outputs["embedding"], np.float32)
        return result


LOAD_TRIES = 3


def _load_model(kind, model_path):
    if kind == KERAS:
        from portrait_keras.export import ModelFileError, load_keras_model

        try:
            return load_keras_model(model_path)
        except ModelFileError as e:  # not a model, or unsafe (Lambda)
            raise InputError(str(e)) from None
    import tensorflow as tf

    try:
        model = tf.saved_model.load(model_path)
    except (OSError, ValueError, tf.errors.OpError) as e:  # e.g. a corrupt saved_model.pb
        raise InputError(f"{model_path}: cannot load this SavedModel ({e})") from None
    if "serve" not in model.signatures:
        raise InputError(f"{model_path}: the SavedModel has no 'serve' signature")
    return model


def load_predictor(path):
    """Loads a run folder, `.keras` file or SavedModel folder (module docstring) as a `Predictor`.

    The `.keras` file loads with `safe_mode=True`. The model files are fingerprinted before and
    after loading; when they changed meanwhile (a run rewriting them) the model is loaded again,
    up to `LOAD_TRIES` times, and then used without a fingerprint (no embedding cache), so a
    cache never holds one model's embeddings under another's fingerprint.

    Raises: `InputError` naming `path` when it is none of the three forms or cannot be loaded,
        or naming the model and its schema when they do not match.
    """
    kind, model_path, schema_path = model_kind(path)
    try:
        schema = Schema.load(schema_path)
    except ValueError as e:
        raise InputError(str(e)) from None
    for _ in range(LOAD_TRIES):
        before = _file_stats(kind, model_path)
        model = _load_model(kind, model_path)
        after = _file_stats(kind, model_path)
        if before is not None and before == after:
            return Predictor(model_path, kind, schema, model, schema_path, file_stats=after)
    predictor = Predictor(model_path, kind, schema, model, schema_path)
    predictor.fingerprint = None  # which files the weights came from is unknown
    return predictor


# === Images ===


def _is_pattern(text):
    return any(c in text for c in "*?[")


def image_files_below(folder):
    """Every image file below `folder` (extensions `IMAGE_EXTENSIONS`, hidden files skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            os.path.join(root, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found)


def expand_image_paths(items):
    """Image files from files, folders and glob patterns.

    A file is taken as it is (any extension); a folder gives every image file below it
    (extensions `IMAGE_EXTENSIONS`, hidden files skipped, sorted); a pattern such as
    `"shots/*.png"` or `"shots/**/*.jpg"` gives the files it matches.

    Args:
        items: iterable of str or path-like.

    Returns: list of str, in the order given, without repeats.
    Raises: `InputError` naming the item when it does not exist, a folder holds no image or a
        pattern matches nothing.
    """
    paths = []
    for item in items:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = image_files_below(item)
            if not found:
                raise InputError(f"{item}: no image files in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
        elif os.path.isfile(item):
            found = [item]
        elif _is_pattern(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise InputError(f"{item}: the pattern matches no file")
        else:
            raise InputError(f"{item}: no such image file or folder")
        paths += found
    return list(dict.fromkeys(paths))


def _to_uint8(values, mode, path):
    """Pillow's 16-bit (`I;16*`) and 32-bit (`I`, `F`) pixel values as uint8 (`decode_image_file`)."""
    if mode.startswith("I;16"):
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    values = values.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 65535:
        raise InputError(
            f"{path}: cannot decode this file as an image: {'float' if mode == 'F' else '32-bit integer'} "
            f"pixel values in [{low:g}, {high:g}] are in no range to scale to 8 bits (0-1, 0-255 or "
            f"0-65535 are). Convert it to an 8-bit image."
        )
    if mode == "F" and high <= 1.0:
        return np.round(values * 255).astype(np.uint8)
    if high <= 255:
        return np.round(values).astype(np.uint8)
    return np.floor(values / 256).astype(np.uint8)  # 16-bit values: their high byte, as TensorFlow's


def _decode_with_pillow(path, data):
    from PIL import Image, UnidentifiedImageError

    from portrait_keras.data.pipeline import describe_image_file

    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            if not (mode.startswith("I;16") or mode in ("I", "F")):
                return np.asarray(image.convert("RGB"))
            values = np.asarray(image)  # convert("RGB") would clip these to 255: white
    except Image.DecompressionBombError as e:  # not an OSError
        raise InputError(f"{path}: cannot decode this file as an image: too large ({e})") from None
    except Exception as e:  # Pillow's decoders fail in many ways (OSError, SyntaxError, ...) on a bad file
        # The training pipeline's words (zero bytes, not an image, truncated JPEG) when it
        # knows the format; Pillow's for the formats only Pillow reads.
        reason = describe_image_file(path)
        if reason is None:
            unknown = isinstance(e, UnidentifiedImageError)
            reason = "no format TensorFlow or Pillow reads" if unknown else str(e) or type(e).__name__
        raise InputError(f"{path}: cannot decode this file as an image: {reason}") from None
    return np.repeat(_to_uint8(values, mode, path)[..., None], 3, axis=-1)


def decode_image_file(path):
    """Decodes one image file to uint8 `[H, W, 3]` at its own size, as the model sees it.

    The one decoder of every view of an image (`read_image` for the model, the rank-list tiles
    of `plots`, the pixel baseline of `baselines`). JPEG, PNG, BMP and GIF (first frame) are
    decoded by TensorFlow exactly as the training pipeline does (`portrait_keras.data.pipeline.
    decode`); other formats (TIFF, PGM, ...) by Pillow. Grayscale and RGBA become RGB.

    Deeper pixels become 8-bit as TensorFlow makes a 16-bit PNG 8-bit: a 16-bit value keeps
    its high byte (`v >> 8`). Pillow's 32-bit modes (`I` integer, `F` float) are scaled from
    the range their values lie in: a float image in [0, 1] is multiplied by 255; values in
    [0, 255] are kept; values in [0, 65535] are taken as 16-bit. Negative, non-finite or larger
    values have no such range: the image is refused (`InputError`).

    Args:
        path: str or path-like.

    Raises: `InputError` naming `path` when it cannot be read or decoded (or is larger than
        Pillow decodes, `PIL.Image.MAX_IMAGE_PIXELS`).
    """
    import tensorflow as tf

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read the file ({e.strerror or e})") from None
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return _decode_with_pillow(path, data)


def read_image(path, image_size):
    """Reads one image file as uint8 `[H, W, 3]` of `image_size`.

    Decoded by `decode_image_file` (JPEG, PNG, BMP and GIF as the training pipeline does, other
    formats by Pillow, 16- and 32-bit images scaled to 8 bits); another size is resized
    (bilinear, antialiased), without keeping the aspect ratio, as in training.

    Args:
        path: str or path-like.
        image_size: (int, int). `(height, width)`.

    Raises: `InputError` naming `path` when it cannot be read or decoded.
    """
    import tensorflow as tf

    image = decode_image_file(path)
    if tuple(image.shape[:2]) != tuple(image_size):
        # The same resize as `pipeline.decode`, so a served image matches a training one.
        image = tf.saturate_cast(tf.round(tf.image.resize(image, image_size, antialias=True)), tf.uint8).numpy()
    return image


def read_images(paths, image_size):
    """`read_image` for each path, stacked: uint8 `[N, H, W, 3]`."""
    images = [read_image(p, image_size) for p in paths]
    if not images:
        return np.zeros((0, *image_size, 3), np.uint8)
    return np.stack(images)


# === Description ===


def describe(probabilities, schema, threshold=DEFAULT_THRESHOLD):
    """One image's probabilities as a description grouped by aspect (paper §3).

    Args:
        probabilities: dict task → float `[C]`, one image's class probabilities
            (`Predictor.predict` rows).
        schema: `Schema`. Class names and aspects.
        threshold: float in (0, 1). A multi-label class is named when its probability is
            above it. Defaults to `0.5`.

    Returns:
        dict aspect → dict task → entry, for the aspects and tasks in `probabilities`:
        a single-label entry is `{"label", "probability", "probabilities"}` (the most probable
        class, its probability, and every class's probability); a multi-label entry is
        `{"labels", "fallback", "probabilities"}`, `labels` being the classes above
        `threshold`, most probable first, or, when none is, the most probable class alone with
        `fallback` true: the evaluation's decision (`evaluation.classification_predictions`,
        each annotated image shows at least one expression).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1). Received: threshold={threshold!r}")
    result = {}
    for aspect in ASPECTS:
        entries = {}
        for task in schema.aspect_tasks(aspect):
            if task.kind == IDENTITY or task.name not in probabilities:
                continue
            p = np.asarray(probabilities[task.name], dtype=np.float64)
            if p.shape != (task.num_classes,):
                raise ValueError(
                    f"Task {task.name!r}: expected {task.num_classes} probabilities. Received shape {p.shape}"
                )
            every = {c: round(float(v), 6) for c, v in zip(task.classes, p)}
            order = np.argsort(-p, kind="stable")
            if task.kind == MULTI:
                above = [task.classes[i] for i in order if p[i] > threshold]
                entries[task.name] = {
                    "labels": above or [task.classes[int(order[0])]],
                    "fallback": not above,
                    "probabilities": every,
                }
            else:
                best = int(order[0])
                entries[task.name] = {
                    "label": task.classes[best],
                    "probability": round(float(p[best]), 6),
                    "probabilities": every,
                }
        if entries:
            result[aspect] = entries
    return result


def interpret(predictor, paths, threshold=DEFAULT_THRESHOLD, batch_size=32):
    """Describes each image file: `[{"path": ..., "appearance": ..., "posture": ..., "emotion": ...}]`.

    Args:
        predictor: `Predictor`.
        paths: list of image file paths (`expand_image_paths`).
        threshold: float. Multi-label threshold of `describe`. Defaults to `0.5`.
        batch_size: int. Images decoded and predicted together. Defaults to `32`.
    """
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = [os.fspath(p) for p in paths[start : start + batch_size]]
        probs = predictor.predict(read_images(chunk, predictor.image_size), batch_size=batch_size)
        for i, path in enumerate(chunk):
            one = {t.name: probs[t.name][i] for t in predictor.tasks}
            results.append({"path": path, **describe(one, predictor.schema, threshold)})
    return results


def format_description(result, threshold=DEFAULT_THRESHOLD, top=3):
    """A readable multi-line text of one `interpret` result.

    Single-label tasks show their `top` most probable classes with probabilities; multi-label
    tasks their `labels`: the classes above `threshold`, or the most probable one, marked, when
    none is (`describe`).
    """
    lines = [result["path"]]
    width = max((len(name) for aspect in ASPECTS for name in result.get(aspect, {})), default=0)
    for aspect in ASPECTS:
        if aspect not in result:
            continue
        lines.append(f"  {aspect}")
        for name, entry in result[aspect].items():
            ranked = sorted(entry["probabilities"].items(), key=lambda kv: -kv[1])
            if "label" in entry:
                text = "  ".join(f"{c} {p:.2f}" for c, p in ranked[:top])
            elif entry.get("fallback", not entry["labels"]):
                c, p = ranked[0]
                text = f"none above {threshold:g} (most probable: {c} {p:.2f})"
            else:
                text = "  ".join(f"{c} {entry['probabilities'][c]:.2f}" for c in entry["labels"])
            lines.append(f"    {name:<{width}}  {text}")
    return "\n".join(lines)
