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

Several scorers on one dataset (:func:`compute_all`, what :class:`~hazardseg.callbacks.BenchmarkEvaluation`
does): their evaluators share one :class:`LabelledFrames` (each label compressed once, not once per scorer) and
the component pass runs frame by frame over all of them, so each frame's label is decompressed and its
ground-truth components labelled once (:class:`~hazardseg.metrics.smiyc.FrameGroundTruth`), whatever the number
of scorers. ``add`` is safe to call from one worker thread while the caller's thread runs the next forward pass
(the callback does that).

Memory: per labelled frame ~18 KB of pixel-curve state per scorer and its label zlib-compressed once (a few KB
to tens of KB at 2048x1024), component statistics (3 floats per component), plus the pooled metric's histogram
blocks; no score map is held beyond the frame being added. Disk until ``compute()``: with ``submission=True``
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
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hazardseg.data.labels import IGNORE_LABEL as VOID  # the benchmarks' void value (SMIYC convention)
from hazardseg.io import raise_if_no_space
from hazardseg.maps import resize
from hazardseg.metrics.anomaly import AnomalyMetrics
from hazardseg.metrics.smiyc import (
    COMPONENT_FILTERS, ComponentFilter, FrameComponents, FrameGroundTruth, SmiycComponentMetric, SmiycPixelMetric,
    class_offsets, components_of,
)
from hazardseg.metrics.submission import Float16Encoder, read_score_map, submission_path, write_score_map
from hazardseg import signals


def upsample_scores(scores: Tensor, size: tuple[int, int]) -> Tensor:
    """(B,h,w) or (h,w) scores -> float32 at ``size`` (H,W): :func:`hazardseg.models.outputs.resize`, bilinear
    with half-pixel centres (the same interpolation as the benchmark's ``cv2.resize(..., INTER_LINEAR)``)."""
    return resize(scores.float(), size)


class LabelledFrames:
    """The labels of a dataset's labelled frames, zlib-compressed, kept once for all the scorers that score them."""

    def __init__(self) -> None:
        self._blobs: list[tuple[tuple[int, int], bytes]] = []
        self._offsets: tuple[int, np.ndarray] | None = None  # the last frame's class offsets (every scorer needs them)

    def class_offsets(self, index: int, label: np.ndarray) -> np.ndarray:
        """:func:`~hazardseg.metrics.smiyc.class_offsets` of frame ``index`` (its ``label``), computed once: the
        scorers of a frame ask one after the other."""
        if self._offsets is None or self._offsets[0] != index:
            self._offsets = (index, class_offsets(label))
        return self._offsets[1]

    def add(self, label: np.ndarray) -> int:
        """Keep one uint8 label; returns its index."""
        self._blobs.append((label.shape, zlib.compress(np.ascontiguousarray(label).tobytes(), 1)))
        return len(self._blobs) - 1

    def label(self, index: int) -> np.ndarray:
        shape, blob = self._blobs[index]
        return np.frombuffer(zlib.decompress(blob), np.uint8).reshape(shape)


