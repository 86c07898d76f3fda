"""Procedurally drawn talking faces: an identity's look, its mouth shapes from a phone timeline,
blinks and small head motion, rendered to RGB frames.

A `Face` holds everything that makes an identity (skin, face shape, hair, eyes, brows, glasses,
clothes, background, mouth size), drawn from the identity number alone, so identity 17 looks the
same in every clip. Per clip, `mouth_track` turns the phone timeline into per-frame mouth shapes
(visemes with coarticulation), `blink_track` places blinks and `head_motion` a slow drift and roll;
`render` draws the frames with OpenCV's anti-aliased primitives at sub-pixel positions (4
fractional bits), about 0.2 ms a frame at 64x64.

Geometry is in fractions of the frame size S, relative to the head centre, so any even size works.
The mouth sits at 0.63-0.74 S from the top, inside the fixed fallback mouth region of the landmark
lip-sync scorer (rows 55-85 %, columns 30-70 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from avgen.data.smoothing import gaussian_kernel, smooth
from avgen.phones import SILENCE, PhoneSpan
from avgen.timeline import FPS

_SHIFT = 4  # cv2 fixed-point drawing: 1/16 px positions and axes
_ONE = 1 << _SHIFT
FACE_SALT = 0x5EED_FACE

RGB = tuple[int, int, int]

# ------------------------------------------------------------------ identity

SKIN_TONES = np.array(
    [(255, 226, 200), (241, 196, 162), (226, 174, 134), (200, 138, 98), (164, 104, 70), (122, 78, 52), (96, 62, 44)],
    dtype=float,
)
HAIR_COLOURS = [
    (22, 20, 20),
    (52, 36, 26),
    (96, 64, 40),
    (128, 62, 32),
    (196, 164, 104),
    (150, 146, 142),
    (214, 212, 206),
    (72, 48, 36),
]
EYE_COLOURS = [(92, 60, 34), (48, 32, 22), (70, 112, 164), (80, 120, 78), (112, 120, 128), (122, 96, 52)]
HAIR_STYLES = ("short", "long", "bald", "side", "bun", "curly")
MOUTH_INSIDE = (34, 10, 16)
TEETH = (176, 170, 162)  # shaded: inside the mouth
TONGUE = (112, 40, 48)


@dataclass(frozen=True)
class Face:
    """What an identity looks like. Lengths are fractions of the frame size."""

    background_top: RGB
    background_bottom: RGB
    clothes: RGB
    skin: RGB
    skin_shade: RGB  # nose, neck, ears' inside
    lips: RGB
    lips_upper: RGB  # the upper lip is drawn a little darker
    hair: RGB
    hair_style: str
    eye_colour: RGB
    brow: RGB
    glasses: RGB | None
    centre_y: float  # head centre, from the top
    face_w: float  # half-width of the face ellipse
    face_h: float  # half-height
    jaw_w: float  # half-width of the jaw ellipse as a fraction of face_w (small: oval chin, large: square)
    hair_volume: float
    eye_dx: float  # eye centre, from the face's vertical axis
    eye_dy: float  # eye centre, above the head centre
    eye_w: float
    eye_h: float
    brow_dy: float  # brow above the eye
    brow_t: float  # brow half-thickness
    brow_tilt: float  # degrees, outer end up (>0) or down
    nose_len: float
    mouth_dy: float  # upper lip line, below the head centre
    mouth_w: float  # half-width at rest
    lip_t: float  # lip thickness
    max_open: float  # inner half-height of a fully open mouth
    blush: RGB | None


def _jitter(rng: np.random.Generator, colour, amount: float) -> RGB:
    c = np.asarray(colour, float) + rng.uniform(-amount, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _mix(a, b, t: float) -> RGB:
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a, b))


def face_for(identity: int) -> Face:
    """The look of an identity: a pure function of the identity number."""
    rng = np.random.default_rng([FACE_SALT, int(identity)])
    tone = rng.uniform(0, len(SKIN_TONES) - 1)
    i = min(int(tone), len(SKIN_TONES) - 2)
    skin = _jitter(rng, SKIN_TONES[i] + (tone - i) * (SKIN_TONES[i + 1] - SKIN_TONES[i]), 8)
    lips = _jitter(rng, (skin[0] * 0.78 + 20, skin[1] * 0.48, skin[2] * 0.55 + 8), 8)
    hair = _jitter(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 10)
    hue = rng.uniform(0, 180)
    sat, val = rng.uniform(30, 150), rng.uniform(70, 225)
    top = cv2.cvtColor(np.uint8([[[hue, sat, val]]]), cv2.COLOR_HSV2RGB)[0, 0]
    bottom = np.clip(top.astype(float) * rng.uniform(0.6, 0.95) + rng.uniform(-15, 15, 3), 0, 255)
    centre_y = rng.uniform(0.45, 0.49)
    face_h = rng.uniform(0.33, 0.40)
    mouth_dy = rng.uniform(0.19, 0.23)
    return Face(
        background_top=tuple(int(v) for v in top),
        background_bottom=tuple(int(v) for v in bottom),
        clothes=_jitter(rng, rng.uniform(20, 220, 3), 0),
        skin=skin,
        skin_shade=_mix(skin, (60, 30, 20), 0.16),
        lips=lips,
        lips_upper=_mix(lips, (40, 10, 15), 0.18),
        hair=hair,
        hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        eye_colour=_jitter(rng, EYE_COLOURS[rng.integers(len(EYE_COLOURS))], 10),
        brow=_mix(hair, (20, 15, 10), 0.35),
        glasses=_jitter(rng, ((30, 30, 34), (120, 90, 60), (150, 150, 160))[rng.integers(3)], 10)
        if rng.random() < 0.2
        else None,
        centre_y=centre_y,
        face_w=rng.uniform(0.23, 0.30),
        face_h=face_h,
        jaw_w=rng.uniform(0.62, 0.92),
        hair_volume=rng.uniform(1.0, 1.12),
        eye_dx=rng.uniform(0.095, 0.12),
        eye_dy=rng.uniform(0.06, 0.10),
        eye_w=rng.uniform(0.045, 0.06),
        eye_h=rng.uniform(0.024, 0.034),
        brow_dy=rng.uniform(0.045, 0.065),
        brow_t=rng.uniform(0.008, 0.016),
        brow_tilt=rng.uniform(-8, 12),
        nose_len=rng.uniform(0.07, 0.11),
        mouth_dy=mouth_dy,
        mouth_w=rng.uniform(0.09, 0.115),
        lip_t=rng.uniform(0.014, 0.022),
        max_open=rng.uniform(0.06, 0.08),
        blush=_mix(skin, lips, 0.25) if rng.random() < 0.4 else None,
    )


# ------------------------------------------------------------------ mouth shapes from phones


@dataclass(frozen=True)
class Viseme:
    open: float  # 0 closed lips .. 1 wide open
    width: float  # mouth width relative to rest (spread > 1, rounded < 1)
    round: float  # 0 neutral .. 1 rounded, protruded lips
    teeth: float = 0.0  # upper teeth on the lower lip (F, V)
    tongue: float = 0.0  # tongue tip between the teeth (TH, DH)
    dominance: float = 1.0  # how strongly the shape resists its neighbours (coarticulation)


def _v(open_, width, round_, dominance=1.0, teeth=0.0, tongue=0.0) -> Viseme:
    return Viseme(open_, width, round_, teeth, tongue, dominance)


# A phone's mouth target; diphthongs glide from the first to the second shape over their span.
# Dominance follows Cohen & Massaro's coarticulation model: lip closures and rounding are hard
# targets, while alveolars, velars and /h/ borrow the lips' shape from the neighbouring vowels.
VISEMES: dict[str, tuple[Viseme, ...]] = {
    SILENCE: (_v(0.0, 1.0, 0.0, 1.5),),
    **dict.fromkeys(("P", "B", "M"), (_v(0.0, 0.95, 0.1, 6.0),)),
    **dict.fromkeys(("F", "V"), (_v(0.06, 1.0, 0.0, 4.0, teeth=1.0),)),
    **dict.fromkeys(("TH", "DH"), (_v(0.2, 1.0, 0.0, 3.0, tongue=1.0),)),
    "W": (_v(0.12, 0.62, 1.0, 4.0),),
    "UW": (_v(0.25, 0.68, 1.0, 2.0),),
    "UH": (_v(0.38, 0.82, 0.6),),
    "AO": (_v(0.78, 0.84, 0.55),),
    "AA": (_v(1.0, 1.0, 0.1),),
    "AE": (_v(0.85, 1.12, 0.0),),
    "AH": (_v(0.66, 1.0, 0.0),),
    "EH": (_v(0.55, 1.12, 0.0),),
    "IH": (_v(0.38, 1.12, 0.0),),
    "IY": (_v(0.25, 1.25, 0.0),),
    "ER": (_v(0.36, 0.86, 0.5),),
    "OW": (_v(0.62, 0.8, 0.7), _v(0.3, 0.7, 1.0)),
    "OY": (_v(0.66, 0.8, 0.7), _v(0.3, 1.12, 0.0)),
    "AW": (_v(0.95, 1.0, 0.1), _v(0.35, 0.75, 0.8)),
    "AY": (_v(0.95, 1.0, 0.1), _v(0.3, 1.15, 0.0)),
    "EY": (_v(0.52, 1.12, 0.0), _v(0.28, 1.2, 0.0)),
    "Y": (_v(0.2, 1.2, 0.0),),
    "R": (_v(0.26, 0.85, 0.5, 1.5),),
    "L": (_v(0.36, 1.0, 0.0, 0.6),),
    **dict.fromkeys(("SH", "ZH", "CH", "JH"), (_v(0.22, 0.8, 0.75, 2.5),)),
    **dict.fromkeys(("S", "Z"), (_v(0.16, 1.12, 0.0, 1.5),)),
    **dict.fromkeys(("T", "D", "N"), (_v(0.22, 1.05, 0.0, 0.5),)),
    **dict.fromkeys(("K", "G", "NG"), (_v(0.3, 1.0, 0.0, 0.4),)),
    "HH": (_v(0.45, 1.0, 0.0, 0.2),),
}
BILABIALS = frozenset({"P", "B", "M"})
MOUTH_FIELDS = ("open", "width", "round", "teeth", "tongue")

CONTROL_RATE = 200  # Hz: mouth targets are blended on a 5 ms grid, then read at frame centres
# The blending window alone already starts each shape about a frame (2 sigma) before its phone and
# lets it linger as long after. An extra shift of 10-30 ms made the landmark scorer report ground
# truth as one frame early; with none it reports offset 0 (the ground truth must score in sync).
ANTICIPATION = 0.0  # s: shift of the mouth targets ahead of the phones
BLEND_SIGMA = 0.025  # s: Gaussian coarticulation window


def _span_index(timeline: list[PhoneSpan], times: np.ndarray) -> np.ndarray:
    ends = np.array([s.end for s in timeline])
    return np.minimum(np.searchsorted(ends, times, side="right"), len(timeline) - 1)


EMPHASIS_OPEN = 0.25  # an emphasised vowel opens this much wider (relative) than an unemphasised one


def mouth_track(timeline: list[PhoneSpan], n_frames: int, emphasis=None) -> np.ndarray:
    """(n_frames, 5) float32 mouth shape per frame: open, width, round, teeth, tongue.

    Each phone's viseme is a target on a 5 ms grid (looked up ANTICIPATION early); targets are blended
    with a Gaussian window weighted by each viseme's dominance; a bilabial (P, B, M) then closes the
    lips completely over its span. `emphasis` (one value 0..1 per span, as given to speech.synthesize)
    opens emphasised phones wider. Values are read at each frame's centre, as frame_phone_ids does."""
    emphasis = np.zeros(len(timeline)) if emphasis is None else np.asarray(emphasis, float)
    step = 1.0 / CONTROL_RATE
    n = int(math.ceil(n_frames / FPS * CONTROL_RATE)) + 2
    t = np.arange(n) * step
    spans = _span_index(timeline, t + ANTICIPATION)
    targets = np.empty((n, len(MOUTH_FIELDS)))
    weight = np.empty(n)
    for i, span in enumerate(timeline):
        sel = np.flatnonzero(spans == i)
        if not sel.size:
            continue
        shapes = VISEMES[span.phone]
        rel = (t[sel] + ANTICIPATION - span.start) / max(span.end - span.start, 1e-6)
        first = np.array([getattr(shapes[0], f) for f in MOUTH_FIELDS])
        last = np.array([getattr(shapes[-1], f) for f in MOUTH_FIELDS])
        glide = np.clip((rel - 0.3) / 0.6, 0, 1)[:, None]  # diphthongs: hold, glide, arrive
        targets[sel] = first + glide * (last - first)
        targets[sel, 0] *= 1 + EMPHASIS_OPEN * (emphasis[i] - 0.5)
        weight[sel] = shapes[0].dominance
    kernel = gaussian_kernel(BLEND_SIGMA * CONTROL_RATE)
    blended = smooth(targets * weight[:, None], kernel) / smooth(weight, kernel)[:, None]
    # bilabial closure over the phone's own span (not anticipated), softened by 5 ms
    bilabial = np.array([span.phone in BILABIALS for span in timeline], dtype=float)
    closed = bilabial[_span_index(timeline, t)]
    closed = np.clip(smooth(closed, gaussian_kernel(0.005 * CONTROL_RATE)) * 2.0, 0, 1)
    blended[:, 0] = np.clip(blended[:, 0] * (1 - closed), 0, 1)
    centres = (np.arange(n_frames) + 0.5) / FPS
    idx = centres * CONTROL_RATE
    lo = np.minimum(idx.astype(int), n - 2)
    frac = (idx - lo)[:, None]
    return ((1 - frac) * blended[lo] + frac * blended[lo + 1]).astype(np.float32)


