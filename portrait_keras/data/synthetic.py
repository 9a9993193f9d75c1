"""SynthPortrait: a procedural Portrait250K-like dataset drawn with numpy and Pillow.

Every image is a 256x128 (HxW) RGB JPEG of one cartoon person, labelled with all eight
tasks of the default schema (paper §3), and every label has a visible cue:

- identity: fixed per person: skin and hair colour, hair style, clothing colours and
  pattern (plain, stripes, checks), skirt or trousers, hat, glasses, bag, body shape;
- gender: hair length, skirt, shoulder/hip width, beard;
- age: head-to-body ratio and figure size, grey or white hair, cane;
- physique: torso and limb width;
- height: figure scale and leg length;
- body posture: the leg layout (standing, walking, sitting on a seat, squatting, lying);
- arm posture: the arm layout;
- expression: eyebrows, eyes and mouth; an image with two expressions takes the
  eyebrows and eyes of one and the mouth of the other.

Each image also varies in background, lighting, position, blur and partial occlusion.
Images come in short runs of near-duplicate "frames" (same person, pose and scene,
tiny jitter) that share a `group`, like the consecutive film frames of Portrait250K
(paper §4.3). About 60% of the images are "extras" with unknown id (`-1`), as in the
paper (§4.2), and about 10% of the attribute labels are missing. Identities and classes
are long-tailed. Splits follow the paper (§4.1): train ids are disjoint from test ids,
query ids are gallery ids, extras go to train and gallery; the gallery holds other-run
positives for every query and, for some queries, a near-duplicate in the same group.

Output is deterministic per seed (byte-identical JPEGs and CSV, whatever `workers`).

Usage:
    python -m portrait_keras.data.synthetic OUT_DIR --identities 240 --seed 0
"""

import argparse
import bisect
import csv
import itertools
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from portrait_keras import schema as schema_lib

HEIGHT, WIDTH = 256, 128
VERSION = "v3"
# 240 identities (7,200 images): the smallest default on which the CPU recipe of
# `experiments/configs.py` learns every task, expression included (120 left it at the priors).
DEFAULT_IDENTITIES = 240
DEFAULT_IMAGES_PER_IDENTITY = 12
DEFAULT_SEED = 0
JPEG_QUALITY = 90
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

# Figure geometry per class, as fractions of the standing height S in pixels.
STANDING_HEIGHT = {"child": 150, "teenager": 188, "young_adult": 212, "middle_aged": 210, "elderly": 204}
# Cartoon proportions: heads big enough for the face to show an expression at 256x128.
HEAD_RATIO = {"child": 0.27, "teenager": 0.22, "young_adult": 0.2, "middle_aged": 0.2, "elderly": 0.2}
HEIGHT_SCALE = {"short": 0.88, "medium": 1.0, "tall": 1.1}
TORSO_RATIO = {"short": 0.33, "medium": 0.3, "tall": 0.27}
BODY_WIDTH = {"thin": 0.75, "medium": 1.0, "heavy": 1.4}
LIMB_WIDTH = {"thin": 0.8, "medium": 1.0, "heavy": 1.35}

SKIN = ((255, 224, 196), (241, 194, 160), (224, 172, 128), (198, 134, 90), (141, 85, 54), (94, 58, 38))
HAIR = ((25, 20, 18), (60, 40, 28), (110, 70, 40), (200, 165, 95), (150, 60, 30))
GREY_HAIR = ((150, 150, 150), (200, 200, 200), (235, 235, 230))
# Few clothing colours, so that different people often share one (re-id must combine cues).
CLOTHES = (
    (20, 20, 24),
    (235, 235, 235),
    (128, 128, 128),
    (30, 45, 100),
    (90, 140, 210),
    (170, 30, 35),
    (100, 20, 30),
    (40, 110, 55),
    (120, 120, 60),
    (230, 200, 40),
    (230, 120, 30),
    (230, 140, 170),
    (110, 60, 140),
    (110, 70, 40),
    (210, 190, 150),
)
BRIGHT = (5, 7, 9, 10, 11, 12)


def _check_priors():
    """The priors above must name exactly the default schema's classes."""
    schema = schema_lib.default_schema()
    for name, prior in list(PRIORS.items()) + [("height", p) for p in HEIGHT_PRIORS.values()]:
        classes = schema.task(name).classes
        if tuple(prior) != classes:
            raise ValueError(f"SynthPortrait priors for {name!r} must follow {classes}. Received: {tuple(prior)}")


_check_priors()


def _choice(rng, prior):
    """One class name drawn from a `{name: probability}` prior."""
    # bisect on the cumulative weights: Generator.choice(p=...) costs 20x more per call.
    cumulative = list(itertools.accumulate(prior.values()))
    names = list(prior)
    return names[min(bisect.bisect_right(cumulative, rng.random() * cumulative[-1]), len(names) - 1)]


def _height_prior(age):
    return HEIGHT_PRIORS.get(age, HEIGHT_PRIORS["adult"])


def _person_attributes(rng):
    """gender, age, physique, height of one person."""
    attrs = {name: _choice(rng, PRIORS[name]) for name in ("gender", "age", "physique")}
    attrs["height"] = _choice(rng, _height_prior(attrs["age"]))
    return attrs


