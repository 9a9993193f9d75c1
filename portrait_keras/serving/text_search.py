"""Text search over person images with CLIP (paper §6.3: "a man with a black backpack").

Embed the images once (`embed_images`), then rank them for any text (`rank_by_text`): the cosine
between CLIP's text embedding and each image embedding, highest first. Works with a converted
CLIP (`models.clip.clip_model(..., weights=...)` and `data.clip_tokenizer.ClipTokenizer` on
CLIP's vocabulary) or the toy CLIP of `training.toy_clip`. Captions written from labels
(`data.captions.caption`) make queries and training texts.
"""

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
