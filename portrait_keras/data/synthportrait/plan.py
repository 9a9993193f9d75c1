"""The SynthPortrait plan: identities, runs, splits and every label, decided before any pixel.

`plan_runs(identities, images_per_identity, seed)` returns the runs of a dataset in file
order; each `Run` carries its CSV rows, so `annotations.csv` needs no drawing at all
(docs/synthportrait.md, "Structure copied from Portrait250K").
"""

import bisect
import dataclasses
import itertools

import numpy as np

from portrait_keras import schema as schema_lib

# Shares from the paper's Portrait250K (§4.2): >60% of images have no id.
EXTRA_SHARE = 0.6
MISSING_LABEL_RATE = 0.1
MULTI_EXPRESSION_RATE = 0.15
TEST_ID_SHARE = 0.45
QUERY_RUN_SHARE = 0.3
NEAR_DUPLICATE_QUERY_RATE = 0.5
EXTRA_TRAIN_SHARE = 0.6
RUN_LENGTHS = (1, 2, 3, 4)
RUN_LENGTH_PRIOR = (0.3, 0.3, 0.25, 0.15)
MIN_IMAGES_PER_IDENTITY = 4
# Image counts per identity follow rank ** -TAIL_EXPONENT (long tail, paper Table 3).
TAIL_EXPONENT = 0.9

# Class priors, deliberately unbalanced (paper Figure 3); keys are the default class lists.
PRIORS = {
    "gender": {"female": 0.42, "male": 0.58},
    "age": {"child": 0.07, "teenager": 0.11, "young_adult": 0.42, "middle_aged": 0.28, "elderly": 0.12},
    "physique": {"thin": 0.22, "medium": 0.58, "heavy": 0.20},
    "body": {"standing": 0.46, "walking": 0.18, "sitting": 0.24, "squatting": 0.05, "lying": 0.07},
    "arm": {
        "arms_down": 0.52,
        "one_arm_raised": 0.12,
        "both_arms_raised": 0.06,
        "arms_crossed": 0.17,
        "hands_on_hips": 0.13,
    },
    "expression": {
        "angry": 0.07,
        "disgust": 0.05,
        "fear": 0.05,
        "happy": 0.22,
        "sad": 0.09,
        "surprise": 0.08,
        "neutral": 0.44,
    },
}
# Height depends on age: children are mostly labelled short.
HEIGHT_PRIORS = {
    "child": {"short": 0.75, "medium": 0.2, "tall": 0.05},
    "teenager": {"short": 0.4, "medium": 0.5, "tall": 0.1},
    "adult": {"short": 0.22, "medium": 0.56, "tall": 0.22},
}
# Two-expression images (paper §4.2, "multi-labeled expression").
EXPRESSION_PAIRS = {
    ("happy", "surprise"): 0.3,
    ("fear", "sad"): 0.15,
    ("angry", "disgust"): 0.15,
    ("fear", "surprise"): 0.15,
    ("angry", "sad"): 0.1,
    ("angry", "surprise"): 0.1,
    ("disgust", "sad"): 0.05,
}
ATTRIBUTE_TASKS = ("gender", "age", "physique", "height")
SCENE_TASKS = ("body", "arm", "expression")
COLUMNS = ("path", "split", "id") + ATTRIBUTE_TASKS + SCENE_TASKS + ("source", "frame", "group")


def _check_priors():
    """The priors above must name exactly the default schema's classes."""
    schema = schema_lib.default_schema()
    for name, prior in list(PRIORS.items()) + [("height", p) for p in HEIGHT_PRIORS.values()]:
        classes = schema.task(name).classes
        if tuple(prior) != classes:
            raise ValueError(f"SynthPortrait priors for {name!r} must follow {classes}. Received: {tuple(prior)}")


