"""The frames of ``predict.py``: an image, a folder of images, a glob, or a video, streamed (bounded memory
whatever the input's length).

Images are read by the datasets' own reader (:func:`hazardseg.data.readers.load_rgb`: any mode PIL opens, 16-bit
grey scaled); an unreadable one is skipped and listed (:attr:`FrameSource.skipped`), never the end of the run.
Videos are decoded by PyAV (``pip install -e ".[video]"``) frame by frame; their frame rate is kept for the
output video. Each sample holds the network input (resized to ``image_size`` when given, ImageNet-normalised as
in training) and the frame's own RGB pixels, which the outputs are drawn on at native size.
"""

from __future__ import annotations

import glob
import queue
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset
from torchvision import tv_tensors

from hazardseg.data.readers import load_rgb
from hazardseg.data.anomaly_benchmarks.base import build_benchmark_transform
from hazardseg.errors import ConfigError, DataError, HazardsegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
VIDEO_EXTRA = 'pip install -e ".[video]"'


class FrameSource(IterableDataset):
    """Args:
        input: an image file, a folder (its images, sorted, recursively), a glob (``'dir/*.jpg'``), or a video file.
        image_size: [H, W] the network sees (None: each frame's own size).
        normalize: float ImageNet-normalised network inputs (else uint8, for a graph that normalises itself).
        prefetch: frames decoded ahead in a thread (0: none). Decoding and resizing release the GIL, so they
            overlap the forward pass of the frame before (35 ms a 1280x720 PNG on the caller's thread otherwise); a
            thread, not a loader worker process, so that skipped frames are recorded in this object.
    """

    def __init__(self, input: str | Path, image_size: tuple[int, int] | None = None, normalize: bool = True,
                 prefetch: int = 2):
        self.input = str(input)
        self.prefetch = int(prefetch)
        self.image_size = image_size
        # normalize=False: uint8 network inputs (an exported graph normalises inside)
        self.transform = build_benchmark_transform(image_size) if normalize else _resize_only(image_size)
        self.skipped: dict[str, str] = {}
        self.video: Path | None = None
        self.files: list[Path] = []
        self.fps: Fraction | None = None
        self._resolve()

    def _resolve(self) -> None:
        path = Path(self.input).expanduser()
        if any(c in self.input for c in "*?["):
            self.files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise DataError(f"input={self.input}: the pattern matches no image ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_dir():
            self.files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not self.files:
                raise DataError(f"input={path}: the folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            self.video = path
            container, self.fps = _open_video(path)
            container.close()
        elif path.is_file():
            self.files = [path]
        else:
            raise DataError(f"input={self.input}: no such file or folder. Fix: input=<image | folder | 'glob/*.png' | video>")

    def __len__(self) -> int:
        """The progress bar's total; a video whose container states no frame count has none (TypeError: Lightning
        then runs until the frames end, instead of trusting a 0)."""
        count = self.frame_count
        if self.video is not None and count == 0:
            raise TypeError("frame count unknown")
        return count

    @property
    def frame_count(self) -> int:
        if self.video is None:
            return len(self.files)
        container, _ = _open_video(self.video)
        with container:
            return int(container.streams.video[0].frames or 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.prefetch <= 0:
            yield from self._samples()
            return
        yield from prefetched(self._samples(), self.prefetch)

    def _samples(self) -> Iterator[dict[str, Any]]:
        frames = self._video_frames() if self.video is not None else self._image_frames()
        for index, (name, rgb) in enumerate(frames):
            image = tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1).contiguous())  # what the datasets' transforms take
            image = self.transform({"image": image})["image"].as_subclass(torch.Tensor)
            yield {"image": image, "rgb": torch.from_numpy(rgb), "name": name, "index": index}

    def _image_frames(self) -> Iterator[tuple[str, np.ndarray]]:
        root = Path(self.input) if Path(self.input).is_dir() else None
        for path in self.files:
            try:
                rgb = load_rgb(path)
            except HazardsegError as err:  # skipped and listed: one bad file does not end the run
                self.skipped[str(path)] = str(err)
                continue
            yield (path.relative_to(root).with_suffix("").as_posix() if root else path.stem), rgb

    def _video_frames(self) -> Iterator[tuple[str, np.ndarray]]:
        container, _ = _open_video(self.video)
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            number = 0
            try:
                for frame in container.decode(stream):
                    yield f"frame_{number:06d}", frame.to_ndarray(format="rgb24")
                    number += 1
            except Exception as err:  # a truncated file: the frames decoded so far are kept
                self.skipped[f"{self.video}#{number}"] = f"{self.video}: cannot decode frame {number} and after ({type(err).__name__}: {err})"


_DONE = object()


def prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items`` produced by a daemon thread at most ``depth`` ahead; its errors are raised here, in order. Closing
    this generator (the consumer stops, e.g. on Ctrl-C) stops the thread at its next item."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as err:  # handed to the consumer, raised there
            put((_DONE, err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # e.g. the video's container

    thread = threading.Thread(target=produce, name="hazardseg-frames", daemon=True)
    thread.start()
    try:
        while True:
            item, err = ready.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()


def collate_frames(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of frames: the network inputs stacked (equal size), the rest as lists (frames may differ in size)."""
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) > 1:
        raise DataError(f"frames of different sizes in one batch ({sorted(sizes)}); set predict.image_size=[H,W] "
                        f"or predict.batch_size=1")
    return {"image": torch.stack([s["image"] for s in samples]), "rgb": [s["rgb"] for s in samples],
            "name": [s["name"] for s in samples], "index": [s["index"] for s in samples]}


def _resize_only(image_size: tuple[int, int] | None):
    from torchvision.transforms import v2

    from hazardseg.data.anomaly_benchmarks.base import ImageOnly

    return ImageOnly(v2.Resize(image_size, antialias=True) if image_size is not None else v2.Identity())


def _open_video(path: Path):
    try:
        import av
    except ImportError:
        raise ConfigError(f"input={path} is a video; reading it needs PyAV. Fix: {VIDEO_EXTRA}") from None
    try:
        container = av.open(str(path))
        stream = container.streams.video[0]
    except Exception as err:  # not a video, unknown codec, no video stream
        raise DataError(f"{path}: cannot open it as a video ({type(err).__name__}: {err})") from None
    fps = stream.average_rate or stream.guessed_rate or Fraction(25)
    return container, Fraction(fps)
