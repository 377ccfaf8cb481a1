"""What ``predict.py`` writes, frame by frame, while the next batch runs through the network.

Per frame (at the frame's own size): ``segmentation/<frame>.png`` (class colours), ``anomaly/<scorer>/<frame>.jpg``
(the score as a heat map over the image, the flagged pixels outlined, a colour bar with the threshold marked and a
one-line legend; ``.png`` with ``image_format="png"``), optionally ``scores/<scorer>/<frame>.hdf5`` (float16, the
benchmark submissions' encoding).
For a video: ``anomaly_<scorer>.mp4`` at the input's frame rate. At the end: ``index.csv`` (frame, scorer, file,
flagged share, max score), ``contact_sheet_<scorer>.png`` (the most anomalous frames) and ``thresholds.json``.
Every file is written atomically; an interrupted run keeps its frames, its index so far and a playable video.
"""

from __future__ import annotations

import csv
import heapq
import io
import math
import zlib
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

from hazardseg.callbacks.base import Background, EvaluationCallback
from hazardseg.console import say
from hazardseg.errors import ConfigError
from hazardseg.io import atomic_path, atomic_write_text
from hazardseg.maps import resize
from hazardseg.visualize import CONTOUR_RGB, _colourmap, _contour, _finite_range, _font, palette
from hazardseg import signals

STRIP = 46  # pixels of the legend strip under each anomaly image: colour bar + range, then one line of legend
# Heat maps are photographs with colour on top: JPEG encodes a 1280x766 one in 3 ms (177 KB) where PNG at its
# fastest level takes 66 ms (1.3 MB), which the writer thread would take from the forward pass on a small CPU.
IMAGE_FORMATS = {"jpg": ("JPEG", {"quality": 92}), "png": ("PNG", {"compress_level": 1})}
# Frames whose network outputs (and, on the CPU, their scoring) may wait for the writer thread: bounded memory
WRITER_FRAMES = 4