_check_priors()


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of 1-4 near-duplicate frames: one person, posture, expression and scene.

    Args:
        index: int. Position in the dataset; names the image files and is the CSV `group`.
        person: int. Identity from 1, or `-1` for an extra (appearance drawn per run).
        attrs: dict. `{task: class}` for `ATTRIBUTE_TASKS`, fixed per identity.
        body: str. Body posture class.
        arm: str. Arm posture class.
        expression: tuple of 1 or 2 str. Eyebrows and eyes show the first, the mouth the last.
        rows: tuple of dict. One CSV row (`COLUMNS` -> str) per frame; labels may be `""`.
    """

    index: int
    person: int
    attrs: dict
    body: str
    arm: str
    expression: tuple
    rows: tuple


def choice(rng, prior):
    """One name drawn from a `{name: probability}` prior."""
    # bisect on the cumulative weights: Generator.choice(p=...) costs 20x more per call.
    cumulative = list(itertools.accumulate(prior.values()))
    names = list(prior)
    return names[min(bisect.bisect_right(cumulative, rng.random() * cumulative[-1]), len(names) - 1)]


def _person_attributes(rng):
    """`{task: class}` for gender, age, physique and height of one person."""
    attrs = {name: choice(rng, PRIORS[name]) for name in ("gender", "age", "physique")}
    attrs["height"] = choice(rng, HEIGHT_PRIORS.get(attrs["age"], HEIGHT_PRIORS["adult"]))
    return attrs


def _expression(rng):
    """A tuple of 1 or 2 expression names (two: `MULTI_EXPRESSION_RATE` of the runs)."""
    if rng.random() < MULTI_EXPRESSION_RATE:
        pairs = list(EXPRESSION_PAIRS)
        p = np.asarray(list(EXPRESSION_PAIRS.values()))
        return pairs[rng.choice(len(pairs), p=p / p.sum())]
    return (choice(rng, PRIORS["expression"]),)


def _run_lengths(rng, n):
    """Split `n` images into runs of 1-4 frames; at least 2 runs when n >= 2."""
    # Enough draws to cover n (mean length > 1), cut where the total reaches n.
    draws = rng.choice(RUN_LENGTHS, size=n, p=RUN_LENGTH_PRIOR)
    total = np.cumsum(draws)
    end = int(np.searchsorted(total, n)) + 1
    lengths = draws[:end].tolist()
    lengths[-1] -= int(total[end - 1]) - n
    if len(lengths) == 1 and n >= 2:
        lengths = [n // 2, n - n // 2]
    return lengths


def _identity_counts(rng, identities, images_per_identity):
    """Long-tailed number of images per identity, shape `(identities,)`, each >= the floor."""
    floor = min(MIN_IMAGES_PER_IDENTITY, images_per_identity)
    rank = rng.permutation(identities) + 1
    weights = rank.astype(np.float64) ** -TAIL_EXPONENT
    spare = max(0, identities * (images_per_identity - floor))
    return floor + rng.multinomial(spare, weights / weights.sum())


def _run_splits(rng, lengths, test):
    """The split of every frame of one identity's runs (paper §4.1), one list per run."""
    if not test:
        return [["train"] * n for n in lengths]
    splits = [["gallery"] * n for n in lengths]
    if len(lengths) >= 2:
        num_query = min(len(lengths) - 1, max(1, round(QUERY_RUN_SHARE * len(lengths))))
        for r in rng.permutation(len(lengths))[:num_query]:
            splits[r] = ["query"] * lengths[r]
            if lengths[r] >= 2 and rng.random() < NEAR_DUPLICATE_QUERY_RATE:
                splits[r][int(rng.integers(lengths[r]))] = "gallery"
    return splits


def plan_runs(identities, images_per_identity, seed):
    """Every run of a dataset and its label rows; everything but pixels is decided here.

    Args:
        identities: int. Number of labelled identities (>= 2).
        images_per_identity: int. Mean id-labelled images per identity (>= 2).
        seed: int. Same seed, same plan.

    Returns:
        list of `Run`, in file order (`run.index == position`).
    """
    rng = np.random.default_rng([seed, 0])
    num_sources = max(3, identities // 12)
    ids = np.arange(1, identities + 1)
    counts = _identity_counts(rng, identities, images_per_identity)
    num_test = min(identities - 1, max(1, round(TEST_ID_SHARE * identities)))
    test_ids = set(rng.permutation(ids)[:num_test].tolist())

    # (person, attrs, source, splits) per run, shuffled into file order below.
    drafts = []
    for person, count in zip(ids.tolist(), counts.tolist()):
        attrs = _person_attributes(rng)
        source = int(rng.integers(num_sources))
        lengths = _run_lengths(rng, count)
        drafts += [(person, attrs, source, splits) for splits in _run_splits(rng, lengths, person in test_ids)]

    labelled = int(counts.sum())
    num_extras = round(labelled * EXTRA_SHARE / (1 - EXTRA_SHARE))
    for n in _run_lengths(rng, num_extras) if num_extras else []:
        split = "train" if rng.random() < EXTRA_TRAIN_SHARE else "gallery"
        attrs = _person_attributes(rng)
        drafts.append((-1, attrs, int(rng.integers(num_sources)), [split] * n))

    _ensure_near_duplicate_query([splits for _, _, _, splits in drafts])
    runs = []
    for index, i in enumerate(rng.permutation(len(drafts)).tolist()):
        person, attrs, source, splits = drafts[i]
        expression = _expression(rng)
        body, arm = choice(rng, PRIORS["body"]), choice(rng, PRIORS["arm"])
        ordered = sorted(expression, key=schema_lib.BASIC_EXPRESSIONS.index)
        labels = dict(attrs, body=body, arm=arm, expression=";".join(ordered))
        rows = _rows(rng, index, person, source, splits, labels)
        runs.append(Run(index, person, attrs, body, arm, expression, rows))
    return runs


def _ensure_near_duplicate_query(run_splits):
    """Make sure some query run has a near-duplicate in the gallery (tiny datasets)."""
    query_runs = [splits for splits in run_splits if "query" in splits]
    if any("gallery" in splits for splits in query_runs):
        return
    for splits in query_runs:
        if len(splits) >= 2:
            splits[-1] = "gallery"
            return


def _rows(rng, index, person, source, splits, labels):
    """The CSV rows of one run: consecutive frames of one shot, some labels missing."""
    start = int(rng.integers(0, 200_000))
    step = int(rng.integers(4, 13))
    rows = []
    for k, split in enumerate(splits):
        row = {"path": f"images/{index // 500:03d}/{index:06d}_{k}.jpg", "split": split, "id": str(person)}
        missing = rng.random(len(labels)) < MISSING_LABEL_RATE
        row.update({name: "" if gone else value for (name, value), gone in zip(labels.items(), missing)})
        row.update(source=f"synth_movie_{source:02d}", frame=str(start + k * step), group=str(index))
        rows.append(row)
    return tuple(rows)