def _scene_labels(rng):
    """body, arm and expression (a tuple of 1 or 2 names) of one run."""
    if rng.random() < MULTI_EXPRESSION_RATE:
        pairs = list(EXPRESSION_PAIRS)
        p = np.asarray(list(EXPRESSION_PAIRS.values()))
        expression = pairs[rng.choice(len(pairs), p=p / p.sum())]
    else:
        expression = (_choice(rng, PRIORS["expression"]),)
    return {"body": _choice(rng, PRIORS["body"]), "arm": _choice(rng, PRIORS["arm"]), "expression": expression}


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
    """Long-tailed number of images per identity, each >= MIN_IMAGES_PER_IDENTITY."""
    floor = min(MIN_IMAGES_PER_IDENTITY, images_per_identity)
    rank = rng.permutation(identities) + 1
    weights = rank.astype(np.float64) ** -TAIL_EXPONENT
    spare = max(0, identities * (images_per_identity - floor))
    return floor + rng.multinomial(spare, weights / weights.sum())


def _plan(identities, images_per_identity, seed):
    """Runs to render and their label rows; everything but pixels is decided here.

    Returns:
        list of run dicts: `index`, `person` (id, or -1 for an extra), `attrs`,
        `scene` (body/arm/expression), `source`, and `rows` (one CSV dict per frame).
    """
    rng = np.random.default_rng([seed, 0])
    num_sources = max(3, identities // 12)
    ids = np.arange(1, identities + 1)
    counts = _identity_counts(rng, identities, images_per_identity)
    num_test = min(identities - 1, max(1, round(TEST_ID_SHARE * identities)))
    test_ids = set(rng.permutation(ids)[:num_test].tolist())

    runs = []
    for person, count in zip(ids.tolist(), counts.tolist()):
        attrs = _person_attributes(rng)
        source = int(rng.integers(num_sources))
        lengths = _run_lengths(rng, count)
        splits = [["train"] * n for n in lengths]
        if person in test_ids:
            splits = [["gallery"] * n for n in lengths]
            if len(lengths) >= 2:
                num_query = min(len(lengths) - 1, max(1, round(QUERY_RUN_SHARE * len(lengths))))
                for r in rng.permutation(len(lengths))[:num_query]:
                    splits[r] = ["query"] * lengths[r]
                    if lengths[r] >= 2 and rng.random() < NEAR_DUPLICATE_QUERY_RATE:
                        splits[r][int(rng.integers(lengths[r]))] = "gallery"
        for run_splits in splits:
            runs.append(dict(person=person, attrs=attrs, source=source, splits=run_splits))

    labelled = int(counts.sum())
    num_extras = round(labelled * EXTRA_SHARE / (1 - EXTRA_SHARE))
    for n in _run_lengths(rng, num_extras) if num_extras else []:
        split = "train" if rng.random() < EXTRA_TRAIN_SHARE else "gallery"
        attrs = _person_attributes(rng)
        runs.append(dict(person=-1, attrs=attrs, source=int(rng.integers(num_sources)), splits=[split] * n))

    _ensure_near_duplicate_query(runs)
    order = rng.permutation(len(runs))
    runs = [runs[i] for i in order]
    for index, run in enumerate(runs):
        run["index"] = index
        run["scene"] = _scene_labels(rng)
        run["rows"] = _rows(rng, run, index)
    return runs


def _ensure_near_duplicate_query(runs):
    """Make sure some query has a near-duplicate in the gallery (tiny datasets)."""
    query_runs = [r for r in runs if "query" in r["splits"]]
    if any("gallery" in r["splits"] for r in query_runs):
        return
    for run in query_runs:
        if len(run["splits"]) >= 2:
            run["splits"][-1] = "gallery"
            return


def _rows(rng, run, index):
    """The CSV rows of one run: consecutive frames of one shot, some labels missing."""
    start = int(rng.integers(0, 200_000))
    step = int(rng.integers(4, 13))
    expression = ";".join(sorted(run["scene"]["expression"], key=schema_lib.BASIC_EXPRESSIONS.index))
    labels = dict(run["attrs"], body=run["scene"]["body"], arm=run["scene"]["arm"], expression=expression)
    rows = []
    for k, split in enumerate(run["splits"]):
        row = {
            "path": f"images/{index // 500:03d}/{index:06d}_{k}.jpg",
            "split": split,
            "id": str(run["person"]),
        }
        missing = rng.random(len(labels)) < MISSING_LABEL_RATE
        row.update({name: "" if gone else value for (name, value), gone in zip(labels.items(), missing)})
        row.update(source=f"synth_movie_{run['source']:02d}", frame=str(start + k * step), group=str(index))
        rows.append(row)
    return rows


# === Appearance ===


def _jitter(rng, color, amount):
    """`color` with each channel moved by up to +-`amount`."""
    offsets = rng.integers(-amount, amount + 1, 3).tolist()
    return tuple(min(255, max(0, int(c) + o)) for c, o in zip(color, offsets))


def _appearance(rng, attrs):
    """Colours, hair, clothes, accessories and proportions of one person."""
    female = attrs["gender"] == "female"
    age = attrs["age"]
    old = age in ("middle_aged", "elderly")
    app = {"skin": _jitter(rng, SKIN[rng.integers(len(SKIN))], 8)}
    if age == "elderly" and rng.random() < 0.9:
        app["hair_color"] = _jitter(rng, GREY_HAIR[rng.integers(len(GREY_HAIR))], 10)
    elif age == "middle_aged" and rng.random() < 0.4:
        app["hair_color"] = _jitter(rng, GREY_HAIR[0], 20)
    else:
        app["hair_color"] = _jitter(rng, HAIR[rng.integers(len(HAIR))], 10)
    if female:
        app["hair"] = _choice(rng, {"long": 0.8, "ponytail": 0.1, "short": 0.1})
    else:
        bald = 0.35 if old else 0.05
        app["hair"] = _choice(rng, {"short": 0.9 - bald, "bald": bald, "long": 0.05, "ponytail": 0.05})
    app["beard"] = (not female) and age not in ("child", "teenager") and rng.random() < 0.25
    palette = BRIGHT if age == "child" else range(len(CLOTHES))
    app["top"] = _jitter(rng, CLOTHES[rng.choice(palette)], 12)
    app["top2"] = _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 12)
    app["pattern"] = _choice(rng, {"plain": 0.55, "stripes": 0.25, "checks": 0.2})
    app["period"] = int(rng.integers(4, 9))
    app["long_sleeves"] = rng.random() < 0.6
    app["bottom"] = _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 12)
    app["skirt"] = female and rng.random() < 0.5
    app["shoes"] = _jitter(rng, CLOTHES[rng.choice([0, 2, 13, 1])], 10)
    app["hat"] = _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 10) if rng.random() < 0.15 else None
    app["glasses"] = rng.random() < (0.4 if age == "elderly" else 0.15)
    app["bag"] = _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 10) if rng.random() < 0.2 else None
    app["bag_side"] = 1 if rng.random() < 0.5 else -1
    app["cane"] = age == "elderly" and rng.random() < 0.3

    size = STANDING_HEIGHT[age] * HEIGHT_SCALE[attrs["height"]] * (1 + rng.uniform(-0.02, 0.02))
    width = BODY_WIDTH[attrs["physique"]]
    app["size"] = size
    app["head_h"] = size * HEAD_RATIO[age]
    app["torso_h"] = size * TORSO_RATIO[attrs["height"]]
    app["leg"] = size - app["head_h"] - app["torso_h"] - size * 0.02
    app["shoulder"] = size * 0.1 * width * (0.92 if female else 1.08)
    app["hip"] = size * 0.072 * width * (1.12 if female else 1.0)
    app["waist"] = size * 0.085 * width * (1.25 if attrs["physique"] == "heavy" else 0.9)
    app["arm_w"] = max(3.0, size * 0.042 * LIMB_WIDTH[attrs["physique"]])
    app["leg_w"] = max(4.0, size * 0.055 * LIMB_WIDTH[attrs["physique"]])
    return app