class PredictionWriter(EvaluationCallback):
    """Args:
        out_dir: the run folder's output folder.
        save_scores: also write the float16 score maps.
        contact_sheet: frames in each scorer's contact sheet (0: none).
        background: write in a worker thread while the next batch is computed.
        image_format: of the anomaly heat maps, ``jpg`` (default) or ``png`` (lossless, ~20x slower to encode).
    """

    results_key = "predictions"

    def __init__(self, out_dir: str, save_scores: bool = False, contact_sheet: int = 12, background: bool = True,
                 image_format: str = "jpg"):
        if image_format not in IMAGE_FORMATS:
            raise ConfigError(f"predict.image_format={image_format!r}: expected one of {sorted(IMAGE_FORMATS)}")
        self.image_format = image_format
        self.out_dir = Path(out_dir)
        self.save_scores, self.contact_sheet, self.background = bool(save_scores), int(contact_sheet), bool(background)
        self.thresholds: dict[str, float] = {}  # scorer -> flagged when score >= it; set by the predict stage
        self.fps: Fraction | None = None  # a video's frame rate (set by the predict stage): write an overlay video
        self.rows: list[dict[str, Any]] = []
        self.top: dict[str, list] = {}
        self.videos: dict[str, Any] = {}
        self.worker: Background | None = None
        self.encoders: dict[str, Any] = {}
        self.frames = 0
        self.summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ Lightning hooks
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows, self.top, self.videos, self.frames = [], {name: [] for name in pl_module.scorers}, {}, 0
        self.encoders: dict[str, Any] = {}
        self.colours = palette(pl_module.num_classes)
        # its scorers use every core between forward passes: 0.88-0.89 of the bare forward vs 0.82-0.83 on one core
        self.worker = Background(depth=WRITER_FRAMES if self.background else 0, name="writer", single_threaded=False)

    def on_predict_batch_end(self, trainer, pl_module, outputs: dict[str, Any], batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        # class logits (a PyTorch model) or class ids (an exported graph, predict.py backend=onnx)
        classes = outputs["logits"].detach().float().cpu() if "logits" in outputs else outputs["segmentation"].detach().cpu()
        rgbs = [(name, batch["rgb"][i].numpy()) for i, name in enumerate(batch["name"])]
        if self.worker.pool is not None:  # a task is a batch: at most WRITER_FRAMES frames' outputs wait for the writer
            self.worker.depth = max(1, WRITER_FRAMES // len(rgbs))
        # the maps, or (a PyTorch model on the CPU) the function that computes them: here in the worker thread
        self.worker.submit(self._write_batch, rgbs, classes, outputs["scores"])

    def _write_batch(self, rgbs: list[tuple[str, np.ndarray]], classes: torch.Tensor,
                     scores: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor]]) -> None:
        maps = {name: s.detach().float().cpu() for name, s in (scores() if callable(scores) else scores).items()}
        for i, (name, rgb) in enumerate(rgbs):
            self._write_frame(name, rgb, classes[i], {k: v[i] for k, v in maps.items()})

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._finish(interrupted=True)  # what was written stays readable: index so far, a closed video

    def results(self) -> dict[str, Any]:
        return self.summary

    # ------------------------------------------------------------------ one frame
    def _write_frame(self, name: str, rgb: np.ndarray, classes: torch.Tensor, scores: dict[str, torch.Tensor]) -> None:
        signals.stop_point("prediction-writing")  # SIGTERM: stop between two frames, every written frame whole
        h, w = rgb.shape[:2]
        if classes.ndim == 3:  # (K, h, w) logits: upsampled, then the most likely class
            pred = argmax_classes(resize(classes, (h, w))).numpy().astype(np.uint8)
        else:  # (h, w) class ids: nearest
            pred = torch.nn.functional.interpolate(classes[None, None].float(), size=(h, w), mode="nearest")[0, 0].numpy().astype(np.uint8)
        segmentation = Image.fromarray(pred, "P")  # a palette PNG: the class ids, shown in their colours
        segmentation.putpalette(self.colours[: 256].reshape(-1).tolist())
        # class ids come in runs: zlib's run-length strategy is faster and smaller here (1280x720: 13 ms vs 18 ms)
        _save_image(segmentation, self.out_dir / "segmentation" / f"{name}.png", "png", compress_type=zlib.Z_RLE)
        for scorer, score in scores.items():
            s = resize(score, (h, w)).numpy()
            threshold = self.thresholds[scorer]
            flagged = s >= threshold
            picture = anomaly_picture(rgb, s, flagged, threshold, scorer)
            file = self.out_dir / "anomaly" / scorer / f"{name}.{self.image_format}"
            _save_image(picture, file, self.image_format)
            if self.save_scores:
                self._save_scores(scorer, name, s)
            if self.fps is not None:
                self._video(scorer, picture).append(picture)
            share, top = float(flagged.mean()), float(np.nanmax(np.where(np.isfinite(s), s, np.nan))) if np.isfinite(s).any() else float("nan")
            self.rows.append({"frame": name, "scorer": scorer, "file": str(file.relative_to(self.out_dir)),
                              "flagged_share": round(share, 6), "max_score": top, "threshold": threshold})
            self._keep_top(scorer, share, name, picture)
        self.frames += 1

    def _save_scores(self, scorer: str, name: str, s: np.ndarray) -> None:
        from hazardseg.metrics.submission import Float16Encoder, write_score_map

        encoder = self.encoders.setdefault(scorer, Float16Encoder())  # one float16 map per scorer, fitted on its first frame
        write_score_map(self.out_dir / "scores" / scorer / f"{name}.hdf5", encoder.encode(s))

    def _keep_top(self, scorer: str, share: float, name: str, picture: np.ndarray) -> None:
        heap = self.top[scorer]
        if self.contact_sheet <= 0 or (len(heap) >= self.contact_sheet and share <= heap[0][0]):
            return  # not among the top frames so far: no thumbnail made
        thumb = np.asarray(Image.fromarray(picture).resize((320, max(1, round(320 * picture.shape[0] / picture.shape[1])))))
        item = (share, self.frames, name, thumb)
        if len(heap) < self.contact_sheet:
            heapq.heappush(heap, item)
        else:
            heapq.heapreplace(heap, item)

    def _video(self, scorer: str, picture: np.ndarray):
        if scorer not in self.videos:
            self.videos[scorer] = VideoWriter(self.out_dir / f"anomaly_{scorer}.mp4", self.fps, picture.shape[:2])
        return self.videos[scorer]

    # ------------------------------------------------------------------ end
    def _finish(self, interrupted: bool = False) -> None:
        if self.worker is not None:
            try:
                self.worker.close(cancel=interrupted)
            finally:
                self.worker = None
        for video in self.videos.values():
            video.close()
        if not self.rows and not interrupted:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["frame", "scorer", "file", "flagged_share", "max_score", "threshold"])
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.out_dir / "index.csv", buffer.getvalue())
        sheets = {scorer: self._contact_sheet(scorer, heap) for scorer, heap in self.top.items() if heap}
        self.summary = {"frames": self.frames, "out_dir": str(self.out_dir), "index": str(self.out_dir / "index.csv"),
                        "contact_sheets": {k: str(v) for k, v in sheets.items()},
                        "videos": {k: str(v.path) for k, v in self.videos.items()}, "interrupted": interrupted}
        if interrupted:
            last = self.rows[-1]["frame"] if self.rows else None
            say(f"[hazardseg] predict stopped after {self.frames} frame(s)" + (f" (last: {last})" if last else "") +
                f"; what was written is complete and readable: {self.out_dir / 'index.csv'}" +
                (f", {', '.join(str(v.path) for v in self.videos.values())}" if self.videos else ""))

    def _contact_sheet(self, scorer: str, heap: list) -> Path:
        best = sorted(heap, key=lambda item: (-item[0], item[1]))
        cols = min(4, len(best))
        tile_h = max(t.shape[0] for *_, t in best) + 18
        sheet = Image.new("RGB", (cols * 324 + 4, math.ceil(len(best) / cols) * (tile_h + 4) + 26), (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        draw.text((4, 4), f"{scorer}: the {len(best)} frames with the largest flagged share", fill=(0, 0, 0), font=_font(14))
        for k, (share, _, name, thumb) in enumerate(best):
            x, y = 4 + (k % cols) * 324, 26 + (k // cols) * (tile_h + 4)
            draw.text((x, y), f"{name}  {100 * share:.2f}% flagged", fill=(0, 0, 0), font=_font(12))
            sheet.paste(Image.fromarray(thumb), (x, y + 16))
        path = self.out_dir / f"contact_sheet_{scorer}.png"
        _save_image(sheet, path, "png")
        return path


def anomaly_picture(rgb: np.ndarray, scores: np.ndarray, flagged: np.ndarray, threshold: float, scorer: str) -> np.ndarray:
    """The image with the score as a heat map (inferno, 55% opacity), flagged pixels outlined in cyan, and a strip
    under it: the colour bar over the frame's score range with the threshold marked, and what the colours mean."""
    h, w = scores.shape
    lo, hi = _finite_range(scores)
    heat = _colourmap((np.clip(scores, lo, hi) - lo) / max(hi - lo, 1e-12), "inferno")
    picture = ((rgb.astype(np.uint16) * 115 + heat.astype(np.uint16) * 141) >> 8).astype(np.uint8)  # 45 / 55 %
    picture[_contour(flagged)] = CONTOUR_RGB
    strip = Image.new("RGB", (w, STRIP), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    bar_w = max(40, w // 3)
    bar = _colourmap(np.linspace(0, 1, bar_w)[None, :].repeat(10, 0), "inferno")
    strip.paste(Image.fromarray(bar), (4, 4))
    if lo <= threshold <= hi and hi > lo:
        x = 4 + round((threshold - lo) / (hi - lo) * (bar_w - 1))
        draw.line([(x, 2), (x, 16)], fill=CONTOUR_RGB, width=2)
    font = _font(11)
    draw.text((4, 17), f"{lo:.3g}", fill=(0, 0, 0), font=font)
    draw.text((4 + bar_w - draw.textlength(f"{hi:.3g}", font=font), 17), f"{hi:.3g}", fill=(0, 0, 0), font=font)
    share = 100 * flagged.mean()
    legend = [f"{scorer} score; cyan outline: flagged (score >= {threshold:.4g}), {share:.2f}% of the frame",
              f"{scorer}; cyan: score >= {threshold:.3g} ({share:.1f}%)", f"cyan: >= {threshold:.3g}"]
    text = next((t for t in legend if draw.textlength(t, font=font) <= w - 8), legend[-1])  # the longest that fits
    draw.text((4, 31), text, fill=(0, 0, 0), font=font)
    return np.concatenate([picture, np.asarray(strip)], axis=0)


class VideoWriter:
    """H.264 video (yuv420p, PyAV) at ``fps``; frames are padded to even sizes as the codec needs. Written to a temp
    file and renamed on ``close`` (an interrupted run's video is closed, hence playable)."""

    def __init__(self, path: Path, fps: Fraction, size: tuple[int, int]):
        import av

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic = atomic_path(path)
        self._tmp = self._atomic.__enter__()
        self.container = av.open(str(self._tmp), mode="w", format="mp4")
        self.stream = self.container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        self.stream.height, self.stream.width = size[0] + size[0] % 2, size[1] + size[1] % 2
        self.stream.pix_fmt = "yuv420p"
        self.frames = 0

    def append(self, rgb: np.ndarray) -> None:
        import av

        h, w = self.stream.height, self.stream.width
        if rgb.shape[:2] != (h, w):
            rgb = np.pad(rgb, ((0, h - rgb.shape[0]), (0, w - rgb.shape[1]), (0, 0)), mode="edge")
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self._atomic.__exit__(None, None, None)  # renamed onto the final name
        except BaseException as err:
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        finally:
            self.container = None


def argmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(0)`` of a (K, H, W) map (the first of tied maxima), as uint8 for up to 256 classes.

    Planes one after another in memory: a running maximum over the K contiguous planes. torch's argmax over the first
    dimension strides across the planes; this takes 14 ms at 1280x720 with 13 classes on 2 CPU cores, the plain
    argmax 3.5x that. (A pixel with a NaN logit gets some class; argmax would pick the NaN.) Classes interleaved per
    pixel (channels-last, what SMP's networks give on the CPU): torch's argmax, a reduction over contiguous values,
    16 ms, where the running maximum reads each plane with a stride of K (31 ms alone, 3x that beside a forward pass)."""
    dtype = torch.uint8 if logits.shape[0] <= 256 else torch.int64
    if logits.stride(0) == 1 and logits.shape[0] > 1:
        return logits.argmax(0).to(dtype)
    best = logits[0].clone()
    index = torch.zeros(logits.shape[1:], dtype=dtype)
    for k in range(1, logits.shape[0]):
        higher = logits[k] > best
        torch.maximum(best, logits[k], out=best)
        index.masked_fill_(higher, k)
    return index


def _save_image(picture: np.ndarray | Image.Image, path: Path, image_format: str, **options: Any) -> None:
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    fmt, defaults = IMAGE_FORMATS[image_format]
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **{**defaults, **options})