def as_uint8_label(label: Tensor | np.ndarray) -> np.ndarray:
    return (label.detach().cpu().numpy() if isinstance(label, Tensor) else np.asarray(label)).astype(np.uint8)


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
        frames: the labels' store, shared by the evaluators of one dataset (default: this evaluator's own).
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
        frames: LabelledFrames | None = None,
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
        self.frames = frames if frames is not None else LabelledFrames()
        self._kept: list[tuple[Path, int]] = []  # labelled frames: map file, index in self.frames
        self.num_frames = 0
        self.files: list[Path] = []

    # ------------------------------------------------------------------ per frame
    def add(self, fid: str, group: str, scores: Tensor | np.ndarray, label: Tensor | np.ndarray | None = None,
            label_index: int | None = None) -> Path | None:
        """Add one frame: ``scores`` (H,W) at the label's size, ``label`` (H,W) 0/1/255 or None; ``label_index``:
        where the label already is in the shared ``frames`` (else it is added there). Returns the submission file
        written (None with ``submission=False``)."""
        if label is not None and tuple(label.shape) != tuple(scores.shape):
            raise ValueError(
                f"frame {fid}: scores {tuple(scores.shape)} and label {tuple(label.shape)} differ in size; "
                f"upsample the scores to the label size first (upsample_scores)"
            )
        map16 = self.encoder.encode(scores)
        self.num_frames += 1
        path = None
        if self.submission:
            signals.stop_point("submission-export")
            path = write_score_map(submission_path(self.run_dir, self.method, group, fid), map16, compress=True)
            self.files.append(path)
        if label is None:
            return path
        y = as_uint8_label(label)
        self.pixel.update(map16, y, None if label_index is None else self.frames.class_offsets(label_index, y))
        if self.pooled is not None:
            s = scores.detach().cpu().float() if isinstance(scores, Tensor) else torch.from_numpy(np.asarray(scores, np.float32))
            y_t = torch.from_numpy(y)
            self.pooled.update(s, y_t == 1, y_t != VOID)
        if path is None:  # scratch copy for the component pass: the ROI values only (the rest is never read)
            path = self._scratch_dir() / f"{len(self._kept):07d}.npy"
            try:
                np.save(path, map16[y != VOID])
            except OSError as err:  # a full disk: one line naming the file (see hazardseg.io)
                path.unlink(missing_ok=True)
                raise_if_no_space(err, path)
                raise
        self._kept.append((path, self.frames.add(y) if label_index is None else label_index))
        return path if self.submission else None

    @staticmethod
    def _read_roi(path: Path, truth: FrameGroundTruth) -> np.ndarray:
        """The frame's float16 scores at its ROI pixels (``truth.roi`` order)."""
        if path.suffix == ".hdf5":
            return read_score_map(path).ravel()[truth.roi]
        return np.load(path)  # saved as map16[label != VOID]: the same pixels in the same order

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
        return compute_all([self])[0]

    def _pixel_results(self) -> tuple[dict[str, Any], SmiycComponentMetric | None]:
        """The pixel metrics (or a note), and the component metric at their best-F1 threshold (None: no component
        pass)."""
        out: dict[str, Any] = {"num_frames": self.num_frames, "num_scored_frames": len(self._kept)}
        if not self._kept:
            out["note"] = "no labelled frame (a private test split): score maps written as submission files, no metrics"
            return out, None
        try:
            pixel = self.pixel.compute()
        except ValueError as err:  # e.g. no anomaly pixel in the labelled frames
            out["note"] = str(err)
            return out, None
        pixel.pop("num_frames")
        out.update(pixel)
        return out, SmiycComponentMetric(pixel["best_F1_threshold"], self.track)

    def _finish(self, out: dict[str, Any], components: SmiycComponentMetric | None) -> dict[str, Any]:
        if components is not None:
            out.update(components.compute())
            threshold = out["best_F1_threshold"]
            out["component_threshold"] = threshold
            out["component_threshold_raw"] = self.encoder.decode(threshold)
            if self.pooled is not None:
                pooled = self.pooled.compute()
                out.update(pooled_AUPR=pooled["aupr"], pooled_AUROC=pooled["auroc"], pooled_FPR95=pooled["fpr95"])
        return {**out, **self.encoder.report()}

    def close(self) -> None:
        """Delete the scratch maps (the submission files stay)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def component_workers() -> int:
    """Threads of the component pass: as many as torch's intra-op threads, at most 4 (``scipy.ndimage.label`` and
    the numpy passes release the GIL: 1.8x on 2 cores for 8 frames at 2048x1024)."""
    return max(1, min(4, torch.get_num_threads()))


def _component_pass(tasks: Iterator[tuple[int, int, Path]], frames: LabelledFrames, flt: ComponentFilter,
                    thresholds: dict[int, float]) -> Iterator[tuple[int, FrameComponents]]:
    """``(evaluator, component statistics)`` of each ``(frame index, evaluator, map path)`` task (frame-major), in
    task order, computed by :func:`component_workers` threads. A frame's ground truth is built once, by the calling
    thread, when its first task is handed out; at most ``2 x workers`` tasks are in flight (bounded memory)."""
    workers = component_workers()
    truth_of: tuple[int, FrameGroundTruth] | None = None

    def submit(pool: ThreadPoolExecutor, index: int, i: int, path: Path):
        nonlocal truth_of
        if truth_of is None or truth_of[0] != index:
            signals.stop_point("benchmark-metrics")
            truth_of = (index, FrameGroundTruth.of(frames.label(index), flt))
        truth = truth_of[1]
        return i, pool.submit(lambda: components_of(truth, BenchmarkEvaluator._read_roi(path, truth), thresholds[i], flt))

    in_flight: deque = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hazardseg-components",
                            initializer=torch.set_num_threads, initargs=(1,)) as pool:  # the threads share the cores
        try:
            for index, i, path in tasks:
                in_flight.append(submit(pool, index, i, path))
                if len(in_flight) >= 2 * workers:
                    i_done, future = in_flight.popleft()
                    yield i_done, future.result()
            while in_flight:
                i_done, future = in_flight.popleft()
                yield i_done, future.result()
        finally:
            for _, future in in_flight:  # an error or a stop: drop the rest
                future.cancel()


def compute_all(evaluators: list[BenchmarkEvaluator]) -> list[dict[str, Any]]:
    """:meth:`BenchmarkEvaluator.compute` of several evaluators (one per scorer) with one component pass: frame by
    frame, each label is decompressed and its ground-truth components labelled once for all the evaluators that
    share its :class:`LabelledFrames` and track, then every scorer's map of that frame is read and scored. The
    numbers are each evaluator's own ``compute()``. Removes the scratch files."""
    try:
        pending = [ev._pixel_results() for ev in evaluators]
        groups: dict[tuple[int, str], list[int]] = {}
        for i, (ev, (_, components)) in enumerate(zip(evaluators, pending)):
            if components is not None:
                groups.setdefault((id(ev.frames), ev.track), []).append(i)
        for members in groups.values():
            frames, flt = evaluators[members[0]].frames, COMPONENT_FILTERS[evaluators[members[0]].track]
            by_frame: dict[int, list[tuple[int, Path]]] = {}
            for i in members:
                for path, index in evaluators[i]._kept:
                    by_frame.setdefault(index, []).append((i, path))
            tasks = ((index, i, path) for index in sorted(by_frame) for i, path in by_frame[index])
            for i, stats in _component_pass(tasks, frames, flt, {i: pending[i][1].threshold for i in members}):
                pending[i][1].update(components=stats)
        return [ev._finish(out, components) for ev, (out, components) in zip(evaluators, pending)]
    finally:
        for ev in evaluators:
            ev.close()
