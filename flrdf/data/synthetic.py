"""The synthetic fine-grained set, version 1 (the positional control), and what every version shares.

Version 1 is defined here; version 2 (classes by the fine appearance of parts,
the FGVC-shaped set) lives in ``synthetic_v2`` and reuses this module's drawing
helpers (``field``, ``clutter``, ``finish``, polygon painting), ``tight_box``,
the seed streams and the CUB-layout writer ``write_cub_tree``.
docs/SYNTHETIC.md records both designs and their reasons.

``make_demo_data`` writes a CUB-200-2011-layout tree, so the ``cub`` reader and
its box path serve it unchanged. Each image holds one stylised fish on a
cluttered background. All classes share the fish's shape; a class is only a
small local mark pattern (stripes, dots, ring, ...) at one place on the fish
(fore body, hind body, tail). Everything else - background, clutter,
distractors (loose fish parts and loose marks of every pattern), pose, size,
flip, rotation, colours, mark jitter - is drawn from random streams seeded by
``(seed, image number)`` alone, never by the class: the class is independent
of every background and pose parameter by construction. The box is the tight
box of the object's mask. Deterministic for a seed.

CLI: ``python -m flrdf make-demo-data --out DIR [--version 1|2|3] [--classes N] [--train-per-class N]
[--test-per-class N] [--size PX] [--seed S]`` (version 1 by default).
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PATTERNS = ("striped", "dotted", "ringed", "crossed", "banded", "chevroned", "checkered", "diamond")
POSITIONS = ("fore", "hind", "tail")
MAX_CLASSES = len(PATTERNS) * len(POSITIONS)
MARKER_FILE = "flrdf_synthetic.json"
JPEG_QUALITY = 90
_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT

# Fish geometry in local units: body centre at the origin, head towards +x, y down.
BODY_A, BODY_B = 64.0, 30.0
MARK_CENTRES = {"fore": (16.0, 0.0), "hind": (-26.0, 0.0), "tail": (-80.0, 0.0)}


@dataclass(frozen=True)
class ClassSpec:
    pattern: str
    position: str

    @property
    def name(self) -> str:
        """CUB-style folder name without the number, e.g. ``Fore_striped_Fish``."""
        return f"{self.position.capitalize()}_{self.pattern}_Fish"


@dataclass
class Sample:
    image: np.ndarray  # HxWx3 uint8 RGB
    mask: np.ndarray  # HxW float32 object alpha in [0, 1]
    box: tuple[int, int, int, int]  # tight box of mask >= 0.5: x1 y1 x2 y2 (pixel edges)


def class_specs(num_classes: int) -> list[ClassSpec]:
    """Class k -> (pattern, position). Two positions while they suffice, then three."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"number of classes must be between 2 and {MAX_CLASSES}, got {num_classes}")
    n_pos = 2 if num_classes <= 2 * len(PATTERNS) else 3
    return [ClassSpec(PATTERNS[k // n_pos], POSITIONS[k % n_pos]) for k in range(num_classes)]


# ----------------------------------------------------------------------------- geometry
def _circle(cx: float, cy: float, r: float, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _ellipse(cx: float, cy: float, a: float, b: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], 1)


def _segment(x0: float, y0: float, x1: float, y1: float, width: float) -> np.ndarray:
    d = np.array([x1 - x0, y1 - y0], float)
    nrm = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * width / 2
    p0, p1 = np.array([x0, y0]), np.array([x1, y1])
    return np.stack([p0 + nrm, p1 + nrm, p1 - nrm, p0 - nrm])


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def mark_polygons(pattern: str) -> list[list[np.ndarray]]:
    """The mark as groups of contours around (0, 0) in local units; each group is filled even-odd."""
    if pattern == "striped":
        return [[_segment(dx, -24, dx, 24, 6.5)] for dx in (-11.0, 0.0, 11.0)]
    if pattern == "dotted":
        return [[_circle(dx, dy, 5.5, 16)] for dx, dy in ((-9, -8), (9, -8), (0, 8))]
    if pattern == "ringed":
        return [[_circle(0, 0, 14.0), _circle(0, 0, 8.5)]]
    if pattern == "crossed":
        return [[_segment(-11, -11, 11, 11, 6.5)], [_segment(-11, 11, 11, -11, 6.5)]]
    if pattern == "banded":
        return [[_segment(-16, dy, 16, dy, 6.5)] for dy in (-9.0, 9.0)]
    if pattern == "chevroned":
        return [[_segment(-9, -13, 7, 0, 6.5)], [_segment(7, 0, -9, 13, 6.5)]]
    if pattern == "checkered":
        return [[_rect(-12, -12, 0, 0)], [_rect(0, 0, 12, 12)]]
    if pattern == "diamond":
        return [[np.array([[0, -14], [12, 0], [0, 14], [-12, 0]], float)]]
    raise ValueError(f"unknown mark pattern {pattern!r}")


_MARKS = {p: mark_polygons(p) for p in PATTERNS}
_BODY = _ellipse(0, 0, BODY_A, BODY_B, 64)
_TAIL = np.array([[-56, -7], [-96, -32], [-84, 0], [-96, 32], [-56, 7]], float)
_DORSAL = np.array([[18, -28], [-18, -44], [-32, -24]], float)
_VENTRAL = np.array([[2, 27], [-14, 40], [-22, 24]], float)
_BELLY = _ellipse(2, 17, 54, 13, 40)
_OUTLINE = np.concatenate([_BODY, _TAIL, _DORSAL, _VENTRAL])


def _affine(scale: float, angle: float, flip: bool, tx: float, ty: float) -> np.ndarray:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    fx = -1.0 if flip else 1.0
    return np.array([[c * fx, -s, tx], [s * fx, c, ty]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


# ----------------------------------------------------------------------------- painting
def _mask(shape: tuple[int, int], contours: Sequence[np.ndarray], origin=(0, 0)) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the even-odd union of ``contours`` (image coords)."""
    out = np.zeros(shape, np.uint8)
    pts = [np.round((c - origin) * _ONE).astype(np.int32) for c in contours]
    cv2.fillPoly(out, pts, 255, cv2.LINE_AA, _SHIFT)
    return out.astype(np.float32) * (1.0 / 255.0)


def _paint(img: np.ndarray, contours: Sequence[np.ndarray], colour, alpha: float = 1.0, clip: np.ndarray | None = None):
    """Composite ``colour`` over ``img`` where the contours are (optionally times ``clip``); returns coverage."""
    h, w = img.shape[:2]
    allpts = np.concatenate(contours)
    x0, y0 = np.floor(allpts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(allpts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    a = _mask((y1 - y0, x1 - x0), contours, (x0, y0))
    if clip is not None:
        a *= clip[y0:y1, x0:x1]
    a *= alpha
    region = img[y0:y1, x0:x1]
    region += (np.asarray(colour, np.float32) - region) * a[..., None]
    full = np.zeros((h, w), np.float32)
    full[y0:y1, x0:x1] = a
    return full


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _object_colours(rng: np.random.Generator):
    body = _hsv(rng.random(), rng.uniform(0.35, 0.9), rng.uniform(0.35, 0.95))
    fin = np.clip(body * rng.uniform(0.55, 0.8), 0, 1)
    belly = np.clip(body + (1 - body) * rng.uniform(0.35, 0.6), 0, 1)
    return body, fin, belly


def _mark_colour(rng: np.random.Generator, against: np.ndarray) -> np.ndarray:
    hue, sat = rng.random(), rng.uniform(0.2, 0.9)
    luminance = float(against @ np.array([0.299, 0.587, 0.114], np.float32))
    value = rng.uniform(0.02, 0.22) if luminance > 0.42 else rng.uniform(0.85, 1.0)
    return _hsv(hue, sat if luminance > 0.42 else sat * 0.4, value)


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(height: int, width: int):
    if (height, width) not in _GRIDS:
        if len(_GRIDS) > 64:
            _GRIDS.clear()
        _GRIDS[height, width] = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return _GRIDS[height, width]


def field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random colour field plus a faint oriented grating: float32 HxWx3 in [0, 1]."""
    g = int(rng.integers(2, 6))
    img = cv2.resize(rng.random((g, g, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    lo = rng.uniform(0.05, 0.45)
    img = lo + rng.uniform(0.25, 0.5) * np.clip(img, 0, 1)
    xx, yy = _grid(height, width)
    unit = math.sqrt(height * width) / 256
    theta, period, amp = rng.uniform(0, np.pi), rng.uniform(6, 40) * unit, rng.uniform(0.02, 0.1)
    wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * (2 * np.pi / period) + rng.uniform(0, 6.3))
    img = img + amp * wave[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    return np.ascontiguousarray(np.clip(img, 0, 1), dtype=np.float32)


def clutter(img: np.ndarray, rng: np.random.Generator, count: int, tint=None) -> None:
    """``count`` generic shapes (ellipses, strokes, triangles, rectangles) anywhere on ``img``.

    Colours are random, or ``tint(rng)`` when given (v2 paints look-alikes in the object's colours).
    """
    height, width = img.shape[:2]
    u = math.sqrt(height * width) / 256.0
    for _ in range(count):
        kind = int(rng.integers(0, 4))
        cx, cy = rng.uniform(-0.1, 1.1, 2) * (width, height)
        r = rng.uniform(6, 40) * u
        if kind == 0:
            contour = _ellipse(cx, cy, r, r * rng.uniform(0.3, 1), 24) - (cx, cy)
            ang = rng.uniform(0, np.pi)
            rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
            contour = contour @ rot.T + (cx, cy)
        elif kind == 1:
            contour = _segment(cx, cy, cx + rng.uniform(-2, 2) * r, cy + rng.uniform(-2, 2) * r, rng.uniform(1.5, 6) * u)
        elif kind == 2:
            contour = np.array([cx, cy]) + rng.uniform(-r, r, (3, 2))
        else:
            contour = _rect(cx - r, cy - r * 0.6, cx + r, cy + r * 0.6)
        _paint(img, [contour], rng.random(3) if tint is None else tint(rng), rng.uniform(0.4, 1.0))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Colour field + grating texture + clutter shapes + distractor fish parts + loose marks."""
    img = field(rng, size, size)
    u = size / 256.0
    clutter(img, rng, int(rng.integers(6, 15)))
    for _ in range(int(rng.integers(1, 4))):  # distractor fish parts, object colours, no class marks
        body, fin, belly = _object_colours(rng)
        m = _affine(rng.uniform(0.35, 0.9) * u, rng.uniform(-np.pi, np.pi), bool(rng.integers(0, 2)),
                    *rng.uniform(0, 1, 2) * size)
        part = int(rng.integers(0, 3))
        if part == 0:
            cov = _paint(img, [_apply(m, _BODY * (rng.uniform(0.5, 0.8), 1.0))], body)
            if cov is not None:
                _paint(img, [_apply(m, _BELLY * (0.6, 1.0))], belly, 1.0, clip=cov)
        elif part == 1:
            _paint(img, [_apply(m, _TAIL + (60, 0))], fin)
        else:
            _paint(img, [_apply(m, _DORSAL)], fin)
            _paint(img, [_apply(m, _VENTRAL + (0, -40))], fin)
    for _ in range(int(rng.integers(2, 6))):  # loose marks of every pattern, no class evidence
        pattern = PATTERNS[int(rng.integers(0, len(PATTERNS)))]
        m = _affine(rng.uniform(0.35, 1.1) * u, rng.uniform(-np.pi, np.pi), False, *rng.uniform(0, 1, 2) * size)
        colour = _mark_colour(rng, rng.random(3).astype(np.float32))
        for group in _MARKS[pattern]:
            _paint(img, [_apply(m, c) for c in group], colour)
    return img


def _pose(rng: np.random.Generator, size: int) -> np.ndarray:
    """Affine map from fish-local units to image pixels: 10-40 % box coverage, anywhere, any flip."""
    frac = rng.uniform(0.12, 0.36)
    local_w, local_h = np.ptp(_OUTLINE[:, 0]), np.ptp(_OUTLINE[:, 1])
    scale = size * math.sqrt(frac / (local_w * local_h))
    angle = math.radians(rng.uniform(-18, 18))
    flip = bool(rng.integers(0, 2))
    m = _affine(scale, angle, flip, 0.0, 0.0)
    pts = _apply(m, _OUTLINE)
    extent = pts.max(0) - pts.min(0)
    limit = size - 4.0
    if extent.max() > limit:  # shrink to fit
        scale *= limit / extent.max()
        m = _affine(scale, angle, flip, 0.0, 0.0)
        pts = _apply(m, _OUTLINE)
    lo = 2.0 - pts.min(0)
    hi = size - 2.0 - pts.max(0)
    tx, ty = rng.uniform(lo, np.maximum(hi, lo))
    m[:, 2] = (tx, ty)
    return m


def _draw_fish(img: np.ndarray, m: np.ndarray, spec: ClassSpec, obj_rng, mark_rng) -> np.ndarray:
    body_c, fin_c, belly_c = _object_colours(obj_rng)
    eye_c = _hsv(obj_rng.random(), 0.3, obj_rng.uniform(0.0, 0.15))
    # class-independent mark appearance: drawn the same way for every class
    mark_c = _mark_colour(mark_rng, body_c)
    jitter_xy = mark_rng.uniform(-2.5, 2.5, 2)
    jitter_angle = math.radians(mark_rng.uniform(-12, 12))
    jitter_scale = mark_rng.uniform(0.9, 1.1)

    tail = _paint(img, [_apply(m, _TAIL)], fin_c)
    fins = [_paint(img, [_apply(m, part)], fin_c) for part in (_DORSAL, _VENTRAL)]
    body = _paint(img, [_apply(m, _BODY)], body_c)
    _paint(img, [_apply(m, _BELLY)], belly_c, 0.85, clip=body)

    cx, cy = MARK_CENTRES[spec.position]
    local = _affine(jitter_scale * (0.75 if spec.position == "tail" else 1.0), jitter_angle, False,
                    cx + jitter_xy[0], cy + jitter_xy[1])
    host = tail if spec.position == "tail" else body
    for group in _MARKS[spec.pattern]:
        _paint(img, [_apply(m, _apply(local, c)) for c in group], mark_c, 1.0, clip=host)

    _paint(img, [_apply(m, _segment(40, -20, 44, 0, 2.5))], fin_c, 0.8, clip=body)  # gill line
    _paint(img, [_apply(m, _segment(44, 0, 40, 20, 2.5))], fin_c, 0.8, clip=body)
    _paint(img, [_apply(m, _circle(50, -8, 6.5, 20))], np.ones(3, np.float32), 1.0, clip=body)
    _paint(img, [_apply(m, _circle(51, -8, 3.5, 16))], eye_c, 1.0, clip=body)
    coverage = np.maximum.reduce([a for a in [tail, body, *fins] if a is not None])
    return coverage


def finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Illumination gradient and sensor noise over the whole picture (class-independent) -> uint8."""
    height, width = img.shape[:2]
    gain = cv2.resize(rng.uniform(0.85, 1.15, (3, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    img = img * gain[..., None]
    img += rng.normal(0, rng.uniform(0.01, 0.035), img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _streams(seed_key: int | Sequence[int]) -> list[np.random.Generator]:
    key = [int(seed_key)] if np.isscalar(seed_key) else [int(k) for k in seed_key]
    return [np.random.default_rng(s) for s in np.random.SeedSequence(key).spawn(4)]


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel-edge box ``(x1, y1, x2, y2)`` of ``mask >= 0.5``."""
    ys, xs = np.nonzero(mask >= 0.5)
    if xs.size == 0:
        raise ValueError("empty object mask")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def render_sample(spec: ClassSpec, seed_key: int | Sequence[int], size: int = 256) -> Sample:
    """One image. ``seed_key`` alone seeds background, pose, colours and mark jitter; ``spec`` only picks the mark."""
    bg_rng, obj_rng, mark_rng, finish_rng = _streams(seed_key)
    img = _background(bg_rng, size)
    m = _pose(obj_rng, size)
    mask = _draw_fish(img, m, spec, obj_rng, mark_rng)
    return Sample(finish(img, finish_rng), mask, tight_box(mask))


# ----------------------------------------------------------------------------- the tree
def _prepare(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER_FILE).is_file():
            raise ValueError(f"{root} exists and is not a synthetic set written by this tool; refusing to overwrite it")
        shutil.rmtree(root / "images", ignore_errors=True)
    (root / "images").mkdir(parents=True, exist_ok=True)


def write_cub_tree(
    out_dir,
    class_names: Sequence[str],
    train_per_class: int,
    test_per_class: int,
    render: Callable[[int, int], Sample],
    meta: dict,
    *,
    progress: bool = False,
) -> Path:
    """The CUB-200-2011-layout writer every synthetic version shares.

    Writes ``out_dir/CUB_200_2011/`` (images as JPEG, quality ``JPEG_QUALITY``;
    images.txt, classes.txt, image_class_labels.txt, train_test_split.txt,
    bounding_boxes.txt; ``meta`` as ``MARKER_FILE``) and returns that path.
    Image number n (0-based, in images.txt order: class by class, train images
    first) of class c is ``render(c, n)``.
    """
    if train_per_class < 1 or test_per_class < 0:
        raise ValueError(f"need train_per_class >= 1 and test_per_class >= 0, got {train_per_class}, {test_per_class}")
    root = Path(out_dir).expanduser().absolute() / "CUB_200_2011"
    _prepare(root)
    images, labels, split, boxes, classes = [], [], [], [], []
    total = len(class_names) * (train_per_class + test_per_class)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc="make-demo-data", file=sys.stderr)
    n = 0
    for c, name in enumerate(class_names):
        folder = f"{c + 1:03d}.{name}"
        classes.append(f"{c + 1} {folder}")
        (root / "images" / folder).mkdir(exist_ok=True)
        for k in range(train_per_class + test_per_class):
            sample = render(c, n)
            rel = f"{folder}/{name}_{k + 1:04d}.jpg"
            ok, data = cv2.imencode(".jpg", sample.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {rel}")
            (root / "images" / rel).write_bytes(data.tobytes())
            n += 1
            x1, y1, x2, y2 = sample.box
            images.append(f"{n} {rel}")
            labels.append(f"{n} {c + 1}")
            split.append(f"{n} {1 if k < train_per_class else 0}")
            boxes.append(f"{n} {x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f}")
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    for name, lines in (("images.txt", images), ("classes.txt", classes), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("bounding_boxes.txt", boxes)):
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    (root / MARKER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return root


def make_demo_data(
    out_dir,
    num_classes: int = 10,
    train_per_class: int = 60,
    test_per_class: int = 30,
    image_size: int = 256,
    seed: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Write the v1 set to ``out_dir/CUB_200_2011/`` and return that path (a root the ``cub`` reader accepts).

    Image number n (0-based, in images.txt order: class by class, train images
    first) is drawn from streams seeded by ``(seed, n)``.
    """
    specs = class_specs(num_classes)
    if not 64 <= image_size <= 2048:
        raise ValueError(f"image size must be between 64 and 2048 pixels, got {image_size}")
    meta = {"generator": "flrdf.data.synthetic", "version": 1, "seed": seed, "classes": num_classes,
            "train_per_class": train_per_class, "test_per_class": test_per_class, "image_size": image_size,
            "class_specs": [{"pattern": s.pattern, "position": s.position} for s in specs]}
    return write_cub_tree(out_dir, [s.name for s in specs], train_per_class, test_per_class,
                          lambda c, n: render_sample(specs[c], (seed, n), image_size), meta, progress=progress)


VERSIONS = (1, 2, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flrdf make-demo-data",
        description="Write the synthetic fine-grained set (CUB-200-2011 layout). Version 1: a mark pattern at a "
                    "position on a fish (the positional control); version 2: birds that differ only in the fine "
                    "appearance of wing and head, in clutter, at 256-384 px (see docs/SYNTHETIC.md).")
    parser.add_argument("--out", required=True, help="output folder (CUB_200_2011/ is created inside)")
    parser.add_argument("--version", type=int, default=1, choices=VERSIONS,
                        help="generator version (default 1); 3: version 2's birds, each image drawn from (seed, split, "
                             "class, k), so test images do not change with the other splits' counts")
    parser.add_argument("--classes", type=int, default=10,
                        help=f"number of classes, 2..{MAX_CLASSES} (v1) or 2..25 (v2, v3) (default 10)")
    parser.add_argument("--train-per-class", type=int, default=60, help="training images per class (default 60)")
    parser.add_argument("--test-per-class", type=int, default=30, help="test images per class (default 30)")
    parser.add_argument("--size", type=int, default=None,
                        help="v1: image side in pixels (default 256); v2/v3: the largest side, sides drawn per image "
                             "between 2/3 of it and it (default 384)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.version == 1:
            size = 256 if args.size is None else args.size
            root = make_demo_data(args.out, args.classes, args.train_per_class, args.test_per_class, size, args.seed,
                                  progress=True)
        else:
            from flrdf.data.synthetic_v2 import DEFAULT_MAX_SIDE, make_demo_data_v2, make_demo_data_v3

            size = DEFAULT_MAX_SIDE if args.size is None else args.size
            make = make_demo_data_v2 if args.version == 2 else make_demo_data_v3
            root = make(args.out, args.classes, args.train_per_class, args.test_per_class, size, args.seed,
                        progress=True)
    except (ValueError, OSError) as exc:
        print(f"make-demo-data: error: {exc}", file=sys.stderr)
        return 2
    total = args.classes * (args.train_per_class + args.test_per_class)
    print(f"wrote {total} images in {args.classes} classes to {root} (synthetic version {args.version})")
    print(f"read it with: python -m flrdf data-info --dataset cub --root {root}")
    return 0
