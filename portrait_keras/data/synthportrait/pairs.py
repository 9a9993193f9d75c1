"""SynthPortrait pairs: two cartoon people in one image, labelled with the 8 relation traits of
paper 004 §5 by a fixed rule of what the picture shows, plus noise, so the relation model can be
trained and tested offline.

Each 256x384 (HxW) image shows persons A and B (drawn by `draw.py`, as in SynthPortrait), each
`standing` or `sitting` (on a seat), with an arm posture and one expression, `close` (their
centres 55-85 px apart: touching or overlapping) or `far` (170-250 px apart); A is on the left
or the right at random. The row gives `path`, `box_a`, `box_b` (`"x y w h"` pixels, from the
top of the head to the feet, half as wide as tall), the split and the 8 traits
(`data/pairs.py` reads it). The traits follow `trait_rule`:

| trait         | rule (before noise)                                              |
|---------------|------------------------------------------------------------------|
| dominant      | one person stands while the other sits                           |
| competitive   | someone is angry and nobody is happy                             |
| trusting      | close, and nobody is angry                                       |
| warm          | both happy, and close                                            |
| friendly      | someone is happy, and nobody is angry                            |
| attached      | close                                                            |
| demonstrative | both mouths open (happy or surprise; paper §3.2: "if two people   |
|               | open their mouths, the relation trait of demonstrative ...")     |
| assured       | nobody is sad, and nobody has arms crossed                       |

Then each label is flipped with probability `FLIP_RATE` (annotator disagreement; the paper's
inter-annotator agreement is 0.62) and left empty (unknown) with probability `MISSING_RATE`.
The causes (expressions, postures, arms, distance) are written as extra columns, which the
pair reader ignores and the tests read back. Output is deterministic per seed.
"""

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from portrait_keras.data.synthportrait.draw import (
    Props,
    _background,
    _Canvas,
    _draw_figure,
    _lighting_lut,
    appearance,
    skeleton,
)
from portrait_keras.data.synthportrait.plan import PRIORS, _person_attributes, choice
from portrait_keras.traits import TRAITS

# Bump whenever the bytes of a seed's pairs change: it names the cache folder.
VERSION = "v1"
HEIGHT, WIDTH = 256, 384
EXPRESSIONS = {"happy": 0.35, "neutral": 0.3, "angry": 0.15, "sad": 0.1, "surprise": 0.1}
BODIES = {"standing": 0.6, "sitting": 0.4}
CLOSE_RATE = 0.5
CLOSE_GAP = (55, 85)
FAR_GAP = (170, 250)
FLIP_RATE = 0.05
MISSING_RATE = 0.1
TEST_SHARE = 0.25
OPEN_MOUTH = ("happy", "surprise")
CAUSES = ("expression_a", "expression_b", "body_a", "body_b", "arm_a", "arm_b", "distance")
COLUMNS = ("path", "box_a", "box_b", "split", *TRAITS, *CAUSES)
DEFAULT_PAIRS = 2400
DEFAULT_SEED = 0
JPEG_QUALITY = 90


def trait_rule(expression_a, expression_b, body_a, body_b, arm_a, arm_b, distance):
    """The noiseless traits of a pair (module docstring's table): dict trait -> 0/1."""
    expressions = (expression_a, expression_b)
    close = distance == "close"
    happy = "happy" in expressions
    angry = "angry" in expressions
    rule = {
        "dominant": (body_a == "sitting") != (body_b == "sitting"),
        "competitive": angry and not happy,
        "trusting": close and not angry,
        "warm": expressions == ("happy", "happy") and close,
        "friendly": happy and not angry,
        "attached": close,
        "demonstrative": all(e in OPEN_MOUTH for e in expressions),
        "assured": "sad" not in expressions and "arms_crossed" not in (arm_a, arm_b),
    }
    return {t: int(rule[t]) for t in TRAITS}


