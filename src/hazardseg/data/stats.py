"""Class-distribution report: pixel counts and fractions per class, per split.

``class_distribution`` accepts a :class:`~hazardseg.data.base.SegmentationDataset` (masks are decoded
alone at native resolution, no image decoding), a DataLoader / iterable of batches with a ``mask``
key, or an iterable of mask tensors/arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from hazardseg.data.dataset import SegmentationDataset
from hazardseg.errors import DataError

# Bump when the report's content changes: cached reports (keyed by it) are then recomputed.
DISTRIBUTION_VERSION = 1


def _masks(data: Any, max_items: int | None) -> Iterable[np.ndarray | torch.Tensor]:
    if isinstance(data, SegmentationDataset):
        n = len(data) if max_items is None else min(len(data), max_items)
        for i in range(n):
            try:
                mask = data.load_mask(i)
            except DataError as err:  # with skip_bad_samples an unreadable mask is skipped (and recorded) here too
                if not data.skip_bad_samples:
                    raise
                data.bad_samples[str(data.items[i].image)] = str(err)
                continue
            yield mask
        return
    for k, batch in enumerate(data):
        if max_items is not None and k >= max_items:
            return
        yield batch["mask"] if isinstance(batch, dict) else batch


def class_distribution(
    data: Any,
    num_classes: int,
    ignore_index: int | None = None,
    class_names: Sequence[str] | None = None,
    max_items: int | None = None,
) -> dict[str, Any]:
    """Pixel counts per class over all masks of ``data``.

    Returns ``{"counts": [num_classes ints], "fractions": [...], "total": labelled pixels counted,
    "ignored": pixels == ignore_index, "extra": {value: count} for values outside 0..num_classes-1
    (e.g. the StreetHazards anomaly 13), "per_class": {name: {"count", "fraction"}}, "images": n}``.
    Fractions are over all non-ignored pixels (classes + extra values).
    """
    counts = np.zeros(num_classes, np.int64)
    extra: dict[int, int] = {}
    ignored = 0
    images = 0
    for m in _masks(data, max_items):
        t = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m).reshape(-1).long()
        images += 1 if isinstance(data, SegmentationDataset) else (int(m.shape[0]) if getattr(m, "ndim", 0) == 3 else 1)
        if ignore_index is not None:
            keep = t != ignore_index
            ignored += int((~keep).sum())
            t = t[keep]
        inside = (t >= 0) & (t < num_classes)
        counts += torch.bincount(t[inside], minlength=num_classes).numpy()[:num_classes]
        if not bool(inside.all()):
            vals, cnt = torch.unique(t[~inside], return_counts=True)
            for v, c in zip(vals.tolist(), cnt.tolist()):
                extra[v] = extra.get(v, 0) + c
    total = int(counts.sum()) + sum(extra.values())
    fractions = (counts / total).tolist() if total else [0.0] * num_classes
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    return {
        "counts": counts.tolist(),
        "fractions": fractions,
        "total": total,
        "ignored": ignored,
        "extra": {int(k): {"count": v, "fraction": v / total if total else 0.0} for k, v in sorted(extra.items())},
        "per_class": {names[i]: {"count": int(counts[i]), "fraction": fractions[i]} for i in range(num_classes)},
        "images": images,
    }


def split_distribution(datamodule: Any, splits: Sequence[str] = ("train", "val", "test"), max_items: int | None = None) -> dict[str, Any]:
    """``{split: class_distribution(...)}`` for a SegmentationDataModule (native-resolution masks)."""
    out = {}
    for split in splits:
        ds = datamodule.dataset(split)
        rep = class_distribution(ds, datamodule.num_classes, datamodule.ignore_index, datamodule.class_names, max_items)
        if datamodule.anomaly_index is not None:
            rep["anomaly"] = rep["extra"].get(datamodule.anomaly_index, {"count": 0, "fraction": 0.0})
            rep["anomaly_index"] = datamodule.anomaly_index
        out[split] = rep
    return out


def format_distribution(report: dict[str, Any]) -> str:
    """Plain-text table (class rows x split columns of percentages) for a ``split_distribution`` report."""
    splits = list(report)
    names = list(next(iter(report.values()))["per_class"])
    extra_vals = sorted({v for r in report.values() for v in r["extra"]})
    anomaly = {str(r.get("anomaly_index")) for r in report.values()}  # str: JSON round-trips turn keys into str
    extra_labels = {v: f"anomaly ({v})" if str(v) in anomaly else f"value {v}" for v in extra_vals}
    width = max(len(n) for n in [*names, *extra_labels.values(), "class"]) + 2
    lines = ["class".ljust(width) + "".join(f"{s:>10}" for s in splits)]
    for n in names:
        lines.append(n.ljust(width) + "".join(f"{100 * report[s]['per_class'][n]['fraction']:9.2f}%" for s in splits))
    for v in extra_vals:
        lines.append(extra_labels[v].ljust(width) + "".join(f"{100 * report[s]['extra'].get(v, {'fraction': 0})['fraction']:9.2f}%" for s in splits))
    lines.append("pixels".ljust(width) + "".join(f"{report[s]['total']:>10}" for s in splits))
    return "\n".join(lines)
