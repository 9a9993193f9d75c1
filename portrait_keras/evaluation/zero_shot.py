"""Zero-shot attributes with CLIP (paper §6.3; issue #18 item 5): the "zero-shot" row.

CLIP scores how well a text describes an image. Each classification task of the schema gets one
prompt per class from a template: the class name with underscores as spaces in the task's
template, e.g. "a photo of a person with arms crossed." for `arm`/`arms_crossed` ("a {}"
becomes "an {}" before a vowel: "a photo of an elderly person."). A template may also be a list
of templates, whose text embeddings are averaged per class (CLIP's prompt ensembling). The
defaults (`DEFAULT_TEMPLATES`) follow the paper's "A photo of a man with a black backpack.";
a task without one takes `DEFAULT_TEMPLATE`.

Per task, the logits of an image are CLIP's: `exp(logit_scale) · cos(image, class text)`. They
go to the evaluator (`evaluator.evaluate_outputs`) as a trained model's logits would, so the
row is scored by the same code and metrics (Macro F1, PIQ, the aspects):

- single-label: the evaluator takes the argmax, the class CLIP finds most alike;
- multi-label (expression): CLIP's similarities are not per-class probabilities (every cosine
  times 100 is "positive"), so the logits handed over are `log(p / (1 − p))` of CLIP's softmax
  over the task's classes: the evaluator's rule "every class with sigmoid > 0.5, else the most
  probable" then keeps the classes with softmax probability > 0.5 — at most one — and
  otherwise the most probable: top-1. A softmax over classes cannot say "two expressions", so
  zero-shot multi-label is top-1 here.

With both the query and the gallery split, the image embeddings are also the re-id embedding
(CLIP's features as they are), so the row has `reid_*` and PIQ like a trained model's; with one
split there is no re-id, hence no PIQ, and the row gives the `appearance`, `posture` and
`emotion` means of its F1 scores instead.
"""

import numpy as np

from portrait_keras import metrics
from portrait_keras.evaluation.evaluator import EVAL_SPLITS, evaluate_outputs
from portrait_keras.schema import IDENTITY, MULTI, Schema

DEFAULT_TEMPLATE = "a photo of a {} person."
DEFAULT_TEMPLATES = {
    "gender": "a photo of a {} person.",
    "age": "a photo of a {} person.",
    "physique": "a photo of a {} person.",
    "height": "a photo of a {} person.",
    "body": "a photo of a person {}.",
    "arm": "a photo of a person with {}.",
    "expression": "a photo of a person with a {} expression.",
}
VOWELS = "aeiou"


def prompts(task, templates=None):
    """The prompts of each class of `task`, in class order.

    Args:
        task: `schema.Task` with a class list.
        templates: dict task name → str or list of str, or None. Each template holds one `{}`
            for the class name; replaces `DEFAULT_TEMPLATES`' entry. Defaults to `None`.

    Returns:
        list (one per class) of lists of str (one per template).

    Example:
    >>> from portrait_keras.schema import default_schema
    >>> prompts(default_schema().task("age"))[4]
    ['a photo of an elderly person.']
    >>> prompts(default_schema().task("arm"), {"arm": ["a person with {}.", "{}"]})[3]
    ['a person with arms crossed.', 'arms crossed']
    """
    if task.kind == IDENTITY:
        raise ValueError(f"The identity task has no class names to prompt. Received: task={task.name!r}")
    chosen = {**DEFAULT_TEMPLATES, **(templates or {})}.get(task.name, DEFAULT_TEMPLATE)
    chosen = [chosen] if isinstance(chosen, str) else list(chosen)
    if not chosen or any(not isinstance(t, str) or t.count("{}") != 1 for t in chosen):
        raise ValueError(
            f"A template is a str with one '{{}}' for the class name, or a non-empty list of them. "
            f"Received: templates[{task.name!r}]={chosen!r}"
        )
    out = []
    for name in task.classes:
        phrase = name.replace("_", " ")
        article = phrase[:1].lower() in VOWELS
        out.append([(t.replace("a {}", "an {}") if article else t).format(phrase) for t in chosen])
    return out


def class_text_embeddings(clip_model, tokenizer, task, templates=None):
    """Unit text embeddings `[C, D]` of the classes of `task`: each the mean of its prompts'
    unit embeddings, made unit length again (prompt ensembling)."""
    texts = prompts(task, templates)
    per_class = len(texts[0])
    tokens = tokenizer([t for class_texts in texts for t in class_texts])
    embeddings = np.asarray(clip_model.encode_text(tokens, normalize=True), np.float32)
    embeddings = embeddings.reshape(len(texts), per_class, -1).mean(axis=1)
    return embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)


def image_embeddings(clip_model, annotations, split, batch_size=64):
    """Unit image embeddings of a split: `(embeddings [n, D], positions [n])`.

    Images are read by the input pipeline at the model's input size (`make_dataset`, no
    augmentation) and normalised with CLIP's statistics; `positions` are the split positions of
    the rows (all of them: an unreadable image raises `BadImageError`).
    """
    from portrait_keras.data import make_dataset
    from portrait_keras.data.pipeline import naming_bad_images
    from portrait_keras.models.preprocessing import PREPROCESSING, ImageNormalization

    normalize = ImageNormalization(**PREPROCESSING["clip"])
    dataset = make_dataset(
        annotations, split, batch_size=batch_size, training=False, image_size=tuple(clip_model.image_shape[:2])
    )
    parts = []
    with naming_bad_images(annotations, split):
        for images, _ in dataset:
            parts.append(np.asarray(clip_model.encode_image(normalize(images), normalize=True), np.float32))
    return np.concatenate(parts), np.arange(annotations.num_images(split))


