"""Scene renderer of the synthetic StreetHazards (see :mod:`hazardseg.data.synthetic`): one road scene in
perspective as an RGB array and its raw StreetHazards label map (values 1..14)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from hazardseg.data.labels import ANOMALY_COLORS

# raw StreetHazards label values (1..14)
UNLABELED, BUILDING, FENCE, OTHER, PEDESTRIAN, POLE, ROAD_LINE, ROAD, SIDEWALK, VEGETATION, CAR, WALL, SIGN, ANOMALY = range(1, 15)


class _Canvas:
    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.rng, self.h, self.w = rng, h, w
        self.lab = np.full((h, w), UNLABELED, np.uint8)
        self.img = np.zeros((h, w, 3), np.float32)
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.hi = rng.standard_normal((h, w, 1), dtype=np.float32)  # fine grain (per pixel)
        self.lo = self._smooth_noise(8)  # blotchy low-frequency texture
        self.mid = self._smooth_noise(3)

    def _smooth_noise(self, cell: int) -> np.ndarray:
        gh, gw = self.h // cell + 2, self.w // cell + 2
        g = self.rng.standard_normal((gh, gw)).astype(np.float32)
        im = Image.fromarray(g).resize((gw * cell, gh * cell), Image.BILINEAR)
        return np.asarray(im)[: self.h, : self.w, None].copy()

    def paint(self, m: np.ndarray, label: int, color: Sequence[float], hi: float = 6.0, lo: float = 0.0, mid: float = 0.0,
              shade: np.ndarray | None = None) -> None:  # fmt: skip
        if not m.any():
            return
        col = np.asarray(color, np.float32)
        pix = col + hi * self.hi[m]
        if lo:
            pix = pix + lo * self.lo[m]
        if mid:
            pix = pix + mid * self.mid[m]
        if shade is not None:
            pix = pix * shade[m][:, None]
        self.img[m] = pix
        self.lab[m] = label

    def box(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        m = np.zeros((self.h, self.w), bool)
        a, b = max(0, int(round(y0))), min(self.h, int(round(y1)))
        c, d = max(0, int(round(x0))), min(self.w, int(round(x1)))
        if b > a and d > c:
            m[a:b, c:d] = True
        return m

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        return ((self.xx - cx) / rx) ** 2 + ((self.yy - cy) / ry) ** 2 <= 1.0

    def polygon(self, pts: Sequence[tuple[float, float]]) -> np.ndarray:
        im = Image.new("L", (self.w, self.h), 0)
        ImageDraw.Draw(im).polygon([(float(x), float(y)) for x, y in pts], fill=1)
        return np.asarray(im, dtype=bool)


def _jitter(rng: np.random.Generator, base: Sequence[float], std: float) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.normal(0, std, 3).astype(np.float32), 0, 255)


BUILDING_COLORS = [(150, 120, 100), (175, 160, 135), (120, 115, 115), (160, 95, 80), (195, 185, 165)]
CAR_COLORS = [(170, 30, 30), (30, 50, 140), (225, 225, 225), (25, 25, 28), (160, 162, 168), (40, 90, 50), (120, 100, 70)]
CLOTHES = [(40, 40, 60), (140, 30, 30), (30, 70, 130), (90, 90, 90), (200, 200, 190), (60, 90, 40), (110, 70, 40)]
OTHER_COLORS = [(70, 85, 70), (110, 90, 60), (95, 100, 110), (60, 60, 60), (130, 120, 100)]
SIGN_COLORS = [(200, 35, 35), (35, 70, 190), (225, 190, 35)]


def render_scene(rng: np.random.Generator, w: int, h: int, anomalies: bool) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: (H,W,3) uint8 RGB image and (H,W) uint8 raw labels (1..14)."""
    cv = _Canvas(rng, h, w)
    yy, xx = cv.yy, cv.xx
    yh = h * rng.uniform(0.36, 0.5)  # horizon
    xv = w * rng.uniform(0.38, 0.62)  # vanishing point
    depth = np.maximum(yy - yh, 0.0)  # 0 at the horizon
    dx = xx - xv
    adx = np.abs(dx)
    k_road = w * rng.uniform(0.32, 0.55) / (h - yh)
    k_side = k_road * rng.uniform(1.3, 1.75)

    # sky: vertical gradient, brighter to the horizon
    sky_top = _jitter(rng, (95, 135, 200), 20)
    sky_hor = _jitter(rng, (190, 200, 215), 15)
    t = np.clip(yy / max(yh, 1), 0, 1)[..., None]
    cv.img[:] = sky_top * (1 - t) + sky_hor * t + 3 * cv.hi
    if rng.random() < 0.5:  # clouds
        cloud = (cv.lo[..., 0] > 0.8) & (yy < yh)
        cv.img[cloud] = cv.img[cloud] * 0.5 + 115

    # facades along both sides: back layer (building / vegetation / open), then low walls / fences in front
    outside = adx > k_side * depth
    for side in (-1, 1):
        colmask = (dx * side) > 0
        pos = 0.0
        while pos < w:
            seg = rng.uniform(0.08, 0.35) * w * (0.4 + pos / w)
            a, b = pos, pos + seg
            pos = b
            in_seg = colmask & (adx >= a) & (adx < b)
            kind = rng.choice(3, p=[0.6, 0.3, 0.1])
            if kind == 0:  # building
                ktop = rng.uniform(0.25, 1.2)
                roof = yh - ktop * adx
                m = in_seg & outside & (yy > roof)
                base = _jitter(rng, BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))], 18)
                cv.paint(m, BUILDING, base, hi=5, lo=6)
                # windows: darker / bluish grid (still "building")
                px, py = rng.uniform(5, 11) * w / 320, rng.uniform(6, 12) * h / 180
                win = m & ((xx % px) < px * 0.5) & ((yy % py) < py * 0.55) & (yy > roof + py)
                cv.paint(win, BUILDING, base * rng.uniform(0.35, 0.6) + np.float32([0, 5, 20]), hi=4)
            elif kind == 1:  # trees / hedges: noisy crown
                ktop = rng.uniform(0.15, 0.6)
                roof = yh - ktop * adx - 6 * (h / 180) * cv.mid[..., 0] - 3 * cv.lo[..., 0]
                m = in_seg & outside & (yy > roof)
                cv.paint(m, VEGETATION, _jitter(rng, (65, 115, 45), 15), hi=12, mid=14)
            else:  # open: ground visible as grass/terrain below horizon
                m = in_seg & outside & (yy > yh)
                cv.paint(m, VEGETATION, _jitter(rng, (95, 130, 60), 12), hi=8, lo=10)
            if rng.random() < 0.35:  # low wall or fence in front
                kfront = rng.uniform(0.05, 0.18)
                m = in_seg & outside & (yy > yh - kfront * adx)
                if rng.random() < 0.5:
                    wall_col = _jitter(rng, (165, 158, 148), 15)
                    cv.paint(m, WALL, wall_col, hi=4, lo=4)
                    bh = max(2.0, 4 * h / 180)
                    cv.paint(m & ((yy % bh) < 0.8), WALL, wall_col * 0.8, hi=3)  # brick courses
                else:
                    pitch = max(2.0, rng.uniform(3, 7) * w / 320)
                    lattice = m & (((xx % pitch) < pitch * 0.35) | ((yy % (pitch * 1.5)) < pitch * 0.3))
                    cv.paint(lattice, FENCE, _jitter(rng, (125, 95, 65), 18), hi=6)

    # ground below horizon in the corridor: sidewalk, road, lines
    below = yy > yh
    side_m = below & ~outside & (adx > k_road * depth)
    side_col = _jitter(rng, (150, 146, 140), 12)
    cv.paint(side_m, SIDEWALK, side_col, hi=6, lo=4)
    tile = max(3.0, rng.uniform(6, 12) * w / 320)
    cv.paint(side_m & (((xx % tile) < 0.9) | ((yy % (tile * 0.6)) < 0.9)), SIDEWALK, side_col * 0.82, hi=4)
    road_m = below & (adx <= k_road * depth)
    cv.paint(road_m, ROAD, _jitter(rng, (92, 92, 98), 10), hi=7, lo=6)
    # lines: dashed centre + solid edges, width grows with depth
    lw = np.maximum(0.018 * k_road * depth, 0.45)
    line_col = (228, 228, 218) if rng.random() < 0.7 else (222, 190, 60)
    centre_off = rng.uniform(-0.15, 0.15)
    dash = np.sin(np.log1p(depth) * rng.uniform(9, 14) + rng.uniform(0, 6.28)) > 0
    centre = road_m & (np.abs(dx - centre_off * k_road * depth) < lw) & dash & (depth > 1.5)
    edges = road_m & (np.abs(adx - 0.93 * k_road * depth) < lw) & (depth > 1.5)
    cv.paint(centre | edges, ROAD_LINE, _jitter(rng, line_col, 8), hi=5)

    # objects, painted far to near
    objs: list[tuple[float, str, float]] = []
    for _ in range(rng.integers(1, 5)):
        objs.append((rng.uniform(0.12, 1.0), "car", rng.uniform(-0.75, 0.75)))
    for _ in range(rng.integers(0, 5)):
        objs.append((rng.uniform(0.12, 1.0), "ped", rng.uniform(1.08, 0.95 * k_side / k_road) * rng.choice([-1, 1])))
    for _ in range(rng.integers(1, 5)):
        objs.append((rng.uniform(0.1, 1.0), "pole", rng.uniform(1.05, 0.97 * k_side / k_road) * rng.choice([-1, 1])))
    for _ in range(rng.integers(0, 4)):
        objs.append((rng.uniform(0.12, 1.0), "other", rng.uniform(1.1, 0.97 * k_side / k_road) * rng.choice([-1, 1])))
    if anomalies:
        for _ in range(rng.integers(1, 4)):
            u = rng.uniform(-0.7, 0.7) if rng.random() < 0.8 else rng.uniform(1.1, 1.3) * rng.choice([-1, 1])
            objs.append((rng.uniform(0.3, 1.0), "anomaly", u))
    objs.sort(key=lambda o: o[0])
    for tdepth, kind, u in objs:
        d = tdepth * (h - yh)
        yg = yh + d  # ground contact row
        xg = xv + u * k_road * d
        mpp = k_road * d / 5.0  # pixels per metre (road half width ~ 5 m)
        _draw_object(cv, rng, kind, xg, yg, mpp)

    # lighting: global brightness, colour tint, lateral shading; then pixel noise
    light = rng.uniform(0.65, 1.25)
    tint = 1 + rng.normal(0, 0.06, 3).astype(np.float32)
    grad = 1 + rng.uniform(-0.2, 0.2) * (xx / w - 0.5)[..., None]
    out = cv.img * light * tint * grad + rng.normal(0, 2.5, (h, w, 3)).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8), cv.lab


