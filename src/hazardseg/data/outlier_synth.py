"""Procedural outlier objects for outlier exposure, from a family DISJOINT from the synthetic test anomalies.

The synthetic StreetHazards test anomalies (:func:`hazardseg.data.synthetic.render._draw_object`, ``kind ==
"anomaly"``) are solid, simply connected silhouettes (smooth radial blobs, four-legged animals, convex
polygons) painted with a *two-tone* pattern (stripes, checker or spots) in colours of
``ANOMALY_COLORS`` (six saturated hues: orange, yellow, lime, cyan, violet, magenta; S >= 0.75) or half
their brightness. Objects pasted into training images must come from elsewhere, otherwise a gain on
the synthetic test split would measure leakage, not generalisation. This family differs on each axis,
measurably (``tests/test_outliers.py::test_synthetic_family_is_disjoint_from_test_anomalies`` renders
both families and checks the descriptors below):

* **shape**: every silhouette has a hole, or several separate parts, or is thin / spiky (solidity =
  area / convex-hull area <= 0.45). Kinds: rings and polygonal frames, perforated plates, lattices and
  spoked wheels (holes); stars with deep spikes, crescents, glyph-like strokes, spirals (low solidity);
  clusters of debris (2-6 parts). The test anomalies are one part without holes with solidity >= 0.5.
  Holes and parts count when they cover >= 2% of the object's area (pixel-level specks are noise).
* **texture**: a *continuous* field (linear or radial gradient, concentric or warped sinusoidal bands,
  smooth value noise, or a blend of two), histogram-equalised so the brightness spreads uniformly over
  a range of >= 0.5 in HSV value (>= 127 grey levels), plus mild sensor-like noise. No object is
  flat or two-tone: two colour clusters of radius 20 (RGB) explain <= ~70% of its pixels, whereas they
  explain >= 90% of every test anomaly (two tones + noise).
* **colour**: either *saturated* (S in [0.5, 0.95]) with a hue at least ``HUE_MARGIN`` = 25 degrees
  away from every ``ANOMALY_COLORS`` hue (this leaves reds/pinks, greens and blues), or *muted*
  (S <= 0.4, any hue, incl. greys). "Palette-like" pixels (S >= 0.5, V >= 0.3, hue within 20 degrees of a
  palette hue) make up ~100% of every test anomaly and ~1% of these objects on average (at most ~15%:
  pixel noise on dark or near-threshold colours).

Diversity, because a model that learns to flag these should flag unseen objects (outlier exposure,
Hendrycks et al. ICLR 2019): nine shape kinds with random proportions, rotation and aspect ratio
(width / height in [0.4, 2.5]), five texture fields with random frequency / direction, any allowed hue,
saturation and brightness. Sizes are chosen when pasting.

Determinism: object ``i`` is a pure function of ``(seed, i)`` (its own ``numpy.random.default_rng``,
never a global RNG); which objects are pasted is drawn from torch's global RNG by the paste
transform. :class:`SyntheticOutliers` renders an object on first use and caches it (bounded LRU).
The shape guarantees are checked at the default rendering size (64 px on the longer side) and above.
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image, ImageDraw

from hazardseg.data.labels import ANOMALY_COLORS
from hazardseg.errors import ConfigError

KINDS = ("ring", "plate", "lattice", "wheel", "star", "crescent", "glyph", "spiral", "debris")
TEXTURES = ("linear", "radial", "concentric", "waves", "noise")
HUE_MARGIN = 25.0  # degrees between a saturated outlier hue and any test-anomaly palette hue
SATURATED = (0.5, 0.95)
MUTED_MAX_S = 0.4
ASPECT = (0.4, 2.5)
SUPERSAMPLE = 2  # draw silhouettes at 2x and downsample: anti-aliased (soft) alpha edges


def anomaly_palette_hues() -> list[float]:
    """Hues (degrees) of the synthetic test anomalies' palette."""
    return [colorsys.rgb_to_hsv(*(np.asarray(c, float) / 255))[0] * 360 for c in ANOMALY_COLORS]


