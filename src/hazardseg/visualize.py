"""Qualitative panels: Input | GT | Pred | Overlay | Confidence | Error | Anomaly, with per-image mIoU.

Plain numpy + PIL (no plotting library): panels are saved as PNGs in the run folder and logged to W&B.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from hazardseg.data.transforms import denormalize

COLUMNS = ("input", "ground truth", "prediction", "overlay", "confidence", "error", "anomaly score")
HEADER = 14  # pixels of caption strip above the panel


def palette(num_classes: int) -> np.ndarray:
    """Deterministic, well-separated colours (golden-ratio hues); index ``num_classes`` = anomaly (white)."""
    hues = (np.arange(num_classes) * 0.618034) % 1.0
    colours = [_hsv_to_rgb(h, 0.65, 0.95) for h in hues]
    return np.array(colours + [(255, 255, 255)], np.uint8)


def per_image_miou(pred: Tensor, target: Tensor, num_classes: int, valid: Tensor) -> float:
    """Mean IoU over classes present in this image's prediction or ground truth (valid pixels only)."""
    p, t = pred[valid], target[valid]
    ious = []
    for c in torch.unique(torch.cat([p, t])).tolist():
        if 0 <= c < num_classes:
            inter = ((p == c) & (t == c)).sum().item()
            union = ((p == c) | (t == c)).sum().item()
            ious.append(inter / union)
    return float(np.mean(ious)) if ious else float("nan")


def prediction_panel(
    image: Tensor, mask: Tensor, logits: Tensor, num_classes: int, name: str,
    ignore_index: int | None = None, anomaly_index: int | None = None, anomaly: Tensor | None = None,
) -> tuple[np.ndarray, float]:
    """One row of panels for one image; returns (uint8 HxWx3 array, per-image mIoU)."""
    colours = palette(num_classes)
    pred = logits.argmax(0)
    valid = torch.ones_like(mask, dtype=torch.bool)
    if ignore_index is not None:
        valid &= mask != ignore_index
    if anomaly_index is not None:
        valid &= mask != anomaly_index
    miou = per_image_miou(pred, mask, num_classes, valid)
    rgb = (denormalize(image.float()).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    gt = mask.clone()
    if anomaly_index is not None:
        gt[mask == anomaly_index] = num_classes
    gt_rgb = colours[gt.clamp(0, num_classes).numpy()]
    gt_rgb[~valid.numpy() & (gt != num_classes).numpy()] = 0
    pred_rgb = colours[pred.numpy()]
    overlay = (0.5 * rgb + 0.5 * pred_rgb).astype(np.uint8)
    confidence = _grey(torch.softmax(logits.float(), 0).max(0).values.numpy())
    error = np.zeros_like(rgb)
    error[((pred != mask) & valid).numpy()] = (255, 0, 0)
    columns = [rgb, gt_rgb, pred_rgb, overlay, confidence, error]
    if anomaly is not None:
        columns.append(_grey(_min_max(anomaly.float().numpy())))
    row = np.concatenate(columns, axis=1)
    return _caption(row, f"{name}  mIoU {100 * miou:.1f}%  |  " + " | ".join(COLUMNS[: len(columns)])), miou


def _min_max(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the finite values; +-inf (e.g. MSP's log(1 - p) = -inf) go to the ends."""
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return (np.clip(a, lo, hi) - lo) / max(hi - lo, 1e-12)


def _grey(values: np.ndarray) -> np.ndarray:
    g = (np.clip(values, 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _caption(row: np.ndarray, text: str) -> np.ndarray:
    canvas = Image.new("RGB", (row.shape[1], row.shape[0] + HEADER), (0, 0, 0))
    canvas.paste(Image.fromarray(row), (0, HEADER))
    ImageDraw.Draw(canvas).text((2, 1), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)
