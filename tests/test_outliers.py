"""Outlier pasting (hazardseg.data.outliers), the synthetic outlier family and the COCO cut-out command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from hazardseg.data.synthetic import render as scenes
from hazardseg.data.coco_outliers import EXCLUDE_PRESETS, main as coco_main, rle_counts_from_string, rle_to_mask
from hazardseg.data.outlier_synth import KINDS, allowed_hue_arcs, anomaly_palette_hues, render_outlier
from hazardseg.data.outliers import FolderOutliers, PasteOutliers, SyntheticOutliers, build_paste_transform
from hazardseg.data.transforms import OUTLIER_LABEL, build_eval_transform, build_train_transform
from hazardseg.errors import ConfigError, DataError

from conftest import TINY_DATA

ROAD, SIDEWALK, BUILDING = 7, 8, 1


def _sample(h: int = 64, w: int = 112, road_rows: slice | None = slice(40, 64), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.full((h, w), BUILDING, dtype=torch.int64)
    if road_rows is not None:
        mask[road_rows] = ROAD
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return {"image": tv_tensors.Image(image), "mask": tv_tensors.Mask(mask), "name": "x"}


def _paste(**kw) -> PasteOutliers:
    opts = dict(probability=1.0, count=(1, 3), scale=(0.1, 0.5), blend="hard")
    opts.update(kw)
    return PasteOutliers(SyntheticOutliers(seed=0, num_objects=64, size=64), **opts)


# ----------------------------------------------------------------------------- the transform
def test_paste_is_deterministic_under_torch_manual_seed():
    paste, sample = _paste(blend="alpha", on_labels=[ROAD]), _sample()
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(paste(sample))
    assert torch.equal(outs[0]["image"], outs[1]["image"]) and torch.equal(outs[0]["mask"], outs[1]["mask"])
    assert not torch.equal(outs[0]["image"], outs[2]["image"])
    # a fresh source (empty cache) gives the same result: objects depend only on (seed, index)
    paste2 = PasteOutliers(SyntheticOutliers(seed=0, num_objects=64, size=64), probability=1.0, count=(1, 3),
                           scale=(0.1, 0.5), blend="alpha", on_labels=[ROAD])  # fmt: skip
    torch.manual_seed(5)
    assert torch.equal(paste2(sample)["image"], outs[0]["image"])


def test_hard_paste_labels_pasted_pixels_and_changes_nothing_else():
    sample = _sample()
    for seed in range(10):
        torch.manual_seed(seed)
        out = _paste(blend="hard")(sample)
        assert isinstance(out["image"], tv_tensors.Image) and isinstance(out["mask"], tv_tensors.Mask)
        assert out["image"].dtype == torch.uint8 and out["mask"].dtype == torch.int64 and out["name"] == "x"
        labelled = out["mask"] == OUTLIER_LABEL
        changed = (out["image"] != sample["image"]).any(0)
        assert labelled.sum() > 20
        assert not (changed & ~labelled).any(), "hard blend changed pixels outside the labelled ones"
        assert torch.equal(out["mask"][~labelled], sample["mask"][~labelled])
        assert changed[labelled].float().mean() > 0.9  # the object really replaced the scene there
    assert not (sample["mask"] == OUTLIER_LABEL).any(), "the input sample was modified in place"


class _Disc:
    """A one-object source: an opaque grey disc filling a 32 x 32 RGBA canvas."""

    def __init__(self):
        yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
        alpha = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= 16**2).to(torch.uint8) * 255
        self.rgba = torch.cat([torch.full((3, 32, 32), 40, dtype=torch.uint8), alpha[None]])

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.rgba


def test_alpha_blend_labels_the_same_pixels_and_only_softens_the_edges():
    sample = _sample()
    for seed in range(5):
        out = {}
        for blend in ("hard", "alpha"):
            torch.manual_seed(seed)
            out[blend] = PasteOutliers(_Disc(), probability=1.0, count=(1, 2), scale=(0.2, 0.6), blend=blend)(sample)
        assert torch.equal(out["hard"]["mask"], out["alpha"]["mask"])  # same draws, same labels
        labelled = (out["alpha"]["mask"] == OUTLIER_LABEL)[None, None].float()
        near = torch.nn.functional.max_pool2d(labelled, 5, 1, 2)[0, 0].bool()  # within 2 px
        interior = (-torch.nn.functional.max_pool2d(-labelled, 5, 1, 2))[0, 0].bool()  # 2 px inside
        changed = (out["alpha"]["image"] != sample["image"]).any(0)
        assert not (changed & ~near).any(), "alpha blending changed pixels away from the object's edge"
        assert torch.equal(out["alpha"]["image"][:, interior], out["hard"]["image"][:, interior])
        assert (out["alpha"]["image"][:, interior] == 40).all()


def test_probability_zero_is_identity_and_count_zero_pastes_nothing():
    sample = _sample()
    for kw in ({"probability": 0.0}, {"count": 0}):
        for seed in range(5):
            torch.manual_seed(seed)
            out = _paste(**kw)(sample)
            assert torch.equal(out["image"], sample["image"]) and torch.equal(out["mask"], sample["mask"])


def test_placement_on_labels_stands_objects_on_those_pixels():
    road = slice(44, 52)
    sample = _sample(road_rows=road)
    bottoms = []
    for seed in range(40):
        torch.manual_seed(seed)
        out = PasteOutliers(_Disc(), probability=1.0, count=1, scale=(0.1, 0.3), on_labels=[ROAD, SIDEWALK])(sample)
        rows = (out["mask"] == OUTLIER_LABEL).any(1).nonzero()[:, 0]
        bottoms.append(int(rows.max()))
    # the object's bottom row is the anchor row (a road row), up to 1 px lost to the alpha threshold
    assert all(road.start - 1 <= b < road.stop for b in bottoms), bottoms
    # without such pixels: "skip" pastes nothing, "anywhere" still pastes
    bare = _sample(road_rows=None)
    torch.manual_seed(0)
    assert torch.equal(_paste(on_labels=[ROAD], fallback="skip")(bare)["mask"], bare["mask"])
    torch.manual_seed(0)
    assert (_paste(on_labels=[ROAD], fallback="anywhere")(bare)["mask"] == OUTLIER_LABEL).any()


def test_scale_is_object_height_over_image_height():
    lo, hi = 0.2, 0.45
    sample = _sample(h=80, w=200)
    heights = []
    paste = PasteOutliers(_Disc(), probability=1.0, count=1, scale=(lo, hi), blend="hard")
    for seed in range(80):
        torch.manual_seed(seed)
        out = paste(sample)
        rows = (out["mask"] == OUTLIER_LABEL).any(1).nonzero()[:, 0]
        heights.append((int(rows.max()) - int(rows.min()) + 1) / 80)
    tol = 2 / 80  # rounding + a row lost at each border by thresholding the resampled alpha at 0.5
    assert lo - tol <= min(heights) and max(heights) <= hi + 1 / 80, (min(heights), max(heights))
    assert min(heights) < lo + 0.05 and max(heights) > hi - 0.05, "the range is not covered"


def test_wide_objects_are_shrunk_to_fit_the_image():
    class Bar:  # one 4 x 40 opaque object (aspect 10)
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return torch.full((4, 4, 40), 255, dtype=torch.uint8)

    sample = _sample(h=64, w=64)
    torch.manual_seed(0)
    out = PasteOutliers(Bar(), probability=1.0, count=1, scale=(0.5, 0.5), blend="hard")(sample)
    cols = (out["mask"] == OUTLIER_LABEL).any(0)
    assert cols.all()  # full width, height reduced to keep the aspect ratio


def test_train_transform_pastes_after_geometry_and_before_color_jitter():
    paste = _paste()
    aug = {"scale": [0.75, 1.5], "crop": True, "hflip": True, "color_jitter": [0.3, 0.3, 0.3]}
    ops = list(build_train_transform([64, 112], aug, None, outliers=paste).transforms)
    kinds = [type(op).__name__ for op in ops]
    assert kinds.index("PasteOutliers") == kinds.index("RandomHorizontalFlip") + 1 == kinds.index("ColorJitter") - 1
    assert "PasteOutliers" not in [type(op).__name__ for op in build_eval_transform([64, 112]).transforms]
    assert "PasteOutliers" not in [type(op).__name__ for op in build_train_transform([64, 112], aug, None).transforms]


def test_paste_rejects_normalised_images():
    sample = _sample()
    sample["image"] = tv_tensors.Image(sample["image"].float() / 255)
    with pytest.raises(ConfigError, match="uint8"):
        _paste()(sample)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"probability": 1.5}, r"data\.outliers\.probability"),
        ({"count": [3, 1]}, r"data\.outliers\.count"),
        ({"scale": [0.0, 0.3]}, r"data\.outliers\.scale"),
        ({"scale": [0.2, 1.5]}, r"data\.outliers\.scale"),
        ({"on_labels": []}, r"data\.outliers\.on_labels"),
        ({"fallback": "nowhere"}, r"data\.outliers\.fallback"),
        ({"blend": "soft"}, r"data\.outliers\.blend"),
        ({"colour": 1}, r"unknown key"),
        ({"enabled": "yes"}, r"data\.outliers\.enabled"),
    ],
)
def test_config_errors_name_the_key(override, match):
    cfg = {"enabled": True, "source": {"_target_": "hazardseg.data.outliers.SyntheticOutliers", "num_objects": 8}}
    cfg.update(override)
    with pytest.raises(ConfigError, match=match):
        build_paste_transform(cfg)


def test_disabled_config_builds_no_transform():
    assert build_paste_transform(None) is None
    assert build_paste_transform({"enabled": False, "source": {"_target_": "does.not.Exist"}}) is None


# --------------------------------------------------------------------- wiring in the datamodule
def test_datamodule_pastes_into_train_samples_only(make_cfg):
    from hazardseg.config import instantiate

    cfg = make_cfg(TINY_DATA + ["data.outliers.enabled=true", "data.outliers.probability=1.0", "data.outliers.count=[2,3]"])
    dm = instantiate(cfg.data, key="data")
    assert isinstance(dm.outliers, PasteOutliers) and dm.outliers.on_labels == [ROAD, SIDEWALK]
    dm.setup()
    torch.manual_seed(0)
    train = dm.dataset("train", train_transform=True)
    assert all((train[i]["mask"] == OUTLIER_LABEL).any() for i in range(len(train)))
    for split in ("train", "val", "test"):  # eval transforms (val, test, scorer fitting) never paste
        ds = dm.dataset(split)
        assert not any((ds[i]["mask"] == OUTLIER_LABEL).any() for i in range(len(ds)))
    default = instantiate(make_cfg(TINY_DATA, run="off").data, key="data")
    assert default.outliers is None  # off unless a method switches it on


def test_enabled_folder_outliers_without_root_is_a_one_line_error(make_cfg, monkeypatch):
    from hazardseg.config import instantiate

    monkeypatch.delenv("HAZARDSEG_OUTLIERS", raising=False)
    cfg = make_cfg(["data=streethazards", "data.root=/nonexistent", "data.outliers.enabled=true"])
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.data, key="data")
    msg = str(err.value)
    assert "\n" not in msg
    for needle in ("data.outliers.root", "hazardseg.data.coco_outliers", "data/outliers=synthetic"):
        assert needle in msg


# ------------------------------------------------------------------------------ folder source
def _write_rgba(path: Path, h: int, w: int, pad: int = 0) -> None:
    arr = np.zeros((h + 2 * pad, w + 2 * pad, 4), np.uint8)
    arr[pad : pad + h, pad : pad + w] = (200, 30, 90, 255)
    Image.fromarray(arr, "RGBA").save(path)


def test_folder_source_loads_lazily_and_crops_transparent_borders(tmp_path):
    _write_rgba(tmp_path / "a.png", 10, 20, pad=3)
    _write_rgba(tmp_path / "b.png", 7, 5)
    src = FolderOutliers(tmp_path, cache_size=1)
    assert src._files is None  # nothing listed or decoded before use
    assert len(src) == 2 and src[0].shape == (4, 10, 20) and src[1].shape == (4, 7, 5)
    assert src[0].dtype == torch.uint8 and (src[0][3] == 255).all()
    (tmp_path / "manifest.json").write_text(json.dumps({"objects": [{"file": "b.png"}]}))
    assert len(FolderOutliers(tmp_path)) == 1  # the manifest, when present, lists the objects


def test_folder_source_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.outliers\.root is not set.*coco_outliers.*data/outliers=synthetic"):
        FolderOutliers(None).check()
    with pytest.raises(DataError, match="folder not found"):
        FolderOutliers(tmp_path / "missing").check()
    with pytest.raises(DataError, match="no PNG cut-outs"):
        FolderOutliers(tmp_path).check()
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png: outlier cut-out is a mode-RGB image; RGBA"):
        FolderOutliers(tmp_path)[0]
    Image.new("RGBA", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="fully transparent"):
        FolderOutliers(tmp_path)[0]


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_manifest_entry_outside_the_folder_follows_the_odgt_policy(make_cfg, tmp_path, how):
    # One policy for every file list: a manifest entry that leaves the cut-out folder is refused like an odgt
    # entry leaving its split folder, and the same key (data.allow_external_paths) lifts it.
    from hazardseg.config import instantiate

    cutouts, elsewhere = tmp_path / "cutouts", tmp_path / "elsewhere"
    cutouts.mkdir(), elsewhere.mkdir()
    _write_rgba(cutouts / "a.png", 6, 6)
    _write_rgba(elsewhere / "x.png", 6, 6)
    outside = "../elsewhere/x.png" if how == "relative" else str(elsewhere / "x.png")
    (cutouts / "manifest.json").write_text(json.dumps({"objects": [{"file": "a.png"}, {"file": outside}]}))
    overrides = TINY_DATA + ["data/outliers=folder", f"data.outliers.root={cutouts}", "data.outliers.enabled=true"]
    with pytest.raises(DataError) as err:
        instantiate(make_cfg(overrides).data, key="data")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{cutouts / 'manifest.json'}: entry 1 points outside {cutouts}")
    assert "data.allow_external_paths=true" in msg
    dm = instantiate(make_cfg(overrides + ["data.allow_external_paths=true"]).data, key="data")
    assert [p.name for p in dm.outliers.source.files] == ["a.png", "x.png"] and dm.outliers.source[1].shape == (4, 6, 6)


# ---------------------------------------------------------- synthetic family: disjointness
def _components_holes_solidity(mask: np.ndarray, min_share: float = 0.02) -> tuple[int, int, float]:
    """Parts and holes covering >= min_share of the object's area (8-/4-connected), and solidity."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull

    area = mask.sum()
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    parts = int((ndimage.sum(mask, lab, range(1, n + 1)) >= min_share * area).sum())
    bg, nb = ndimage.label(np.pad(~mask, 1, constant_values=True), structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    sizes = ndimage.sum(np.ones_like(bg), bg, range(1, nb + 1))
    holes = sum(1 for i, s in enumerate(sizes, 1) if i != bg[0, 0] and s >= min_share * area)
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    return parts, holes, float(area / ConvexHull(corners).volume)


def _two_tone_share(pix: np.ndarray, radius: float = 20.0) -> float:
    """Share of pixels within ``radius`` (RGB) of one of two k-means colours: ~1 for two-tone + noise."""
    x = pix.astype(np.float64)
    centres = np.stack([x[x.sum(1).argmin()], x[x.sum(1).argmax()]])
    for _ in range(8):
        nearest = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack([x[nearest == k].mean(0) if (nearest == k).any() else centres[k] for k in range(2)])
    return float((np.sqrt(((x[:, None] - centres[None]) ** 2).sum(-1).min(1)) <= radius).mean())


def _palette_like_share(pix: np.ndarray, tol: float = 20.0) -> float:
    """Share of pixels with S >= 0.5, V >= 0.3 and a hue within ``tol`` degrees of an anomaly palette hue."""
    p = pix.astype(np.float64) / 255
    mx, mn = p.max(1), p.min(1)
    d = np.maximum(mx - mn, 1e-9)
    s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-9), 0)
    r, g, b = p.T
    hue = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 60
    dist = np.abs((hue[:, None] - np.array(anomaly_palette_hues())[None] + 180) % 360 - 180).min(1)
    return float(((s >= 0.5) & (mx >= 0.3) & (dist <= tol)).mean())