@functools.lru_cache(maxsize=None)
def allowed_hue_arcs(margin: float = HUE_MARGIN) -> tuple[tuple[float, float], ...]:
    """Hue intervals [lo, hi) (degrees, lo < hi, within [0, 360)) at least ``margin`` from every palette hue."""
    grid = np.arange(0, 360, 0.5)
    ok = np.ones_like(grid, bool)
    for h in anomaly_palette_hues():
        ok &= np.abs((grid - h + 180) % 360 - 180) >= margin
    arcs, start = [], None
    for g, flag in zip(grid, ok):
        if flag and start is None:
            start = g
        if not flag and start is not None:
            arcs.append((start, g))
            start = None
    if start is not None:
        arcs.append((start, 360.0))
    return tuple((float(a), float(b)) for a, b in arcs)


def _rgb_of_hue(hue: float) -> np.ndarray:
    """The fully saturated, full-brightness colour of ``hue`` (degrees), as an RGB vector in [0, 1]."""
    return np.asarray(colorsys.hsv_to_rgb((hue % 360) / 360, 1.0, 1.0), np.float32)


class _Pen:
    """Draws in unit coordinates ([0,1]^2, y down) onto a supersampled mode-L canvas."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h * SUPERSAMPLE, w * SUPERSAMPLE
        self.im = Image.new("L", (self.w, self.h), 0)
        self.draw = ImageDraw.Draw(self.im)
        self.pad = 1.5 * SUPERSAMPLE

    def xy(self, pts) -> list[tuple[float, float]]:
        return [(self.pad + x * (self.w - 2 * self.pad), self.pad + y * (self.h - 2 * self.pad)) for x, y in pts]

    def px(self, frac: float) -> int:
        """A length given as a fraction of the shorter canvas side, in (supersampled) pixels."""
        return max(1, int(round(frac * min(self.w, self.h))))

    def polygon(self, pts, fill: int = 255) -> None:
        self.draw.polygon(self.xy(pts), fill=fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: int = 255) -> None:
        (x0, y0), (x1, y1) = self.xy([(cx - rx, cy - ry), (cx + rx, cy + ry)])
        self.draw.ellipse([x0, y0, x1, y1], fill=fill)

    def line(self, pts, width: float, fill: int = 255) -> None:
        self.line_px(self.xy(pts), self.px(width), fill)

    def line_px(self, pts, width: int, fill: int = 255) -> None:
        """Polyline in (supersampled) pixel coordinates with round joints and caps."""
        self.draw.line(pts, fill=fill, width=width, joint="curve")
        r = width / 2
        for x, y in (pts[0], pts[-1]):
            self.draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)

    def alpha(self) -> np.ndarray:
        return np.asarray(self.im.reduce(SUPERSAMPLE))


def _ngon(n: int, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(rot + 2 * math.pi * k / n), cy + r * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]


# ---------------------------------------------------------------------------------- shapes
def _ring(p: _Pen, rng: np.random.Generator) -> None:  # ellipse or polygon outline: one hole
    t = rng.uniform(0.4, 0.8)
    off = (1 - t) * 0.5 * 0.5 * rng.uniform(-1, 1, 2)  # off-centre hole, still inside
    if rng.random() < 0.5:
        p.ellipse(0.5, 0.5, 0.5, 0.5)
        p.ellipse(0.5 + off[0], 0.5 + off[1], 0.5 * t, 0.5 * t, fill=0)
    else:
        n, rot = int(rng.integers(3, 9)), rng.uniform(0, 2 * math.pi)
        p.polygon(_ngon(n, 0.5, 0.5, 0.5, rot))
        p.polygon(_ngon(n, 0.5 + off[0] * math.cos(math.pi / n), 0.5 + off[1] * math.cos(math.pi / n), 0.5 * t, rot), fill=0)


def _plate(p: _Pen, rng: np.random.Generator) -> None:  # convex plate perforated by 1-5 holes
    base = rng.integers(3)
    if base == 0:
        p.ellipse(0.5, 0.5, 0.5, 0.5)
        inner = 0.5
    elif base == 1:
        p.polygon([(0, 0), (1, 0), (1, 1), (0, 1)])
        inner = 0.5
    else:
        n = int(rng.integers(5, 9))
        p.polygon(_ngon(n, 0.5, 0.5, 0.5, rng.uniform(0, 2 * math.pi)))
        inner = 0.5 * math.cos(math.pi / n)
    for _ in range(rng.integers(1, 6)):
        r = rng.uniform(0.11, 0.18)  # >= ~2.5% of the plate's area each
        reach = max(inner - r - 0.06, 0.0)
        ang, dist = rng.uniform(0, 2 * math.pi), reach * math.sqrt(rng.random())
        cx, cy = 0.5 + dist * math.cos(ang), 0.5 + dist * math.sin(ang)
        if base == 1:  # square base: use the square, not the inscribed disc
            cx, cy = rng.uniform(r + 0.06, 1 - r - 0.06, 2)
        if rng.random() < 0.6:
            p.ellipse(cx, cy, r, r * rng.uniform(0.75, 1.0), fill=0)
        else:
            p.polygon(_ngon(int(rng.integers(4, 8)), cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=0)


def _lattice(p: _Pen, rng: np.random.Generator) -> None:  # frame with crossing bars: a grid of holes
    bar = rng.uniform(0.06, 0.1)
    p.polygon([(0, 0), (1, 0), (1, 1), (0, 1)])
    nx, ny = int(rng.integers(1, 3)), int(rng.integers(1, 3))  # <= 9 holes of >= ~4% of the area each
    xs = np.linspace(bar, 1 - bar, nx + 2)
    ys = np.linspace(bar, 1 - bar, ny + 2)
    for i in range(nx + 1):
        for j in range(ny + 1):
            x0, x1 = xs[i] + (bar / 2 if i else 0), xs[i + 1] - (bar / 2 if i < nx else 0)
            y0, y1 = ys[j] + (bar / 2 if j else 0), ys[j + 1] - (bar / 2 if j < ny else 0)
            if x1 > x0 and y1 > y0:
                p.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill=0)


def _wheel(p: _Pen, rng: np.random.Generator) -> None:  # rim + hub + 3-8 spokes
    rim = rng.uniform(0.06, 0.14)
    hub = rng.uniform(0.06, 0.14)
    p.ellipse(0.5, 0.5, 0.5, 0.5)
    p.ellipse(0.5, 0.5, 0.5 - rim, 0.5 - rim, fill=0)
    n, rot, width = int(rng.integers(3, 9)), rng.uniform(0, 2 * math.pi), rng.uniform(0.04, 0.08)
    for k in range(n):
        a = rot + 2 * math.pi * k / n
        p.line([(0.5, 0.5), (0.5 + 0.47 * math.cos(a), 0.5 + 0.47 * math.sin(a))], width)
    p.ellipse(0.5, 0.5, hub, hub)


def _star(p: _Pen, rng: np.random.Generator) -> None:  # deep spikes: solidity <= ~0.4
    n = int(rng.integers(5, 13))
    inner = 0.5 * rng.uniform(0.15, 0.28) * math.cos(math.pi / n)
    rot = rng.uniform(0, 2 * math.pi)
    pts = []
    for k in range(2 * n):
        r = 0.5 * rng.uniform(0.75, 1.0) if k % 2 == 0 else inner
        a = rot + math.pi * k / n
        pts.append((0.5 + r * math.cos(a), 0.5 + r * math.sin(a)))
    p.polygon(pts)


def _crescent(p: _Pen, rng: np.random.Generator) -> None:  # disc minus an offset disc that breaks through
    r2 = rng.uniform(0.85, 1.0)  # relative to the outer radius
    d = rng.uniform(max(1.02 - r2, 0.15), 0.3)  # d + r2 > 1: a crescent, not a ring; solidity <= ~0.4
    a = rng.uniform(0, 2 * math.pi)
    p.ellipse(0.5, 0.5, 0.5, 0.5)
    p.ellipse(0.5 + 0.5 * d * math.cos(a), 0.5 + 0.5 * d * math.sin(a), 0.5 * r2, 0.5 * r2, fill=0)


def _hull_area_perimeter(pts: np.ndarray) -> tuple[float, float]:
    """Area and perimeter of the convex hull of 2-D points (Andrew's monotone chain)."""
    pts = sorted(map(tuple, pts))
    if len(pts) < 3:
        return 0.0, 2 * math.dist(pts[0], pts[-1])

    def half(seq):
        out: list = []
        for q in seq:
            while len(out) >= 2 and (out[-1][0] - out[-2][0]) * (q[1] - out[-2][1]) - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0]) <= 0:
                out.pop()
            out.append(q)
        return out[:-1]

    hull = half(pts) + half(reversed(pts))
    area = 0.5 * abs(sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(hull, hull[1:] + hull[:1])))
    return area, sum(math.dist(a, b) for a, b in zip(hull, hull[1:] + hull[:1]))