# === Drawing ===


class _Canvas:
    """Pillow drawing in body coordinates: origin at the feet, y up is negative.

    `turn` is 0 for an upright figure, +1 or -1 for a quarter turn (lying figures,
    head to the right or left).
    """

    def __init__(self, image, origin, turn):
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.ox, self.oy = origin
        self.turn = turn

    def xy(self, x, y):
        if self.turn == 0:
            return (self.ox + x, self.oy + y)
        return (self.ox - self.turn * y, self.oy + self.turn * x)

    def ellipse(self, cx, cy, rx, ry, fill, outline=None, width=1):
        x, y = self.xy(cx, cy)
        if self.turn:
            rx, ry = ry, rx
        self.draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=fill, outline=outline, width=width)

    def polygon(self, points, fill, outline=None):
        self.draw.polygon([self.xy(x, y) for x, y in points], fill=fill, outline=outline)

    def line(self, points, fill, width):
        width = max(1, int(round(width)))
        self.draw.line([self.xy(x, y) for x, y in points], fill=fill, width=width, joint="curve")

    def limb(self, points, fill, width, outline):
        """A thick polyline with round ends and a dark edge (visible over clothing)."""
        for color, w in ((outline, width + 2), (fill, width)):
            self.line(points, color, w)
            for x, y in (points[0], points[-1]):
                self.ellipse(x, y, w / 2, w / 2, color)

    def patterned_polygon(self, points, colors, pattern, period):
        """A polygon filled with stripes or checks across the body axis."""
        xy = np.asarray([self.xy(x, y) for x, y in points])
        x0, y0 = np.floor(xy.min(0)).astype(int)
        x1, y1 = np.ceil(xy.max(0)).astype(int) + 1
        mask = Image.new("L", (x1 - x0, y1 - y0))
        ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in xy], fill=255)
        rows, cols = np.mgrid[y0:y1, x0:x1]
        along, across = (rows, cols) if self.turn == 0 else (cols, rows)
        if pattern == "stripes":
            index = (along // period) % 2
        else:
            index = (along // period + across // period) % 2
        fill = np.asarray(colors, np.uint8)[index]
        self.image.paste(Image.fromarray(fill), (int(x0), int(y0)), mask)


def _darker(color, factor=0.55):
    return tuple(int(c * factor) for c in color)


def _skeleton(app, body, arm, rng):
    """Joint positions (body coordinates) for a body and arm posture."""
    leg, torso, head_h = app["leg"], app["torso_h"], app["head_h"]
    thigh = shin = leg / 2
    hx = app["hip"] * 0.55

    def wobble(scale=0.04):
        return rng.uniform(-scale, scale) * leg

    hip_y = {"standing": -leg, "walking": -leg * 0.97, "sitting": -shin, "squatting": -leg * 0.42, "lying": -leg}[
        body
    ]
    side = 1 if rng.random() < 0.5 else -1
    if body in ("standing", "lying"):
        knees = [(-hx, hip_y + thigh), (hx, hip_y + thigh)]
        feet = [(-hx * 0.95 + wobble(0.02), 0), (hx * 0.95 + wobble(0.02), 0)]
    elif body == "walking":
        stride = leg * rng.uniform(0.22, 0.32)
        knees = [(-stride * 0.45, hip_y + thigh * 0.98), (stride * 0.5, hip_y + thigh * 0.98)]
        feet = [(-stride, 0), (stride, 0)]
    elif body == "sitting":
        knees = [(side * thigh * 0.95, hip_y), (side * thigh * 0.95 + 0.3 * hx, hip_y + 2)]
        feet = [(side * thigh * 0.95, 0), (side * thigh * 0.95 + 0.3 * hx, 0)]
    else:
        knees = [(-(hx + thigh * 0.7), hip_y - thigh * 0.25), (hx + thigh * 0.7, hip_y - thigh * 0.25)]
        feet = [(-hx * 1.4, 0), (hx * 1.4, 0)]
    hips = [(-hx, hip_y), (hx, hip_y)]

    shoulder_y = hip_y - torso
    head_cy = shoulder_y - app["size"] * 0.02 - head_h / 2
    sx = app["shoulder"] - app["arm_w"] * 0.4
    ua, fa = app["size"] * 0.16, app["size"] * 0.16
    shoulders = [(-sx, shoulder_y + app["arm_w"] * 0.6), (sx, shoulder_y + app["arm_w"] * 0.6)]

    def down(s):
        elbow = (s * (sx + 0.1 * ua) + wobble(0.01), shoulder_y + ua)
        return [elbow, (s * (sx + 0.14 * ua), shoulder_y + ua + fa)]

    def raised(s):
        if rng.random() < 0.5:  # straight up
            elbow_x, elbow_y, hand_x = sx + 0.25 * ua, shoulder_y - 0.85 * ua, sx + 0.35 * ua
        else:  # waving: upper arm sideways, forearm up
            elbow_x, elbow_y, hand_x = sx + ua, shoulder_y - 0.1 * ua, sx + 1.05 * ua
        return [(s * elbow_x, elbow_y), (s * hand_x, elbow_y - fa)]

    if arm == "arms_down":
        arms = [down(-1), down(1)]
    elif arm == "one_arm_raised":
        arms = [raised(-1), down(1)] if side < 0 else [down(-1), raised(1)]
    elif arm == "both_arms_raised":
        arms = [raised(-1), raised(1)]
    elif arm == "arms_crossed":
        y = shoulder_y + 0.5 * ua
        arms = [
            [(-(sx + 0.05 * ua), shoulder_y + 0.8 * ua), (sx * 0.75, y)],
            [(sx + 0.05 * ua, shoulder_y + 0.8 * ua), (-sx * 0.75, y + 0.12 * ua)],
        ]
    else:
        hand_y = hip_y - 0.12 * torso
        arms = [
            [(-(sx + 0.6 * ua), shoulder_y + 0.55 * ua), (-(app["waist"] + 0.3 * app["arm_w"]), hand_y)],
            [(sx + 0.6 * ua, shoulder_y + 0.55 * ua), (app["waist"] + 0.3 * app["arm_w"], hand_y)],
        ]
    return {
        "hips": hips,
        "knees": knees,
        "feet": feet,
        "hip_y": hip_y,
        "shoulder_y": shoulder_y,
        "head_cy": head_cy,
        "shoulders": shoulders,
        "arms": arms,
        "side": side,
    }


def _draw_figure(canvas, app, sk, expression, accessories):
    """Draws one person; `sk` from `_skeleton`."""
    edge = (30, 25, 25)
    hip_y, shoulder_y = sk["hip_y"], sk["shoulder_y"]
    head_rx, head_ry = app["head_h"] * 0.4, app["head_h"] / 2
    if sk.get("seat"):
        seat_color, side = sk["seat"], sk["side"]
        seat_w = app["leg"] * 0.55
        x0, x1 = sorted((-side * app["hip"] * 1.3, side * seat_w))
        canvas.polygon([(x0, hip_y), (x1, hip_y), (x1, hip_y + 6), (x0, hip_y + 6)], seat_color)
        for x in (x0 + 2, x1 - 2):
            canvas.line([(x, hip_y), (x, 0)], _darker(seat_color), 3)
    if app["hair"] == "long":
        cy = sk["head_cy"]
        canvas.polygon(_trapezoid(cy, head_rx * 1.15, cy + head_ry * 1.7, head_rx * 1.05), app["hair_color"])
    # Legs, shoes, then skirt or trouser top.
    leg_color = app["skin"] if app["skirt"] else app["bottom"]
    for hip, knee, foot in zip(sk["hips"], sk["knees"], sk["feet"]):
        canvas.limb([hip, knee, foot], leg_color, app["leg_w"], edge)
        shoe = app["leg_w"]
        canvas.ellipse(foot[0], foot[1] - shoe * 0.3, shoe * 0.75, shoe * 0.45, app["shoes"])
    if app["skirt"]:
        flare = app["hip"] * 1.5
        length = app["leg"] * 0.38 if sk["knees"][0][1] > hip_y else app["leg"] * 0.2
        skirt = _trapezoid(hip_y - 4, app["hip"] * 1.05, hip_y + length, flare)
        canvas.polygon(skirt, app["bottom"], outline=edge)
    else:
        canvas.polygon(_trapezoid(hip_y - 4, app["hip"] * 1.05, hip_y + 6, app["hip"] * 1.05), app["bottom"])
    # Torso.
    waist_y = shoulder_y + 0.6 * app["torso_h"]
    torso = [
        (-app["shoulder"], shoulder_y),
        (app["shoulder"], shoulder_y),
        (app["waist"], waist_y),
        (app["hip"] * 1.05, hip_y),
        (-app["hip"] * 1.05, hip_y),
        (-app["waist"], waist_y),
    ]
    if app["pattern"] == "plain":
        canvas.polygon(torso, app["top"], outline=edge)
    else:
        canvas.patterned_polygon(torso, (app["top"], app["top2"]), app["pattern"], app["period"])
        canvas.polygon(torso, None, outline=edge)
    if accessories["bag"]:
        s = app["bag_side"]
        strap = [(-s * app["shoulder"] * 0.8, shoulder_y), (s * app["hip"] * 1.2, hip_y - 6)]
        canvas.line(strap, _darker(app["bag"]), 2)
        bag_w, bag_h = app["size"] * 0.07, app["size"] * 0.06
        bx = s * (app["hip"] * 1.2 + bag_w * 0.3)
        canvas.polygon(_trapezoid(hip_y - bag_h, bag_w, hip_y + bag_h, bag_w, cx=bx), app["bag"], outline=edge)
    # Neck, head, hair, face.
    canvas.line([(0, shoulder_y + 2), (0, sk["head_cy"] + head_ry * 0.8)], app["skin"], head_rx * 0.7)
    cy = sk["head_cy"]
    canvas.ellipse(0, cy, head_rx, head_ry, app["skin"], outline=_darker(app["skin"], 0.7))
    _draw_hair(canvas, app, cy, head_rx, head_ry)
    _draw_face(canvas, app, cy, head_rx, head_ry, expression)
    if accessories["hat"]:
        hat = app["hat"]
        canvas.polygon(_cap(0, cy, head_rx * 1.08, head_ry * 1.05, -0.6), hat, outline=edge)
        brim_y = cy - head_ry * 0.6
        canvas.line([(-head_rx * 1.4, brim_y), (head_rx * 1.4, brim_y)], _darker(hat, 0.8), 3)
    # Arms in front of the torso: sleeve, forearm, hand.
    sleeve = app["top"]
    forearm = app["top"] if app["long_sleeves"] else app["skin"]
    for shoulder, (elbow, hand) in zip(sk["shoulders"], sk["arms"]):
        canvas.limb([shoulder, elbow], sleeve, app["arm_w"], edge)
        canvas.limb([elbow, hand], forearm, app["arm_w"] * 0.9, edge)
        canvas.ellipse(hand[0], hand[1], app["arm_w"] * 0.65, app["arm_w"] * 0.65, app["skin"], outline=edge)
    if accessories["cane"]:
        hand = sk["arms"][1][1]
        canvas.line([hand, (hand[0] + 3, 0)], (90, 60, 30), 3)


def _trapezoid(top_y, top_half, bottom_y, bottom_half, cx=0.0):
    """Corners of a trapezoid (or rectangle) symmetric about x = `cx`."""
    top = [(cx - top_half, top_y), (cx + top_half, top_y)]
    return top + [(cx + bottom_half, bottom_y), (cx - bottom_half, bottom_y)]


_UPPER_HALF = [(math.cos(a), math.sin(a)) for a in np.radians(np.linspace(180, 360, 13))]


def _cap(cx, cy, rx, ry, cut):
    """The top of an ellipse down to height `cut` (-1..1): hair, hats."""
    return [(cx + rx * c, cy + ry * min(s, cut)) for c, s in _UPPER_HALF]


def _draw_hair(canvas, app, cy, rx, ry):
    color = app["hair_color"]
    if app["hair"] == "bald":
        for s in (-1, 1):
            canvas.ellipse(s * rx * 0.92, cy - ry * 0.05, rx * 0.18, ry * 0.3, color)
        return
    fringe = -0.62 if app["hair"] == "short" else -0.58  # above the highest eyebrow
    canvas.polygon(_cap(0, cy, rx * 1.06, ry * 1.06, fringe), color)
    for s in (-1, 1):  # sideburns / temples
        canvas.ellipse(s * rx * 0.95, cy - ry * 0.3, rx * 0.16, ry * 0.3, color)
    if app["hair"] == "ponytail":
        canvas.ellipse(rx * 1.15, cy - ry * 0.2, rx * 0.35, ry * 0.45, color)
    if app["beard"]:
        # Chin and cheeks, leaving the mouth (at 0.55) free.
        beard = [(-0.75, 0.35), (-0.45, 0.85), (0, 1.05), (0.45, 0.85), (0.75, 0.35), (0.45, 0.72), (-0.45, 0.72)]
        canvas.polygon([(rx * u, cy + ry * v) for u, v in beard], color)


# Face parts per expression, in head units (x across -1..1, y down -1..1).
# Brows: (inner y, outer y) per side, as y offsets; left/right only differ for disgust.
BROWS = {
    "neutral": ((-0.3, -0.3), (-0.3, -0.3)),
    "happy": ((-0.36, -0.32), (-0.36, -0.32)),
    "angry": ((-0.14, -0.38), (-0.14, -0.38)),
    "sad": ((-0.42, -0.22), (-0.42, -0.22)),
    "surprise": ((-0.5, -0.5), (-0.5, -0.5)),
    "fear": ((-0.5, -0.36), (-0.5, -0.36)),
    "disgust": ((-0.16, -0.2), (-0.32, -0.36)),
}
# Eyes: (half width, half height) of the white, in head units.
EYES = {
    "neutral": (0.24, 0.14),
    "happy": (0.24, 0.06),
    "angry": (0.24, 0.07),
    "sad": (0.22, 0.12),
    "surprise": (0.26, 0.22),
    "fear": (0.26, 0.22),
    "disgust": (0.24, 0.06),
}


def _draw_face(canvas, app, cy, rx, ry, expression):
    """Eyebrows and eyes of the first expression, mouth of the last (paper §3, 7 basic)."""
    upper, mouth = expression[0], expression[-1]
    dark = (25, 20, 20)
    eye_y = cy - 0.05 * ry
    ew, eh = EYES[upper]
    stroke = max(2.5, rx * 0.24)
    for s, (inner, outer) in zip((-1, 1), BROWS[upper]):
        canvas.ellipse(s * 0.38 * rx, eye_y, ew * rx, max(1.0, eh * ry), (250, 250, 250), outline=dark)
        pupil = max(1.2, min(ew * rx, eh * ry) * 0.55)
        canvas.ellipse(s * 0.38 * rx, eye_y + (0.04 * ry if upper == "sad" else 0), pupil, pupil, dark)
        brow = [(s * 0.12 * rx, cy + inner * ry), (s * 0.66 * rx, cy + outer * ry)]
        canvas.line(brow, dark, stroke)
    if app["glasses"]:
        for s in (-1, 1):
            canvas.ellipse(s * 0.38 * rx, eye_y, 0.3 * rx, 0.2 * ry, None, outline=(20, 20, 20))
        canvas.line([(-0.1 * rx, eye_y), (0.1 * rx, eye_y)], (20, 20, 20), 1)
    canvas.line([(0, cy + 0.1 * ry), (0.05 * rx, cy + 0.28 * ry)], _darker(app["skin"], 0.7), 1)
    _draw_mouth(canvas, mouth, cy + 0.55 * ry, rx, ry, stroke)


def _draw_mouth(canvas, mouth, my, rx, ry, stroke):
    lips = (120, 30, 35)
    inside = (60, 10, 15)
    w = 0.55 * rx
    xs = np.linspace(-1, 1, 9)
    if mouth in ("neutral", "happy", "sad"):
        bend = {"neutral": 0.0, "happy": 0.24, "sad": -0.22}[mouth] * ry
        points = [(x * w, my - bend * (x * x) + bend * 0.4) for x in xs]
        if mouth == "happy":  # open smile
            canvas.polygon(points + [(w * 0.9, my - bend * 0.6), (-w * 0.9, my - bend * 0.6)], inside)
        canvas.line(points, lips, stroke)
    elif mouth == "angry":  # bared teeth
        canvas.polygon(_trapezoid(my - 0.11 * ry, w, my + 0.13 * ry, w * 0.9), (240, 240, 235), outline=lips)
        canvas.line([(-w, my), (w, my)], (150, 140, 140), 1)
    elif mouth == "surprise":  # round open mouth
        canvas.ellipse(0, my + 0.05 * ry, 0.26 * rx, 0.24 * ry, inside, outline=lips)
    elif mouth == "fear":  # wide stretched mouth
        canvas.ellipse(0, my, w * 1.05, 0.16 * ry, inside, outline=lips)
    else:  # disgust: lopsided sneer
        sneer = [(-1, 0.08), (-0.2, 0.03), (0.3, -0.06), (1, -0.18)]
        canvas.line([(w * u, my + ry * v) for u, v in sneer], lips, stroke)


# === Scene ===


def _background(rng):
    """A random backdrop (gradient, texture, wall shapes, floor), 8 px larger for camera jitter."""
    h, w = HEIGHT + 8, WIDTH + 8
    ends = rng.integers(20, 236, (2, 1, 3)).astype(np.uint8)
    if rng.random() < 0.5:  # vertical gradient
        image = Image.fromarray(ends).resize((w, h), Image.BILINEAR)
    else:
        image = Image.fromarray(ends.transpose(1, 0, 2)).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.6:  # smooth blotchy texture
        gh, gw = int(rng.integers(3, 16)), int(rng.integers(2, 8))
        noise = Image.fromarray(rng.integers(0, 256, (gh, gw, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
        image = Image.blend(image, noise, 0.35)
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.3:  # brick / tile lines
        step, color = int(rng.integers(8, 24)), tuple(int(c) for c in rng.integers(0, 256, 3))
        for y in range(0, h, step):
            draw.line([(0, y), (w, y)], fill=color, width=1)
    for _ in range(int(rng.integers(1, 6))):  # doors, windows, furniture, props
        x0, y0 = int(rng.integers(-20, w)), int(rng.integers(-20, h))
        x1, y1 = x0 + int(rng.integers(10, 80)), y0 + int(rng.integers(10, 120))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.7:
            draw.rectangle([x0, y0, x1, y1], fill=color)
        else:
            draw.ellipse([x0, y0, x1, y1], fill=color)
    if rng.random() < 0.7:  # floor
        floor_y = int(rng.integers(int(h * 0.62), int(h * 0.92)))
        draw.rectangle([0, floor_y, w, h], fill=tuple(int(c) for c in rng.integers(20, 200, 3)))
    return image


def _lighting_lut(rng):
    """Brightness, contrast and colour cast as one per-channel lookup table."""
    contrast = rng.uniform(0.65, 1.2)
    brightness = rng.uniform(-45, 35)
    cast = rng.uniform(-18, 18, 3)
    v = np.arange(256)[None, :]
    table = (v - 128) * contrast + 128 + brightness + cast[:, None]
    return np.clip(np.round(table), 0, 255).astype(np.uint8).ravel().tolist()


def _scene(rng, app, run):
    """Everything shared by the frames of one run: backdrop, pose, placement, light."""
    body, arm = run["scene"]["body"], run["scene"]["arm"]
    sk = _skeleton(app, body, arm, rng)
    if body == "sitting" and rng.random() < 0.75:
        sk["seat"] = tuple(int(c) for c in rng.integers(40, 200, 3))
    accessories = {
        "hat": app["hat"] is not None and rng.random() < 0.85,
        "bag": app["bag"] is not None and rng.random() < 0.75,
        "cane": app["cane"] and arm == "arms_down" and body != "lying",
    }
    # Same clothes look a little different from shot to shot.
    shot_app = dict(app)
    for key in ("top", "top2", "bottom", "hair_color", "skin"):
        shot_app[key] = _jitter(rng, app[key], 6)
    if body == "lying":
        turn = 1 if rng.random() < 0.5 else -1
        # Lying figures are shrunk to fit across the 128 px width, head included.
        scale = min(1.0, 110 / app["size"])
        origin = (WIDTH / 2 - turn * app["size"] * scale / 2 + rng.uniform(-3, 3), HEIGHT * rng.uniform(0.55, 0.8))
    else:
        turn, scale = 0, 1.0
        origin = (WIDTH / 2 + rng.uniform(-9, 9), HEIGHT - rng.uniform(3, 14))
    occluder = None
    if body != "lying" and rng.random() < 0.2:  # a lying figure is small enough already
        ow, oh = WIDTH * rng.uniform(0.25, 0.6), HEIGHT * rng.uniform(0.12, 0.35)
        x0 = 0 if rng.random() < 0.5 else WIDTH - ow
        y0 = rng.uniform(HEIGHT * 0.45, HEIGHT - oh)
        occluder = ([x0, y0, x0 + ow, y0 + oh], tuple(int(c) for c in rng.integers(0, 256, 3)))
    return {
        "background": _background(rng),
        "skeleton": sk,
        "app": _scaled(shot_app, scale),
        "accessories": accessories,
        "turn": turn,
        "origin": origin,
        "occluder": occluder,
        "lut": _lighting_lut(rng),
        "blur": rng.uniform(0.5, 1.0) if rng.random() < 0.15 else 0.0,
        "expression": run["scene"]["expression"],
        "scale": scale,
    }


def _scaled(app, scale):
    if scale == 1.0:
        return app
    out = dict(app)
    for key in ("size", "head_h", "torso_h", "leg", "shoulder", "hip", "waist", "arm_w", "leg_w"):
        out[key] = app[key] * scale
    return out


def _scale_skeleton(sk, scale):
    def pts(points):
        return [(x * scale, y * scale) for x, y in points]

    out = dict(sk)
    for key in ("hips", "knees", "feet", "shoulders"):
        out[key] = pts(sk[key])
    out["arms"] = [pts(a) for a in sk["arms"]]
    for key in ("hip_y", "shoulder_y", "head_cy"):
        out[key] = sk[key] * scale
    return out


def _render_frame(scene, rng):
    """One frame of a run: the scene with a tiny camera and figure jitter."""
    dx, dy = rng.integers(0, 9, 2)
    image = scene["background"].crop((int(dx), int(dy), int(dx) + WIDTH, int(dy) + HEIGHT))
    ox, oy = scene["origin"]
    origin = (ox + rng.uniform(-1.5, 1.5), oy + rng.uniform(-1.5, 1.5))
    canvas = _Canvas(image, origin, scene["turn"])
    sk = _scale_skeleton(scene["skeleton"], scene["scale"]) if scene["scale"] != 1.0 else scene["skeleton"]
    _draw_figure(canvas, scene["app"], sk, scene["expression"], scene["accessories"])
    if scene["occluder"]:
        box, color = scene["occluder"]
        canvas.draw.rectangle(box, fill=color, outline=_darker(color))
    if scene["blur"]:
        image = image.filter(ImageFilter.BoxBlur(scene["blur"]))
    return image.point(scene["lut"])


def _render_run(task):
    """Worker: draws and saves the frames of one run. Returns the number of images."""
    out_dir, seed, run = task
    rng = np.random.default_rng([seed, 3, run["index"]])
    if run["person"] >= 0:
        app = _appearance(np.random.default_rng([seed, 1, run["person"]]), run["attrs"])
    else:
        app = _appearance(rng, run["attrs"])
    scene = _scene(rng, app, run)
    for row in run["rows"]:
        path = os.path.join(out_dir, row["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _render_frame(scene, rng).save(path, "JPEG", quality=JPEG_QUALITY)
    return len(run["rows"])


def _render_chunk(task):
    out_dir, seed, runs = task
    return sum(_render_run((out_dir, seed, run)) for run in runs)


def generate(
    out_dir,
    identities=DEFAULT_IDENTITIES,
    seed=DEFAULT_SEED,
    images_per_identity=DEFAULT_IMAGES_PER_IDENTITY,
    workers=None,
):
    """Writes a SynthPortrait dataset: JPEGs, `annotations.csv` and `schema.json`.

    Args:
        out_dir: path-like. Output folder (created); images go to `out_dir/images/`.
        identities: int. Number of labelled identities. Defaults to `240`.
        seed: int. Same seed, same bytes. Defaults to `0`.
        images_per_identity: int. Mean id-labelled images per identity (long-tailed,
            at least `min(4, images_per_identity)` each); about 1.5x as many unknown-id
            images are added.
            Defaults to `12` (about 7,200 images with 240 identities).
        workers: int. Processes drawing images; `1` draws in this process. Defaults
            to the number of CPUs.

    Returns:
        `Path` of `annotations.csv`.

    Example:
    >>> csv_path = generate("/tmp/synth", identities=12, images_per_identity=8)  # doctest: +SKIP
    """
    if not isinstance(identities, (int, np.integer)) or identities < 2:
        raise ValueError(f"`identities` must be an integer >= 2. Received: identities={identities!r}")
    if not isinstance(images_per_identity, (int, np.integer)) or images_per_identity < 2:
        raise ValueError(
            f"`images_per_identity` must be an integer >= 2. Received: images_per_identity={images_per_identity!r}"
        )
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"`workers` must be >= 1. Received: workers={workers!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = _plan(int(identities), int(images_per_identity), int(seed))
    tasks = [(os.fspath(out_dir), int(seed), runs[i : i + 16]) for i in range(0, len(runs), 16)]
    if workers == 1 or len(tasks) == 1:
        for task in tasks:
            _render_chunk(task)
    else:
        # spawn, not fork: the caller may have started TensorFlow threads.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_chunk, tasks):
                pass
    schema_lib.default_schema().save(out_dir / "schema.json")
    csv_path = out_dir / "annotations.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for run in runs:
            writer.writerows(run["rows"])
    return csv_path


def default_cache_dir():
    """`$PORTRAIT_KERAS_CACHE`, else `~/.cache/portrait_keras`."""
    return Path(os.environ.get("PORTRAIT_KERAS_CACHE") or Path.home() / ".cache" / "portrait_keras")


def default_dataset_name():
    """Folder name of the cached default, e.g. `synthportrait-v3-seed0-240ids-12per`."""
    return f"synthportrait-{VERSION}-seed{DEFAULT_SEED}-{DEFAULT_IDENTITIES}ids-{DEFAULT_IMAGES_PER_IDENTITY}per"


def default_dataset(cache_dir=None):
    """The default SynthPortrait (`DEFAULT_IDENTITIES` identities, seed 0), generated once and cached.

    The dataset is written to a temporary folder and renamed into place when complete,
    so an interrupted or concurrent run never leaves a half-written dataset behind. The
    folder name carries the generator version and the size, so a cache made by another
    version or default is never reused.

    Args:
        cache_dir: path-like. Parent folder of `default_dataset_name()`. Defaults to
            `default_cache_dir()`.

    Returns:
        `Path` of the cached `annotations.csv`.
    """
    parent = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = parent / default_dataset_name()
    csv_path = final / "annotations.csv"
    if csv_path.exists():
        return csv_path
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=parent))
    try:
        generate(tmp, DEFAULT_IDENTITIES, DEFAULT_SEED, DEFAULT_IMAGES_PER_IDENTITY)
        os.rename(tmp, final)
    except OSError:
        if not csv_path.exists():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return csv_path


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m portrait_keras.data.synthetic", description="Generate a SynthPortrait dataset."
    )
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--identities", type=int, default=DEFAULT_IDENTITIES)
    parser.add_argument("--images-per-identity", type=int, default=DEFAULT_IMAGES_PER_IDENTITY)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    csv_path = generate(args.out_dir, args.identities, args.seed, args.images_per_identity, args.workers)
    with open(csv_path, encoding="utf-8") as f:
        count = sum(1 for _ in f) - 1
    seconds = time.perf_counter() - start
    print(f"{csv_path}: {count} images in {seconds:.1f} s ({count / seconds:.0f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
