"""Person search: the gallery images nearest to a query by the re-id embedding (cosine distance).

A gallery is a folder (every image file below it) or an annotation CSV (`read_annotations`): the
rows of its `gallery` split when it has one, else every row. With a CSV the identities are known,
so each hit is marked as the query's identity or not (when the query is a row of the CSV too).

Attribute queries (`by_attributes`) rank the gallery by the joint probability of requested values
(`gender=female`, `age=elderly`, ...), alone or re-weighting the re-id similarity to a query image.

The gallery's embeddings and class probabilities are cached in the gallery folder (the CSV's folder
for a CSV) as `.portrait_embeddings-<model fingerprint>.npz`: plain arrays (no pickle: `embeddings`,
`prob_<task>` per task), one row per image keyed
by its path relative to that folder, its size, modification and change times and inode (the change
time cannot be set back, so an edit that restores the modification time is still seen). A later
search with the same model embeds only new or changed images and drops removed ones; rows of other
galleries sharing the folder (two CSVs, or a CSV and the folder itself) are kept while their files
are unchanged. Another model (or the same model file rewritten) has its own cache file; a model
whose files changed while it loaded has none (`inference.load_predictor`).

Example:
>>> predictor = load_predictor("runs/fss_uncert")  # doctest: +SKIP
>>> result = search(predictor, load_gallery("data/annotations.csv"), "query.jpg", k=5)  # doctest: +SKIP
>>> result.paths[0], result.distances[0]  # doctest: +SKIP
>>> by_attributes(predictor, load_gallery("photos/"), ["age=elderly", "body=sitting"], k=5).paths  # doctest: +SKIP
"""

import dataclasses
import os
import sys
import tempfile
import zipfile

import numpy as np

from portrait_keras.data.images import ImageFileError, UnreadableImage, image_files_below
from portrait_keras.errors import InputError
from portrait_keras.metrics.distance import cosine_distances
from portrait_keras.schema import MULTI
from portrait_keras.serving.predictor import file_identity, read_image_batches, warn_unmasked

CACHE_PREFIX = ".portrait_embeddings-"
EMBEDDING = "embedding"  # the re-id output
UNKNOWN = -1


def _same_id(query_id, ids, n):
    """Per hit of `n`: whether its identity (of `ids`, None unknown) is `query_id`; None where
    either is unknown."""
    if query_id is None or ids is None:
        return [None] * n
    return [None if i is None else i == query_id for i in ids]


@dataclasses.dataclass
class Gallery:
    """Images to search in.

    Attributes:
        folder: str. Absolute folder of the gallery (the CSV's folder for a CSV); the cache
            lives here and cached paths are relative to it.
        paths: list of str. Absolute image paths.
        ids: int64 `[n]` identities (`-1` unknown), or None for a folder gallery.
        known_ids: dict real path → identity for every row of the CSV (every split), so a
            query taken from the same table has its identity; empty for a folder.
        masks: list of str or None. The person mask of each path (`""`: none) from the CSV's
            `mask` column; None when no row has one (a folder, a CSV without masks).
        known_masks: dict real path → person mask for every row of the CSV with one.
    """

    folder: str
    paths: list
    ids: np.ndarray = None
    known_ids: dict = dataclasses.field(default_factory=dict)
    masks: list = None
    known_masks: dict = dataclasses.field(default_factory=dict)

    def id_of(self, path):
        """The identity of image `path` when the CSV lists it and it is known, else None."""
        value = self.known_ids.get(os.path.realpath(path), UNKNOWN)
        return None if value == UNKNOWN else int(value)

    def mask_of(self, path):
        """The person mask of image `path` when the CSV lists it with one, else `""`."""
        return self.known_masks.get(os.path.realpath(path), "")