# ------------------------------------------------------------------ blinks and head motion

BLINK_SHAPES = (np.array([0.6, 1.0, 0.5]), np.array([0.5, 1.0, 0.85, 0.35]))


def blink_track(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(n_frames,) eyelid closure 0..1: a 3-4 frame blink every 2-6 s, the first within 0.3-2.5 s."""
    out = np.zeros(n_frames, np.float32)
    t = rng.uniform(0.3, 2.5)
    while True:
        shape = BLINK_SHAPES[rng.integers(len(BLINK_SHAPES))]
        start = int(round(t * FPS))
        if start >= n_frames:
            return out
        end = min(n_frames, start + len(shape))
        out[start:end] = shape[: end - start]
        t += rng.uniform(2.0, 6.0)


def head_motion(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, 3): x and y drift (fractions of the frame, within about +-0.025) and roll (degrees,
    within about +-2), each a sum of two slow sinusoids (0.08-0.5 Hz) with random phases."""
    t = np.arange(n_frames) / FPS
    out = np.zeros((n_frames, 3))
    for axis, amplitude in enumerate((0.012, 0.009, 1.0)):
        for _ in range(2):
            f = rng.uniform(0.08, 0.5)
            out[:, axis] += amplitude * rng.uniform(0.4, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out


# ------------------------------------------------------------------ drawing


class _Pen:
    """Draws ellipses and lines in head coordinates (fractions of the frame, relative to the head
    centre), rotated by the head's roll and moved with it."""

    def __init__(self, img: np.ndarray, cx: float, cy: float, roll_deg: float):
        self.img, self.size = img, img.shape[0]
        self.cx, self.cy, self.roll = cx, cy, roll_deg
        self.cos, self.sin = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))

    def point(self, u: float, v: float) -> tuple[int, int]:
        x = self.cx + u * self.cos - v * self.sin
        y = self.cy + u * self.sin + v * self.cos
        return int(round(x * self.size * _ONE)), int(round(y * self.size * _ONE))

    def ellipse(self, u, v, a, b, colour, angle=0.0, start=0, end=360, thickness=-1):
        axes = (max(1, int(round(a * self.size * _ONE))), max(1, int(round(b * self.size * _ONE))))
        cv2.ellipse(
            self.img, self.point(u, v), axes, self.roll + angle, start, end, colour, thickness, cv2.LINE_AA, _SHIFT
        )

    def line(self, u0, v0, u1, v1, colour, thickness=1):
        cv2.line(self.img, self.point(u0, v0), self.point(u1, v1), colour, thickness, cv2.LINE_AA, _SHIFT)


