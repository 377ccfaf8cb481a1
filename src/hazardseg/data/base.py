"""Shared dataset / datamodule machinery for every segmentation dataset.

* :class:`SegmentationDataset` holds a list of (image file, mask file, name) items, decodes them
  lazily, validates each sample in ``__getitem__`` (decodable, image/mask same size, an index mask
  not an RGB colour mask, label values in range) and maps raw labels to training ids via
  :meth:`SegmentationDataset.encode_mask` (per dataset).
* Bad samples: with ``skip_bad_samples=False`` (default) the first bad sample raises a one-line
  :class:`~hazardseg.errors.DataError` naming the file and the fix. With ``skip_bad_samples=True`` a
  bad sample is **dropped, not replaced**: ``__getitem__`` returns a marker holding only the record
  (``_skipped``), :func:`collate` leaves it out of the batch (which gets smaller; an empty batch is not
  yielded), so index ``i`` always means item ``i`` and no image is counted twice. The record travels
  with the batch, so it reaches the main process even when workers load the data;
  :class:`SegDataLoader` adds it to ``dataset.bad_samples`` (the datamodule's ``bad_samples``
  aggregates over its splits; the pipeline lists them in results.json and the loggers).
* Training samples are requested as :class:`~hazardseg.data.sampling.SampleKey` ``(index, epoch, seed)``
  and augmented with torch's RNG seeded by that key alone (:mod:`hazardseg.data.sampling`): a run's
  batches do not depend on ``num_workers``, persistent workers, DDP ranks or a resume.
* :class:`SegmentationDataModule` is the common ``LightningDataModule`` base.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from hazardseg.data.sampling import EpochSampler, SampleKey, check_seed, sample_seed
from hazardseg.errors import ConfigError, DataError, HazardsegError
from hazardseg.data.workers import loader_workers
from hazardseg.data.transforms import build_eval_transform, build_train_transform, parse_augment, parse_image_size

SPLITS = ("train", "val", "test")
INDEX_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I", "1")
WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True)
class Item:
    image: Path
    mask: Path
    name: str  # relative path of the image, unique within the split


def skip_or_raise(message: str, key: str, skip: bool, missing: dict[str, str] | None) -> None:
    """A listed sample is unusable: raise DataError, or (``skip_bad_samples``) record it under ``key``."""
    if not skip:
        raise DataError(message)
    if missing is not None:
        missing[key] = message


def load_rgb(path: Path, hint: str = "") -> np.ndarray:
    """Decode an image file to (H,W,3) uint8 RGB; corrupt/truncated files raise DataError.

    16-bit grayscale images are scaled to 8 bits (PIL's ``convert("RGB")`` would clamp them to white)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in WIDE_GRAY_MODES or (im.mode == "I" and im.format == "PNG"):  # PNG "I" = 16-bit gray
                return _gray16_to_rgb(np.array(im), path)
            if im.mode in ("I", "F"):
                raise DataError(f"{path}: {'32-bit integer' if im.mode == 'I' else 'floating-point'} image (mode {im.mode}); "
                                f"its value range is unknown. Fix: convert it to an 8-bit RGB or 16-bit grayscale PNG")
            rgb = im.convert("RGB")
    except HazardsegError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found{hint}") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, zlib.error, ValueError ...
        raise DataError(
            f"{path}: cannot decode image ({type(e).__name__}: {e}); re-download/re-extract it "
            f"or set data.skip_bad_samples=true to skip bad files"
        ) from None
    return np.array(rgb)


def _gray16_to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() > 65535:
        raise DataError(f"{path}: grayscale values outside 0..65535; Fix: convert it to an 8-bit RGB or 16-bit grayscale PNG")
    gray = ((arr + 128) // 257).astype(np.uint8)  # 0..65535 -> 0..255, rounded (65535 / 255 = 257)
    return np.repeat(gray[..., None], 3, axis=2)


def load_index_mask(path: Path, mask_hint: str = "", hint: str = "") -> np.ndarray:
    """Decode a single-channel label PNG to a 2-D integer array of its *indices*.

    Palette ('P') images are read by index (never converted to RGB). Colour (RGB/RGBA/...) masks raise.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode not in INDEX_MODES:
                raise DataError(
                    f"{path}: annotation is a {mode} colour image; an index/label-id PNG (mode L or P, one "
                    f"class id per pixel) is expected{mask_hint}"
                )
            arr = np.array(im)
    except HazardsegError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found{hint}") from None
    except Exception as e:
        raise DataError(
            f"{path}: cannot decode annotation ({type(e).__name__}: {e}); re-download/re-extract it "
            f"or set data.skip_bad_samples=true to skip bad files"
        ) from None
    if arr.ndim != 2:
        raise DataError(f"{path}: annotation has shape {arr.shape}; a single-channel label PNG is expected{mask_hint}")
    return arr


def check_values(arr: np.ndarray, allowed: np.ndarray | Sequence[int], path: Path, what: str) -> None:
    """Raise DataError naming ``path`` and the offending values when ``arr`` has values outside ``allowed``."""
    values = np.unique(arr)
    bad = np.setdiff1d(values, np.asarray(allowed))
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise DataError(f"{path}: label values [{shown}] are outside {what}; is this the right annotation file/dataset?")


class SegmentationDataset(Dataset):
    """Lazily decoded (image, mask) pairs. Subclasses override :meth:`encode_mask` (and ``mask_hint``)."""

    mask_hint: ClassVar[str] = ""

    def __init__(self, items: Sequence[Item], transform: Callable | None = None, skip_bad_samples: bool = False):
        self.items = list(items)
        self.transform = transform
        self.skip_bad_samples = bool(skip_bad_samples)
        # file/name -> reason; filled when bad samples are met (in this process, or reported back by SegDataLoader)
        self.bad_samples: dict[str, str] = {}
        # (native void value, configured ignore_index) when they differ: applied after encode_mask
        self.void_remap: tuple[int, int] | None = None

    # --- per-dataset hooks -------------------------------------------------------------------
    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Map raw label values to training ids (validate them; raise DataError naming ``path``)."""
        return raw.astype(np.int64)

    # --- loading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def with_transform(self, transform: Callable | None) -> "SegmentationDataset":
        """Shallow copy sharing the items, with another transform (e.g. train split, eval transforms)."""
        other = copy.copy(self)
        other.transform = transform
        other.bad_samples = self.bad_samples  # one record per split
        return other

    def _encode(self, raw: np.ndarray, path: Path) -> np.ndarray:
        mask = self.encode_mask(raw, path).astype(np.int64, copy=False)
        if self.void_remap is not None:
            void, ignore = self.void_remap
            mask = np.where(mask == void, ignore, mask)
        return mask

    def load_mask(self, index: int) -> np.ndarray:
        """Only the encoded mask of item ``index`` (native resolution); used by the class-distribution report."""
        item = self.items[index]
        return self._encode(load_index_mask(item.mask, self.mask_hint), item.mask)

    def load_raw(self, index: int) -> dict[str, Any]:
        """Decode and validate item ``index``; returns the untransformed sample (uint8 image, int64 mask)."""
        item = self.items[index]
        image = load_rgb(item.image)
        raw = load_index_mask(item.mask, self.mask_hint)
        if raw.shape != image.shape[:2]:
            raise DataError(
                f"image {item.image} is {image.shape[1]}x{image.shape[0]} but its annotation {item.mask} is "
                f"{raw.shape[1]}x{raw.shape[0]} (WxH); they must match: re-extract the dataset or fix the index file"
            )
        mask = self._encode(raw, item.mask)
        return {
            "image": tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)),
            "mask": tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))),
            "name": item.name,
        }

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        """Sample ``key``: a plain index (eval), or a :class:`SampleKey` whose random transforms draw
        from torch's RNG seeded by the key alone, restored afterwards (``fork_rng``)."""
        if not isinstance(key, SampleKey):
            return self._single_threaded(int(key))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(key))
            return self._single_threaded(key.index)

    def _single_threaded(self, index: int) -> dict[str, Any]:
        # Per-sample tensor ops are tiny: intra-op threads only add contention (measured 20-200x slower
        # with 2 threads on a busy 2-core box). Workers already run single-threaded; do the same here.
        threads = torch.get_num_threads()
        if threads == 1:
            return self._getitem(index)
        torch.set_num_threads(1)
        try:
            return self._getitem(index)
        finally:
            torch.set_num_threads(threads)

    def _getitem(self, index: int) -> dict[str, Any]:
        try:
            sample = self.load_raw(index)
        except DataError as e:
            if not self.skip_bad_samples:
                raise
            key = str(self.items[index].image)
            if key not in self.bad_samples:
                warnings.warn(f"skipping bad sample {key}: {e}", stacklevel=2)
            self.bad_samples[key] = str(e)
            # Dropped, not replaced (a replacement would count another image twice): a marker that collate
            # leaves out of the batch. The index keeps meaning this item, so index-based sampling and
            # per-index seeding are unaffected.
            return {"_skipped": [f"{key}\t{e}"]}
        if self.transform is not None:
            sample = self.transform(sample)
        sample["_skipped"] = []
        return sample


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples into ``{"image": (B,3,H,W) float32, "mask": (B,H,W) int64, "name": [str]}``.

    Skipped samples (markers without an image) are left out; their records go to ``_skipped``. A batch
    of skipped samples only has no ``image`` key (SegDataLoader does not yield it)."""
    kept = [s for s in samples if "image" in s]
    batch: dict[str, Any] = {"_skipped": [x for s in samples for x in s.get("_skipped", ())]}
    if kept:
        batch["image"] = torch.stack([torch.as_tensor(s["image"]).as_subclass(torch.Tensor) for s in kept])
        batch["mask"] = torch.stack([torch.as_tensor(s["mask"]).as_subclass(torch.Tensor) for s in kept]).long()
        batch["name"] = [s["name"] for s in kept]
    return batch


_WORKER_RE = re.compile(r"^hazardseg\.errors\.(\w+): (.*)$", re.M)


class SegDataLoader(DataLoader):
    """DataLoader that (1) moves skipped-sample records from batches into ``dataset.bad_samples`` and
    (2) turns a DataError raised inside a worker process back into its original one-line message."""

    def __iter__(self):  # type: ignore[override]
        it = super().__iter__()
        yielded, skipped = 0, []
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            except HazardsegError as e:
                msg = str(e)
                if "DataLoader worker" in msg:
                    found = _WORKER_RE.findall(msg)
                    if found:
                        raise type(e)(found[-1][1]) from None
                raise
            if isinstance(batch, dict):
                for rec in batch.pop("_skipped", ()) or ():
                    key, _, reason = rec.partition("\t")
                    skipped.append(key)
                    if hasattr(self.dataset, "bad_samples"):
                        self.dataset.bad_samples[key] = reason
                if "image" not in batch:  # every sample of this batch was skipped
                    continue
            yielded += 1
            yield batch
        if not yielded and skipped:
            raise DataError(f"all {len(skipped)} samples of this split are unreadable (first: {skipped[0]}); fix the dataset")


class SegmentationDataModule(L.LightningDataModule):
    """Common base: config validation, transforms, split caching, dataloaders.

    Subclasses set the class attributes and implement :meth:`build_dataset`; their constructors take
    only their own options and pass the common ones (``**common``) through.
    """

    name: ClassVar[str] = "segmentation"
    # None: the dataset has no semantic classes (test-only anomaly benchmarks: normal / anomaly / void)
    NUM_CLASSES: ClassVar[int | None] = 0
    CLASS_NAMES: ClassVar[tuple[str, ...]] = ()
    DEFAULT_IGNORE_INDEX: ClassVar[int | None] = None
    ANOMALY_INDEX: ClassVar[int | None] = None
    # native "void" value in the encoded masks (remapped to ignore_index); None when the dataset has none
    VOID_VALUE: ClassVar[int | None] = None
    DEFAULT_IMAGE_SIZE: ClassVar[tuple[int, int]] = (256, 256)
    DEFAULT_BATCH_SIZE: ClassVar[int] = 8

    def __init__(
        self,
        root: str | Path | None = None,
        image_size: Sequence[int] | None = None,
        eval_image_size: Sequence[int] | None = None,
        batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        augment: dict[str, Any] | None = None,
        num_classes: int | None = None,
        ignore_index: int | None | str = "default",
        skip_bad_samples: bool = False,
        persistent_workers: bool | None = None,
        outliers: Any = None,
        val_outliers: Any = None,
        val_outliers_seed: int = 0,
        train_seed: int = 0,
    ):
        """``outliers``: the ``data.outliers`` config (see ``hazardseg.data.outliers``); when enabled, the
        TRAIN transform pastes outlier objects (label ``OUTLIER_LABEL``); test never does.
        ``val_outliers``: a paste config (same keys as ``outliers``) or transform that turns the VAL split
        into an anomaly proxy (the same objects every epoch; see :mod:`hazardseg.data.proxy`).
        ``eval_image_size``: [H, W] that val/test images *and masks* are resized to (null = ``image_size``).
        Training crops can be smaller than the evaluated images, as in most segmentation recipes; set it to
        the label size to score every label pixel as the papers do (labels are then not resampled)."""
        super().__init__()
        # Shuffle order and augmentation of every (epoch, training sample) derive from this seed only.
        self.train_seed = check_seed(train_seed)
        self.root = None if root in (None, "", "null") else Path(str(root)).expanduser()
        self.image_size = parse_image_size(image_size or self.DEFAULT_IMAGE_SIZE)
        self.eval_image_size = self.image_size if eval_image_size is None else parse_image_size(eval_image_size, "data.eval_image_size")
        batch_size = self.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        self.augment = parse_augment(augment)
        for key, val, lo in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ConfigError(f"data.{key}={val!r}: expected an int >= {lo}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = (num_workers > 0) if persistent_workers is None else bool(persistent_workers and num_workers > 0)
        self.skip_bad_samples = bool(skip_bad_samples)
        if num_classes is not None and self.NUM_CLASSES is not None and num_classes != self.NUM_CLASSES:
            raise ConfigError(
                f"data.num_classes={num_classes} but {self.name} has {self.NUM_CLASSES} classes; "
                f"set data.num_classes={self.NUM_CLASSES} (or leave it null)"
            )
        self.num_classes: int | None = self.NUM_CLASSES
        if ignore_index == "default":
            ignore_index = self.DEFAULT_IGNORE_INDEX
        if ignore_index is not None and (not isinstance(ignore_index, int) or isinstance(ignore_index, bool)):
            raise ConfigError(f"data.ignore_index={ignore_index!r}: expected an int or null")
        if self.VOID_VALUE is not None and ignore_index is None:
            raise ConfigError(
                f"data.ignore_index=null but {self.name} masks have void pixels (value {self.VOID_VALUE}); "
                f"set data.ignore_index={self.VOID_VALUE}"
            )
        if ignore_index is not None and 0 <= ignore_index < (self.NUM_CLASSES or 0) and self.VOID_VALUE is not None:
            raise ConfigError(
                f"data.ignore_index={ignore_index} collides with a class id of {self.name} (0..{self.NUM_CLASSES - 1}); "
                f"use {self.VOID_VALUE}"
            )
        if ignore_index is not None and ignore_index == self.ANOMALY_INDEX:
            raise ConfigError(
                f"data.ignore_index={ignore_index} is the anomaly label of {self.name}: anomaly pixels would be ignored "
                f"and no anomaly metric computed. Fix: data.ignore_index=null, or a value that is no label (e.g. 255)"
            )
        self.ignore_index: int | None = ignore_index
        self.anomaly_index: int | None = self.ANOMALY_INDEX
        self.class_names: list[str] = list(self.CLASS_NAMES)
        assert len(self.class_names) == (self.num_classes or 0), (self.name, len(self.class_names))
        from hazardseg.data.outliers import build_paste_transform  # here: outliers -> synthetic -> base

        self.outliers = build_paste_transform(outliers)
        self.train_transform = build_train_transform(self.image_size, self.augment, self.ignore_index, self.outliers)
        self.eval_transform = build_eval_transform(self.eval_image_size)
        self.val_outliers = val_outliers if callable(val_outliers) else build_paste_transform(val_outliers, key="data.val_outliers")
        self.val_transform = self.eval_transform
        if self.val_outliers is not None:
            from hazardseg.data.proxy import build_proxy_transform

            self.val_transform = build_proxy_transform(self.eval_image_size, self.val_outliers, val_outliers_seed)
        self.datasets: dict[str, SegmentationDataset] = {}
        # Where scorer statistics are fitted when this datamodule is only the test data of an eval run on
        # another dataset (set by pipeline.evaluate: the checkpoint's training data); None = this one.
        self.scorer_fit_data: SegmentationDataModule | None = None
        self._fit_dataset: SegmentationDataset | None = None

    # --- to implement -----------------------------------------------------------------------
    def build_dataset(self, split: str) -> SegmentationDataset:
        """Return the dataset of ``split`` ('train'|'val'|'test') with ``transform=None``. Raise DataError if empty."""
        raise NotImplementedError

    def check_root(self) -> None:
        """Raise DataError (with download instructions) when the data root is missing."""
        if self.root is None or not self.root.is_dir():
            raise DataError(f"data.root={self.root}: folder not found; set data.root=/path/to/{self.name}")

    # --- Lightning hooks ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.check_root()

    def setup(self, stage: str | None = None) -> None:
        splits = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }.get(stage or "", SPLITS)
        self.check_root()
        for split in splits:
            self._get(split)

    def _get(self, split: str) -> SegmentationDataset:
        if split not in self.datasets:
            ds = self.build_dataset(split)
            if len(ds) == 0:
                raise DataError(f"{self.name} {split} split is empty (data.root={self.root}); check data.root and the dataset layout")
            ds.skip_bad_samples = self.skip_bad_samples
            if self.VOID_VALUE is not None and self.ignore_index != self.VOID_VALUE:
                ds.void_remap = (self.VOID_VALUE, int(self.ignore_index))
            self.datasets[split] = ds
            self._check_leakage()
        return self.datasets[split]

    def _check_leakage(self) -> None:
        """An image of the val or test split that is also a training image makes their numbers meaningless."""
        train = self.datasets.get("train")
        if train is None:
            return
        seen = {os.path.abspath(item.image) for item in train.items}  # abspath normalises "../"
        for split in ("val", "test"):
            other = self.datasets.get(split)
            if other is None or other is train:
                continue
            shared = [item.image for item in other.items if os.path.abspath(item.image) in seen]
            if shared:
                raise DataError(
                    f"{len(shared)} image(s) of the {split} split are also training images (e.g. {shared[0]}): the {split} "
                    f"numbers would be measured on training data. Fix: correct the split's index file or folders"
                )

    def dataset(self, split: str, train_transform: bool = False) -> SegmentationDataset:
        """The dataset of ``split`` with eval (default) or train transforms."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        base = self._get(split)
        if train_transform:
            return base.with_transform(self.train_transform)
        return base.with_transform(self.val_transform if split == "val" else self.eval_transform)

    @property
    def bad_samples(self) -> dict[str, str]:
        """All bad samples met so far (file -> reason), over every split."""
        out: dict[str, str] = {}
        for ds in self.datasets.values():
            out.update(ds.bad_samples)
        return out

    def _loader(self, ds: SegmentationDataset, sampler: EpochSampler | None = None) -> SegDataLoader:
        workers = loader_workers(self.num_workers)  # launcher workers (joblib/loky) need an explicit start method
        return SegDataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=sampler is not None and len(ds) > self.batch_size,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers["num_workers"] > 0,
            collate_fn=collate,
            **workers,
            # Each new loader iterator draws its workers' base seed from this generator: a private one
            # leaves the global RNG (restored on resume) untouched by how often loaders restart.
            generator=torch.Generator().manual_seed(self.train_seed),
        )

    def train_dataloader(self) -> SegDataLoader:
        """Shuffled training batches, each sample a function of (``train_seed``, epoch, index)."""
        ds = self.dataset("train", train_transform=True)
        return self._loader(ds, EpochSampler(ds, self.train_seed, shuffle=True, **self._replica()))

    def val_dataloader(self) -> SegDataLoader:
        return self._loader(self.dataset("val"))

    def test_dataloader(self) -> SegDataLoader:
        return self._loader(self.dataset("test"))

    def fit_dataloader(self) -> SegDataLoader:
        """TRAIN split with eval transforms, not shuffled: for fitting post-hoc scorer statistics."""
        return self._loader(self.dataset("train"))

    def _replica(self) -> dict[str, int]:
        """This process's share of the training split under DDP (Lightning's sampler arguments)."""
        trainer = getattr(self, "trainer", None)
        kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
        return {"num_replicas": int(kwargs["num_replicas"]), "rank": int(kwargs["rank"])} if kwargs else {}

    def fingerprint(self, stage: str = "fit", transforms: bool = True) -> dict[str, Any]:
        """What a computation on ``stage``'s data depends on, for cache keys: the dataset, its root, the
        files of the split (names, sizes, modification times), the image size and the eval transform (``transforms=
        False`` leaves these two out, for computations on native-resolution masks).
        ``fit`` = the train split as read for fitting scorer statistics (eval transforms)."""
        split = {"fit": "train", "validate": "val"}.get(stage, stage)
        self.prepare_data()
        ds = self._get(split)
        files = hashlib.sha256()
        for item in ds.items:
            files.update(f"{item.name}:{_stat(item.image)}:{_stat(item.mask)}\n".encode())
        found = {
            "dataset": f"{type(self).__module__}.{type(self).__qualname__}", "root": str(self.root), "split": split,
            "files": files.hexdigest(), "ignore_index": self.ignore_index,
        }
        if transforms:
            found.update(image_size=list(self.image_size),
                         transform=repr(self.val_transform if split == "val" else self.eval_transform))
        return found

    def state_dict(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={self.root}, image_size={list(self.image_size)}, batch_size={self.batch_size}, "
            f"num_classes={self.num_classes}, ignore_index={self.ignore_index}, anomaly_index={self.anomaly_index})"
        )


def _stat(path: Path) -> str:
    """Size and modification time: a rewritten file of the same size (an edited annotation) changes it too."""
    try:
        found = path.stat()
    except OSError:
        return "missing"
    return f"{found.st_size}:{found.st_mtime_ns}"
