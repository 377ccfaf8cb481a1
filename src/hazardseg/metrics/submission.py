"""SMIYC submission files: float16 score maps, one HDF5 file per frame.

Format (the benchmark's ``Evaluation.save_output`` / ``ChannelLoaderHDF5``): ``anomaly_p/<method>/<dataset>/<fid>.hdf5``
holding a dataset ``value``: the (H,W) score map as float16, higher = more anomalous, no [0, 1] range needed.
``<dataset>`` is the benchmark dataset the frame's metrics read it from (``AnomalyTrack-all``,
``ObstacleTrack-all``, ``LostAndFound-test``, ``LostAndFound-train``). Files are gzip-compressed with the shuffle
filter (standard HDF5 filters, readable by any h5py) and written atomically.

float16 keeps about 3 significant digits over +-65504, so two things can go wrong when a float32 score map is
cast: values beyond the range overflow to inf, and scores that differ only in the 4th+ significant digit
become equal (e.g. max-softmax scores of confident pixels, -0.9999 vs -0.99999, all become -1.0), which ties
pixels the metrics should rank. :class:`Float16Encoder` applies one **monotone** map to every frame of a run::

    encoded = float16(clip((score - offset) * scale, -F16_LIMIT, F16_LIMIT))

* ``rescale="auto"`` (default): the first frame decides. If casting it directly neither overflows nor
  collapses (see below), ``offset = 0, scale = 1`` (the maps are exported as they are). Otherwise ``offset`` =
  the frame's minimum score and ``scale`` = the power of two that brings its range into (2048, 4096]:
  shifting the bulk of the scores to 0, where float16 is densest, undoes the collapse (max-softmax becomes
  ``1 - p``), and a power-of-two scale is exact. The map is then frozen for the whole run, so scores of
  different frames stay comparable and the ranking of distinct float16 values is the ranking of the scores.
* ``rescale="none"``: plain cast (still clipped to +-F16_LIMIT); ``offset``/``scale`` given: that map.
* Every frame is checked: clipped pixels and collapsed frames are counted and warned about once per run
  (:meth:`Float16Encoder.report` goes into the results).

A frame *collapses* when, on an evenly strided sample of at most 65,536 pixels, more than ``COLLAPSE_SHARE``
(5 %) of the pixels fall into one float16 value that merges different float32 scores.

``F16_LIMIT = 32752`` (not 65504): it keeps ``vmax - vmin`` of any frame finite in float16, which the benchmark's
threshold computation needs. Non-finite scores: NaN raises, +-inf are clipped (counted).

The SMIYC-convention metrics (:mod:`hazardseg.metrics.smiyc`) are computed from exactly these float16 maps, so
they are the numbers the leaderboard shows for the exported files; thresholds they report are in the encoded
space (:meth:`Float16Encoder.decode` maps one back to the raw score).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hazardseg.errors import ConfigError
from hazardseg.io import atomic_path

F16_LIMIT = 32752.0
COLLAPSE_SHARE = 0.05
SAMPLE_PIXELS = 65536
TARGET_RANGE_EXP = 12  # scaled first-frame range lies in (2**11, 2**12]
RESCALE_MODES = ("auto", "none")


def _numpy(scores) -> np.ndarray:
    if isinstance(scores, Tensor):
        scores = scores.detach().cpu()
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()
        return scores.numpy()
    arr = np.asarray(scores)
    return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float32)


def _sample(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1)
    return flat[:: max(1, flat.size // SAMPLE_PIXELS)]


def collapsed_share(scores: np.ndarray) -> float:
    """Largest share of (sampled) pixels in one float16 value that merges different float32 scores."""
    sample = _sample(scores)
    values, counts = np.unique(sample[np.isfinite(sample)].astype(np.float32), return_counts=True)
    if values.size < 2:
        return 0.0
    halves = values.astype(np.float16)
    # values are sorted and the cast is monotone, so each float16 value is one contiguous run
    starts = np.flatnonzero(np.r_[True, halves[1:] != halves[:-1]])
    sizes = np.add.reduceat(counts, starts)
    merged = np.diff(np.r_[starts, values.size]) > 1
    return float(sizes[merged].max() / counts.sum()) if merged.any() else 0.0


class Float16Encoder:
    """Monotone float32 -> float16 map shared by all frames of one (dataset, scorer) run (module docstring).

    Under DDP every rank must use the same map: fit on rank 0 and broadcast :meth:`state_dict`, or set
    ``offset``/``scale`` explicitly.
    """

    def __init__(self, rescale: str = "auto", offset: float | None = None, scale: float | None = None):
        if rescale not in RESCALE_MODES:
            raise ConfigError(f"rescale={rescale!r}: expected one of {list(RESCALE_MODES)}")
        if (offset is None) != (scale is None):
            raise ConfigError("Float16Encoder: give both offset and scale (or neither)")
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"Float16Encoder: scale={scale} must be a finite positive number")
        self.rescale = rescale
        self.offset = None if offset is None else float(offset)
        self.scale = None if scale is None else float(scale)
        if rescale == "none" and self.offset is None:
            self.offset, self.scale = 0.0, 1.0
        self.frames = 0
        self.clipped_pixels = 0
        self.collapsed_frames = 0
        self.worst_collapse = 0.0
        self._warned: set[str] = set()

    @property
    def fitted(self) -> bool:
        return self.offset is not None

    def fit(self, scores) -> "Float16Encoder":
        """Choose offset/scale from one frame (``rescale="auto"``); see the module docstring."""
        x = _numpy(scores)
        finite = x[np.isfinite(x)]
        self.offset, self.scale = 0.0, 1.0
        if finite.size == 0:
            return self
        lo, hi = float(finite.min()), float(finite.max())
        if max(abs(lo), abs(hi)) <= F16_LIMIT and collapsed_share(finite) <= COLLAPSE_SHARE:
            return self
        span = hi - lo
        self.offset = lo
        if span > 0:
            self.scale = 2.0 ** (TARGET_RANGE_EXP - math.ceil(math.log2(span)))
        return self

    def encode(self, scores) -> np.ndarray:
        """float16 map of one frame (fits on the first frame when needed); counts clipping and collapse."""
        x = _numpy(scores)
        if np.isnan(x).any():
            raise ValueError("score map contains NaN; anomaly scores must be numbers")
        if not self.fitted:
            self.fit(x)
        # torch's elementwise arithmetic and float32 -> float16 conversion (vectorised, round to nearest even) give
        # numpy's bits in a tenth of its time (tested); the arithmetic is in the scores' dtype, as numpy's
        t = torch.from_numpy(x)
        y = t - torch.tensor(self.offset, dtype=t.dtype) if self.offset else t
        if self.scale != 1.0:
            y = y * torch.tensor(self.scale, dtype=t.dtype)
        low, high = torch.aminmax(y)
        if float(low) < -F16_LIMIT or float(high) > F16_LIMIT:
            clipped = int(torch.count_nonzero(y.abs() > F16_LIMIT))
            y = y.clamp(-F16_LIMIT, F16_LIMIT)
            self.clipped_pixels += clipped
            self._warn_once("clip", f"{clipped} pixels of a score map lie outside float16's range after the map "
                            f"(score - {self.offset:g}) * {self.scale:g} and were clipped to +-{F16_LIMIT:g}; they tie")
        y = y.numpy()
        share = collapsed_share(y)
        self.worst_collapse = max(self.worst_collapse, share)
        if share > COLLAPSE_SHARE:
            self.collapsed_frames += 1
            self._warn_once("collapse", f"float16 export merges distinct scores of {share:.0%} of a frame's pixels "
                            f"into one value (map (score - {self.offset:g}) * {self.scale:g}); SMIYC-convention metrics "
                            f"see these pixels as tied. Use rescale=auto or set offset/scale for this scorer")
        self.frames += 1
        # torch rounds float64 to float32 first (two roundings), numpy rounds it to float16 directly
        return torch.from_numpy(y).half().numpy() if y.dtype == np.float32 else y.astype(np.float16)

    def decode(self, value: float) -> float:
        """Encoded-space value (e.g. a threshold) back in raw score units."""
        return value / self.scale + self.offset

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    def state_dict(self) -> dict[str, Any]:
        return {"rescale": self.rescale, "offset": self.offset, "scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rescale, self.offset, self.scale = state["rescale"], state["offset"], state["scale"]

    def report(self) -> dict[str, Any]:
        return {
            "f16_offset": self.offset,
            "f16_scale": self.scale,
            "f16_frames": self.frames,
            "f16_clipped_pixels": self.clipped_pixels,
            "f16_collapsed_frames": self.collapsed_frames,
            "f16_worst_collapse_share": round(self.worst_collapse, 6),
        }


def submission_path(root: str | os.PathLike, method: str, dataset: str, fid: str) -> Path:
    """``<root>/anomaly_p/<method>/<dataset>/<fid>.hdf5`` (``root`` = the run folder)."""
    for what, value in (("method", method), ("dataset", dataset), ("frame id", fid)):
        if not value or "/" in value or value in (".", ".."):
            raise ConfigError(f"submission {what} {value!r} cannot be a path component")
    return Path(root) / "anomaly_p" / method / dataset / f"{fid}.hdf5"


def write_score_map(path: str | os.PathLike, value16: np.ndarray, compress: bool = True) -> Path:
    """Write one float16 map as HDF5 dataset ``value``, atomically.

    The file is built in memory and written by Python: HDF5's own writer crashes the process (segmentation
    fault) when the disk fills up mid-write, Python's raises an OSError that becomes one line naming the file."""
    import h5py

    if value16.dtype != np.float16 or value16.ndim != 2:
        raise ValueError(f"expected a (H,W) float16 map, got {value16.dtype} {value16.shape}")
    path = Path(path)
    options = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if compress else {}
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.create_dataset("value", data=value16, **options)
    with atomic_path(path) as tmp:
        tmp.write_bytes(image.getbuffer())
    return path


def read_score_map(path: str | os.PathLike) -> np.ndarray:
    """Read a submission file back (squeezed, as the benchmark does)."""
    import h5py

    with h5py.File(path, "r") as f:
        return np.squeeze(f["value"][()])