def background(face: Face, size: int) -> np.ndarray:
    """The static backdrop: a vertical gradient, slightly lighter in the middle."""
    y = np.linspace(0, 1, size)[:, None, None]
    x = np.linspace(-1, 1, size)[None, :, None]
    top, bottom = np.array(face.background_top, float), np.array(face.background_bottom, float)
    img = top + y * (bottom - top)
    img = img * (1.0 + 0.08 * (1 - x**2))
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_hair_back(pen: _Pen, f: Face) -> None:
    w, h, v = f.face_w * f.hair_volume, f.face_h, f.hair_volume
    if f.hair_style == "bald":
        return
    if f.hair_style == "long":
        pen.ellipse(0, 0.1, w * 1.2, h * 1.0, f.hair)
    if f.hair_style == "curly":
        for du in (-0.75, -0.4, 0.0, 0.4, 0.75):
            pen.ellipse(du * w, -0.62 * h - 0.12 * h * (1 - abs(du)), 0.36 * w, 0.3 * h, f.hair)
        pen.ellipse(-0.95 * w, -0.25 * h, 0.25 * w, 0.35 * h, f.hair)
        pen.ellipse(0.95 * w, -0.25 * h, 0.25 * w, 0.35 * h, f.hair)
    pen.ellipse(0, -0.22 * h, w * 1.06, h * 0.86 * v, f.hair)
    if f.hair_style == "bun":
        pen.ellipse(0, -1.02 * h, 0.38 * w, 0.22 * h, f.hair)


