"""Score one test-only benchmark for one scorer as its leaderboard does, in bounded memory.

:class:`BenchmarkEvaluator` is the building block the evaluation loop drives, one instance per (dataset, scorer):

1. ``add(fid, group, scores, label)`` per frame, with the score map already at the label's size
   (:func:`upsample_scores`: bilinear, as the benchmark resizes smaller maps). The map is encoded to float16
   (:class:`~hazardseg.metrics.submission.Float16Encoder`); with ``submission=True`` it is written as the
   leaderboard file ``<run_dir>/anomaly_p/<method>/<group>/<fid>.hdf5``. Labelled frames update the SMIYC
   pixel metric from that float16 map and the pooled exact metric (:class:`~hazardseg.metrics.AnomalyMetrics`,
   sklearn-equal, void excluded) from the float32 map. Unlabelled frames (private test splits) only get the file.
2. ``compute()``: the pixel curve gives the best-F1 threshold; then a second pass reads the float16 maps of the
   labelled frames back from disk (the submission files, or uncompressed scratch files when ``submission=False``,
   deleted afterwards) and accumulates the component metrics at that threshold.

Memory: per labelled frame ~18 KB of pixel-curve state and its label zlib-compressed (a few KB to tens of
KB at 2048x1024), component statistics (3 floats per component), plus the 142 MiB histogram state of the pooled
metric; no score map is held beyond the frame being added. Disk until ``compute()``: with ``submission=True``
the submission files themselves (gzip, one per frame); otherwise one scratch ``.npy`` per labelled frame
holding only its ROI (non-void) float16 values, 2 bytes per ROI pixel (at most 4 MiB at 2048x1024).

Under DDP each rank adds its own frames; ``compute()`` must be called on every rank (the torchmetrics states
are gathered, so all ranks get the same threshold and numbers), and the encoder must be shared (see
:class:`~hazardseg.metrics.submission.Float16Encoder`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hazardseg.data.labels import IGNORE_LABEL as VOID  # the benchmarks' void value (SMIYC convention)
from hazardseg.maps import resize
from hazardseg.metrics.anomaly import AnomalyMetrics
from hazardseg.metrics.smiyc import COMPONENT_FILTERS, SmiycComponentMetric, SmiycPixelMetric
from hazardseg.metrics.submission import Float16Encoder, read_score_map, submission_path, write_score_map


def upsample_scores(scores: Tensor, size: tuple[int, int]) -> Tensor:
    """(B,h,w) or (h,w) scores -> float32 at ``size`` (H,W): :func:`hazardseg.models.outputs.resize`, bilinear
    with half-pixel centres (the same interpolation as the benchmark's ``cv2.resize(..., INTER_LINEAR)``)."""
    return resize(scores.float(), size)


class BenchmarkEvaluator:
    """SMIYC-convention pixel + component metrics, pooled exact metrics and submission files for one
    (dataset, scorer). See the module docstring for the protocol, memory and disk use.

    Args:
        run_dir: the run folder; submission files go to ``run_dir/anomaly_p/<method>/<group>/``.
        method: the method name of the submission folder (e.g. ``<run name>-<scorer>``).
        track: ``"anomaly"`` or ``"obstacle"`` (the datamodule's ``TRACK``): component size filter.
        submission: write every frame's file (else only labelled frames are kept, as scratch files).
        encoder: the float16 map (default: ``Float16Encoder("auto")``).
        pooled: also compute the pooled exact AUPR/AUROC/FPR95 (``pooled_*`` keys).
        scratch_dir: where scratch maps go when ``submission=False`` (default: a hidden folder in ``run_dir``).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        method: str,
        track: str = "anomaly",
        submission: bool = False,
        encoder: Float16Encoder | None = None,
        pooled: bool = True,
        scratch_dir: str | os.PathLike | None = None,
    ):
        if track not in COMPONENT_FILTERS:
            raise ValueError(f"track={track!r}: expected one of {sorted(COMPONENT_FILTERS)}")
        self.run_dir = Path(run_dir)
        self.method = method
        self.track = track
        self.submission = bool(submission)
        self.encoder = encoder or Float16Encoder("auto")
        self.pixel = SmiycPixelMetric()
        self.pooled = AnomalyMetrics() if pooled else None
        self.scratch_parent = Path(scratch_dir) if scratch_dir is not None else self.run_dir
        self._scratch: Path | None = None
        self._kept: list[tuple[Path, tuple[int, int], bytes]] = []  # labelled frames: map file, shape, label
        self.num_frames = 0
        self.files: list[Path] = []

    # ------------------------------------------------------------------ per frame
    def add(self, fid: str, group: str, scores: Tensor | np.ndarray, label: Tensor | np.ndarray | None = None) -> Path | None:
        """Add one frame: ``scores`` (H,W) at the label's size, ``label`` (H,W) 0/1/255 or None.
        Returns the submission file written (None with ``submission=False``)."""
        if label is not None and tuple(label.shape) != tuple(scores.shape):
            raise ValueError(
                f"frame {fid}: scores {tuple(scores.shape)} and label {tuple(label.shape)} differ in size; "
                f"upsample the scores to the label size first (upsample_scores)"
            )
        map16 = self.encoder.encode(scores)
        self.num_frames += 1
        path = None
        if self.submission:
            path = write_score_map(submission_path(self.run_dir, self.method, group, fid), map16, compress=True)
            self.files.append(path)
        if label is None:
            return path
        y = (label.detach().cpu().numpy() if isinstance(label, Tensor) else np.asarray(label)).astype(np.uint8)
        self.pixel.update(map16, y)
        if self.pooled is not None:
            s = scores.detach().cpu().float() if isinstance(scores, Tensor) else torch.from_numpy(np.asarray(scores, np.float32))
            y_t = torch.from_numpy(y)
            self.pooled.update(s, y_t == 1, y_t != VOID)
        if path is None:  # scratch copy for the component pass: the ROI values only (the rest is never read)
            path = self._scratch_dir() / f"{len(self._kept):07d}.npy"
            np.save(path, map16[y != VOID])
        self._kept.append((path, y.shape, zlib.compress(y.tobytes(), 1)))
        return path if self.submission else None

    @staticmethod
    def _read_map(path: Path, label: np.ndarray) -> np.ndarray:
        if path.suffix == ".hdf5":
            return read_score_map(path)
        scores = np.zeros(label.shape, np.float16)  # void pixels: never predicted, never scored
        scores[label != VOID] = np.load(path)
        return scores

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self.scratch_parent.mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(prefix=".smiyc-maps-", dir=self.scratch_parent))
        return self._scratch

    # ------------------------------------------------------------------ end of the dataset
    def compute(self) -> dict[str, Any]:
        """All metrics (names in the module docstring of :mod:`hazardseg.metrics.smiyc`); removes scratch files.

        Keys: ``AP, AUROC, FPR95, FPR95_threshold, best_F1, best_F1_threshold`` (SMIYC pixel convention on the
        float16 maps), ``sIoU_gt, sIoU_pred, PPV, mean_F1, F1_25..F1_75, TP/FN/FP_25|50|75,
        num_gt_components, num_pred_components, component_threshold (= best_F1_threshold),
        component_threshold_raw, min_pred_size, min_gt_size`` (components), ``pooled_AUPR, pooled_AUROC,
        pooled_FPR95`` (exact pooled, float32 scores), ``num_frames, num_scored_frames``, ``f16_*`` (export).
        Without labelled frames only the counts, ``f16_*`` and a ``note`` are returned.
        """
        out: dict[str, Any] = {"num_frames": self.num_frames, "num_scored_frames": len(self._kept)}
        try:
            if not self._kept:
                out["note"] = "no labelled frame: score maps only (the test labels of these benchmarks are private)"
                return {**out, **self.encoder.report()}
            try:
                pixel = self.pixel.compute()
            except ValueError as err:  # e.g. no anomaly pixel in the labelled frames
                out["note"] = str(err)
                return {**out, **self.encoder.report()}
            pixel.pop("num_frames")
            out.update(pixel)
            threshold = pixel["best_F1_threshold"]
            components = SmiycComponentMetric(threshold, self.track)
            for path, shape, blob in self._kept:
                label = np.frombuffer(zlib.decompress(blob), np.uint8).reshape(shape)
                components.update(self._read_map(path, label), label)
            out.update(components.compute())
            out["component_threshold"] = threshold
            out["component_threshold_raw"] = self.encoder.decode(threshold)
            if self.pooled is not None:
                pooled = self.pooled.compute()
                out.update(pooled_AUPR=pooled["aupr"], pooled_AUROC=pooled["auroc"], pooled_FPR95=pooled["fpr95"])
            return {**out, **self.encoder.report()}
        finally:
            self.close()

    def close(self) -> None:
        """Delete the scratch maps (the submission files stay)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
