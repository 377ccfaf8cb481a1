"""Format-faithful test folders of the test-only anomaly benchmarks (layouts as in DESIGN.md section 7).

Each writer creates the folder exactly as the release unpacks (file names, formats, label encodings), with
random content: ellipse-shaped anomalies (some below the component size filters), void bands, and
deterministic per-seed output. Also deterministic synthetic score maps for metric tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

NORMAL, ANOMALY, VOID = 0, 1, 255


def random_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random RGB image (compresses like a photo, unlike white noise)."""
    small = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def random_label(rng: np.random.Generator, width: int, height: int, blobs: int = 3, void: bool = True,
                 tiny: bool = True) -> np.ndarray:
    """0 normal, 1 anomaly (ellipses; with ``tiny`` also a few-pixel component), 255 void (top band, a box)."""
    label = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(blobs):
        cy, cx = rng.uniform(0.35, 0.95) * height, rng.uniform(0.05, 0.95) * width
        ry, rx = rng.uniform(0.02, 0.12) * height, rng.uniform(0.02, 0.12) * width
        label[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = ANOMALY
    if tiny:
        y, x = int(rng.integers(height // 2, height - 3)), int(rng.integers(0, width - 3))
        label[y : y + 2, x : x + 3] = ANOMALY  # 6 px: below every GT size filter
    if void:
        label[: height // 4] = VOID
        y, x = int(rng.integers(height // 2, height - height // 8)), int(rng.integers(0, width - width // 8))
        label[y : y + height // 10, x : x + width // 10] = VOID
    return label


def save_image(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix.lower()]
    Image.fromarray(array).save(path, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return path


def smiyc_folder(root: Path, frames: Iterable[tuple[str, tuple[int, int], bool]], ext: str = ".jpg", seed: int = 0,
                 blobs: int = 3) -> Path:
    """``root/images/<fid><ext>`` and ``root/labels_masks/<fid>_labels_semantic.png`` (only when labelled).
    ``frames``: (fid, (width, height), labelled)."""
    rng = np.random.default_rng(seed)
    for fid, (width, height), labelled in frames:
        save_image(random_image(rng, width, height), root / "images" / f"{fid}{ext}")
        label = random_label(rng, width, height, blobs=blobs)
        if labelled:
            save_image(label, root / "labels_masks" / f"{fid}_labels_semantic.png")
    return root


def laf_fid(scene: str, seq: int, frame: int) -> str:
    return f"{scene}_{seq:06d}_{frame:06d}"


LAF_SCENES = ["01_Hanns_Klemm_Str_45", "02_Hanns_Klemm_Str_44", "10_Schlossberg_9", "15_Rechbergstr_Deckenpfronn"]


def laf_test_fids() -> list[str]:
    """1203 frame ids (the size of the real test split), including the known-object sequences."""
    fids = [laf_fid(scene, seq, 10 * k) for scene in LAF_SCENES for seq in range(10) for k in range(30)]
    return sorted(fids)[:1203] + [laf_fid("02_Hanns_Klemm_Str_44", 99, k) for k in range(3)]


def lost_and_found_folder(root: Path, split: str, fids: Sequence[str], size: tuple[int, int] = (64, 32),
                          ext: str = ".png", seed: int = 0, labels: bool = True, same_content: bool = False) -> Path:
    """``leftImg8bit/<split>/<scene>/<fid>_leftImg8bit.png`` and ``gtCoarse/<split>/<scene>/<fid>_gtCoarse_labelIds.png``
    with labelIds 0 (void: top third), 1 (free space) and obstacle ids 2..200. ``same_content``: every frame
    gets the first frame's file bytes (fast, for tests about frame lists only)."""
    rng = np.random.default_rng(seed)
    width, height = size
    first: dict[str, bytes] = {}
    for fid in fids:
        scene = fid.rsplit("_", 2)[0]
        image_path = root / "leftImg8bit" / split / scene / f"{fid}_leftImg8bit{ext}"
        label_path = root / "gtCoarse" / split / scene / f"{fid}_gtCoarse_labelIds.png"
        if same_content and first:
            image_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.parent.mkdir(parents=True, exist_ok=True)
            image_path.write_bytes(first["image"])
            label_path.write_bytes(first["label"])
            continue
        save_image(random_image(rng, width, height), image_path)
        if labels:
            ids = np.ones((height, width), np.uint8)
            ids[: height // 3] = 0
            obstacle = random_label(rng, width, height, blobs=2, void=False, tiny=False) == ANOMALY
            ids[obstacle & (ids == 1)] = rng.choice([2, 7, 33, 150, 200])
            save_image(ids, label_path)
            if same_content:
                first.update(image=image_path.read_bytes(), label=label_path.read_bytes())
    return root


def fishyscapes_folder(root: Path, fids: Iterable[str], size: tuple[int, int] = (64, 32), seed: int = 0) -> Path:
    """``labels/val/<fid>_fishy-labels.png`` with 0 / 1 / 255 (images come from a LostAndFound folder)."""
    rng = np.random.default_rng(seed)
    for fid in fids:
        save_image(random_label(rng, *size, blobs=2), root / "labels" / "val" / f"{fid}_fishy-labels.png")
    return root


def road_anomaly_folder(root: Path, names: Sequence[str], sizes: Sequence[tuple[int, int]], ext: str = ".jpg",
                        seed: int = 0) -> Path:
    """``frame_list.json`` (image file names), ``frames/<name><ext>``, ``frames/<name>.labels/labels_semantic.png``
    with 0 background, 2 anomaly (and some 1)."""
    rng = np.random.default_rng(seed)
    listed = []
    for name, (width, height) in zip(names, sizes):
        save_image(random_image(rng, width, height), root / "frames" / f"{name}{ext}")
        label = np.where(random_label(rng, width, height, void=False) == ANOMALY, 2, 0).astype(np.uint8)
        label[-2:, :4] = 1
        save_image(label, root / "frames" / f"{name}.labels" / "labels_semantic.png")
        listed.append(f"{name}{ext}")
    (root / "frame_list.json").write_text(json.dumps(listed))
    return root


def synthetic_scores(label: np.ndarray, seed: int, noise: float = 0.35, kind: str = "prob") -> np.ndarray:
    """A deterministic "noisy version of the label" score map (float32, label size, higher = anomalous):
    the anomaly mask blurred at 1/4 resolution plus Gaussian noise, bilinearly upsampled; ``kind`` shapes its
    range like a scorer: ``prob`` ~[0,1], ``msp`` = -max softmax (near -1 for normal pixels: collapses in
    float16), ``logit`` = -max logit (wide negative range), ``saturated`` (many exact 0/1 ties)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    height, width = label.shape
    mask = torch.from_numpy((label == ANOMALY).astype(np.float32))[None, None]
    low = F.interpolate(mask, size=(max(1, height // 4), max(1, width // 4)), mode="area")
    low = low + torch.from_numpy(rng.normal(0, noise, low.shape).astype(np.float32))
    x = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    if kind == "prob":
        return 1 / (1 + np.exp(-6 * (x - 0.5)))
    if kind == "msp":
        anomalous = 1 / (1 + np.exp(-8 * (x - 0.5)))
        return (-(1 - 0.5 * anomalous**3)).astype(np.float32)  # normal pixels: -0.9999999x
    if kind == "logit":
        return (-25 + 20 * x).astype(np.float32)
    if kind == "saturated":
        return np.clip(1.5 * x - 0.2, 0, 1).astype(np.float32)
    raise ValueError(kind)


def smiyc_anomaly_folder(root: Path) -> Path:
    """Two labelled validation frames of different sizes and one private test frame."""
    frames = [("validation0000", (160, 80), True), ("validation0001", (128, 72), True), ("test0000", (160, 80), False)]
    return smiyc_folder(root / "dataset_AnomalyTrack", frames, blobs=2)


def benchmark_roots(root: Path) -> dict[str, str]:
    """Format-faithful tiny folders of the five benchmarks, as environment variables of their data configs."""
    from hazardseg.data.anomaly_benchmarks import FISHY_LAF_VAL

    laf = root / "LostAndFound"
    lost_and_found_folder(laf, "test", laf_test_fids(), size=(32, 16), same_content=True)  # test_no_known
    lost_and_found_folder(laf, "train", list(FISHY_LAF_VAL), size=(32, 16), same_content=True)
    obstacle = [(f"{scene}_obj{i}_{i}", (96, 54), i % 2 == 0) for i, scene in enumerate(["gravel", "snowstorm1", "paving"])]
    return {
        "SMIYC_ANOMALY_ROOT": str(smiyc_anomaly_folder(root)),
        "SMIYC_OBSTACLE_ROOT": str(smiyc_folder(root / "dataset_ObstacleTrack", obstacle, ext=".webp", blobs=2)),
        "LAF_ROOT": str(laf),
        "FISHYSCAPES_LAF_ROOT": str(fishyscapes_folder(root / "fishyscapes", FISHY_LAF_VAL, size=(32, 16))),
        "ROAD_ANOMALY_ROOT": str(road_anomaly_folder(root / "RoadAnomaly", ["animals01", "cones02"], [(128, 72), (96, 54)])),
    }
