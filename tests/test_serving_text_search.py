"""Text search (`serving/text_search.py`) and the toy CLIP it is shown with (`training/toy_clip.py`)."""

import numpy as np
import pytest

from portrait_keras.data.captions import split_captions
from portrait_keras.models import clip_model
from portrait_keras.serving.text_search import embed_images, rank_by_text
from portrait_keras.training.toy_clip import caption_ids, load_images, train_toy_clip

TOKENS = np.array([[62, 5, 63] + [0] * 9])  # one text for the tiny config's vocabulary


def _tokenizer(texts):
    return np.repeat(TOKENS, len(texts), axis=0)


def test_images_rank_by_their_cosine_with_the_text():
    model = clip_model("tiny")
    text = np.asarray(model.encode_text(TOKENS, normalize=True))[0]
    other = np.random.default_rng(0).normal(size=16)
    other -= (other @ text) * text  # orthogonal: cosine 0
    # Rows: opposite, orthogonal, half-way (cos 1/√2), the text itself at another length.
    images = np.stack([-text, other, text + other / np.linalg.norm(other), 3 * text])
    indices, scores = rank_by_text(model, _tokenizer, ["x", "y"], images)
    assert indices.tolist() == [[3, 2, 1, 0]] * 2
    np.testing.assert_allclose(scores[0], [1, 2**-0.5, 0, -1], atol=1e-5)
    top, top_scores = rank_by_text(model, _tokenizer, "x", images, top_k=2)
    assert top.tolist() == [[3, 2]] and top_scores.shape == (1, 2)


def test_search_arguments_are_checked():
    model = clip_model("tiny")
    with pytest.raises(ValueError, match="Received: shape \\(3, 8\\)"):
        rank_by_text(model, _tokenizer, "x", np.zeros((3, 8)))
    with pytest.raises(ValueError, match="Received: top_k=0"):
        rank_by_text(model, _tokenizer, "x", np.ones((3, 16)), top_k=0)
    with pytest.raises(ValueError, match="texts=\\[\\]"):
        rank_by_text(model, _tokenizer, [], np.ones((3, 16)))
    with pytest.raises(ValueError, match="Received: shape \\(2, 64, 32, 3\\)"):
        embed_images(model, np.zeros((2, 64, 32, 3), "uint8"))


def test_embed_images_normalises_with_clips_statistics():
    model = clip_model("tiny")
    pixels = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3)).astype("uint8")
    from portrait_keras.models import CLIP_MEAN, CLIP_STD

    expected = np.asarray(model.encode_image((pixels / 255.0 - CLIP_MEAN) / CLIP_STD, normalize=True))
    np.testing.assert_allclose(embed_images(model, pixels, batch_size=2), expected, atol=1e-5)


def _held_out_frames(annotations):
    """The last frame of every train run of 2+ near-duplicate frames (a run shares its `group`)."""
    groups = annotations.groups("train")
    runs = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    held = np.array([run[-1] for run in runs if len(run) > 1])
    return held, np.setdiff1d(np.arange(len(groups)), held)


def _same_caption_ranks(model, tokenizer, images, captions):
    """For each image's caption: the rank of the first image with that caption (0 = top)."""
    ids = caption_ids(captions)
    order, _ = rank_by_text(model, tokenizer, captions, np.asarray(model.encode_image(images)))
    return np.array([np.flatnonzero(ids[row] == ids[i])[0] for i, row in enumerate(order)])


def test_toy_clip_finds_held_out_frames_by_their_captions(tiny_annotations):
    # Trained on all train frames but one per run, the toy must find that unseen frame from its
    # caption among the other held-out frames: the towers have to map a caption and new pixels
    # (jittered pose, crop, lighting) to one place. New identities are beyond ~130 images.
    held, trained = _held_out_frames(tiny_annotations)
    captions = [split_captions(tiny_annotations, "train")[i] for i in held]
    images = load_images(tiny_annotations, "train", rows=held)
    assert len(held) > 40 and len(set(captions)) > 0.9 * len(held)

    untrained = _same_caption_ranks(*train_toy_clip(tiny_annotations, epochs=0, rows=trained), images, captions)
    ranks = _same_caption_ranks(*train_toy_clip(tiny_annotations, epochs=30, rows=trained), images, captions)
    mrr, mrr_untrained = np.mean(1 / (ranks + 1)), np.mean(1 / (untrained + 1))
    # Seed 0 gives about 0.42 against 0.08 (chance: about 0.08 for 59 frames).
    assert mrr > 0.25 and mrr > 3 * mrr_untrained, (mrr, mrr_untrained)
    assert np.mean(ranks < 5) > 2 * np.mean(untrained < 5)
