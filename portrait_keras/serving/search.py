"""Person search: the gallery images nearest to a query by the re-id embedding (cosine distance).

A gallery is a folder (every image file below it) or an annotation CSV (`read_annotations`): the
rows of its `gallery` split when it has one, else every row. With a CSV the identities are known,
so each hit is marked as the query's identity or not (when the query is a row of the CSV too).

The gallery's embeddings are cached in the gallery folder (the CSV's folder for a CSV) as
`.portrait_embeddings-<model fingerprint>.npz`: plain arrays (no pickle), one row per image keyed
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
"""

import dataclasses
import os
import sys
import tempfile
import zipfile

import numpy as np

from portrait_keras.data.images import ImageFileError, UnreadableImage, image_files_below, read_images
from portrait_keras.errors import InputError
from portrait_keras.metrics.distance import cosine_distances
from portrait_keras.serving.predictor import file_identity

CACHE_PREFIX = ".portrait_embeddings-"
UNKNOWN = -1


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
    """

    folder: str
    paths: list
    ids: np.ndarray = None
    known_ids: dict = dataclasses.field(default_factory=dict)

    def id_of(self, path):
        """The identity of image `path` when the CSV lists it and it is known, else None."""
        value = self.known_ids.get(os.path.realpath(path), UNKNOWN)
        return None if value == UNKNOWN else int(value)


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
    return Gallery(os.path.dirname(os.path.abspath(source)), list(paths), ids, known)


def cache_path(gallery, predictor):
    """Path of the embedding cache of `gallery` for `predictor` (module docstring)."""
    return os.path.join(gallery.folder, f"{CACHE_PREFIX}{predictor.fingerprint}.npz")


KEY_FIELDS = ("sizes", "mtimes", "ctimes", "inodes")  # cache arrays of the per-image key


def _file_key(path):
    """`(size, mtime_ns, ctime_ns, inode)` of a gallery image: any edit changes it."""
    try:
        return file_identity(path)
    except OSError as e:
        why = e.strerror or e
        message = f"{path}: gallery image cannot be read ({why})"
        raise ImageFileError(path, f"cannot read the file ({why})", message) from None


def _still_valid(folder, rel, key):
    """Whether the file of a cached row (of another gallery) is unchanged."""
    try:
        return file_identity(os.path.join(folder, rel)) == key
    except OSError:
        return False


def _read_cache(path, fingerprint):
    """`{relative path: (key, embedding)}` of a cache file; empty when there is none."""
    if not os.path.exists(path):
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return {}
            keys = zip(*(z[name].tolist() for name in KEY_FIELDS))
            return {p: (tuple(k), e) for p, k, e in zip(z["paths"].tolist(), keys, z["embeddings"])}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        print(f"warning: {path}: unreadable embedding cache, rebuilding it ({e})", file=sys.stderr)
        return {}


def _write_cache(path, fingerprint, rows):
    """Writes `{relative path: (key, embedding)}` atomically; a failure only warns."""
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
                embeddings=np.array([rows[p][1] for p in paths], dtype=np.float32),
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
    """Re-id embeddings of a gallery.

    Attributes:
        embeddings: float32 `[n, D]`, one row per readable image, in `Gallery.paths` order.
        embedded: int. How many images went through the model for this call (the rest came
            from the cache).
        cache_file: str or None. The cache file read and written (None without cache).
        positions: int64 `[n]`. The index in `Gallery.paths` of each row: every index, unless
            unreadable images were left out (`on_bad_image`).
    """

    embeddings: np.ndarray
    embedded: int
    cache_file: str = None
    positions: np.ndarray = None


def _require_embedding(predictor):
    if not predictor.has_embedding:
        raise InputError(f"{predictor.path}: the model has no re-id embedding (it was trained without the id task)")


def embed(predictor, paths, batch_size=64, on_bad_image=None):
    """Re-id embeddings `[n, D]` float32 of image files, read `batch_size` at a time.

    `on_bad_image` as in `read_images`: called with each unreadable file (its index in
    `paths`), which then has no row; None raises the `ImageFileError` of the first.
    """
    _require_embedding(predictor)
    parts = []
    for start in range(0, len(paths), batch_size):
        bad = []
        images = read_images(
            paths[start : start + batch_size],
            predictor.image_size,
            on_bad_image=None if on_bad_image is None else bad.append,
        )
        for item in bad:
            on_bad_image(item._replace(index=start + item.index))
        if len(images):
            parts.append(predictor.predict(images, batch_size=batch_size)["embedding"])
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _embed_positions(predictor, gallery, positions, batch_size, on_bad_image):
    """`{position: embedding}` of the gallery images at `positions` that can be read."""
    failed = set()

    def left_out(item):
        failed.add(positions[item.index])
        on_bad_image(item._replace(index=positions[item.index]))

    rows = embed(
        predictor,
        [gallery.paths[i] for i in positions],
        batch_size,
        on_bad_image=None if on_bad_image is None else left_out,
    )
    return dict(zip([i for i in positions if i not in failed], rows))


def gallery_embeddings(predictor, gallery, *, batch_size=64, use_cache=True, on_bad_image=None):
    """Embeddings of every gallery image, from the cache where the file is unchanged.

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
    rels = [os.path.relpath(p, gallery.folder).replace(os.sep, "/") for p in gallery.paths]
    keys = {}
    for i, path in enumerate(gallery.paths):
        try:
            keys[i] = _file_key(path)
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
        fresh = _embed_positions(predictor, gallery, list(keys), batch_size, on_bad_image)
        return GalleryEmbeddings(_stacked(fresh.values()), len(fresh), None, np.array(list(fresh), np.int64))
    path = cache_path(gallery, predictor)
    cached = _read_cache(path, predictor.fingerprint)
    stale = [i for i, key in keys.items() if cached.get(rels[i], (None,))[0] != key]
    fresh = _embed_positions(predictor, gallery, stale, batch_size, on_bad_image)
    kept = [i for i in keys if i in fresh or i not in stale]
    rows = {rels[i]: (keys[i], fresh[i] if i in fresh else cached[rels[i]][1]) for i in kept}
    embeddings = _stacked(rows[rels[i]][1] for i in kept)
    # Rows of other galleries in this folder stay while their files are unchanged.
    others = {rel: row for rel, row in cached.items() if rel not in rows}
    rows.update({rel: row for rel, row in others.items() if _still_valid(gallery.folder, rel, row[0])})
    if fresh or set(rows) != set(cached):
        _write_cache(path, predictor.fingerprint, rows)
    return GalleryEmbeddings(embeddings, len(fresh), path, np.array(kept, np.int64))


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
        if self.query_id is None or self.ids is None:
            return [None] * len(self.paths)
        return [None if i is None else i == self.query_id for i in self.ids]

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
    query_embedding = embed(predictor, [query])  # first: a bad query fails before the gallery's work
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
