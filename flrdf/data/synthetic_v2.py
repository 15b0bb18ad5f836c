"""The synthetic fine-grained set, version 2: a benchmark shaped like FGVC data.

Each image holds one stylised perching bird in clutter. Every class shares the
bird's silhouette, its pose distribution and its colour distribution; a class
is only the fine appearance of two parts - the wing pattern (one bar, two
bars, spots, a streak, a chevron) and the head pattern (eye ring, brow, eye
line, moustache stripe, crown speckles) - so telling two classes apart means
reading a detail of one or both parts, wherever the bird sits and however it
is posed. With the default ordering every class shares its wing with one class
and its head with another, so neither part alone names it.

Images are 256-384 px a side (both sides drawn per image) and the detail
structures are drawn at a fixed size *relative to the network input*: about
2.6-4 px at the 128-px resize the CPU recipe crops 112 px from, i.e. about
5-12 px at the source resolution. The object's tight box covers 5-30 % of the
image. Distractors: smaller plain decoy birds (the same silhouette, half of
them in the object's own colours, no wing or head pattern - which no class
has), clutter in the object's colours, and loose detail fragments of every
class drawn on the background, never on a bird silhouette.

Image number n is drawn from the streams of ``(seed, n)`` (as in v1) - or, in
version 3 (the same images, a new identity), image k of a class's train or test
split from ``(seed, 3, split, class, k)``, so that no image moves between splits
when the per-class counts change (flrdf.data.synthetic_overlap): the
background stream (image size, clutter, decoys, fragments), the object
stream (pose, scale, position, colours), the mark stream (detail colours and
jitter; the same draws for every class) and the finishing stream. The class
only picks which detail polygons are painted, inside the wing and the head:
box, mask and every pixel off those two parts are identical for every class.
docs/SYNTHETIC.md records the design and its reasons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np

from flrdf.data.synthetic import (
    Sample,
    _apply,
    _circle,
    _ellipse,
    _hsv,
    _mark_colour,
    _object_colours,
    _paint,
    _segment,
    _streams,
    clutter,
    field,
    finish,
    tight_box,
    write_cub_tree,
)

VERSION = 2
SPLIT_KEYS = {"train": 1, "test": 2}  # version 3's stream key: (seed, 3, split, class, k)
WING_PATTERNS = ("onebar", "twobar", "spotted", "streaked", "chevron")
HEAD_PATTERNS = ("eyering", "browed", "eyelined", "moustached", "crowned")
MAX_CLASSES = len(WING_PATTERNS) * len(HEAD_PATTERNS)
DEFAULT_MAX_SIDE = 384
MIN_SIDE_RATIO = 2 / 3  # sides are drawn in [round(max_side * 2/3), max_side]
BOX_FRACTION = (0.06, 0.28)  # target box area / image area, log-uniform; the tight mask box lands in 5-30 %
DETAIL_AT_128 = (2.6, 4.0)  # detail unit in pixels at the 128-px resize of the training pipeline
MARGIN = 0.07  # object kept this fraction of each side away from the border (the 112/128 centre crop keeps it)

# Bird geometry in local units: body centre at the origin, head towards +x, y down.
BODY_A, BODY_B = 38.0, 22.0
HEAD_R = 16.0
HEAD_AT = (38.0, -17.0)
NECK = (28.0, -10.0)
WING_AT = (-6.0, -3.0)
WING_A, WING_B = 30.0, 12.0
TAIL_PIVOT = (-30.0, 0.0)
EYE_AT, EYE_R = (4.0, -3.0), 3.2  # head-local


@dataclass(frozen=True)
class ClassSpecV2:
    wing: str
    head: str

    @property
    def name(self) -> str:
        """CUB-style folder name without the number, e.g. ``Eyering_Twobar_Bird``."""
        return f"{self.head.capitalize()}_{self.wing.capitalize()}_Bird"


@dataclass
class SampleV2(Sample):
    detail_px: float = 0.0  # the detail unit at source resolution (a bar is 0.8-1 unit wide)
    parts: dict = dc_field(default_factory=dict)  # "wing"/"head" -> HxW coverage of the part carrying the detail
    centres: dict = dc_field(default_factory=dict)  # "wing"/"head" -> (x, y) in image pixels


def class_specs_v2(num_classes: int) -> list[ClassSpecV2]:
    """Class k -> (wing k mod 5, head (k mod 5 + k div 5) mod 5): a bijection onto the 25 combinations.

    The first ten use every wing and every head pattern twice; each class shares its wing
    with one class and its head with another.
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"number of classes must be between 2 and {MAX_CLASSES} for version 2, got {num_classes}")
    nw, nh = len(WING_PATTERNS), len(HEAD_PATTERNS)
    return [ClassSpecV2(WING_PATTERNS[k % nw], HEAD_PATTERNS[(k % nw + k // nw) % nh]) for k in range(num_classes)]


# ----------------------------------------------------------------------------- geometry
def _m(a: float = 1.0, angle: float = 0.0, tx: float = 0.0, ty: float = 0.0, flip: bool = False, sy: float = 1.0):
    """3x3 homogeneous: scale a (and sy on y), optional x flip, rotation by angle (radians), then translation."""
    c, s = math.cos(angle), math.sin(angle)
    fx = -1.0 if flip else 1.0
    return np.array([[c * a * fx, -s * a * sy, tx], [s * a * fx, c * a * sy, ty], [0.0, 0.0, 1.0]])


def _about(angle: float, px: float, py: float) -> np.ndarray:
    """Rotation by ``angle`` about the point (px, py)."""
    return _m(tx=px, ty=py) @ _m(angle=angle) @ _m(tx=-px, ty=-py)


def _teardrop(a: float, b: float, n: int = 48) -> np.ndarray:
    """Wing outline: shoulder at +x, narrowing to the tip at -x."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    narrow = 0.55 + 0.45 * (1 + np.cos(t)) / 2
    return np.stack([a * np.cos(t), b * np.sin(t) * narrow], 1)


def _arc(cx: float, cy: float, r: float, a0: float, a1: float, width: float, pieces: int = 6) -> list[list[np.ndarray]]:
    """A thick arc as overlapping segments (each its own group, so overlaps do not cancel)."""
    t = np.radians(np.linspace(a0, a1, pieces + 1))
    pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    return [[_segment(*pts[i], *pts[i + 1], width)] for i in range(pieces)] + [
        [_circle(*pts[i], width / 2, 12)] for i in (0, pieces)]


def wing_detail(pattern: str, u: float) -> list[list[np.ndarray]]:
    """The wing pattern in wing-local units (shoulder +x, tip -x), for detail unit ``u``; clipped to the wing later."""
    reach = WING_B + 3
    if pattern == "onebar":
        return [[_segment(4, -reach, 4, reach, 1.0 * u)]]
    if pattern == "twobar":
        return [[_segment(x, -reach, x, reach, 0.8 * u)] for x in (4 + 0.9 * u, 4 - 0.9 * u)]
    if pattern == "spotted":
        return [[_circle(x, y, 0.55 * u, 16)] for x, y in ((11, -3.5), (-1, 3.5), (-13, -2.0))]
    if pattern == "streaked":
        return [[_segment(18, 0.5, -22, 0.5, 0.8 * u)]]
    if pattern == "chevron":
        return [[_segment(15, -9, 1, 0, 0.75 * u)], [_segment(1, 0, 15, 9, 0.75 * u)], [_circle(1, 0, 0.375 * u, 12)]]
    raise ValueError(f"unknown wing pattern {pattern!r}")


def head_detail(pattern: str, u: float) -> list[list[np.ndarray]]:
    """The head pattern in head-local units (beak +x, eye at EYE_AT), for detail unit ``u``; clipped to the head later."""
    ex, ey = EYE_AT
    if pattern == "eyering":
        return [[_circle(ex, ey, EYE_R + 0.9 * u, 32), _circle(ex, ey, EYE_R + 0.35 * u, 28)]]
    if pattern == "browed":
        return _arc(ex, ey, EYE_R + 0.55 * u, 195, 345, 0.65 * u)
    if pattern == "eyelined":
        return [[_segment(16, ey - 1, -15, ey + 2, 0.6 * u)]]
    if pattern == "moustached":
        return [[_segment(12, 4, -1, 11, 0.7 * u)]]
    if pattern == "crowned":
        return [[_circle(x, y, 0.45 * u, 14)] for x, y in ((-7, -9), (0.5, -11), (8, -9.5))]
    raise ValueError(f"unknown head pattern {pattern!r}")


_BODY = _ellipse(0, 0, BODY_A, BODY_B, 64)
_BELLY = _ellipse(4, 11, 32, 11, 40)
_TAIL = np.array([[-24, -8], [-70, -14], [-77, 1], [-70, 12], [-24, 9]], float)
_WING = _teardrop(WING_A, WING_B)
_HEAD = _circle(0, 0, HEAD_R, 40)
_LEGS = [_segment(2, 18, 0, 37, 2.8), _segment(10, 18, 12, 37, 2.8)]


@dataclass(frozen=True)
class _Pose:
    flip: bool
    angle: float
    head_tilt: float
    tail_angle: float
    wing_angle: float
    beak: float
    plump: float


def _draw_pose(rng: np.random.Generator) -> _Pose:
    return _Pose(bool(rng.integers(0, 2)), math.radians(rng.uniform(-25, 25)), math.radians(rng.uniform(-20, 20)),
                 math.radians(rng.uniform(-15, 15)), math.radians(rng.uniform(-6, 6)), rng.uniform(9, 15),
                 rng.uniform(0.92, 1.08))


def _part_maps(pose: _Pose) -> dict[str, np.ndarray]:
    """Local -> body-frame transforms of each articulated part (3x3)."""
    return {
        "body": _m(sy=pose.plump),
        "tail": _about(pose.tail_angle, *TAIL_PIVOT),
        "wing": _m(angle=math.radians(8) + pose.wing_angle, tx=WING_AT[0], ty=WING_AT[1] * pose.plump),
        "head": _about(pose.head_tilt, *NECK) @ _m(tx=HEAD_AT[0], ty=HEAD_AT[1]),
        "legs": _m(ty=(pose.plump - 1) * BODY_B),
    }


def _beak(pose: _Pose) -> np.ndarray:
    return np.array([[HEAD_R - 3, -5], [HEAD_R - 3 + pose.beak, 0.5], [HEAD_R - 3, 4]], float)


def _outline(pose: _Pose) -> np.ndarray:
    parts = _part_maps(pose)
    pieces = [(_BODY, "body"), (_TAIL, "tail"), (_WING, "wing"), (_HEAD, "head"), (_beak(pose), "head")]
    pts = [_apply(parts[k][:2], p) for p, k in pieces] + [_apply(parts["legs"][:2], leg) for leg in _LEGS]
    return np.concatenate(pts)


def _place(rng: np.random.Generator, pose: _Pose, width: int, height: int) -> tuple[np.ndarray, float]:
    """Body-frame -> image map for the object: box fraction log-uniform in BOX_FRACTION, anywhere inside the margin.

    Returns the 3x3 map and the box fraction reached (before anti-aliasing).
    """
    lo, hi = BOX_FRACTION
    frac = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    base = _apply(_m(angle=pose.angle, flip=pose.flip)[:2], _outline(pose))
    ext = np.ptp(base, 0)
    scale = math.sqrt(frac * width * height / (ext[0] * ext[1]))
    room = np.array([width, height], float) * (1 - 2 * MARGIN)
    scale = min(scale, *(room / ext))  # shrink to fit (long objects in narrow images)
    pts = base * scale
    lo_xy = np.array([width, height]) * MARGIN - pts.min(0)
    hi_xy = np.array([width, height]) * (1 - MARGIN) - pts.max(0)
    tx, ty = rng.uniform(lo_xy, np.maximum(hi_xy, lo_xy))
    reached = float(np.prod(ext * scale) / (width * height))
    return _m(scale, pose.angle, tx, ty, pose.flip), reached


def detail_unit_px(box_fraction: float, width: int, height: int) -> float:
    """The detail unit at source resolution: DETAIL_AT_128 (small to large objects) scaled to the image.

    Fixed relative to the 128-px training resize, so at 112 px input a detail is about 2-4 px
    whatever the image size, and grows a little with the object (as real parts do).
    """
    a, b = (math.sqrt(f) for f in BOX_FRACTION)
    t = min(max((math.sqrt(box_fraction) - a) / (b - a), 0.0), 1.0)
    lo, hi = DETAIL_AT_128
    return (lo + (hi - lo) * t) * math.sqrt(width * height) / 128.0


@dataclass(frozen=True)
class _Colours:
    body: np.ndarray
    wing: np.ndarray
    head: np.ndarray
    belly: np.ndarray
    beak: np.ndarray
    legs: np.ndarray
    eye: np.ndarray


def _draw_colours(rng: np.random.Generator) -> _Colours:
    body, fin, belly = _object_colours(rng)
    wing = fin if rng.random() < 0.6 else np.clip(body + (1 - body) * rng.uniform(0.2, 0.4), 0, 1)
    head = body if rng.random() < 0.6 else np.clip(fin * rng.uniform(0.8, 1.2), 0, 1)
    beak = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.9))
    legs = _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.1, 0.5), rng.uniform(0.15, 0.6))
    eye = _hsv(rng.random(), 0.3, rng.uniform(0.0, 0.12))
    return _Colours(body, wing, head, belly, beak, legs, eye)


def _draw_bird(img: np.ndarray, m: np.ndarray, pose: _Pose, colours: _Colours,
               details: Sequence[tuple[str, list, np.ndarray, np.ndarray]] = ()) -> tuple[np.ndarray | None, dict]:
    """Paint one bird through the body-frame -> image map ``m`` (3x3); returns (silhouette coverage, part coverages).

    ``details``: (part, polygon groups in part-local units, part-local jitter map 3x3, colour), painted clipped
    to that part. A decoy has none.
    """
    parts = {k: (m @ v)[:2] for k, v in _part_maps(pose).items()}
    cover = [_paint(img, [_apply(parts["legs"], leg)], colours.legs) for leg in _LEGS]
    cover.append(_paint(img, [_apply(parts["tail"], _TAIL)], colours.wing))
    body = _paint(img, [_apply(parts["body"], _BODY)], colours.body)
    cover.append(body)
    if body is not None:
        _paint(img, [_apply(parts["body"], _BELLY)], colours.belly, 0.85, clip=body)
    wing = _paint(img, [_apply(parts["wing"], _WING)], colours.wing)
    cover += [wing, _paint(img, [_apply(parts["head"], _beak(pose))], colours.beak)]
    head = _paint(img, [_apply(parts["head"], _HEAD)], colours.head)
    cover.append(head)
    own = {"wing": wing, "head": head}
    for part, groups, jitter, colour in details:
        if own[part] is None:
            continue
        through = (m @ _part_maps(pose)[part] @ jitter)[:2]
        for group in groups:
            _paint(img, [_apply(through, c) for c in group], colour, 1.0, clip=own[part])
    if head is not None:
        _paint(img, [_apply(parts["head"], _circle(*EYE_AT, EYE_R, 20))], colours.eye, 1.0, clip=head)
    cover = [c for c in cover if c is not None]
    return (np.maximum.reduce(cover) if cover else None), own


def _box_of(m: np.ndarray, pose: _Pose) -> np.ndarray:
    pts = _apply(m[:2], _outline(pose))
    return np.concatenate([pts.min(0), pts.max(0)])


def _background(rng: np.random.Generator, width: int, height: int, target_box: np.ndarray, target_scale: float,
                target: _Colours) -> np.ndarray:
    """Field, clutter, clutter in the object's colours, loose detail fragments, plain decoy birds."""
    img = field(rng, height, width)
    clutter(img, rng, int(rng.integers(8, 18)))
    own = (target.body, target.wing, target.head)
    clutter(img, rng, int(rng.integers(2, 5)),
            tint=lambda r: np.clip(own[int(r.integers(0, 3))] * r.uniform(0.9, 1.1), 0, 1).astype(np.float32))
    for _ in range(int(rng.integers(2, 6))):  # loose detail fragments of every class, on no bird
        u = 8.0
        if rng.random() < 0.5:
            groups = wing_detail(WING_PATTERNS[int(rng.integers(0, len(WING_PATTERNS)))], u)
        else:
            groups = head_detail(HEAD_PATTERNS[int(rng.integers(0, len(HEAD_PATTERNS)))], u)
        px = detail_unit_px(rng.uniform(*BOX_FRACTION), width, height)
        mm = _m(px / u, rng.uniform(-np.pi, np.pi), *rng.uniform(0, 1, 2) * (width, height))[:2]
        colour = _mark_colour(rng, rng.random(3).astype(np.float32))
        for group in groups:
            _paint(img, [_apply(mm, c) for c in group], colour)
    k = int(rng.integers(0, 10))
    for _ in range(0 if k < 2 else 1 if k < 7 else 2):  # plain decoys: same silhouette, no pattern
        pose = _draw_pose(rng)
        colours = target if rng.random() < 0.5 else _draw_colours(rng)
        scale = target_scale * rng.uniform(0.45, 0.8)
        for _try in range(6):
            m = _m(scale, pose.angle, *rng.uniform(0, 1, 2) * (width, height), pose.flip)
            b = _box_of(m, pose)
            ix = min(b[2], target_box[2] + 4) - max(b[0], target_box[0] - 4)
            iy = min(b[3], target_box[3] + 4) - max(b[1], target_box[1] - 4)
            if ix <= 0 or iy <= 0:
                _draw_bird(img, m, pose, colours)
                break
    return img


def render_sample_v2(spec: ClassSpecV2, seed_key: int | Sequence[int], max_side: int = DEFAULT_MAX_SIDE) -> SampleV2:
    """One image. ``seed_key`` alone seeds size, background, pose, colours and detail jitter; ``spec`` only
    picks which wing and head detail is painted."""
    if spec.wing not in WING_PATTERNS or spec.head not in HEAD_PATTERNS:
        raise ValueError(f"unknown class {spec!r}")
    bg_rng, obj_rng, mark_rng, finish_rng = _streams(seed_key)
    lo = round(max_side * MIN_SIDE_RATIO)
    width, height = (int(v) for v in bg_rng.integers(lo, max_side + 1, 2))
    pose = _draw_pose(obj_rng)
    colours = _draw_colours(obj_rng)
    m, frac = _place(obj_rng, pose, width, height)
    scale = math.hypot(m[0, 0], m[1, 0])
    unit_px = detail_unit_px(frac, width, height)
    u = unit_px / scale  # detail unit in local units
    details = []
    for part, pattern, colour_of in (("wing", spec.wing, colours.wing), ("head", spec.head, colours.head)):
        # same draws for every class: colour and a small jitter of the detail within its part
        colour = _mark_colour(mark_rng, colour_of)
        dx, dy = mark_rng.uniform(-0.15, 0.15, 2) * u
        jitter = _m(mark_rng.uniform(0.92, 1.08), math.radians(mark_rng.uniform(-8, 8)), dx, dy)
        groups = wing_detail(pattern, u) if part == "wing" else head_detail(pattern, u)
        details.append((part, groups, jitter, colour))
    img = _background(bg_rng, width, height, _box_of(m, pose), scale, colours)
    mask, own = _draw_bird(img, m, pose, colours, details)
    centres = {k: tuple(float(v) for v in (m @ _part_maps(pose)[k])[:2, 2]) for k in ("wing", "head")}
    return SampleV2(finish(img, finish_rng), mask, tight_box(mask), unit_px, own, centres)


def _checked_specs(num_classes: int, max_side: int, version: int) -> list[ClassSpecV2]:
    """The class specs of a version 2 / 3 set, after checking its image size."""
    if not 96 <= max_side <= 2048:
        raise ValueError(f"largest image side must be between 96 and 2048 pixels for version {version}, got {max_side}")
    return class_specs_v2(num_classes)


def make_demo_data_v2(
    out_dir,
    num_classes: int = 10,
    train_per_class: int = 60,
    test_per_class: int = 30,
    max_side: int = DEFAULT_MAX_SIDE,
    seed: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Write the v2 set to ``out_dir/CUB_200_2011/`` (the shared CUB-layout writer) and return that path.

    Image number n (0-based, in images.txt order) is drawn from the streams of ``(seed, n)``.
    """
    specs = _checked_specs(num_classes, max_side, 2)
    meta = generator_record_v2(num_classes, train_per_class, test_per_class, max_side, seed)
    return write_cub_tree(out_dir, [s.name for s in specs], train_per_class, test_per_class,
                          lambda c, n: render_sample_v2(specs[c], (seed, n), max_side), meta, progress=progress)


def generator_record_v2(num_classes: int, train_per_class: int, test_per_class: int, max_side: int = DEFAULT_MAX_SIDE,
                        seed: int = 0, version: int = VERSION) -> dict:
    """The marker file's record of a version 2 (or 3) set with these parameters (flrdf.data.synthetic_overlap
    reads which images it holds from it)."""
    specs = class_specs_v2(num_classes)
    meta = {"generator": "flrdf.data.synthetic_v2", "version": version, "seed": seed, "classes": num_classes,
            "train_per_class": train_per_class, "test_per_class": test_per_class,
            "image_sides": [round(max_side * MIN_SIDE_RATIO), max_side], "box_fraction": list(BOX_FRACTION),
            "detail_unit_at_128px": list(DETAIL_AT_128),
            "class_specs": [{"wing": s.wing, "head": s.head} for s in specs]}
    if version >= 3:
        meta["image_key"] = "(seed, 3, split, class, k)"
    return meta


def image_key_v3(seed: int, split: str, class_index: int, k: int) -> tuple[int, ...]:
    """Version 3's stream key of image ``k`` (0-based) of class ``class_index`` in ``split`` (train | test):
    independent of every other split's and class's count."""
    return (int(seed), 3, SPLIT_KEYS[split], int(class_index), int(k))


def make_demo_data_v3(
    out_dir,
    num_classes: int = 10,
    train_per_class: int = 60,
    test_per_class: int = 30,
    max_side: int = DEFAULT_MAX_SIDE,
    seed: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Version 2's images with version 3's identities (:func:`image_key_v3`): written like
    :func:`make_demo_data_v2`, but a set made with other counts holds the same test images (and the
    same first training images) of each class."""
    specs = _checked_specs(num_classes, max_side, 3)
    per = train_per_class + test_per_class
    meta = generator_record_v2(num_classes, train_per_class, test_per_class, max_side, seed, version=3)

    def render(c: int, n: int) -> SampleV2:
        k = n - c * per  # the writer numbers images class by class, train images first
        key = image_key_v3(seed, "train", c, k) if k < train_per_class else \
            image_key_v3(seed, "test", c, k - train_per_class)
        return render_sample_v2(specs[c], key, max_side)

    return write_cub_tree(out_dir, [s.name for s in specs], train_per_class, test_per_class, render, meta,
                          progress=progress)