def load_gallery(source):
    """A `Gallery` from a folder or an annotation CSV (module docstring).

    Raises: `InputError` naming `source` when it is neither or holds no image;
        `AnnotationError` for an invalid CSV.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        paths = image_files_below(source)
        if not paths:
            raise InputError(f"{source}: no image files in this gallery folder")
        return Gallery(os.path.abspath(source), [os.path.abspath(p) for p in paths])
    if not os.path.isfile(source):
        raise InputError(f"{source}: no such gallery folder or CSV file")
    if not source.lower().endswith(".csv"):
        raise InputError(f"{source}: a gallery is a folder of images or an annotation CSV file")
    from portrait_keras.data import read_annotations

    annotations = read_annotations(source)
    splits = ["gallery"] if "gallery" in annotations.splits else list(annotations.splits)
    if not splits:
        raise InputError(f"{source}: the annotation table has no rows")
    identity = annotations.schema.identity_task
    paths = [p for s in splits for p in annotations.paths(s)]
    known = {}
    ids = None
    if identity is not None:
        ids = np.concatenate([annotations.labels(s)[identity.name] for s in splits]).astype(np.int64)
        for s in annotations.splits:
            for p, i in zip(annotations.paths(s), annotations.labels(s)[identity.name]):
                known[os.path.realpath(p)] = int(i)
    masks, known_masks = None, {}
    if annotations.has_masks:
        masks = [str(m) for s in splits for m in annotations.masks(s)]
        for s in annotations.splits:
            pairs = zip(annotations.paths(s), annotations.masks(s))
            known_masks.update({os.path.realpath(p): str(m) for p, m in pairs if m})
    return Gallery(os.path.dirname(os.path.abspath(source)), list(paths), ids, known, masks, known_masks)


def cache_path(gallery, predictor):
    """Path of the embedding cache of `gallery` for `predictor` (module docstring)."""
    return os.path.join(gallery.folder, f"{CACHE_PREFIX}{predictor.fingerprint}.npz")


KEY_FIELDS = ("sizes", "mtimes", "ctimes", "inodes")  # cache arrays of the per-image key


def _file_key(path, mask=""):
    """`(size, mtime_ns, ctime_ns, inode)` of a gallery image: any edit changes it. With a
    person `mask` file applied, the later of the two mtimes and ctimes: an edit of either
    changes it (a file's ctime is set to now on every change)."""
    try:
        key = file_identity(path)
    except OSError as e:
        why = e.strerror or e
        message = f"{path}: gallery image cannot be read ({why})"
        raise ImageFileError(path, f"cannot read the file ({why})", message) from None
    if not mask:
        return key
    try:
        other = file_identity(mask)
    except OSError as e:
        why = e.strerror or e
        message = f"{mask} (the person mask of {path}) cannot be read ({why})"
        raise ImageFileError(path, f"cannot read its person mask {mask} ({why})", message) from None
    return (key[0], max(key[1], other[1]), max(key[2], other[2]), key[3])


def _still_valid(folder, rel, key):
    """Whether the file of a cached row (of another gallery) is unchanged."""
    try:
        return file_identity(os.path.join(folder, rel)) == key
    except OSError:
        return False


def _cache_array(name):
    """The cache file's array of output `name`: `embeddings`, or `prob_<task>`."""
    return "embeddings" if name == EMBEDDING else f"prob_{name}"


def _read_cache(path, fingerprint, names):
    """`{relative path: (key, {output: row})}` of a cache file; empty when there is none or it
    lacks one of the outputs `names` (a cache written before probabilities were cached)."""
    if not os.path.exists(path):
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint or any(_cache_array(n) not in z.files for n in names):
                return {}
            keys = zip(*(z[name].tolist() for name in KEY_FIELDS))
            columns = [z[_cache_array(n)] for n in names]
            return {
                p: (tuple(k), {n: c[i] for n, c in zip(names, columns)})
                for i, (p, k) in enumerate(zip(z["paths"].tolist(), keys))
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        print(f"warning: {path}: unreadable embedding cache, rebuilding it ({e})", file=sys.stderr)
        return {}


def _write_cache(path, fingerprint, rows, names):
    """Writes `{relative path: (key, {output: row})}` atomically; a failure only warns."""
    tmp = None
    paths = list(rows)
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp", suffix=".npz")
        keys = {name: np.array([rows[p][0][i] for p in paths], dtype=np.int64) for i, name in enumerate(KEY_FIELDS)}
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                fingerprint=np.array(fingerprint),
                paths=np.array(paths, dtype=str),
                **{_cache_array(n): np.array([rows[p][1][n] for p in paths], dtype=np.float32) for n in names},
                **keys,
            )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the cache is as shareable as the images
        os.replace(tmp, path)  # atomic: a concurrent search never reads half a file
    except OSError as e:
        print(f"warning: cannot write the embedding cache {path} ({e.strerror or e})", file=sys.stderr)
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


@dataclasses.dataclass
class GalleryEmbeddings:
    """Re-id embeddings and class probabilities of a gallery.

    Attributes:
        embeddings: float32 `[n, D]`, one row per readable image, in `Gallery.paths` order
            (None when the model has no re-id embedding: `gallery_outputs`).
        embedded: int. How many images went through the model for this call (the rest came
            from the cache).
        cache_file: str or None. The cache file read and written (None without cache).
        positions: int64 `[n]`. The index in `Gallery.paths` of each row: every index, unless
            unreadable images were left out (`on_bad_image`).
        probabilities: dict task name → float32 `[n, C]` class probabilities (softmax; sigmoid
            for a multi-label task) of every task the model predicts.
    """

    embeddings: np.ndarray
    embedded: int
    cache_file: str = None
    positions: np.ndarray = None
    probabilities: dict = dataclasses.field(default_factory=dict)


def _require_embedding(predictor):
    if not predictor.has_embedding:
        raise InputError(f"{predictor.path}: the model has no re-id embedding (it was trained without the id task)")


def _output_names(predictor):
    """What is predicted and cached per image: the embedding (if any), then every task."""
    return ([EMBEDDING] if predictor.has_embedding else []) + [t.name for t in predictor.tasks]


def predict_files(predictor, paths, batch_size=64, on_bad_image=None, masks=None):
    """`Predictor.predict` of image files, read `batch_size` at a time (the next batch read
    while the model runs on this one: `read_image_batches`), each with its person mask of
    `masks` (`""`: none; None: no masks) applied as `predictor.background` says.

    Returns: dict output → float32 `[n, ...]`: `"embedding"` (when the model has one) and every
        task of `predictor.tasks`, one row per readable file.
    `on_bad_image` as in `read_images`: called with each unreadable file (its index in
    `paths`), which then has no row; None raises the `ImageFileError` of the first.
    """
    names = _output_names(predictor)
    parts = {n: [] for n in names}
    batches = read_image_batches(paths, predictor.image_size, batch_size, masks, predictor.background)
    for _, images, bad in batches:
        for index, error in bad:
            if on_bad_image is None:
                raise error
            on_bad_image(UnreadableImage(index, os.fspath(paths[index]), error.reason))
        if len(images):
            outputs = predictor.predict(images, batch_size=batch_size)
            for n in names:
                parts[n].append(outputs[n])
    return {n: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for n, v in parts.items()}


def embed(predictor, paths, batch_size=64, on_bad_image=None, masks=None):
    """Re-id embeddings `[n, D]` float32 of image files, read `batch_size` at a time, with
    their person `masks` as `predict_files`.

    `on_bad_image` as in `read_images`: called with each unreadable file (its index in
    `paths`), which then has no row; None raises the `ImageFileError` of the first.
    """
    _require_embedding(predictor)
    return predict_files(predictor, paths, batch_size, on_bad_image, masks)[EMBEDDING]


def _predict_positions(predictor, gallery, positions, batch_size, on_bad_image, masks):
    """`{position: {output: row}}` of the gallery images at `positions` that can be read."""
    failed = set()

    def left_out(item):
        failed.add(positions[item.index])
        on_bad_image(item._replace(index=positions[item.index]))

    outputs = predict_files(
        predictor,
        [gallery.paths[i] for i in positions],
        batch_size,
        on_bad_image=None if on_bad_image is None else left_out,
        masks=None if masks is None else [masks[i] for i in positions],
    )
    kept = [i for i in positions if i not in failed]
    return {p: {n: v[row] for n, v in outputs.items()} for row, p in enumerate(kept)}


def gallery_embeddings(predictor, gallery, *, batch_size=64, use_cache=True, on_bad_image=None):
    """Embeddings (and probabilities) of every gallery image, from the cache where the file is unchanged.

    Args:
        predictor: `inference.Predictor` with a re-id embedding.
        gallery: `Gallery`.
        batch_size: int. Images per forward pass. Defaults to `64`.
        use_cache: bool. Read and update the cache file (module docstring). Defaults to `True`;
            a predictor without fingerprint (its model changed while loading) uses none.
        on_bad_image: callable or None. Called with an `UnreadableImage` (index in
            `gallery.paths`, path, reason) for each image that cannot be read or decoded,
            which is then left out (and not cached). None raises the `ImageFileError` of the
            first. Defaults to `None`.

    Returns: `GalleryEmbeddings`.
    """
    _require_embedding(predictor)
    return gallery_outputs(predictor, gallery, batch_size=batch_size, use_cache=use_cache, on_bad_image=on_bad_image)


def gallery_outputs(predictor, gallery, *, batch_size=64, use_cache=True, on_bad_image=None):
    """`gallery_embeddings` of any model, also one without re-id embedding (`embeddings` None):
    the attribute queries need the probabilities only."""
    names = _output_names(predictor)
    rels = [os.path.relpath(p, gallery.folder).replace(os.sep, "/") for p in gallery.paths]
    masks = gallery.masks if predictor.background != "keep" else None
    if masks is None:
        warn_unmasked(predictor, "the gallery images")
    keys = {}
    for i, path in enumerate(gallery.paths):
        try:
            keys[i] = _file_key(path, masks[i] if masks else "")
        except ImageFileError as e:
            if on_bad_image is None:
                raise
            on_bad_image(UnreadableImage(i, path, e.reason))
    if use_cache and predictor.fingerprint is None:
        print(
            f"warning: {predictor.path}: the model files changed while it loaded; no embedding cache used",
            file=sys.stderr,
        )
        use_cache = False
    if not use_cache:
        fresh = _predict_positions(predictor, gallery, list(keys), batch_size, on_bad_image, masks)
        return _gallery_result(names, [fresh[i] for i in fresh], len(fresh), None, list(fresh))
    path = cache_path(gallery, predictor)
    cached = _read_cache(path, predictor.fingerprint, names)
    stale = [i for i, key in keys.items() if cached.get(rels[i], (None,))[0] != key]
    fresh = _predict_positions(predictor, gallery, stale, batch_size, on_bad_image, masks)
    kept = [i for i in keys if i in fresh or i not in stale]
    rows = {rels[i]: (keys[i], fresh[i] if i in fresh else cached[rels[i]][1]) for i in kept}
    result = _gallery_result(names, [rows[rels[i]][1] for i in kept], len(fresh), path, kept)
    # Rows of other galleries in this folder stay while their files are unchanged.
    others = {rel: row for rel, row in cached.items() if rel not in rows}
    rows.update({rel: row for rel, row in others.items() if _still_valid(gallery.folder, rel, row[0])})
    if fresh or set(rows) != set(cached):
        _write_cache(path, predictor.fingerprint, rows, names)
    return result


def _gallery_result(names, rows, embedded, cache_file, positions):
    """`GalleryEmbeddings` of `rows` (`{output: row}` per kept image)."""
    columns = {n: _stacked(r[n] for r in rows) for n in names}
    embeddings = columns.pop(EMBEDDING, None)
    return GalleryEmbeddings(embeddings, embedded, cache_file, np.array(positions, np.int64), columns)


def _stacked(rows):
    rows = list(rows)
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)