def _glyph(p: _Pen, rng: np.random.Generator) -> None:  # 2-3 strokes with sharp turns (letter-like)
    """Resampled (deterministically, same rng) until an upper bound of its solidity is <= 0.4, else a spiral."""
    for _ in range(30):
        width = rng.uniform(0.05, 0.1)
        strokes = []
        for _ in range(rng.integers(2, 4)):
            x, y = rng.uniform(0.1, 0.9, 2)
            heading = rng.uniform(0, 2 * math.pi)
            pts = [(x, y)]
            for _ in range(rng.integers(2, 4)):
                heading += rng.choice([-1, 1]) * rng.uniform(math.radians(60), math.radians(150))
                step = rng.uniform(0.35, 0.6)
                x = float(np.clip(x + step * math.cos(heading), 0, 1))
                y = float(np.clip(y + step * math.sin(heading), 0, 1))
                pts.append((x, y))
            strokes.append(p.xy(pts))
        w = p.px(width)
        ink = sum(math.dist(a, b) for s in strokes for a, b in zip(s, s[1:])) * w + len(strokes) * math.pi * w * w / 4
        area, perimeter = _hull_area_perimeter(np.array([q for s in strokes for q in s]))
        if ink <= 0.4 * (area + perimeter * w / 2 + math.pi * w * w / 4):
            for s in strokes:
                p.line_px(s, w)
            return
    _spiral(p, rng)


