"""SynthPortrait pixels: one cartoon person per 256x128 (HxW) RGB image, drawn with numpy and Pillow.

`draw_run(run, seed)` turns a planned `Run` into its frames. The figure is described by two
dataclasses whose lengths are pixels, `Appearance` (who the person is) and `Skeleton` (the
joints of one posture); both shrink for a lying figure with `scaled(factor)`, which scales
every field declared with `length()` and nothing else. Which cue shows which label:
docs/synthportrait.md, "What every label looks like".
"""

import dataclasses
import math
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from portrait_keras.data.synthportrait.plan import choice

HEIGHT, WIDTH = 256, 128

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


# === Geometry ===


def length(**kwargs):
    """A dataclass field holding pixels: a number, a point or a list of points; `scaled` scales it."""
    return dataclasses.field(metadata={"length": True}, **kwargs)


def _times(value, factor):
    if isinstance(value, (tuple, list)):
        return type(value)(_times(v, factor) for v in value)
    return value * factor


class Scalable:
    """Mixin for a dataclass of which some fields are `length()`s."""

    def scaled(self, factor):
        """A copy with every `length()` field (numbers, points, lists of points) times `factor`."""
        lengths = [f.name for f in dataclasses.fields(self) if f.metadata.get("length")]
        return dataclasses.replace(self, **{name: _times(getattr(self, name), factor) for name in lengths})


@dataclasses.dataclass(frozen=True)
class Appearance(Scalable):
    """Who a person is: colours (RGB int tuples), hair, clothes, accessories and proportions.

    Lengths are pixels of the upright figure: `size` is the standing height, `head_h`,
    `torso_h` and `leg` split it, `shoulder`, `hip` and `waist` are half widths,
    `arm_w` and `leg_w` limb thicknesses.
    """

    skin: tuple
    hair_color: tuple
    hair: str  # "short", "long", "ponytail" or "bald"
    beard: bool
    top: tuple
    top2: tuple  # second colour of a patterned top
    pattern: str  # "plain", "stripes" or "checks"
    period: int  # pattern cell in image pixels: cloth keeps its weave when the figure shrinks
    long_sleeves: bool
    bottom: tuple
    skirt: bool
    shoes: tuple
    hat: Optional[tuple]
    glasses: bool
    bag: Optional[tuple]
    bag_side: int  # +1 or -1
    cane: bool
    size: float = length()
    head_h: float = length()
    torso_h: float = length()
    leg: float = length()
    shoulder: float = length()
    hip: float = length()
    waist: float = length()
    arm_w: float = length()
    leg_w: float = length()


@dataclasses.dataclass(frozen=True)
class Skeleton(Scalable):
    """Joints of one posture in body coordinates (origin at the feet, up is negative y).

    Point lists hold `(x, y)` tuples, left then right: `hips`, `knees`, `feet` and
    `shoulders` have 2 points, `arms` 2 lists of `[elbow, hand]`.
    """

    hips: list = length()
    knees: list = length()
    feet: list = length()
    shoulders: list = length()
    arms: list = length()
    hip_y: float = length()
    shoulder_y: float = length()
    head_cy: float = length()
    side: int  # +1 or -1: which way a seated figure faces, which arm is raised