def _draw_hair_front(pen: _Pen, f: Face) -> None:
    w, h = f.face_w, f.face_h
    if f.hair_style == "bald":
        pen.ellipse(0, -0.78 * h, 0.7 * w, 0.2 * h, f.skin_shade, start=180, end=360)
    elif f.hair_style == "side":
        pen.ellipse(-0.25 * w, -0.62 * h, 0.85 * w, 0.28 * h, f.hair, angle=12, start=180, end=360)
    else:
        pen.ellipse(0, -0.58 * h, 0.9 * w, 0.3 * h, f.hair, start=180, end=360)


def _draw_eyes(pen: _Pen, f: Face, closure: float) -> None:
    open_h = f.eye_h * (1.0 - closure)
    lash = _mix(f.brow, (0, 0, 0), 0.4)
    for side in (-1, 1):
        u, v = side * f.eye_dx, -f.eye_dy
        pen.ellipse(u, v - f.brow_dy, f.eye_w * 1.05, f.brow_t, f.brow, angle=-side * f.brow_tilt)
        if open_h > 0.006:
            pen.ellipse(u, v, f.eye_w, open_h, (240, 238, 232))
            iris = min(f.eye_h * 0.95, f.eye_w * 0.6)
            pen.ellipse(u, v, iris, min(iris, open_h), f.eye_colour)
            pen.ellipse(u, v, iris * 0.45, min(iris, open_h) * 0.45, (18, 14, 14))
            pen.ellipse(u, v, f.eye_w, open_h, lash, start=180, end=360, thickness=1)
        else:
            pen.ellipse(u, v + 0.3 * f.eye_h, f.eye_w, 0.006, lash)
        if f.glasses is not None:
            pen.ellipse(u, v, f.eye_w * 1.55, f.eye_h * 2.0, f.glasses, thickness=1)
    if f.glasses is not None:
        pen.line(-f.eye_dx + f.eye_w * 1.55, -f.eye_dy, f.eye_dx - f.eye_w * 1.55, -f.eye_dy, f.glasses)