def _person(rng, cx, floor):
    """Draws nothing: the appearance, skeleton, props, expression and box of one person at `cx`."""
    app = appearance(rng, _person_attributes(rng))
    body = choice(rng, BODIES)
    arm = choice(rng, PRIORS["arm"])
    expression = choice(rng, EXPRESSIONS)
    sk = skeleton(app, body, arm, rng)
    seat = tuple(int(c) for c in rng.integers(40, 200, 3)) if body == "sitting" else None
    props = Props(hat=app.hat is not None, bag=app.bag is not None, cane=False, seat=seat)
    top = floor + sk.head_cy - app.head_h * 0.6  # hair and hat above the head's ellipse
    height = floor + 2 - top
    width = height / 2
    x0, y0 = max(0.0, cx - width / 2), max(0.0, top)
    x1, y1 = min(float(WIDTH), cx + width / 2), min(float(HEIGHT), floor + 2)
    box = [int(round(x0)), int(round(y0)), max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))]
    return {"app": app, "sk": sk, "props": props, "expression": expression, "body": body, "arm": arm, "box": box}


def draw_pair(index, seed):
    """Pair `index` of a seed: `(image, row)` with the PIL image and its CSV row (`COLUMNS` -> str)."""
    rng = np.random.default_rng([seed, 7, index])
    close = rng.random() < CLOSE_RATE
    gap = rng.uniform(*(CLOSE_GAP if close else FAR_GAP))
    centre = rng.uniform(35 + gap / 2, WIDTH - 35 - gap / 2)
    a_left = rng.random() < 0.5
    xs = (centre - gap / 2, centre + gap / 2) if a_left else (centre + gap / 2, centre - gap / 2)
    floor = HEIGHT - rng.uniform(3, 14)
    people = [_person(rng, cx, floor) for cx in xs]
    image = _background(rng).resize((WIDTH, HEIGHT), Image.BILINEAR)
    for cx, person in zip(xs, people):
        canvas = _Canvas(image, (cx, floor), 0)
        _draw_figure(canvas, person["app"], person["sk"], (person["expression"],), person["props"])
    image = image.point(_lighting_lut(rng))
    a, b = people
    causes = {
        "expression_a": a["expression"],
        "expression_b": b["expression"],
        "body_a": a["body"],
        "body_b": b["body"],
        "arm_a": a["arm"],
        "arm_b": b["arm"],
        "distance": "close" if close else "far",
    }
    labels = trait_rule(**causes)
    row = {
        "path": f"images/pair_{index:06d}.jpg",
        "box_a": " ".join(map(str, a["box"])),
        "box_b": " ".join(map(str, b["box"])),
        "split": "test" if rng.random() < TEST_SHARE else "train",
    }
    for trait in TRAITS:
        value = labels[trait] ^ int(rng.random() < FLIP_RATE)
        row[trait] = "" if rng.random() < MISSING_RATE else str(value)
    return image, {**row, **causes}


def generate_pairs(out_dir, pairs=DEFAULT_PAIRS, seed=DEFAULT_SEED):
    """Writes `pairs` SynthPortrait pairs: JPEGs under `out_dir/images/` and `out_dir/pairs.csv`.

    Args:
        out_dir: path-like. Output folder (created).
        pairs: int. Number of pairs (>= 2). Defaults to `DEFAULT_PAIRS`.
        seed: int. Same seed, same bytes. Defaults to `0`.

    Returns: `Path` of `pairs.csv`.
    """
    if not isinstance(pairs, (int, np.integer)) or isinstance(pairs, bool) or pairs < 2:
        raise ValueError(f"pairs must be an integer >= 2. Received: pairs={pairs!r}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(int(pairs)):
        image, row = draw_pair(index, int(seed))
        image.save(out_dir / row["path"], "JPEG", quality=JPEG_QUALITY)
        rows.append(row)
    if {r["split"] for r in rows} != {"train", "test"}:  # a tiny draw may miss a split
        rows[0]["split"], rows[-1]["split"] = "train", "test"
    csv_path = out_dir / "pairs.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def default_pairs_dataset(cache_dir=None, pairs=DEFAULT_PAIRS):
    """The default SynthPortrait pairs (seed 0), generated once into the SynthPortrait cache folder.

    Written to a temporary folder and renamed into place when complete, like
    `dataset.default_dataset`. Returns the `Path` of its `pairs.csv`.
    """
    from portrait_keras.data.synthportrait.dataset import default_cache_dir, generate_once

    parent = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = parent / f"synthpairs-{VERSION}-seed{DEFAULT_SEED}-{pairs}pairs"
    return generate_once(final, "pairs.csv", lambda tmp: generate_pairs(tmp, pairs, DEFAULT_SEED))
