"""The dataset and loader every datamodule uses (see :mod:`hazardseg.data.base` for the skip rule).

* :class:`SegmentationDataset` holds a list of (image file, mask file, name) items, decodes them
  lazily, validates each sample in ``__getitem__`` (decodable, image/mask same size, an index mask
  not an RGB colour mask, label values in range) and maps raw labels to training ids via
  :meth:`SegmentationDataset.encode_mask` (per dataset).
* :func:`collate` drops skipped samples; :class:`SegDataLoader` records them and restores worker errors.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from hazardseg.data.readers import Item, load_index_mask, load_rgb
from hazardseg.data.sampling import SampleKey, sample_seed
from hazardseg.errors import DataError, HazardsegError


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