def zero_shot_logits(clip_model, image_embeddings, class_embeddings, task):
    """Logits `[n, C]` of `task` for the evaluator (module docstring): `exp(logit_scale)` times the
    cosines; for a multi-label task `log(p / (1 − p))` of their softmax over the classes.

    Example:
    >>> from portrait_keras.models import clip_model
    >>> from portrait_keras.schema import default_schema
    >>> expression = default_schema().task("expression")
    >>> images = np.eye(7, dtype="float32")[[3, 5]]
    >>> logits = zero_shot_logits(clip_model("tiny"), images, np.eye(7, dtype="float32"), expression)
    >>> (logits > 0).astype(int).tolist()
    [[0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0]]
    """
    scale = float(np.exp(np.asarray(clip_model.logit_scale)))
    logits = scale * np.asarray(image_embeddings, np.float32) @ np.asarray(class_embeddings, np.float32).T
    if task.kind != MULTI:
        return logits
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    # log(p) − log(1 − p), with 1 − p summed over the other classes (exact when p is near 1).
    others = np.log(np.maximum(-np.expm1(log_p), np.finfo(np.float32).tiny))
    return (log_p - others).astype(np.float32)


def zero_shot_outputs(clip_model, tokenizer, annotations, split="gallery", templates=None, batch_size=64):
    """What `predict_split` returns for a trained model, from CLIP: `(outputs, positions)` with
    `outputs` a dict of each classification task's logits `[n, C]` (`zero_shot_logits`) and
    `"embedding"`, the unit image embeddings `[n, D]`."""
    embeddings, positions = image_embeddings(clip_model, annotations, split, batch_size)
    outputs = {"embedding": embeddings}
    for task in annotations.schema.classification_tasks:
        classes = class_text_embeddings(clip_model, tokenizer, task, templates)
        outputs[task.name] = zero_shot_logits(clip_model, embeddings, classes, task)
    return outputs, positions


def zero_shot_evaluate(clip_model, tokenizer, annotations, split="gallery", templates=None, *, batch_size=64):
    """Zero-shot CLIP on a dataset's attributes: the metrics dict of its "zero-shot" row.

    Args:
        clip_model: `models.clip.ClipModel`, e.g. `clip_model("ViT-B-16-quickgelu",
            input_shape=(224, 224, 3), weights=...)` with converted CLIP weights.
        tokenizer: `data.clip_tokenizer.ClipTokenizer` (or any callable texts → int ids
            `[N, context_length]` the text tower takes).
        annotations: `data.Annotations`.
        split: str or sequence of str. `"query"` and/or `"gallery"`; both give re-id and PIQ
            too (module docstring), and the images `evaluator.evaluate` scores.
            Defaults to `"gallery"`.
        templates: dict task name → str or list of str, or None. Prompt templates over
            `DEFAULT_TEMPLATES` (`prompts`). Defaults to `None`.
        batch_size: int. Images per forward pass. Defaults to `64`.

    Returns:
        dict of floats: `f1_<task>` for each classification task with known labels; with both
        splits `reid_mAP`, `reid_rank1`, `reid_rank5`, `reid_rank10`, `piq` and the aspects
        (`reid`, `appearance`, `posture`, `emotion`), else the aspects of the F1 scores.

    Example:
    >>> weights = "clip_vit_b_16.weights.h5"  # convert_clip's, from OpenAI's ViT-B/16
    >>> model = clip_model("ViT-B-16-quickgelu", input_shape=(224, 224, 3), weights=weights)  # doctest: +SKIP
    >>> tokenizer = ClipTokenizer("bpe_simple_vocab_16e6.txt.gz")  # doctest: +SKIP
    >>> zero_shot_evaluate(model, tokenizer, annotations)  # doctest: +SKIP
    {'f1_gender': ..., ..., 'appearance': ..., 'posture': ..., 'emotion': ...}
    """
    splits = (split,) if isinstance(split, str) else tuple(split)
    if not splits or any(s not in EVAL_SPLITS for s in splits) or len(set(splits)) != len(splits):
        raise ValueError(f"split must be 'query', 'gallery' or both. Received: split={split!r}")
    if templates is not None:
        unknown = sorted(set(templates) - {t.name for t in annotations.schema.classification_tasks})
        if unknown:
            raise ValueError(
                f"templates name tasks without classes in the schema. Allowed: "
                f"{', '.join(t.name for t in annotations.schema.classification_tasks)}. Received: {unknown}"
            )
    schema = annotations.schema
    outputs, labels, groups, cameras = {}, {}, {}, {}
    for s in splits:
        outputs[s], keep = zero_shot_outputs(clip_model, tokenizer, annotations, s, templates, batch_size)
        labels[s] = {k: v[keep] for k, v in annotations.labels(s).items()}
        groups[s] = annotations.groups(s)[keep]
        cameras[s] = annotations.cameras(s)[keep]
    tasks = list(schema.classification_tasks)
    reid = schema.identity_task is not None and set(splits) == set(EVAL_SPLITS)
    if reid:
        tasks.insert(0, schema.identity_task)
    result = evaluate_outputs(outputs, labels, schema, tasks, groups, cameras)
    if "piq" not in result:
        attributes = Schema(schema.classification_tasks)
        f1 = {k: v for k, v in result.items() if k.startswith("f1_")}
        try:
            aspects = metrics.piq(f1, attributes)
        except ValueError:
            aspects = {}  # a task without known labels has no F1, so its aspect has no mean
        result.update({k: float(v) for k, v in aspects.items() if k != "piq"})
    return result
