"""Text search over person images with CLIP (paper §6.3: "a man with a black backpack").

Embed the images once (`embed_images`), then rank them for any text (`rank_by_text`): the cosine
between CLIP's text embedding and each image embedding, highest first. Works with a converted
CLIP (`models.clip.clip_model(..., weights=...)` and `data.clip_tokenizer.ClipTokenizer` on
CLIP's vocabulary) or the toy CLIP of `training.toy_clip`. Captions written from labels
(`data.captions.caption`) make queries and training texts.

Over a gallery folder or CSV: `search_by_text(*load_clip(WEIGHTS, VOCAB), load_gallery(...), text)`,
with the gallery's CLIP image embeddings cached beside it as `serving.search` caches re-id ones
(`portrait-keras search --text TEXT --clip WEIGHTS --vocab VOCAB --gallery DIR_OR_CSV`).
"""

import hashlib
import json
import os
import warnings

import numpy as np

from portrait_keras.models.preprocessing import PREPROCESSING, ImageNormalization


def embed_images(clip_model, images, batch_size=64):
    """Unit image embeddings `[N, D]` of 0..255 RGB images `[N, H, W, 3]` of the model's input size.

    Normalised with CLIP's statistics in-graph (`ImageNormalization`, preset `"clip"`).

    Example:
    >>> from portrait_keras.models import clip_model
    >>> embed_images(clip_model("tiny"), np.zeros((3, 32, 32, 3), "uint8")).shape
    (3, 16)
    """
    images = np.asarray(images)
    expected = tuple(clip_model.image_shape)
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(f"images must be [N, {', '.join(map(str, expected))}]. Received: shape {images.shape}")
    normalize = ImageNormalization(**PREPROCESSING["clip"])
    parts = [
        np.asarray(clip_model.encode_image(normalize(images[i : i + batch_size].astype(np.float32)), normalize=True))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, clip_model.embed_dim), np.float32)


