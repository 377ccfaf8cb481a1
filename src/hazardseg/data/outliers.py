"""Outlier pasting for outlier exposure: objects pasted into training images, their pixels labelled
``OUTLIER_LABEL`` (254; PEBAL's value), so that an outlier-exposure loss can train on them.

Pasting object cut-outs into inlier scenes is the outlier-exposure recipe of Meta-OoD (Chan et al.,
ICCV 2021), PEBAL (Tian et al., ECCV 2022), RPL and Mask2Anomaly (COCO objects) and of pytorch-ood's
``InsertCOCO``. Sources:

* :class:`~hazardseg.data.outlier_synth.SyntheticOutliers`: procedural objects from a family disjoint
  from the synthetic test anomalies (see that module);
* :class:`FolderOutliers`: a folder of RGBA PNG cut-outs (alpha = mask), e.g. built from COCO by
  ``python -m hazardseg.data.coco_outliers``.

A *source* is any object with ``len(source)`` and ``source[i] -> (4, h, w) uint8 RGBA tensor`` whose
content depends only on ``i`` (cropped to the object; alpha = mask), optionally with ``check()``
(called once when the transform is built, to fail early with a one-line error).

:class:`PasteOutliers` contract (a ``torchvision.transforms.v2``-style transform on sample dicts):

* input ``{"image": tv_tensors.Image (3,H,W) uint8, "mask": tv_tensors.Mask (H,W) int, ...}``; returns a
  new dict (other keys passed through), same types, shapes and dtypes. Place it after the geometric
  ops (objects are sized relative to the final crop and never resampled by them) and before
  ColorJitter (the jitter then changes scene and object alike: an object that kept its colours while
  the scene was re-lit would be findable by that mismatch alone, a shortcut that does not transfer to
  real anomalies), i.e. on uint8 images before ToDtype/Normalize.
* with probability ``probability`` pastes ``count`` objects (an int or an inclusive [lo, hi] range),
  each with height ``scale`` x image height (uniform in [lo, hi]; width from the object's aspect ratio,
  shrunk to fit when wider than the image), mirrored with probability 0.5 when ``flip``.
* placement: ``on_labels=None`` -> anywhere (the object lies fully inside the image); else the object's
  bottom-centre stands on a uniformly drawn pixel whose mask value is in ``on_labels`` (e.g. road /
  sidewalk: objects lie on the ground, as road anomalies do), clamped to keep the object inside; pixels
  of objects pasted before in the same image do not count. When no such pixel exists:
  ``fallback="anywhere"`` or ``"skip"`` (this object is not pasted).
* label: mask pixels with alpha >= 0.5 become ``label`` (254), whatever they were (also ignore or
  padding pixels: the pasted content is genuine outlier content now).
* ``blend="alpha"`` composites with the object's (anti-aliased) alpha, so edges are soft like a real
  object's and a paste seam is not a trivial cue (Dwibedi et al., "Cut, Paste and Learn", ICCV 2017);
  pixels with 0 < alpha < 0.5 change but stay unlabelled. ``blend="hard"`` copies exactly the labelled
  pixels: the image changes only where the mask became ``label``.
* randomness: only torch's global RNG (``torch.rand`` / ``torch.randint``), like the v2 transforms, so
  seeding torch per sample makes it deterministic. Sources are pure functions of the index.
* it works on any split's raw samples: e.g. a validation proxy with pasted anomalies is
  ``v2.Compose([Resize, PasteOutliers(source_with_other_seed, probability=1), ToDtype, Normalize])``.

Cost (``bench/bench_outliers.py``, CPU time, 1 thread, default options = ~1 object per sample): about
+1 ms per training sample at 144x256 once the source's objects are cached, +3.6 ms while they are
rendered (synthetic, ~1.3 ms per object) or decoded (folder, ~1.5 ms per ~180x140 PNG); +1.4 / +4.5 ms
at 360x640.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors

from hazardseg.data.outlier_synth import SyntheticOutliers
from hazardseg.data.readers import check_inside
from hazardseg.data.transforms import OUTLIER_LABEL, _plain
from hazardseg.errors import ConfigError, DataError

__all__ = ["FolderOutliers", "PasteOutliers", "SyntheticOutliers", "build_paste_transform", "COCO_COMMAND"]

COCO_COMMAND = (
    "python -m hazardseg.data.coco_outliers --coco-root DIR --annotations instances_train2017.json --out OUT --exclude <dataset>"
)
UNSET_ROOT = (
    "data.outliers.root is not set: build a folder of RGBA cut-outs with `{cmd}` and set data.outliers.root=OUT "
    "(or export HAZARDSEG_OUTLIERS=OUT), or paste procedural objects instead with data/outliers=synthetic"
)
PLACEMENT_FALLBACKS = ("anywhere", "skip")
BLENDS = ("alpha", "hard")
ANCHOR_TRIES = 64  # uniform pixel draws per object before listing the matching pixels
CONFIG_KEYS = ("enabled", "root", "source", "probability", "count", "scale", "on_labels", "fallback", "blend", "flip")


class PasteOutliers(torch.nn.Module):
    """Paste outlier objects from ``source`` into a sample (see the module docstring for the contract)."""

    def __init__(
        self,
        source: Any,
        probability: float = 0.5,
        count: int | Sequence[int] = (1, 3),
        scale: Sequence[float] = (0.08, 0.35),
        on_labels: Sequence[int] | None = None,
        fallback: str = "anywhere",
        blend: str = "alpha",
        flip: bool = True,
        label: int = OUTLIER_LABEL,
        key: str = "data.outliers",
    ):
        super().__init__()
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise ConfigError(f"{key}.source={source!r}: expected an outlier source (len(source), source[i] -> RGBA tensor)")
        self.source = source
        self.probability = _probability(probability, f"{key}.probability")
        self.count = _int_range(count, f"{key}.count")
        self.scale = _scale(scale, f"{key}.scale")
        self.on_labels = None if on_labels is None else _labels(on_labels, f"{key}.on_labels")
        if fallback not in PLACEMENT_FALLBACKS:
            raise ConfigError(f"{key}.fallback={fallback!r}: expected one of {list(PLACEMENT_FALLBACKS)}")
        if blend not in BLENDS:
            raise ConfigError(f"{key}.blend={blend!r}: expected one of {list(BLENDS)}")
        if not isinstance(flip, bool):
            raise ConfigError(f"{key}.flip={flip!r}: expected true or false")
        self.fallback, self.blend, self.flip, self.label = fallback, blend, flip, int(label)
        self.key = key

    def never_pastes(self, num_classes: int | None) -> str | None:
        """Why this configuration can never paste an object (a one-line error for a method that learns from them),
        or None. Only what the configuration shows; a cut-out source whose objects never reach the labelling
        threshold shows up during training."""
        if self.probability == 0:
            return f"{self.key}.probability=0: no image ever gets an outlier"
        if self.count[1] == 0:
            return f"{self.key}.count={list(self.count)}: no object is ever pasted"
        if self.on_labels is not None and num_classes is not None:
            unknown = [label for label in self.on_labels if label >= num_classes]
            if unknown:
                return (f"{self.key}.on_labels={self.on_labels}: {unknown} are not training ids of this dataset "
                        f"(0..{num_classes - 1}): objects meant to stand there are never pasted")
        return None

    # ------------------------------------------------------------------------------ forward
    def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
        if torch.rand(()).item() >= self.probability:
            return sample
        lo, hi = self.count
        n = int(torch.randint(lo, hi + 1, ()).item())
        image, mask = sample["image"], sample["mask"]
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ConfigError(
                f"PasteOutliers expects a (3,H,W) uint8 image, got {tuple(image.shape)} {image.dtype}: "
                f"insert it before ToDtype/Normalize"
            )
        img = image.as_subclass(torch.Tensor).clone()
        msk = mask.as_subclass(torch.Tensor).clone()
        for _ in range(n):
            self._paste_one(img, msk)
        out = dict(sample)
        out["image"] = tv_tensors.wrap(img, like=image) if isinstance(image, tv_tensors.TVTensor) else img
        out["mask"] = tv_tensors.wrap(msk, like=mask) if isinstance(mask, tv_tensors.TVTensor) else msk
        return out

    def _on_labels(self, values: torch.Tensor) -> torch.Tensor:
        hit = values == self.on_labels[0]
        for label in self.on_labels[1:]:  # a few ==: ~10x faster than torch.isin on a 360x640 mask
            hit |= values == label
        return hit

    def _anchor(self, msk: torch.Tensor) -> tuple[int, int] | None:
        """A uniformly drawn pixel (row, col) whose label is in ``on_labels``; None when there is none.

        Rejection sampling: the first of ``ANCHOR_TRIES`` uniform pixels that matches is uniform over
        the matching pixels, and costs nothing next to scanning the mask; only rare labels (no match
        among the tries) fall back to listing the matching pixels."""
        flat = msk.reshape(-1)
        tries = torch.randint(flat.numel(), (ANCHOR_TRIES,))
        hit = self._on_labels(flat[tries]).nonzero()
        if len(hit):
            index = int(tries[hit[0, 0]])
        else:
            matching = self._on_labels(flat).nonzero()
            if len(matching) == 0:
                return None
            index = int(matching[int(torch.randint(len(matching), ()).item()), 0])
        return divmod(index, msk.shape[1])

    def _paste_one(self, img: torch.Tensor, msk: torch.Tensor) -> None:
        H, W = img.shape[-2:]
        obj = self.source[int(torch.randint(len(self.source), ()).item())]
        lo, hi = self.scale
        th = max(1, round((lo + (hi - lo) * torch.rand(()).item()) * H))
        tw = max(1, round(th * obj.shape[-1] / obj.shape[-2]))
        if tw > W:  # keep the aspect ratio, fit the width
            th, tw = max(1, round(th * W / tw)), W
        th = min(th, H)
        mirror = self.flip and torch.rand(()).item() < 0.5
        anchor = None if self.on_labels is None else self._anchor(msk)
        if anchor is not None:  # bottom-centre on the anchor, kept inside the image
            ay, ax = anchor
            y0 = min(max(ay - th + 1, 0), H - th)
            x0 = min(max(ax - tw // 2, 0), W - tw)
        elif self.on_labels is not None and self.fallback == "skip":
            return
        else:
            y0 = int(torch.randint(H - th + 1, ()).item())
            x0 = int(torch.randint(W - tw + 1, ()).item())
        rgb, alpha = _resized_premultiplied(obj, th, tw)
        if mirror:
            rgb, alpha = rgb.flip(-1), alpha.flip(-1)
        region = img[:, y0 : y0 + th, x0 : x0 + tw].float()
        inside = alpha >= 0.5
        if self.blend == "hard":  # un-premultiply where labelled, leave every other pixel as it was
            new = torch.where(inside, rgb / alpha.clamp_min(1e-6), region)
        else:  # "over" compositing with premultiplied colour
            new = rgb + region * (1 - alpha)
        img[:, y0 : y0 + th, x0 : x0 + tw] = new.add_(0.5).clamp_(0, 255).to(torch.uint8)
        msk[y0 : y0 + th, x0 : x0 + tw][inside[0]] = self.label

    def extra_repr(self) -> str:
        return (
            f"source={self.source!r}, probability={self.probability}, count={list(self.count)}, scale={list(self.scale)}, "
            f"on_labels={self.on_labels}, fallback={self.fallback}, blend={self.blend}, flip={self.flip}, label={self.label}"
        )


def _resized_premultiplied(obj: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(4,h0,w0) uint8 RGBA -> premultiplied RGB (3,h,w) in 0..255 and alpha (1,h,w) in [0,1].

    Resampling premultiplied colour keeps the colour of fully transparent pixels (often black) out of
    the object's edges."""
    rgba = obj.float()
    alpha = rgba[3:] / 255
    pm = torch.cat([rgba[:3] * alpha, alpha])[None]
    if pm.shape[-2:] != (h, w):
        pm = F.interpolate(pm, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    pm = pm[0]
    return pm[:3], pm[3:].clamp_(0, 1)


# ----------------------------------------------------------------------------------- sources
class FolderOutliers:
    """Outlier source: a folder of RGBA PNG cut-outs (alpha = object mask), decoded lazily, LRU-cached.

    The file list comes from ``manifest.json`` when present (written by ``hazardseg.data.coco_outliers``;
    avoids listing 10^5 files), else from a recursive ``*.png`` scan. Fully transparent borders are
    cropped at load time. ``root=None`` is allowed until the source is used: :meth:`check` then raises a
    one-line error naming ``data.outliers.root`` and how to build a folder. Manifest entries must stay inside
    the folder (absolute or ``../`` paths are refused) unless ``allow_external_paths`` (set from
    ``data.allow_external_paths`` by the datamodule, the same policy as StreetHazards' odgt files).
    """

    allow_external_paths = False

    def __init__(self, root: str | Path | None = None, cache_size: int = 256):
        if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 0:
            raise ConfigError(f"data.outliers.source.cache_size={cache_size!r}: expected an int >= 0")
        self.root = None if root in (None, "", "null", "None") else Path(str(root)).expanduser()
        self.cache_size = cache_size
        self._files: list[Path] | None = None
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def check(self) -> None:
        """Fail early (one line) when the folder is unset, missing or holds no PNG."""
        self.files  # noqa: B018 - lists (or reads the manifest) and validates

    @property
    def files(self) -> list[Path]:
        if self._files is None:
            if self.root is None:
                raise ConfigError(UNSET_ROOT.format(cmd=COCO_COMMAND))
            if not self.root.is_dir():
                raise DataError(f"data.outliers.root={self.root}: folder not found; build it with `{COCO_COMMAND}`")
            manifest = self.root / "manifest.json"
            if manifest.is_file():
                try:
                    entries = json.loads(manifest.read_text())["objects"]
                    files = [self.root / e["file"] for e in entries]
                except (ValueError, KeyError, TypeError) as e:
                    raise DataError(
                        f"{manifest}: unreadable outlier manifest ({type(e).__name__}: {e}); delete it to scan the folder instead"
                    ) from None
                if not self.allow_external_paths:
                    for i, f in enumerate(files):
                        check_inside(f, self.root, manifest, i, "pasting a file from elsewhere (e.g. a test image) into "
                                     "training images leaks it")
            else:
                files = sorted(p for p in self.root.rglob("*.png") if p.is_file())
            if not files:
                raise DataError(f"data.outliers.root={self.root}: no PNG cut-outs found; build the folder with `{COCO_COMMAND}`")
            self._files = files
        return self._files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        index = int(index)
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        obj = load_cutout(self.files[index])
        if self.cache_size:
            self._cache[index] = obj
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return obj

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: ship the file list, not the cache
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return f"FolderOutliers(root={self.root})"


def load_cutout(path: Path) -> torch.Tensor:
    """Decode one RGBA PNG cut-out to a (4,h,w) uint8 tensor cropped to its non-transparent pixels."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode != "RGBA":
                raise DataError(
                    f"{path}: outlier cut-out is a mode-{mode} image; RGBA PNGs (alpha = object mask) are expected, "
                    f"e.g. built by `{COCO_COMMAND}`"
                )
            arr = torch.from_numpy(np.array(im))
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: outlier cut-out not found (listed in the folder's manifest.json?); rebuild the folder") from None
    except Exception as e:
        raise DataError(f"{path}: cannot decode outlier cut-out ({type(e).__name__}: {e}); delete or rebuild it") from None
    alpha = arr[..., 3]
    rows, cols = alpha.any(1).nonzero(), alpha.any(0).nonzero()
    if len(rows) == 0:
        raise DataError(f"{path}: outlier cut-out is fully transparent (alpha = 0 everywhere); delete it")
    arr = arr[rows[0, 0] : rows[-1, 0] + 1, cols[0, 0] : cols[-1, 0] + 1]
    return arr.permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------------------------ config
def build_paste_transform(outliers: Any, key: str = "data.outliers", allow_external_paths: bool = False) -> PasteOutliers | None:
    """``data.outliers`` config (or None) -> a :class:`PasteOutliers`, or None when disabled.
    ``allow_external_paths`` (``data.allow_external_paths``) is handed to a source that lists files.

    ``source`` may be a mapping with ``_target_`` (instantiated here) or an already built source (Hydra
    instantiates nested ``_target_`` nodes recursively). ``root`` is only read by the source (``${..root}``).
    """
    if outliers is None or outliers is False:
        return None
    if isinstance(outliers, PasteOutliers):
        return outliers
    if not isinstance(outliers, Mapping) and not hasattr(outliers, "keys"):
        raise ConfigError(f"{key}={outliers!r}: expected a dict with keys {list(CONFIG_KEYS)} or null")
    unknown = set(outliers.keys()) - set(CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {sorted(unknown)}; allowed: {list(CONFIG_KEYS)}")
    enabled = outliers.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{key}.enabled={enabled!r}: expected true or false")
    if not enabled:
        return None
    source = outliers.get("source")
    if source is None:
        raise ConfigError(f"{key}.source is not set: use data/outliers=synthetic or data/outliers=folder")
    if isinstance(source, Mapping) or hasattr(source, "_target_") and hasattr(source, "keys"):
        from hazardseg.config import instantiate

        source = instantiate(source, key=f"{key}.source")
    if hasattr(source, "allow_external_paths"):  # the datamodule's file-list policy, one key for every list
        source.allow_external_paths = allow_external_paths
    if hasattr(source, "check"):
        source.check()
    options = {k: _plain(outliers.get(k)) for k in CONFIG_KEYS[3:] if k in outliers}  # probability .. flip
    return PasteOutliers(source, key=key, **options)


def _probability(p: Any, key: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ConfigError(f"{key}={p!r}: expected a number in [0, 1]")
    return float(p)


def _int_range(v: Any, key: str) -> tuple[int, int]:
    v = _plain(v)
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if (
        not isinstance(v, Sequence) or isinstance(v, str) or len(v) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in v) or not 0 <= v[0] <= v[1]
    ):  # fmt: skip
        raise ConfigError(f"{key}={v!r}: expected an int >= 0 or [min, max] with 0 <= min <= max (e.g. [1, 3])")
    return int(v[0]), int(v[1])


def _scale(v: Any, key: str) -> tuple[float, float]:
    v = _plain(v)
    if (
        not isinstance(v, Sequence) or isinstance(v, str) or len(v) != 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) or not 0 < v[0] <= v[1] <= 1
    ):  # fmt: skip
        raise ConfigError(f"{key}={v!r}: expected [min, max] object height / image height with 0 < min <= max <= 1 (e.g. [0.08, 0.35])")
    return float(v[0]), float(v[1])


def _labels(v: Any, key: str) -> list[int]:
    v = _plain(v)
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    ids_ok = isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
    if not ids_ok or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise ConfigError(f"{key}={v!r}: expected null (anywhere) or a non-empty list of label ids (training ids, e.g. [7, 8])")
    return [int(x) for x in v]
