"""A toy CLIP trained on SynthPortrait images and their captions (issue #18 item 7, the toy).

Real CLIP weights cannot be downloaded here, so text search and zero-shot attributes are shown
working end to end on towers trained from scratch: `clip_model("tiny")` (8-pixel patches,
width 32, 2 blocks; a 24-wide text tower) over small images and the captions their labels say
(`data.captions`), with CLIP's symmetric contrastive loss and learnable logit scale
(`losses.ClipContrastiveLoss`; equal captions in a batch are positives of each other) through
plain `model.fit`. The text tower reads a vocabulary learned from the schema's caption words
(`toy_tokenizer`), so every word is one token. The image tower's weights fit the `vit_tiny`
backbone (`models.vit`).
"""

import os
import tempfile

import keras
import numpy as np

from portrait_keras.data.captions import caption, class_phrase
from portrait_keras.data.clip_tokenizer import ClipTokenizer, learn_merges, write_vocabulary
from portrait_keras.losses.contrastive import ClipContrastiveLoss
from portrait_keras.models.clip import clip_model
from portrait_keras.models.preprocessing import PREPROCESSING, ImageNormalization

TOY_IMAGE_SIZE = (64, 32)
TOY_CONTEXT_LENGTH = 32  # the longest caption of the default schema, two expressions said, is 25
CAPTION_WORDS = "a an person looking and with ,"


def toy_tokenizer(schema, context_length=TOY_CONTEXT_LENGTH):
    """A `ClipTokenizer` whose vocabulary (`learn_merges`) makes every caption word of `schema`
    one token: the class phrases (`data.captions.class_phrase`) and the words around them.

    Example:
    >>> from portrait_keras.schema import default_schema
    >>> tokenizer = toy_tokenizer(default_schema())
    >>> ids = tokenizer(["a thin tall young adult female, standing with arms crossed, looking happy"])[0]
    >>> tokenizer.decode(ids[: list(ids).index(tokenizer.end_of_text_id) + 1])
    '<|startoftext|>a thin tall young adult female , standing with arms crossed , looking happy <|endoftext|>'
    >>> int((ids > 0).sum()), tokenizer.vocabulary_size
    (16, 658)
    """
    texts = [CAPTION_WORDS] + [class_phrase(t, c) for t in schema.classification_tasks for c in t.classes]
    with tempfile.TemporaryDirectory() as folder:
        path = write_vocabulary(os.path.join(folder, "toy_vocab.txt.gz"), learn_merges(texts))
        return ClipTokenizer(path, context_length=context_length)


def caption_ids(captions):
    """Int32 `[N]`: equal captions get equal ids (their index in the sorted distinct captions)."""
    return np.unique(np.asarray(captions, dtype=object), return_inverse=True)[1].astype(np.int32).reshape(-1)


def load_images(annotations, split, image_size=TOY_IMAGE_SIZE, rows=None):
    """Images of a split (at positions `rows`, default all) as CLIP's towers take them: float32
    `[N, H, W, 3]`, CLIP-normalised."""
    from portrait_keras.data.images import read_images

    paths = annotations.paths(split)
    pixels = read_images(paths if rows is None else paths[rows], image_size).astype(np.float32)
    return keras.ops.convert_to_numpy(ImageNormalization(**PREPROCESSING["clip"])(pixels))


def train_toy_clip(
    annotations,
    epochs=30,
    seed=0,
    *,
    split="train",
    rows=None,
    image_size=TOY_IMAGE_SIZE,
    batch_size=32,
    learning_rate=2e-3,
    tokenizer=None,
    verbose=0,
):
    """Train tiny CLIP towers on a split's images and captions (module docstring).

    Args:
        annotations: `data.Annotations`, e.g. a small SynthPortrait.
        epochs: int ≥ 0. Passes over the split; `0` returns the towers as initialised (the
            untrained baseline of the same seed). Defaults to `30`.
        seed: int. Seed of the initial weights and the batch order. Defaults to `0`.
        split: str. The split trained on. Defaults to `"train"`.
        rows: sequence of int or None. Positions in the split of the images trained on, e.g. all
            but some held out; `None` is all of them. Defaults to `None`.
        image_size: (int, int). Image `(height, width)`, multiples of 8. Defaults to `(64, 32)`.
        batch_size: int. Image-caption pairs per contrastive batch. Defaults to `32`.
        learning_rate: float. Adam's learning rate. Defaults to `2e-3`.
        tokenizer: `ClipTokenizer` or None. Defaults to `None` (`toy_tokenizer(schema)`).
        verbose: int. `model.fit`'s. Defaults to `0`.

    Returns:
        `(ClipModel, tokenizer)`; the model takes CLIP-normalised images of `image_size`
        (`load_images`) and the tokenizer's ids.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0. Received: epochs={epochs!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 2:
        raise ValueError(
            f"batch_size must be an int >= 2 (a contrastive batch needs negatives). Received: {batch_size!r}"
        )
    keras.utils.set_random_seed(seed)
    tokenizer = tokenizer if tokenizer is not None else toy_tokenizer(annotations.schema)
    model = clip_model(
        "tiny",
        input_shape=(*image_size, 3),
        vocab_size=tokenizer.vocabulary_size,
        context_length=tokenizer.context_length,
    )
    if epochs == 0:
        return model, tokenizer
    rows = np.arange(annotations.num_images(split)) if rows is None else np.asarray(rows, np.int64)
    images = load_images(annotations, split, image_size, rows)
    labels = {k: v[rows] for k, v in annotations.labels(split).items()}
    captions = [caption({k: v[i] for k, v in labels.items()}, annotations.schema) for i in range(len(rows))]
    token_ids, ids = tokenizer(captions), caption_ids(captions)
    rng = np.random.default_rng(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss={"logits_per_image": ClipContrastiveLoss()})
    for epoch in range(epochs):
        # Half the images mirrored, anew each epoch: no label says left or right.
        flipped = np.where(rng.random(len(images))[:, None, None, None] < 0.5, images[:, :, ::-1], images)
        model.fit(
            {"images": flipped, "token_ids": token_ids},
            {"logits_per_image": ids},
            batch_size=batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=True,
            verbose=verbose,
        )
    return model, tokenizer
