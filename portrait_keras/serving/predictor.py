"""A trained model ready to predict on image files: `load_predictor(path)` → `Predictor`.

`load_predictor` accepts the three things a run leaves behind:

- a run folder (`model.keras`, or `saved_model/`);
- a `.keras` file: it carries its schema (`PortraitModel`); an older functional one needs the
  `schema.json` of its run beside it;
- a SavedModel folder written by `portrait_keras.serving.export` (schema in `assets/schema.json`).

Images are read by `portrait_keras.data.images`; `portrait_keras.serving.interpret` turns the
probabilities into descriptions.
"""

import glob
import hashlib
import json
import os
import sys

import numpy as np

from portrait_keras.data.images import IMAGE_EXTENSIONS, image_files_below
from portrait_keras.errors import InputError
from portrait_keras.schema import IDENTITY, Schema

DEFAULT_THRESHOLD = 0.5
KERAS, SAVED_MODEL = "keras", "saved_model"


# === Model ===


def model_kind(path):
    """Which of the three model forms `path` is (module docstring), before loading anything.

    Returns: `(kind, model_path, schema_path)` with `kind` `"keras"` or `"saved_model"`;
        `schema_path` is None for a `.keras` model (it carries its schema; an older functional
        one takes the `schema.json` beside it when loaded).
    Raises: `InputError` naming `path` when it is none of them or a SavedModel's schema is missing.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such model file or folder")
    if os.path.isfile(path):
        if not path.endswith(".keras"):
            raise InputError(f"{path}: not a model. Expected a run folder, a .keras file or a SavedModel folder.")
        return KERAS, path, None
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        schema = os.path.join(path, "assets", "schema.json")
        if not os.path.isfile(schema):
            raise InputError(
                f"{path}: a SavedModel without assets/schema.json (not written by portrait_keras.serving.export)"
            )
        return SAVED_MODEL, path, schema
    keras_file = os.path.join(path, "model.keras")
    saved = os.path.join(path, "saved_model")
    if os.path.isfile(keras_file):
        return KERAS, keras_file, None
    schema = os.path.join(saved, "assets", "schema.json")
    if os.path.isfile(os.path.join(saved, "saved_model.pb")) and os.path.isfile(schema):
        return SAVED_MODEL, saved, schema
    raise InputError(
        f"{path}: not a model. Expected a run folder (model.keras or saved_model/), "
        f"a .keras file or a SavedModel folder (saved_model.pb)."
    )


def _saved_model_signature(path):
    """`assets/signature.json` of a SavedModel (`export_saved_model`), or {} without one."""
    signature = os.path.join(path, "assets", "signature.json")
    if not os.path.isfile(signature):
        return {}
    with open(signature, encoding="utf-8") as f:
        return json.load(f)


def _saved_model_input_size(path, model, signature):
    """The model's input `(height, width)`: its `signature` (`_saved_model_signature`), else the
    `serve` signature's fixed image shape."""
    if signature:
        return tuple(int(s) for s in signature["input"][:2])
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
        background: str. How its training images showed the background of a person with a
            mask (`PortraitModel.background`): `"keep"`, `"mean"` or `"blur"`. Readers of images
            with a mask show them the same way (`read_image_batches`).
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
            self.background = getattr(model, "background", "keep")
        else:
            signature = _saved_model_signature(self.path)
            self.image_size = _saved_model_input_size(self.path, model, signature)
            self.background = signature.get("background", "keep")
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

    def predict(self, images, batch_size=32, flip=False):
        """Probabilities and embedding of a batch of images.

        Args:
            images: uint8 `[N, H, W, 3]` at `image_size` (`read_images`).
            batch_size: int. Images per forward pass. Defaults to `32`.
            flip: bool. Test-time flip: run each image and its horizontal mirror and average
                the probabilities and the embeddings (the BNNeck features, before any L2
                normalisation), as `evaluation.evaluate(flip=True)` does. Defaults to `False`.

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
        result = {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in keys}
        if flip:
            mirrored = self.predict(np.ascontiguousarray(images[:, :, ::-1]), batch_size)
            result = {k: (v + mirrored[k]) / 2 for k, v in result.items()}
        return result

    def _predict_batch(self, images):
        if self.kind == SAVED_MODEL:
            import tensorflow as tf

            out = self._model.serve(tf.constant(images))
            return {k: v.numpy() for k, v in out.items()}
        import keras

        from portrait_keras.models import probabilities

        # predict_on_batch runs the compiled inference function (training=False). The uint8
        # images go in as they are: the model casts them to float32 in its graph (the same
        # values), which saves a float32 copy of the batch (7% of a tiny model's CPU time).
        outputs = self._model.predict_on_batch(images)
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
        from portrait_keras.serving.export import ModelFileError, load_model

        try:
            return load_model(model_path)
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
    schema = None
    if schema_path is not None:
        try:
            schema = Schema.load(schema_path)
        except ValueError as e:
            raise InputError(str(e)) from None
    for _ in range(LOAD_TRIES):
        before = _file_stats(kind, model_path)
        model = _load_model(kind, model_path)
        after = _file_stats(kind, model_path)
        if before is not None and before == after:
            break
    else:
        after = None
    if kind == KERAS:
        schema = model.schema
        schema_path = getattr(model, "schema_path", None)
    predictor = Predictor(model_path, kind, schema, model, schema_path, file_stats=after)
    if after is not None:
        return predictor
    predictor.fingerprint = None  # which files the weights came from is unknown
    return predictor


# === Images ===


def _is_pattern(text):
    return any(c in text for c in "*?[")


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


def warn_unmasked(predictor, what):
    """One `warning:` line on stderr when `predictor`'s model was trained with the background of
    masked people removed (`background` not `"keep"`) and `what` (e.g. "the query image") has no
    person mask, so the model sees it whole, as it saw unmasked training images."""
    if predictor.background != "keep":
        print(
            f"warning: {predictor.path} was trained with data.background={predictor.background} on images with a "
            f"person mask; no mask for {what} (an annotation CSV's `mask` column gives them), so the model sees "
            f"the whole image",
            file=sys.stderr,
        )


def read_masked_image(path, image_size, mask, background):
    """`read_image(path, image_size)` with its background shown as `background` says where the
    person `mask` file (`""`: none) is not 1, as the input pipeline shows it in training
    (`data.pipeline.read_mask`, `remove_background`).

    Raises: `ImageFileError` naming the image, or the mask when that cannot be read.
    """
    from portrait_keras.data.images import ImageFileError, read_image

    image = read_image(path, image_size)
    if not mask or background == "keep":
        return image
    import tensorflow as tf

    from portrait_keras.data.pipeline import read_mask, remove_background

    try:
        mask = read_mask(tf.constant(os.fspath(mask)), tuple(image.shape[:2]))
    except tf.errors.OpError as e:
        reason = f"cannot read this person mask ({e.message.splitlines()[0]})"
        raise ImageFileError(mask, reason, f"{mask} (the person mask of {path}): {reason}") from None
    return remove_background(tf.constant(image), mask, background).numpy()


def read_image_batches(paths, image_size, batch_size, masks=None, background="keep"):
    """`read_masked_image` of every path in consecutive batches, the next batch read in a
    background thread while the caller runs the model on this one.

    The decoders are TensorFlow ops (and Pillow), which release the GIL, so reading overlaps
    the model's run; each image is still `read_image`'s, with its pixels and its
    `ImageFileError`. One batch ahead: on 2 cores more readers only take cores from the model
    (a `tf.data` map with `AUTOTUNE` readers, tried, cost 0.1-0.15 CPU-ms/img more and ran
    slower, benchmarks/RESULTS.md).

    Args:
        paths: sequence of str. Image files.
        image_size: (int, int). `(height, width)`.
        batch_size: int. Paths per batch.
        masks: sequence of str or None. A person mask per path (`""`: none), applied as
            `background` says (`Predictor.background`). Defaults to `None` (no masks).
        background: str. `"keep"`, `"mean"` or `"blur"`. Defaults to `"keep"`.

    Yields:
        `(positions, images, bad)` for each `batch_size` paths in order: int64 `[n]` the indices
        in `paths` of the readable ones, uint8 `[n, H, W, 3]` their images, and a list of
        `(index, ImageFileError)` for the others.
    """
    from concurrent.futures import ThreadPoolExecutor

    from portrait_keras.data.images import ImageFileError

    paths = list(paths)
    masks = [""] * len(paths) if masks is None else list(masks)
    if len(masks) != len(paths):
        raise ValueError(f"masks must have one entry per path. Received: {len(masks)} masks, {len(paths)} paths")
    height, width = (int(s) for s in image_size)

    def read(start):
        positions, images, bad = [], [], []
        for index in range(start, min(start + batch_size, len(paths))):
            try:
                images.append(read_masked_image(paths[index], image_size, masks[index], background))
                positions.append(index)
            except ImageFileError as e:
                bad.append((index, e))
        stacked = np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)
        return np.array(positions, np.int64), stacked, bad

    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read, 0) if paths else None
        for start in starts:
            batch = pending.result()
            pending = reader.submit(read, start + batch_size) if start + batch_size < len(paths) else None
            yield batch