def _spiral(p: _Pen, rng: np.random.Generator) -> None:  # 1.2-2.2 turns, arms well apart
    turns = rng.uniform(1.2, 2.2)
    r0 = rng.uniform(0.03, 0.1)
    spacing = (0.47 - r0) / turns
    width = rng.uniform(0.15, 0.3) * spacing
    phase, sense = rng.uniform(0, 2 * math.pi), rng.choice([-1, 1])
    t = np.linspace(0, 1, int(60 * turns))
    r = r0 + (0.47 - r0) * t
    a = phase + sense * 2 * math.pi * turns * t
    p.line(list(zip(0.5 + r * np.cos(a), 0.5 + r * np.sin(a))), width)


def _debris(p: _Pen, rng: np.random.Generator) -> None:  # 2-6 separate pieces in disjoint grid cells
    gx, gy = [(2, 1), (1, 2), (2, 2), (3, 1), (1, 3), (3, 2), (2, 3)][rng.integers(7)]
    cells = [(i, j) for i in range(gx) for j in range(gy)]
    keep = rng.permutation(len(cells))[: rng.integers(2, len(cells) + 1)]
    for c in keep:
        i, j = cells[c]
        cw, ch = 1 / gx, 1 / gy
        f = rng.uniform(0.5, 0.9)  # piece size within its cell (margins keep pieces apart)
        cx, cy = (i + 0.5) * cw, (j + 0.5) * ch
        rx, ry = 0.5 * f * cw, 0.5 * f * ch
        if rng.random() < 0.5:
            p.ellipse(cx, cy, rx, ry)
        else:
            n = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * math.pi, n))
            p.polygon([(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in ang])


SHAPES = {"ring": _ring, "plate": _plate, "lattice": _lattice, "wheel": _wheel, "star": _star,
          "crescent": _crescent, "glyph": _glyph, "spiral": _spiral, "debris": _debris}  # fmt: skip


# -------------------------------------------------------------------------------- textures
def _field(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = float(max(h, w))
    yy, xx = np.arange(h, dtype=np.float32)[:, None] / s, np.arange(w, dtype=np.float32)[None, :] / s
    theta = rng.uniform(0, 2 * math.pi)
    cx, cy = rng.uniform(-0.2, 1.2, 2)
    if kind == "linear":
        return np.broadcast_to(xx * math.cos(theta) + yy * math.sin(theta), (h, w))
    if kind == "radial":
        return np.hypot(xx - cx, yy - cy)
    if kind == "concentric":
        return np.sin(2 * math.pi * np.hypot(xx - cx, yy - cy) / rng.uniform(0.15, 0.5) + rng.uniform(0, 6.3))
    if kind == "waves":
        warp = rng.uniform(0.5, 3.0) * _value_noise(rng, h, w)
        return np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / rng.uniform(0.2, 0.6) + warp)
    return _value_noise(rng, h, w)


def _value_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cells = int(rng.integers(2, 7))
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC))