def _draw_mouth(pen: _Pen, f: Face, shape: np.ndarray) -> None:
    opening, width, rounding, teeth, tongue = (float(x) for x in shape)
    opening = min(max(opening, 0.0), 1.0)
    rounding = min(max(rounding, 0.0), 1.0)
    inner_h = opening * f.max_open
    half_w = f.mouth_w * width * (1 - 0.3 * rounding) * (1 - 0.08 * opening)
    lip = f.lip_t * (1 + 0.5 * rounding)
    v = f.mouth_dy + 0.4 * inner_h  # the jaw carries the lower lip down; the mouth's centre follows
    pen.ellipse(0, v, half_w + 0.5 * lip, inner_h + lip, f.lips, start=0, end=180)  # lower lip
    pen.ellipse(0, v, half_w + 0.5 * lip, inner_h + 0.8 * lip, f.lips_upper, start=180, end=360)
    if inner_h > 0.005:
        inner_w = half_w * (0.92 - 0.12 * rounding)
        pen.ellipse(0, v, inner_w, inner_h, MOUTH_INSIDE)
        # teeth and tongue fade in from the dark as the mouth opens (no popping between frames)
        if opening > 0.4:
            teeth_colour = _mix(MOUTH_INSIDE, TEETH, min(1.0, (opening - 0.4) / 0.4))
            pen.ellipse(0, v - 0.85 * inner_h, inner_w * 0.4, 0.12 * inner_h, teeth_colour, start=0, end=180)
            tongue_colour = _mix(MOUTH_INSIDE, TONGUE, min(1.0, (opening - 0.4) / 0.4))
            pen.ellipse(0, v + 0.85 * inner_h, inner_w * 0.45, 0.15 * inner_h, tongue_colour, start=180, end=360)
    else:
        pen.ellipse(0, v, half_w, 0.004 + 0.2 * inner_h, MOUTH_INSIDE)  # the seam between closed lips
    if teeth > 0.4:
        pen.ellipse(0, v + 0.2 * lip, half_w * 0.45, 0.35 * lip * min(1.0, teeth), TEETH)
    if tongue > 0.4:
        pen.ellipse(0, v + 0.1 * lip, half_w * 0.35, 0.45 * lip * min(1.0, tongue), TONGUE)