@dataclasses.dataclass
class SearchResult:
    """The `k` nearest gallery images to one query, nearest first.

    Attributes:
        query: str. The query image path.
        query_id: int or None. Its identity, when the gallery CSV lists it.
        paths: list of str. Gallery paths, nearest first.
        distances: float32 `[k]` cosine distances.
        ids: list of int or None. Gallery identities (None unknown), or None for a folder.
        embedded: int. Gallery images that went through the model (not from the cache).
    """

    query: str
    query_id: object
    paths: list
    distances: np.ndarray
    ids: list = None
    embedded: int = 0

    @property
    def same_id(self):
        """Per hit: True/False when both identities are known, else None."""
        return _same_id(self.query_id, self.ids, len(self.paths))

    def to_dict(self):
        """JSON-ready dict: the query and the ranked hits."""
        ids = self.ids or [None] * len(self.paths)
        hits = [
            {"rank": r + 1, "path": p, "distance": float(d), "id": i, "same_id": s}
            for r, (p, d, i, s) in enumerate(zip(self.paths, self.distances, ids, self.same_id))
        ]
        return {"query": self.query, "query_id": self.query_id, "results": hits}

    def format(self):
        """A readable table: rank, distance, identity and match mark (when known), path."""
        lines = [f"query: {self.query}" + ("" if self.query_id is None else f" (id {self.query_id})")]
        ids = self.ids or [None] * len(self.paths)
        for r, (p, d, i, s) in enumerate(zip(self.paths, self.distances, ids, self.same_id)):
            mark = {True: "same id", False: "other id", None: ""}[s]
            ident = "" if i is None else f"id {i}"
            lines.append(f"{r + 1:>4}  {d:.4f}  {ident:<10} {mark:<8}  {p}")
        return "\n".join(lines)