def _equalised(field: np.ndarray, where: np.ndarray | None = None, bins: int = 256) -> np.ndarray:
    """Map values through the CDF of ``field[where]`` (histogram equalisation): ~uniform on [-1, 1] over
    ``where`` (the object), same level sets, hence the same spatial pattern. 256 bins, not a sort: O(n)."""
    sel = field if where is None else field[where]
    lo, hi = (float(sel.min()), float(sel.max())) if sel.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(field.shape, np.float32)
    bin_of = np.clip(((field - lo) * (bins / (hi - lo))).astype(np.int32), 0, bins - 1)
    counts = np.bincount(bin_of[where] if where is not None else bin_of.ravel(), minlength=bins)
    centre_cdf = (np.cumsum(counts) - counts / 2) / sel.size  # mid-bin CDF: bins map to (0, 1)
    return (centre_cdf * 2 - 1).astype(np.float32)[bin_of]


def _normalised(field: np.ndarray) -> np.ndarray:
    lo, hi = float(field.min()), float(field.max())
    return np.zeros_like(field) if hi <= lo else (field - lo) / (hi - lo) * 2 - 1


def _texture(rng: np.random.Generator, inside: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 RGB: allowed hue/saturation, brightness following a continuous field equalised over
    the object's pixels ``inside`` (so every object, even a thin one, spans the full brightness range)."""
    h, w = inside.shape
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    field = _field(kind, rng, h, w)
    if rng.random() < 0.35:  # blend in a second field
        other = _field(TEXTURES[rng.integers(len(TEXTURES))], rng, h, w)
        field = _equalised(field, inside) + rng.uniform(0.3, 1.0) * _equalised(other, inside)
    field = _equalised(field, inside)
    if rng.random() < 0.5:  # saturated, hue away from the anomaly palette
        arcs = allowed_hue_arcs()
        lengths = np.array([b - a for a, b in arcs])
        k = rng.choice(len(arcs), p=lengths / lengths.sum())
        hue = rng.uniform(*arcs[k])
        sat = rng.uniform(*SATURATED)
        sat_field = np.clip(sat * (1 + 0.15 * _normalised(_value_noise(rng, h, w))), *SATURATED)
    else:  # muted: any hue, low saturation (greys included)
        hue = rng.uniform(0, 360)
        sat = rng.uniform(0, MUTED_MAX_S)
        sat_field = np.clip(sat * (1 + 0.25 * _normalised(_value_noise(rng, h, w))), 0, MUTED_MAX_S)
    amp = rng.uniform(0.25, 0.4)
    val = rng.uniform(0.05 + amp, 1 - amp) + amp * field
    # HSV -> RGB for one hue: rgb = V * (1 - S * (1 - pure_hue))
    rgb = (np.clip(val, 0, 1) * 255)[..., None] * (1 - sat_field[..., None] * (1 - _rgb_of_hue(hue)))
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * rng.uniform(2, 6) + 0.5  # sensor-like noise; +0.5 rounds
    return np.clip(rgb, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------- source
def render_outlier(seed: int, index: int, size: int = 96) -> tuple[np.ndarray, str]:
    """Object ``index`` of the family with ``seed``: (h, w, 4) uint8 RGBA cropped to its alpha, and its kind."""
    rng = np.random.default_rng([int(seed), int(index), 0x0071])
    kind = KINDS[rng.integers(len(KINDS))]
    aspect = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))  # width / height
    h, w = (size, max(8, round(size * aspect))) if aspect < 1 else (max(8, round(size / aspect)), size)
    pen = _Pen(h, w)
    SHAPES[kind](pen, rng)
    alpha = pen.alpha()
    rgb = _texture(rng, alpha >= 128)
    rows, cols = np.nonzero(alpha.any(1))[0], np.nonzero(alpha.any(0))[0]
    rgba = np.dstack([rgb, alpha])[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return np.ascontiguousarray(rgba), kind


class SyntheticOutliers:
    """Outlier source: ``num_objects`` procedural objects (see the module docstring), rendered on first
    use and kept in an LRU cache of ``cache_size`` (the defaults keep the whole bank: ~8 KiB per object
    at ``size=64``, 16 MiB per worker for 2048 objects; rendering one costs ~1-2.5 ms, a cached one ~0).

    ``source[i]`` -> (4, h, w) uint8 RGBA tensor, alpha = mask, cropped to the object; a pure function
    of ``(seed, i)``. The longer side of the rendering is ``size`` px (>= 64: smaller renderings blur thin
    parts together and break the shape guarantees; the paste transform resizes anyway).
    Use another ``seed`` for a disjoint set of objects of the same family (e.g. a validation proxy).
    """

    def __init__(self, seed: int = 0, num_objects: int = 2048, size: int = 64, cache_size: int = 2048):
        for key, val, lo in (("seed", seed, 0), ("num_objects", num_objects, 1), ("size", size, 64), ("cache_size", cache_size, 0)):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ConfigError(f"data.outliers.source.{key}={val!r}: expected an int >= {lo}")
        self.seed, self.num_objects, self.size, self.cache_size = seed, num_objects, size, cache_size
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return self.num_objects

    def __getitem__(self, index: int) -> torch.Tensor:
        index = int(index)
        if not 0 <= index < self.num_objects:
            raise IndexError(f"outlier index {index} out of range 0..{self.num_objects - 1}")
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        rgba, _ = render_outlier(self.seed, index, self.size)
        obj = torch.from_numpy(rgba).permute(2, 0, 1).contiguous()
        if self.cache_size:
            self._cache[index] = obj
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return obj

    def __getstate__(self) -> dict:  # spawned DataLoader workers: ship the parameters, not the cache
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return f"SyntheticOutliers(seed={self.seed}, num_objects={self.num_objects}, size={self.size})"