def draw_frame(
    f: Face,
    backdrop: np.ndarray,
    mouth: np.ndarray,
    closure: float,
    motion: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """One frame: `mouth` is a row of mouth_track, `closure` the eyelids (0 open .. 1 shut),
    `motion` (dx, dy, roll degrees) the head's offset from its rest pose."""
    img = backdrop.copy()
    dx, dy, roll = motion
    pen = _Pen(img, 0.5 + dx, f.centre_y + dy, roll)
    _draw_hair_back(pen, f)
    # shoulders and neck in front of long hair; they move half as much as the head
    body = _Pen(img, 0.5 + 0.5 * dx, f.centre_y + 0.5 * dy, 0.0)
    body.ellipse(0, f.face_h + 0.2, 0.42, 0.16, f.clothes)
    body.ellipse(0, f.face_h * 0.8, f.face_w * 0.5, 0.14, f.skin_shade)
    for side in (-1, 1):
        pen.ellipse(side * f.face_w, 0.0, 0.035, 0.06, f.skin)
        pen.ellipse(side * (f.face_w + 0.005), 0.0, 0.018, 0.035, f.skin_shade)
    jaw_drop = 0.2 * float(mouth[0]) * f.max_open
    pen.ellipse(0, 0, f.face_w, f.face_h, f.skin)
    pen.ellipse(0, 0.5 * f.face_h + jaw_drop, f.face_w * f.jaw_w, 0.5 * f.face_h, f.skin)
    _draw_hair_front(pen, f)
    if f.blush is not None:
        for side in (-1, 1):
            pen.ellipse(side * f.face_w * 0.6, 0.07, 0.032, 0.02, f.blush)
    pen.ellipse(0, f.nose_len * 0.5 - 0.03, 0.022, f.nose_len * 0.5, f.skin_shade)
    for side in (-1, 1):
        pen.ellipse(side * 0.016, f.nose_len - 0.025, 0.01, 0.006, _mix(f.skin_shade, (40, 20, 20), 0.5))
    _draw_eyes(pen, f, closure)
    _draw_mouth(pen, f, mouth)
    return img


def render(f: Face, mouth: np.ndarray, blinks: np.ndarray, motion: np.ndarray, size: int = 64) -> np.ndarray:
    """(T, size, size, 3) uint8 RGB frames from per-frame mouth shapes (T, 5), eyelid closure (T,)
    and head motion (T, 3)."""
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    backdrop = background(f, size)
    frames = np.empty((len(mouth), size, size, 3), np.uint8)
    for i in range(len(mouth)):
        frames[i] = draw_frame(f, backdrop, mouth[i], float(blinks[i]), tuple(motion[i]))
    return frames


def neutral_frame(f: Face, size: int = 64) -> np.ndarray:
    """(size, size, 3) the identity at rest: lips closed, eyes open, head centred."""
    rest = np.array([VISEMES[SILENCE][0].open, 1.0, 0.0, 0.0, 0.0], np.float32)
    return draw_frame(f, background(f, size), rest, 0.0)