def search(predictor, gallery, query, k=10, *, batch_size=64, use_cache=True, on_bad_image=None):
    """The `k` gallery images nearest to the image file `query` (cosine distance of embeddings).

    Args:
        predictor: `inference.Predictor` with a re-id embedding.
        gallery: `Gallery` (`load_gallery`).
        query: str. Image file.
        k: int. Number of hits (at most the gallery size). Defaults to `10`.
        batch_size: int. Images per forward pass. Defaults to `64`.
        use_cache: bool. Use the gallery's embedding cache. Defaults to `True`.
        on_bad_image: callable or None. Leaves unreadable gallery images out, calling it with
            each (`gallery_embeddings`). The query is always read: a bad one raises. Defaults
            to `None`.

    Returns: `SearchResult`. Ties keep gallery order.
    Raises: `ImageFileError` naming an unreadable query (first, before any gallery image is
        read) or gallery image (without `on_bad_image`); `InputError` when no gallery image
        could be read.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1. Received: k={k}")
    query = os.fspath(query)
    query_embedding = _query_embedding(predictor, gallery, query)  # first: a bad query fails before the gallery
    emb = gallery_embeddings(predictor, gallery, batch_size=batch_size, use_cache=use_cache, on_bad_image=on_bad_image)
    if not len(emb.positions):
        raise InputError(f"{gallery.folder}: none of the {len(gallery.paths)} gallery images could be read")
    distances = cosine_distances(query_embedding, emb.embeddings)[0]
    order = np.argsort(distances, kind="stable")[:k]
    positions = emb.positions[order]
    ids = None
    if gallery.ids is not None:
        ids = [None if gallery.ids[i] == UNKNOWN else int(gallery.ids[i]) for i in positions]
    return SearchResult(
        query,
        gallery.id_of(query),
        [gallery.paths[i] for i in positions],
        distances[order],
        ids,
        emb.embedded,
    )


def _query_embedding(predictor, gallery, query):
    """`[1, D]` embedding of the query image, with its person mask when the gallery CSV lists one."""
    mask = gallery.mask_of(query) if predictor.background != "keep" else ""
    if not mask:
        warn_unmasked(predictor, "the query image")
    return embed(predictor, [query], masks=[mask])


# === Attribute queries ===


@dataclasses.dataclass(frozen=True)
class Condition:
    """One requested value: `task=value` (`parse_where`).

    Attributes:
        task: str. Task name, e.g. `"age"`.
        value: str. One of its classes, e.g. `"elderly"`.
        index: int. The class's index in the task's class list.
        multi: bool. Whether the task is multi-label (its classes are not exclusive).
    """

    task: str
    value: str
    index: int
    multi: bool

    def __str__(self):
        return f"{self.task}={self.value}"


def _nearest(text, allowed):
    import difflib

    near = difflib.get_close_matches(text, allowed, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def parse_where(where, tasks, label="where"):
    """The conditions of an attribute query, checked against the tasks a model predicts.

    Args:
        where: `"task=value"` str, or a sequence of them, or a mapping task → value (or a list
            of values), e.g. `{"gender": "female", "age": "elderly"}`.
        tasks: sequence of `schema.Task`. The classification tasks that can be asked for
            (`Predictor.tasks`).
        label: str. What the error messages call the conditions, e.g. `"--where"`.
            Defaults to `"where"`.

    Returns: list of `Condition`, in the order given, without repeats.
    Raises: `InputError` naming the condition for a text without `=`, an unknown task or an
        unknown value, with the allowed ones and the nearest spelling.

    Example:
    >>> from portrait_keras.schema import default_schema
    >>> [str(c) for c in parse_where(["age=elderly", "expression=happy"], default_schema().classification_tasks)]
    ['age=elderly', 'expression=happy']
    """
    if isinstance(where, str):
        where = [where]
    if hasattr(where, "items"):
        pairs = [(t, v) for t, values in where.items() for v in ([values] if isinstance(values, str) else values)]
    else:
        pairs = []
        for text in where:
            task, sep, value = str(text).partition("=")
            if not sep:
                raise InputError(f"{label} {text!r}: expected TASK=VALUE, e.g. gender=female")
            pairs.append((task.strip(), value.strip()))
    if not pairs:
        raise InputError(f"{label}: no condition given. Expected TASK=VALUE, e.g. gender=female")
    by_name = {t.name: t for t in tasks}
    conditions = []
    for task, value in pairs:
        if task not in by_name:
            allowed = ", ".join(by_name) or "none (the model predicts no attribute)"
            raise InputError(
                f"{label} {task}={value}: unknown task {task!r}. Allowed: {allowed}{_nearest(task, list(by_name))}"
            )
        classes = by_name[task].classes
        if value not in classes:
            raise InputError(
                f"{label} {task}={value}: unknown value {value!r} for {task}. "
                f"Allowed: {', '.join(classes)}{_nearest(value, classes)}"
            )
        condition = Condition(task, value, classes.index(value), by_name[task].kind == MULTI)
        if condition not in conditions:
            conditions.append(condition)
    return conditions


def attribute_match(probabilities, conditions):
    """How well each image matches the conditions: their joint probability.

    The tasks are taken as independent given the image, so the joint probability is the product
    over the tasks asked for of the probability the model gives each:
    `P(where) = Π_t P_t`. For a single-label task `P_t` is the softmax probability of the value;
    several values of one such task are alternatives (`age=middle_aged --where age=elderly`:
    `P_t` is their sum). For a multi-label task every value asked for must be present: `P_t` is
    the product of their sigmoids.

    Args:
        probabilities: dict task → float `[n, C]` class probabilities (`Predictor.predict`).
        conditions: list of `Condition` (`parse_where`).

    Returns: `(joint, per_condition)`: float32 `[n]` `P(where)`, and float32 `[n, m]` the class
        probability of each condition.

    Example:
    >>> from portrait_keras.schema import default_schema
    >>> where = parse_where(["gender=female", "age=elderly"], default_schema().classification_tasks)
    >>> probs = {"gender": np.array([[0.9, 0.1], [0.5, 0.5]]), "age": np.array([[0, 0, 0, 0.5, 0.5], [0, 0, 0, 0, 1]])}
    >>> attribute_match(probs, where)[0].tolist()
    [0.44999998807907104, 0.5]
    """
    per_condition = np.stack(
        [np.asarray(probabilities[c.task], np.float32)[:, c.index] for c in conditions], axis=1
    ).astype(np.float32)
    joint = np.ones(len(per_condition), np.float32)
    for task in dict.fromkeys(c.task for c in conditions):
        columns = [i for i, c in enumerate(conditions) if c.task == task]
        if conditions[columns[0]].multi:
            joint *= np.prod(per_condition[:, columns], axis=1)
        else:
            joint *= np.minimum(per_condition[:, columns].sum(axis=1), 1.0)
    return joint, per_condition


def reweighted_similarity(distances, joint, attribute_weight=1.0):
    """Re-id similarity re-weighted by the attribute match: `(1 - d/2) · P(where)^α`.

    `1 - d/2 = (1 + cos)/2` maps the cosine distance `d` in [0, 2] to a similarity in [0, 1];
    `α = attribute_weight` sets how much the attributes count (`0`: re-id alone; `1`: the
    similarity times the joint probability). Float32 `[n]`, higher is better.
    """
    return ((1.0 - np.asarray(distances, np.float32) / 2.0) * np.power(joint, attribute_weight)).astype(np.float32)


@dataclasses.dataclass
class ScoredResult:
    """The `k` best gallery images for an attribute query (optionally with a query image) or a
    text, best first.

    Attributes:
        paths: list of str. Gallery paths, best first.
        scores: float32 `[k]`. The ranking score: `P(where)`, `(1 - d/2) · P(where)^α` with a
            query image (`reweighted_similarity`), or the text's cosine similarity.
        conditions: list of str. The `task=value` conditions (empty for a text search).
        matches: float32 `[k, m]`. Each hit's probability of each condition.
        query: str or None. The query image.
        query_id: int or None. Its identity, when the gallery CSV lists it.
        distances: float32 `[k]` or None. Cosine distances to the query image.
        ids: list of int or None. Gallery identities (None unknown), or None for a folder.
        embedded: int. Gallery images that went through the model (not from the cache).
        text: str or None. The text searched for.
    """

    paths: list
    scores: np.ndarray
    conditions: list = dataclasses.field(default_factory=list)
    matches: np.ndarray = None
    query: str = None
    query_id: object = None
    distances: np.ndarray = None
    ids: list = None
    embedded: int = 0
    text: str = None

    @property
    def same_id(self):
        """Per hit: True/False when both identities are known, else None."""
        return _same_id(self.query_id, self.ids, len(self.paths))

    def to_dict(self):
        """JSON-ready dict: what was asked and the ranked hits."""
        ids = self.ids or [None] * len(self.paths)
        hits = []
        for r, (p, s, i, same) in enumerate(zip(self.paths, self.scores, ids, self.same_id)):
            hit = {"rank": r + 1, "path": p, "score": float(s)}
            if self.conditions:
                hit["match"] = {c: float(m) for c, m in zip(self.conditions, self.matches[r])}
            if self.distances is not None:
                hit["distance"] = float(self.distances[r])
            hits.append({**hit, "id": i, "same_id": same})
        asked = {"where": list(self.conditions)} if self.conditions else {}
        if self.query is not None:
            asked.update(query=self.query, query_id=self.query_id)
        if self.text is not None:
            asked["text"] = self.text
        return {**asked, "results": hits}

    def format(self):
        """A readable table: rank, score, distance and condition probabilities, identity, path."""
        lines = []
        if self.text is not None:
            lines.append(f"text: {self.text}")
        if self.conditions:
            lines.append(f"where: {' '.join(self.conditions)}")
        if self.query is not None:
            lines.append(f"query: {self.query}" + ("" if self.query_id is None else f" (id {self.query_id})"))
        ids = self.ids or [None] * len(self.paths)
        for r, (p, s, i, same) in enumerate(zip(self.paths, self.scores, ids, self.same_id)):
            cells = [f"{r + 1:>4}", f"{s:.4f}"]
            if self.distances is not None:
                cells.append(f"d={self.distances[r]:.4f}")
            cells += [f"{c.partition('=')[2]}={m:.2f}" for c, m in zip(self.conditions, self.matches[r])]
            mark = {True: "same id", False: "other id", None: ""}[same]
            cells += [f"{'' if i is None else f'id {i}':<10}", f"{mark:<8}", p]
            lines.append("  ".join(cells))
        return "\n".join(lines)


def top_k(gallery, positions, scores, k):
    """`(order, positions, ids)` of the `k` highest `scores` (ties keep gallery order): `order`
    indexes `scores`, `positions` `gallery.paths`, `ids` the hits' identities or None."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    positions = np.asarray(positions)[order]
    ids = None
    if gallery.ids is not None:
        ids = [None if gallery.ids[i] == UNKNOWN else int(gallery.ids[i]) for i in positions]
    return order, positions, ids