@dataclasses.dataclass(frozen=True)
class Props:
    """What a shot shows besides the person: hat, bag and cane on or off, and a seat colour."""

    hat: bool
    bag: bool
    cane: bool
    seat: Optional[tuple]


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything the frames of one run share; `app` and `skeleton` already scaled to fit."""

    background: Image.Image  # (HEIGHT + 8, WIDTH + 8) RGB, cropped per frame for camera jitter
    app: Appearance
    skeleton: Skeleton
    props: Props
    turn: int  # 0 upright, +1 or -1 a quarter turn (lying)
    origin: tuple  # (x, y) of the feet in image pixels
    occluder: Optional[tuple]  # ([x0, y0, x1, y1], color): a box over the lower body
    lut: list  # 768 entries for `Image.point`: lighting
    blur: float  # BoxBlur radius, 0 for none
    expression: tuple


# === Appearance ===


def _jitter(rng, color, amount):
    """`color` with each channel moved by up to +-`amount`."""
    offsets = rng.integers(-amount, amount + 1, 3).tolist()
    return tuple(min(255, max(0, int(c) + o)) for c, o in zip(color, offsets))


def appearance(rng, attrs):
    """The `Appearance` of one person with `attrs` (`{task: class}` for gender, age, physique, height)."""
    female = attrs["gender"] == "female"
    age = attrs["age"]
    old = age in ("middle_aged", "elderly")
    skin = _jitter(rng, SKIN[rng.integers(len(SKIN))], 8)
    if age == "elderly" and rng.random() < 0.9:
        hair_color = _jitter(rng, GREY_HAIR[rng.integers(len(GREY_HAIR))], 10)
    elif age == "middle_aged" and rng.random() < 0.4:
        hair_color = _jitter(rng, GREY_HAIR[0], 20)
    else:
        hair_color = _jitter(rng, HAIR[rng.integers(len(HAIR))], 10)
    if female:
        hair = choice(rng, {"long": 0.8, "ponytail": 0.1, "short": 0.1})
    else:
        bald = 0.35 if old else 0.05
        hair = choice(rng, {"short": 0.9 - bald, "bald": bald, "long": 0.05, "ponytail": 0.05})
    # Keyword arguments evaluate in order: the order of the draws below is part of the output.
    looks = dict(
        skin=skin,
        hair_color=hair_color,
        hair=hair,
        beard=(not female) and age not in ("child", "teenager") and rng.random() < 0.25,
        top=_jitter(rng, CLOTHES[rng.choice(BRIGHT if age == "child" else range(len(CLOTHES)))], 12),
        top2=_jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 12),
        pattern=choice(rng, {"plain": 0.55, "stripes": 0.25, "checks": 0.2}),
        period=int(rng.integers(4, 9)),
        long_sleeves=rng.random() < 0.6,
        bottom=_jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 12),
        skirt=female and rng.random() < 0.5,
        shoes=_jitter(rng, CLOTHES[rng.choice([0, 2, 13, 1])], 10),
        hat=_jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 10) if rng.random() < 0.15 else None,
        glasses=rng.random() < (0.4 if age == "elderly" else 0.15),
        bag=_jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 10) if rng.random() < 0.2 else None,
        bag_side=1 if rng.random() < 0.5 else -1,
        cane=age == "elderly" and rng.random() < 0.3,
    )
    size = STANDING_HEIGHT[age] * HEIGHT_SCALE[attrs["height"]] * (1 + rng.uniform(-0.02, 0.02))
    width = BODY_WIDTH[attrs["physique"]]
    head_h = size * HEAD_RATIO[age]
    torso_h = size * TORSO_RATIO[attrs["height"]]
    return Appearance(
        **looks,
        size=size,
        head_h=head_h,
        torso_h=torso_h,
        leg=size - head_h - torso_h - size * 0.02,
        shoulder=size * 0.1 * width * (0.92 if female else 1.08),
        hip=size * 0.072 * width * (1.12 if female else 1.0),
        waist=size * 0.085 * width * (1.25 if attrs["physique"] == "heavy" else 0.9),
        arm_w=max(3.0, size * 0.042 * LIMB_WIDTH[attrs["physique"]]),
        leg_w=max(4.0, size * 0.055 * LIMB_WIDTH[attrs["physique"]]),
    )


def skeleton(app, body, arm, rng):
    """The `Skeleton` of `app` in a body and arm posture, with a little random wobble."""
    leg, torso, head_h = app.leg, app.torso_h, app.head_h
    thigh = shin = leg / 2
    hx = app.hip * 0.55

    def wobble(scale=0.04):
        return rng.uniform(-scale, scale) * leg

    hip_y = {"standing": -leg, "walking": -leg * 0.97, "sitting": -shin, "squatting": -leg * 0.42, "lying": -leg}[body]
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
    head_cy = shoulder_y - app.size * 0.02 - head_h / 2
    sx = app.shoulder - app.arm_w * 0.4
    ua, fa = app.size * 0.16, app.size * 0.16
    shoulders = [(-sx, shoulder_y + app.arm_w * 0.6), (sx, shoulder_y + app.arm_w * 0.6)]

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
            [(-(sx + 0.6 * ua), shoulder_y + 0.55 * ua), (-(app.waist + 0.3 * app.arm_w), hand_y)],
            [(sx + 0.6 * ua, shoulder_y + 0.55 * ua), (app.waist + 0.3 * app.arm_w, hand_y)],
        ]
    return Skeleton(
        hips=hips,
        knees=knees,
        feet=feet,
        shoulders=shoulders,
        arms=arms,
        hip_y=hip_y,
        shoulder_y=shoulder_y,
        head_cy=head_cy,
        side=side,
    )


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


def _trapezoid(top_y, top_half, bottom_y, bottom_half, cx=0.0):
    """Corners of a trapezoid (or rectangle) symmetric about x = `cx`."""
    top = [(cx - top_half, top_y), (cx + top_half, top_y)]
    return top + [(cx + bottom_half, bottom_y), (cx - bottom_half, bottom_y)]


_UPPER_HALF = [(math.cos(a), math.sin(a)) for a in np.radians(np.linspace(180, 360, 13))]


def _cap(cx, cy, rx, ry, cut):
    """The top of an ellipse down to height `cut` (-1..1): hair, hats."""
    return [(cx + rx * c, cy + ry * min(s, cut)) for c, s in _UPPER_HALF]


def _draw_figure(canvas, app, sk, expression, props):
    """Draws one person, back to front: seat, long hair, legs, clothes, head, arms."""
    edge = (30, 25, 25)
    hip_y, shoulder_y = sk.hip_y, sk.shoulder_y
    head_rx, head_ry = app.head_h * 0.4, app.head_h / 2
    if props.seat:
        seat_w = app.leg * 0.55
        x0, x1 = sorted((-sk.side * app.hip * 1.3, sk.side * seat_w))
        canvas.polygon([(x0, hip_y), (x1, hip_y), (x1, hip_y + 6), (x0, hip_y + 6)], props.seat)
        for x in (x0 + 2, x1 - 2):
            canvas.line([(x, hip_y), (x, 0)], _darker(props.seat), 3)
    if app.hair == "long":
        cy = sk.head_cy
        canvas.polygon(_trapezoid(cy, head_rx * 1.15, cy + head_ry * 1.7, head_rx * 1.05), app.hair_color)
    # Legs, shoes, then skirt or trouser top.
    leg_color = app.skin if app.skirt else app.bottom
    for hip, knee, foot in zip(sk.hips, sk.knees, sk.feet):
        canvas.limb([hip, knee, foot], leg_color, app.leg_w, edge)
        shoe = app.leg_w
        canvas.ellipse(foot[0], foot[1] - shoe * 0.3, shoe * 0.75, shoe * 0.45, app.shoes)
    if app.skirt:
        flare = app.hip * 1.5
        hem = app.leg * 0.38 if sk.knees[0][1] > hip_y else app.leg * 0.2
        skirt = _trapezoid(hip_y - 4, app.hip * 1.05, hip_y + hem, flare)
        canvas.polygon(skirt, app.bottom, outline=edge)
    else:
        canvas.polygon(_trapezoid(hip_y - 4, app.hip * 1.05, hip_y + 6, app.hip * 1.05), app.bottom)
    # Torso.
    waist_y = shoulder_y + 0.6 * app.torso_h
    torso = [
        (-app.shoulder, shoulder_y),
        (app.shoulder, shoulder_y),
        (app.waist, waist_y),
        (app.hip * 1.05, hip_y),
        (-app.hip * 1.05, hip_y),
        (-app.waist, waist_y),
    ]
    if app.pattern == "plain":
        canvas.polygon(torso, app.top, outline=edge)
    else:
        canvas.patterned_polygon(torso, (app.top, app.top2), app.pattern, app.period)
        canvas.polygon(torso, None, outline=edge)
    if props.bag:
        s = app.bag_side
        strap = [(-s * app.shoulder * 0.8, shoulder_y), (s * app.hip * 1.2, hip_y - 6)]
        canvas.line(strap, _darker(app.bag), 2)
        bag_w, bag_h = app.size * 0.07, app.size * 0.06
        bx = s * (app.hip * 1.2 + bag_w * 0.3)
        canvas.polygon(_trapezoid(hip_y - bag_h, bag_w, hip_y + bag_h, bag_w, cx=bx), app.bag, outline=edge)
    # Neck, head, hair, face.
    canvas.line([(0, shoulder_y + 2), (0, sk.head_cy + head_ry * 0.8)], app.skin, head_rx * 0.7)
    cy = sk.head_cy
    canvas.ellipse(0, cy, head_rx, head_ry, app.skin, outline=_darker(app.skin, 0.7))
    _draw_hair(canvas, app, cy, head_rx, head_ry)
    _draw_face(canvas, app, cy, head_rx, head_ry, expression)
    if props.hat:
        canvas.polygon(_cap(0, cy, head_rx * 1.08, head_ry * 1.05, -0.6), app.hat, outline=edge)
        brim_y = cy - head_ry * 0.6
        canvas.line([(-head_rx * 1.4, brim_y), (head_rx * 1.4, brim_y)], _darker(app.hat, 0.8), 3)
    # Arms in front of the torso: sleeve, forearm, hand.
    forearm = app.top if app.long_sleeves else app.skin
    for shoulder, (elbow, hand) in zip(sk.shoulders, sk.arms):
        canvas.limb([shoulder, elbow], app.top, app.arm_w, edge)
        canvas.limb([elbow, hand], forearm, app.arm_w * 0.9, edge)
        canvas.ellipse(hand[0], hand[1], app.arm_w * 0.65, app.arm_w * 0.65, app.skin, outline=edge)
    if props.cane:
        hand = sk.arms[1][1]
        canvas.line([hand, (hand[0] + 3, 0)], (90, 60, 30), 3)


def _draw_hair(canvas, app, cy, rx, ry):
    """Hair (or a bald head's fringe) and beard around a head centred at (0, `cy`), radii `rx`, `ry`."""
    color = app.hair_color
    if app.hair == "bald":
        for s in (-1, 1):
            canvas.ellipse(s * rx * 0.92, cy - ry * 0.05, rx * 0.18, ry * 0.3, color)
        return
    fringe = -0.62 if app.hair == "short" else -0.58  # above the highest eyebrow
    canvas.polygon(_cap(0, cy, rx * 1.06, ry * 1.06, fringe), color)
    for s in (-1, 1):  # sideburns / temples
        canvas.ellipse(s * rx * 0.95, cy - ry * 0.3, rx * 0.16, ry * 0.3, color)
    if app.hair == "ponytail":
        canvas.ellipse(rx * 1.15, cy - ry * 0.2, rx * 0.35, ry * 0.45, color)
    if app.beard:
        # Chin and cheeks, leaving the mouth (at 0.55) free.
        beard = [(-0.75, 0.35), (-0.45, 0.85), (0, 1.05), (0.45, 0.85), (0.75, 0.35), (0.45, 0.72), (-0.45, 0.72)]
        canvas.polygon([(rx * u, cy + ry * v) for u, v in beard], color)


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
    if app.glasses:
        for s in (-1, 1):
            canvas.ellipse(s * 0.38 * rx, eye_y, 0.3 * rx, 0.2 * ry, None, outline=(20, 20, 20))
        canvas.line([(-0.1 * rx, eye_y), (0.1 * rx, eye_y)], (20, 20, 20), 1)
    canvas.line([(0, cy + 0.1 * ry), (0.05 * rx, cy + 0.28 * ry)], _darker(app.skin, 0.7), 1)
    _draw_mouth(canvas, mouth, cy + 0.55 * ry, rx, ry, stroke)


def _draw_mouth(canvas, mouth, my, rx, ry, stroke):
    """The mouth of one expression centred at (0, `my`)."""
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
    """Brightness, contrast and colour cast as one per-channel lookup table (768 entries)."""
    contrast = rng.uniform(0.65, 1.2)
    brightness = rng.uniform(-45, 35)
    cast = rng.uniform(-18, 18, 3)
    v = np.arange(256)[None, :]
    table = (v - 128) * contrast + 128 + brightness + cast[:, None]
    return np.clip(np.round(table), 0, 255).astype(np.uint8).ravel().tolist()


def _scene(rng, app, run):
    """The `Scene` of one run of the person `app`: pose, props, placement, backdrop, light."""
    body = run.body
    sk = skeleton(app, body, run.arm, rng)
    seat = tuple(int(c) for c in rng.integers(40, 200, 3)) if body == "sitting" and rng.random() < 0.75 else None
    props = Props(
        hat=app.hat is not None and rng.random() < 0.85,
        bag=app.bag is not None and rng.random() < 0.75,
        cane=app.cane and run.arm == "arms_down" and body != "lying",
        seat=seat,
    )
    # Same clothes look a little different from shot to shot.
    shot = {key: _jitter(rng, getattr(app, key), 6) for key in ("top", "top2", "bottom", "hair_color", "skin")}
    if body == "lying":
        turn = 1 if rng.random() < 0.5 else -1
        # Lying figures are shrunk to fit across the 128 px width, head included.
        scale = min(1.0, 110 / app.size)
        origin = (WIDTH / 2 - turn * app.size * scale / 2 + rng.uniform(-3, 3), HEIGHT * rng.uniform(0.55, 0.8))
    else:
        turn, scale = 0, 1.0
        origin = (WIDTH / 2 + rng.uniform(-9, 9), HEIGHT - rng.uniform(3, 14))
    occluder = None
    if body != "lying" and rng.random() < 0.2:  # a lying figure is small enough already
        ow, oh = WIDTH * rng.uniform(0.25, 0.6), HEIGHT * rng.uniform(0.12, 0.35)
        x0 = 0 if rng.random() < 0.5 else WIDTH - ow
        y0 = rng.uniform(HEIGHT * 0.45, HEIGHT - oh)
        occluder = ([x0, y0, x0 + ow, y0 + oh], tuple(int(c) for c in rng.integers(0, 256, 3)))
    background = _background(rng)
    lut = _lighting_lut(rng)
    blur = rng.uniform(0.5, 1.0) if rng.random() < 0.15 else 0.0
    return Scene(
        background=background,
        app=dataclasses.replace(app, **shot).scaled(scale),
        skeleton=sk.scaled(scale),
        props=props,
        turn=turn,
        origin=origin,
        occluder=occluder,
        lut=lut,
        blur=blur,
        expression=run.expression,
    )


def _figure_mask(scene, origin):
    """The person's pixels in a frame: an "L" image, 255 where the figure (with what it holds or
    sits on) covers the backdrop, 0 elsewhere and under the occluder.

    The figure is drawn twice more, on black and on white: a pixel is the figure's where either
    drawing differs from its plain backdrop (no drawing call blends with the backdrop).
    """
    person = np.zeros((HEIGHT, WIDTH), bool)
    for fill in ((0, 0, 0), (255, 255, 255)):
        plain = Image.new("RGB", (WIDTH, HEIGHT), fill)
        _draw_figure(_Canvas(plain, origin, scene.turn), scene.app, scene.skeleton, scene.expression, scene.props)
        person |= (np.asarray(plain) != np.asarray(fill, np.uint8)).any(axis=-1)
    mask = Image.fromarray(person.astype(np.uint8) * 255, "L")
    if scene.occluder:
        ImageDraw.Draw(mask).rectangle(scene.occluder[0], fill=0)
    return mask


def _draw_frame(scene, rng, mask=False):
    """One frame of a run: the scene with a tiny camera and figure jitter (and its `_figure_mask`)."""
    dx, dy = rng.integers(0, 9, 2)
    image = scene.background.crop((int(dx), int(dy), int(dx) + WIDTH, int(dy) + HEIGHT))
    ox, oy = scene.origin
    origin = (ox + rng.uniform(-1.5, 1.5), oy + rng.uniform(-1.5, 1.5))
    canvas = _Canvas(image, origin, scene.turn)
    _draw_figure(canvas, scene.app, scene.skeleton, scene.expression, scene.props)
    if scene.occluder:
        box, color = scene.occluder
        canvas.draw.rectangle(box, fill=color, outline=_darker(color))
    if scene.blur:
        image = image.filter(ImageFilter.BoxBlur(scene.blur))
    image = image.point(scene.lut)
    return (image, _figure_mask(scene, origin)) if mask else image


def draw_run(run, seed, masks=False):
    """The frames of one planned `Run`.

    An identity looks the same in all its runs (appearance from `(seed, person)`); all else
    comes from `(seed, run.index)`, so the pixels do not depend on which process draws them.
    `masks=True` adds each frame's person mask (`_figure_mask`); the frames stay the same.

    Returns:
        list of `len(run.rows)` RGB `PIL.Image`s of size (WIDTH, HEIGHT) = (128, 256); with
        `masks`, `(image, mask)` pairs, the mask an "L" image of the same size.
    """
    rng = np.random.default_rng([seed, 3, run.index])
    if run.person >= 0:
        app = appearance(np.random.default_rng([seed, 1, run.person]), run.attrs)
    else:
        app = appearance(rng, run.attrs)
    scene = _scene(rng, app, run)
    return [_draw_frame(scene, rng, masks) for _ in run.rows]