def _draw_object(cv: _Canvas, rng: np.random.Generator, kind: str, xg: float, yg: float, m: float) -> None:
    if kind == "car":  # rear view: body, cabin with window, wheels, tail lights
        cw, ch = 1.8 * m * rng.uniform(0.9, 1.15), 1.45 * m * rng.uniform(0.9, 1.15)
        col = _jitter(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))], 12)
        x0, x1, y1 = xg - cw / 2, xg + cw / 2, yg
        body = cv.box(x0, y1 - 0.6 * ch, x1, y1 - 0.12 * ch)
        cabin = cv.polygon([(x0 + 0.12 * cw, y1 - 0.6 * ch), (x1 - 0.12 * cw, y1 - 0.6 * ch),
                            (x1 - 0.22 * cw, y1 - ch), (x0 + 0.22 * cw, y1 - ch)])  # fmt: skip
        cv.paint(body | cabin, CAR, col, hi=5, mid=4)
        cv.paint(cv.box(x0 + 0.2 * cw, y1 - 0.92 * ch, x1 - 0.2 * cw, y1 - 0.64 * ch), CAR, (45, 55, 70), hi=5)
        for wx in (x0 + 0.05 * cw, x1 - 0.25 * cw):
            cv.paint(cv.box(wx, y1 - 0.15 * ch, wx + 0.2 * cw, y1), CAR, (20, 20, 20), hi=3)
        for lx in (x0 + 0.03 * cw, x1 - 0.15 * cw):
            cv.paint(cv.box(lx, y1 - 0.5 * ch, lx + 0.12 * cw, y1 - 0.4 * ch), CAR, (200, 30, 25), hi=4)
    elif kind == "ped":
        ph = 1.75 * m * rng.uniform(0.85, 1.1)
        pw = 0.45 * m
        top = yg - ph
        head = cv.ellipse(xg, top + 0.07 * ph, 0.35 * pw, 0.07 * ph)
        torso = cv.box(xg - pw / 2, top + 0.13 * ph, xg + pw / 2, top + 0.55 * ph)
        sep = rng.uniform(0.0, 0.25) * pw
        legs = cv.box(xg - pw / 2 + sep * 0.2, top + 0.55 * ph, xg - 0.05 * pw, yg) | cv.box(xg + 0.05 * pw + sep, top + 0.55 * ph, xg + pw / 2 + sep, yg)
        cv.paint(torso, PEDESTRIAN, _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 15), hi=6)
        cv.paint(legs, PEDESTRIAN, _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 15), hi=6)
        cv.paint(head, PEDESTRIAN, _jitter(rng, (190, 150, 120), 25), hi=5)
    elif kind == "pole":
        ph = rng.uniform(4.5, 7.0) * m
        pw = max(0.8, 0.14 * m)
        cv.paint(cv.box(xg - pw / 2, yg - ph, xg + pw / 2, yg), POLE, _jitter(rng, (95, 95, 100), 20), hi=5)
        if rng.random() < 0.6:  # traffic sign on top: disc, triangle or rectangle
            s = rng.uniform(0.5, 0.8) * m
            cy = yg - ph + s * 0.6
            shape = rng.integers(3)
            if shape == 0:
                sm = cv.ellipse(xg, cy, s / 2, s / 2)
            elif shape == 1:
                sm = cv.polygon([(xg - s / 2, cy - s / 2), (xg + s / 2, cy - s / 2), (xg, cy + s / 2)])
            else:
                sm = cv.box(xg - s / 2, cy - s / 3, xg + s / 2, cy + s / 3)
            col = _jitter(rng, SIGN_COLORS[rng.integers(len(SIGN_COLORS))], 15)
            cv.paint(sm, SIGN, col, hi=5)
            inner = sm & cv.ellipse(xg, cy, s / 4, s / 4)
            cv.paint(inner, SIGN, (230, 230, 230) if rng.random() < 0.5 else col * 0.6, hi=4)
    elif kind == "other":  # bins, boxes, benches in muted colours
        col = _jitter(rng, OTHER_COLORS[rng.integers(len(OTHER_COLORS))], 12)
        sub = rng.integers(3)
        if sub == 0:  # bin
            bw, bh = 0.6 * m, 1.0 * m
            cv.paint(cv.box(xg - bw / 2, yg - bh, xg + bw / 2, yg), OTHER, col, hi=4, lo=3)
            cv.paint(cv.box(xg - bw * 0.6, yg - bh * 1.08, xg + bw * 0.6, yg - bh * 0.92), OTHER, col * 0.7, hi=4)
        elif sub == 1:  # stacked boxes
            bw = rng.uniform(0.5, 1.0) * m
            cv.paint(cv.box(xg - bw / 2, yg - bw, xg + bw / 2, yg), OTHER, col, hi=5)
            cv.paint(cv.box(xg - bw / 3, yg - 1.6 * bw, xg + bw / 3, yg - bw), OTHER, col * 0.85, hi=5)
        else:  # bench
            bw, bh = 1.6 * m, 0.5 * m
            cv.paint(cv.box(xg - bw / 2, yg - bh, xg + bw / 2, yg - 0.7 * bh), OTHER, col, hi=4)
            for lx in (xg - bw / 2, xg + bw / 2 - 0.1 * m):
                cv.paint(cv.box(lx, yg - 0.7 * bh, lx + max(0.6, 0.1 * m), yg), OTHER, col * 0.6, hi=3)
    elif kind == "anomaly":
        size = rng.uniform(0.8, 2.4) * m
        sub = rng.integers(3)
        if sub == 0:  # irregular blob
            n = 24
            ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
            r = np.ones(n)
            for k in (2, 3, 5):
                r += rng.uniform(0.05, 0.25) * np.sin(k * ang + rng.uniform(0, 6.28))
            cy = yg - size * 0.5
            mask = cv.polygon([(xg + size * 0.6 * ri * np.cos(a), cy + size * 0.5 * ri * np.sin(a)) for a, ri in zip(ang, r)])
        elif sub == 1:  # four-legged animal silhouette
            bl, bh = size, size * 0.4
            y_body = yg - bh * 1.3
            sgn = rng.choice([-1, 1])
            mask = cv.ellipse(xg, y_body, bl / 2, bh / 2)
            mask |= cv.ellipse(xg + sgn * bl * 0.55, y_body - bh * 0.5, bh * 0.4, bh * 0.35)  # head
            for lx in (-0.35, -0.2, 0.2, 0.35):
                mask |= cv.box(xg + lx * bl - bl * 0.04, y_body, xg + lx * bl + bl * 0.04, yg)
            mask |= cv.polygon([(xg - sgn * bl * 0.48, y_body - bh * 0.1), (xg - sgn * bl * 0.8, y_body - bh * 0.7),
                                (xg - sgn * bl * 0.75, y_body - bh * 0.8), (xg - sgn * bl * 0.45, y_body - bh * 0.3)])  # fmt: skip
        else:  # textured polygon
            n = rng.integers(3, 7)
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            cy = yg - size * 0.45
            mask = cv.polygon([(xg + size * 0.6 * np.cos(a), cy + size * 0.45 * np.sin(a)) for a in ang])
        ca = np.float32(ANOMALY_COLORS[rng.integers(len(ANOMALY_COLORS))])
        cb = np.float32(ANOMALY_COLORS[rng.integers(len(ANOMALY_COLORS))]) * 0.5
        period = max(2.0, size / rng.uniform(3, 6))
        pat = rng.integers(3)
        if pat == 0:  # stripes
            alt = ((cv.xx + cv.yy * rng.uniform(-1, 1)) % period) < period / 2
        elif pat == 1:  # checker
            alt = (((cv.xx // period) + (cv.yy // period)) % 2) == 0
        else:  # spots
            alt = cv.mid[..., 0] > 0.6
        cv.paint(mask & ~alt, ANOMALY, ca, hi=6)
        cv.paint(mask & alt, ANOMALY, cb, hi=6)


# --------------------------------------------------------------------------------------------
# writing the release format