def by_attributes(
    predictor,
    gallery,
    where,
    k=10,
    *,
    query=None,
    attribute_weight=1.0,
    batch_size=64,
    use_cache=True,
    on_bad_image=None,
):
    """Gallery images ranked by the joint probability of the requested attribute values.

    `P(where)` is the product over the tasks of the probability of their values
    (`attribute_match`). With a `query` image the rank is the re-id similarity re-weighted by
    it: `(1 - d/2) · P(where)^α` (`reweighted_similarity`), `d` the cosine distance of the
    embeddings. Probabilities and embeddings come from the gallery's cache (`gallery_outputs`).

    Args:
        predictor: `inference.Predictor` (with a re-id embedding when `query` is given).
        gallery: `Gallery` (`load_gallery`).
        where: the conditions: `"task=value"` strings or a mapping task → value(s) (`parse_where`).
        k: int. Number of hits (at most the gallery size). Defaults to `10`.
        query: str or None. A query image file. Defaults to `None`.
        attribute_weight: float ≥ 0. `α` above. Defaults to `1.0`.
        batch_size: int. Images per forward pass. Defaults to `64`.
        use_cache: bool. Use the gallery's cache. Defaults to `True`.
        on_bad_image: callable or None. Leaves unreadable gallery images out, calling it with
            each (`gallery_embeddings`). Defaults to `None`.

    Returns: `ScoredResult`. Ties keep gallery order.
    Raises: `InputError` for an unknown task or value (before any image is read), a model
        without embedding given a query, or when no gallery image could be read;
        `ImageFileError` naming an unreadable query or gallery image (without `on_bad_image`).

    Example:
    >>> predictor = load_predictor("runs/fss_uncert")  # doctest: +SKIP
    >>> result = by_attributes(predictor, load_gallery("photos/"), ["gender=female", "body=sitting"])  # doctest: +SKIP
    >>> result.paths[0], result.scores[0], result.matches[0]  # doctest: +SKIP
    """
    if k < 1:
        raise ValueError(f"k must be >= 1. Received: k={k}")
    if not attribute_weight >= 0:
        raise ValueError(f"attribute_weight must be >= 0. Received: attribute_weight={attribute_weight}")
    conditions = parse_where(where, predictor.tasks)
    query_embedding = None
    if query is not None:
        query = os.fspath(query)
        query_embedding = _query_embedding(predictor, gallery, query)  # first: a bad query fails before the gallery
    out = gallery_outputs(predictor, gallery, batch_size=batch_size, use_cache=use_cache, on_bad_image=on_bad_image)
    if not len(out.positions):
        raise InputError(f"{gallery.folder}: none of the {len(gallery.paths)} gallery images could be read")
    joint, per_condition = attribute_match(out.probabilities, conditions)
    distances = None
    scores = joint
    if query_embedding is not None:
        distances = cosine_distances(query_embedding, out.embeddings)[0]
        scores = reweighted_similarity(distances, joint, attribute_weight)
    order, positions, ids = top_k(gallery, out.positions, scores, k)
    return ScoredResult(
        paths=[gallery.paths[i] for i in positions],
        scores=scores[order],
        conditions=[str(c) for c in conditions],
        matches=per_condition[order],
        query=query,
        query_id=None if query is None else gallery.id_of(query),
        distances=None if distances is None else distances[order],
        ids=ids,
        embedded=out.embedded,
    )