def _test_anomaly(seed: int, m: float, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic *test* anomaly exactly as scenes draw it, alone on a canvas: (rgb, mask)."""
    rng = np.random.default_rng([seed, 99])
    canvas = scenes._Canvas(rng, n, n)
    scenes._draw_object(canvas, rng, "anomaly", n / 2, n * 0.75, m)
    return np.clip(canvas.img, 0, 255).astype(np.uint8), canvas.lab == scenes.ANOMALY


def _descriptors(rgb: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    parts, holes, solidity = _components_holes_solidity(mask)
    pix = rgb[mask]
    return {"parts": parts, "holes": holes, "solidity": solidity, "two_tone": _two_tone_share(pix),
            "palette": _palette_like_share(pix)}  # fmt: skip


def test_synthetic_family_is_disjoint_from_test_anomalies():
    """The pasted family must not overlap the synthetic test anomalies (module docstring of outlier_synth):
    shape (holes / parts / solidity), texture (two-tone share) and colour (palette-like share)."""
    anomalies = []
    for seed in range(100):
        rgb, mask = _test_anomaly(seed, m=(25.0, 40.0)[seed % 2])
        if mask.sum() >= 300:  # descriptors of a handful of pixels are noise
            anomalies.append(_descriptors(rgb, mask))
    assert len(anomalies) > 80
    ours, kinds = [], []
    for i in range(225):
        rgba, kind = render_outlier(0, i, 64)
        ours.append(_descriptors(rgba[..., :3], rgba[..., 3] >= 128))
        kinds.append(kind)

    def odd_shape(d):  # holes, several parts, or thin / spiky
        return d["holes"] >= 1 or d["parts"] >= 2 or d["solidity"] <= 0.45

    # shape: test anomalies are one solid, compact part; every outlier is holed, split or thin/spiky
    assert not any(odd_shape(d) for d in anomalies)
    assert min(d["solidity"] for d in anomalies) >= 0.48
    assert all(odd_shape(d) for d in ours)
    # texture: anomalies are two tones (+ noise); outliers are continuous fields spanning a wide range
    assert min(d["two_tone"] for d in anomalies) >= 0.85
    assert max(d["two_tone"] for d in ours) <= 0.75
    # colour: anomalies are palette colours; outliers avoid the palette's hues or are muted
    assert min(d["palette"] for d in anomalies) >= 0.9
    assert max(d["palette"] for d in ours) <= 0.25
    assert np.mean([d["palette"] for d in ours]) <= 0.05
    # ... and still diverse: every kind, aspect ratios and colours across the allowed range
    assert set(kinds) == set(KINDS)


def test_synthetic_outliers_are_diverse_and_pure_functions_of_seed_and_index():
    objs = [render_outlier(0, i, 64)[0] for i in range(200)]
    aspects = [o.shape[1] / o.shape[0] for o in objs]
    assert min(aspects) < 0.6 and max(aspects) > 1.8
    hsv = [np.asarray(Image.fromarray(o[..., :3]).convert("HSV"))[o[..., 3] >= 128] for o in objs]
    hues = np.array([np.median(h[:, 0]) * 360 / 255 for h in hsv if np.median(h[:, 1]) >= 128])  # saturated ones
    arcs = allowed_hue_arcs()
    arcs_hit = {next(k for k, (a, b) in enumerate(arcs) if a - 3 <= hue <= b + 3) for hue in hues}
    assert len(arcs_hit) >= 3, "saturated outliers cover reds, greens and blues"
    assert sum(np.median(h[:, 1]) < 110 for h in hsv) > 40, "muted outliers exist"
    spread = [np.percentile(h[:, 2], 95) - np.percentile(h[:, 2], 5) for h in hsv]
    assert min(spread) >= 50, "every outlier has a wide brightness range (no flat objects)"
    # tight crops, deterministic, seed-dependent
    for o in objs[:20]:
        a = o[..., 3]
        assert a[0].any() and a[-1].any() and a[:, 0].any() and a[:, -1].any()
    src = SyntheticOutliers(seed=0, num_objects=200, size=64, cache_size=0)
    assert np.array_equal(src[7].permute(1, 2, 0).numpy(), objs[7])
    assert not np.array_equal(SyntheticOutliers(seed=1, size=64)[7].numpy(), src[7].numpy())
    with pytest.raises(ConfigError, match=r"data\.outliers\.source\.num_objects"):
        SyntheticOutliers(num_objects=0)


# ----------------------------------------------------------------------------- COCO command
def _rle_string_from_counts(counts: list[int]) -> str:
    """pycocotools ``rleToString`` (the encoder matching ``rleFrString``), for the round trip."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _counts_of(mask: np.ndarray) -> list[int]:
    """COCO RLE counts of a mask: column-major runs, starting with a (possibly empty) run of zeros."""
    flat = mask.T.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return ([0] if flat[0] else []) + runs


def test_rle_decoding_column_major_and_compressed():
    m = rle_to_mask({"counts": [1, 2, 3], "size": [2, 3]}, 2, 3)
    assert m.tolist() == [[False, True, False], [True, False, False]]
    rng = np.random.default_rng(0)
    mask = rng.random((13, 17)) < 0.3
    counts = _counts_of(mask)
    assert sum(counts) == mask.size
    assert rle_counts_from_string(_rle_string_from_counts(counts)) == counts
    assert np.array_equal(rle_to_mask({"counts": _rle_string_from_counts(counts), "size": [13, 17]}, 13, 17), mask)


@pytest.fixture
def tiny_coco(tmp_path) -> Path:
    """4 images: (1) cow + bottle polygons, a crowd sheep RLE and a tiny kite; (2) a car -> excluded for
    both presets; (3) a chair -> excluded for streethazards only; (4) too small an image."""
    root = tmp_path / "coco"
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    cats = [{"id": 3, "name": "car"}, {"id": 20, "name": "sheep"}, {"id": 21, "name": "cow"}, {"id": 38, "name": "kite"},
            {"id": 44, "name": "bottle"}, {"id": 62, "name": "chair"}]  # fmt: skip
    for image_id, (w, h) in {1: (80, 60), 2: (80, 60), 3: (70, 64), 4: (30, 20)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "train2017" / f"{image_id:012d}.jpg", quality=95)
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": w, "height": h})

    def poly(aid, iid, cid, pts):
        anns.append({"id": aid, "image_id": iid, "category_id": cid, "iscrowd": 0, "segmentation": [pts], "area": 0, "bbox": [0, 0, 0, 0]})

    poly(101, 1, 21, [10, 10, 40, 10, 40, 30, 10, 30])  # cow: 31 x 21 rectangle (outline included)
    poly(102, 1, 44, [50, 5, 70, 25, 50, 45])  # bottle: triangle
    poly(103, 1, 38, [2, 50, 5, 50, 5, 53])  # kite: tiny
    crowd = np.zeros((60, 80), bool)
    crowd[40:55, 20:45] = True
    anns.append({"id": 104, "image_id": 1, "category_id": 20, "iscrowd": 1, "area": 0, "bbox": [0, 0, 0, 0],
                 "segmentation": {"counts": _counts_of(crowd), "size": [60, 80]}})  # fmt: skip
    poly(201, 2, 3, [10, 10, 50, 10, 50, 40])
    poly(202, 2, 38, [60, 10, 75, 10, 75, 40, 60, 40])
    poly(301, 3, 62, [5, 5, 30, 5, 30, 30, 5, 30])
    poly(302, 3, 38, [40, 30, 65, 30, 65, 60, 40, 60])
    poly(401, 4, 21, [2, 2, 20, 2, 20, 15, 2, 15])
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def _run_coco(root: Path, out: Path, *extra: str) -> dict:
    args = ["--coco-root", str(root), "--annotations", "instances_train2017.json", "--out", str(out),
            "--min-image-size", "32", "--min-area", "50", *extra]  # fmt: skip
    assert coco_main(args) == 0
    return json.loads((out / "manifest.json").read_text())


def test_coco_command_builds_rgba_cutouts_excluding_overlapping_categories(tiny_coco, tmp_path):
    out = tmp_path / "sh"
    manifest = _run_coco(tiny_coco, out, "--exclude", "streethazards")
    objs = {o["annotation_id"]: o for o in manifest["objects"]}
    # image 2 (car) and image 3 (chair) are dropped whole, image 4 is too small, the kite is < 50 px
    assert sorted(objs) == [101, 102, 104]
    assert {"car", "chair", "person"} <= set(EXCLUDE_PRESETS["streethazards"])
    assert manifest["excluded_categories"] == ["car", "chair"]  # the presets' names present in this JSON
    assert manifest["stats"]["images_excluded"] == 2 and manifest["stats"]["images_too_small"] == 1
    cow = objs[101]
    assert cow["category"] == "cow" and cow["image_id"] == 1 and cow["area"] == 31 * 21 and cow["bbox"] == [10, 10, 31, 21]
    assert objs[104]["iscrowd"] == 1 and objs[104]["area"] == 15 * 25  # crowd RLE kept (Meta-OoD's choice)
    for o in objs.values():
        with Image.open(out / o["file"]) as im:
            assert im.mode == "RGBA" and im.size == (o["bbox"][2], o["bbox"][3])
            alpha = np.asarray(im)[..., 3]
        assert set(np.unique(alpha)) <= {0, 255} and int((alpha == 255).sum()) == o["area"]
    assert not list(out.glob(".*"))  # no temporary files left
    src = FolderOutliers(out)  # the folder is a ready outlier source
    assert len(src) == 3 and src[0].shape[0] == 4


def test_coco_command_presets_crowd_and_limits(tiny_coco, tmp_path):
    city = _run_coco(tiny_coco, tmp_path / "cs", "--exclude", "cityscapes")
    assert sorted(o["annotation_id"] for o in city["objects"]) == [101, 102, 104, 301, 302]  # chair kept
    no_crowd = _run_coco(tiny_coco, tmp_path / "nc", "--exclude", "cityscapes", "--skip-crowd", "--exclude", "chair")
    assert sorted(o["annotation_id"] for o in no_crowd["objects"]) == [101, 102]
    assert no_crowd["crowd"] == "skipped" and no_crowd["stats"]["crowd_skipped"] == 1
    one = _run_coco(tiny_coco, tmp_path / "one", "--exclude", "none", "--max-objects", "1")
    assert len(one["objects"]) == 1 and len(list((tmp_path / "one").glob("*.png"))) == 1
    assert coco_main(["--coco-root", str(tiny_coco), "--annotations", "instances_train2017.json",
                      "--out", str(tmp_path / "bad"), "--exclude", "unicorn"]) == 2  # fmt: skip


@pytest.mark.parametrize("section, index, key, value", [
    ("annotations", 2, "image_id", "abc"), ("annotations", 0, "id", 101.5), ("categories", 1, "id", None),
    ("images", 3, "height", "60"),
])
def test_coco_command_non_integer_id_is_one_line(tiny_coco, tmp_path, capsys, section, index, key, value):
    ann = tiny_coco / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    data[section][index][key] = value
    ann.write_text(json.dumps(data))
    code = coco_main(["--coco-root", str(tiny_coco), "--annotations", "instances_train2017.json",
                      "--out", str(tmp_path / "out"), "--exclude", "none"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"{section}[{index}].{key}={value!r} is not an integer" in err[0] and str(ann) in err[0]
    assert not list((tmp_path / "out").glob("*.png"))  # refused before writing any cut-out