def rank_by_text(clip_model, tokenizer, texts, image_embeddings, top_k=None):
    """The images that fit each text best, best first.

    Args:
        clip_model: `ClipModel` whose image tower made `image_embeddings`.
        tokenizer: `ClipTokenizer` (any callable texts → int ids `[T, context_length]`).
        texts: str or sequence of str. Queries, e.g. "a photo of a man with a black backpack.".
        image_embeddings: float array `[N, D]` (`embed_images`, or `ClipModel.encode_image`;
            made unit length here).
        top_k: int or None. Images kept per text; `None` keeps all `N`. Defaults to `None`.

    Returns:
        `(indices, scores)`: int64 `[T, k]` rows of `image_embeddings`, and float32 `[T, k]`
        cosine similarities, highest first (ties by index).

    Example:
    >>> from portrait_keras.models import clip_model
    >>> model = clip_model("tiny")
    >>> text = model.encode_text(np.array([[62, 5, 63] + [0] * 9]), normalize=True)
    >>> images = np.concatenate([-np.asarray(text), np.ones((1, 16)), np.asarray(text)])
    >>> indices, scores = rank_by_text(model, lambda t: np.array([[62, 5, 63] + [0] * 9]), "x", images)
    >>> indices.tolist(), round(float(scores[0, 0]), 4)
    ([[2, 1, 0]], 1.0)
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("texts must hold at least one text. Received: texts=[]")
    images = np.asarray(image_embeddings, np.float32)
    if images.ndim != 2 or images.shape[-1] != clip_model.embed_dim:
        raise ValueError(
            f"image_embeddings must be [N, {clip_model.embed_dim}] (this model's embeddings). "
            f"Received: shape {images.shape}"
        )
    count = len(images) if top_k is None else top_k
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"top_k must be a positive int or None. Received: top_k={top_k!r}")
    text = np.asarray(clip_model.encode_text(tokenizer(texts), normalize=True), np.float32)
    images = images / np.maximum(np.linalg.norm(images, axis=-1, keepdims=True), 1e-12)
    scores = text @ images.T
    indices = np.argsort(-scores, axis=1, kind="stable")[:, :count]
    return indices.astype(np.int64), np.take_along_axis(scores, indices, axis=1)


# === Text search over a gallery ===


class ClipImagePredictor:
    """CLIP's image tower as a gallery model of `serving.search`: its image embeddings are cached
    beside the gallery like the re-id ones (`search.gallery_embeddings`).

    Args:
        clip_model: `ClipModel`.
        weights: str or None. The `.weights.h5` file it was loaded from: its size, times and
            inode (with the config and input size) make the cache's fingerprint. None: no cache.
        config: str. The `CLIP_CONFIGS` name, part of the fingerprint. Defaults to `""`.

    Attributes: `path`, `image_size`, `has_embedding` (True), `tasks` (none), `background`
        (`"keep"`: CLIP sees whole images), `fingerprint` as `serving.predictor.Predictor`.
    """

    def __init__(self, clip_model, weights=None, config=""):
        from portrait_keras.serving.predictor import file_identity

        self.clip_model = clip_model
        self.path = "CLIP" if weights is None else os.fspath(weights)
        self.image_size = tuple(int(s) for s in clip_model.image_shape[:2])
        self.has_embedding = True
        self.tasks = ()
        self.background = "keep"
        self.fingerprint = None
        if weights is not None:
            text = json.dumps(
                {
                    "clip": config,
                    "file": [os.path.abspath(self.path), *file_identity(self.path)],
                    "size": self.image_size,
                }
            )
            self.fingerprint = "clip-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def predict(self, images, batch_size=64):
        """`{"embedding": unit image embeddings [N, D]}` of uint8 images `[N, H, W, 3]`."""
        return {"embedding": embed_images(self.clip_model, np.asarray(images), batch_size)}


def load_clip(weights, vocabulary, config="ViT-B-16-quickgelu"):
    """A converted CLIP and its tokenizer, for `search_by_text`.

    Args:
        weights: str. A `.weights.h5` file of `models.convert_clip` (or `ClipModel.save_weights`).
        vocabulary: str. CLIP's `bpe_simple_vocab_16e6.txt.gz` (or a file in its format); its
            size sets the text tower's vocabulary.
        config: str. A `CLIP_CONFIGS` name: the weights' sizes and activation. Defaults to
            `"ViT-B-16-quickgelu"` (OpenAI's ViT-B/16, the paper's §6.3 model).

    Returns: `(ClipImagePredictor, ClipTokenizer)`; images are read at the config's square size.
    Raises: `InputError` naming the file for a missing or unreadable vocabulary or weights
        file, or weights of other sizes than `config` and the vocabulary say.
    """
    from portrait_keras.data.clip_tokenizer import ClipTokenizer
    from portrait_keras.errors import InputError
    from portrait_keras.models.clip import CLIP_CONFIGS, clip_model

    if config not in CLIP_CONFIGS:
        raise InputError(f"unknown CLIP config {config!r}. Allowed: {', '.join(CLIP_CONFIGS)}")
    weights, vocabulary = os.fspath(weights), os.fspath(vocabulary)
    for path, what in ((weights, "CLIP weights file"), (vocabulary, "vocabulary file")):
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such {what}")
    if not weights.endswith(".weights.h5"):
        raise InputError(f"{weights}: CLIP weights are a .weights.h5 file (portrait-keras convert-clip makes one)")
    try:
        tokenizer = ClipTokenizer(vocabulary, context_length=CLIP_CONFIGS[config]["context_length"])
    except ValueError as e:
        raise InputError(f"{vocabulary}: {e}") from None
    model = clip_model(config, vocab_size=tokenizer.vocabulary_size)
    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(weights)
        except (ValueError, OSError) as e:
            problem = str(e).splitlines()[0]
    # Keras warns (and keeps random weights) for layers the file has no group for: as wrong.
    skipped = [
        str(w.message) for w in caught if "Skipping" in str(w.message) or "could not be loaded" in str(w.message)
    ]
    if problem or skipped:
        raise InputError(
            f"{weights}: not CLIP {config} weights for a vocabulary of {tokenizer.vocabulary_size} tokens "
            f"({vocabulary}) ({(problem or skipped[0]).rstrip(':')})"
        )
    return ClipImagePredictor(model, weights, config), tokenizer


def search_by_text(clip, tokenizer, gallery, text, k=10, *, batch_size=64, use_cache=True, on_bad_image=None):
    """The `k` gallery images whose CLIP image embedding fits `text` best (cosine, highest first).

    The gallery's CLIP embeddings are cached beside it (`search.gallery_embeddings`), so a second
    text over the same gallery only runs the text tower.

    Args:
        clip: `ClipImagePredictor` (`load_clip`).
        tokenizer: `ClipTokenizer` of the CLIP's vocabulary.
        gallery: `search.Gallery` (`search.load_gallery`).
        text: str. E.g. `"an elderly man sitting with arms crossed"`.
        k: int. Number of hits. Defaults to `10`.
        batch_size, use_cache, on_bad_image: as `search.gallery_embeddings`.

    Returns: `search.ScoredResult` with `scores` the cosine similarities and `text`.
    Raises: `InputError` for an empty text or when no gallery image could be read.

    Example:
    >>> clip, tokenizer = load_clip("clip_vit_b_16.weights.h5", "bpe_simple_vocab_16e6.txt.gz")  # doctest: +SKIP
    >>> search_by_text(clip, tokenizer, load_gallery("photos/"), "an elderly man sitting").paths  # doctest: +SKIP
    """
    from portrait_keras.errors import InputError
    from portrait_keras.serving import search

    if k < 1:
        raise ValueError(f"k must be >= 1. Received: k={k}")
    if not str(text).strip():
        raise InputError("--text: the text is empty")
    out = search.gallery_embeddings(
        clip, gallery, batch_size=batch_size, use_cache=use_cache, on_bad_image=on_bad_image
    )
    if not len(out.positions):
        raise InputError(f"{gallery.folder}: none of the {len(gallery.paths)} gallery images could be read")
    indices, scores = rank_by_text(clip.clip_model, tokenizer, [text], out.embeddings, top_k=min(k, len(out.positions)))
    positions = out.positions[indices[0]]
    ids = None
    if gallery.ids is not None:
        ids = [None if gallery.ids[i] == search.UNKNOWN else int(gallery.ids[i]) for i in positions]
    return search.ScoredResult(
        paths=[gallery.paths[i] for i in positions],
        scores=scores[0],
        matches=np.zeros((len(positions), 0), np.float32),
        ids=ids,
        embedded=out.embedded,
        text=text,
    )
