"""The datamodules: one base that every dataset shares, and the training datamodule built on it.

* :class:`DataModuleBase` is what every datamodule has: its root, loader options, the facts of its
  labels (:attr:`DataModuleBase.labels`, a :class:`~hazardseg.data.labels.LabelSpec`), its splits
  (``SPLITS_PROVIDED``; asking for a split it does not have is a one-line error), a dataset per split,
  the bad samples met so far and a fingerprint for cache keys.
* :class:`SegmentationDataModule` adds what training needs: augmentation, outlier pasting (injected
  as a configured transform, :mod:`hazardseg.data.outliers`), the validation anomaly proxy, the
  shuffled and seeded training loader and the fit loader of scorer statistics.
* The test-only anomaly benchmarks (:mod:`hazardseg.data.anomaly_benchmarks`) are its siblings:
  ``DataModuleBase`` with a test split only.

Bad samples: with ``skip_bad_samples=False`` (default) the first bad sample raises a one-line
:class:`~hazardseg.errors.DataError` naming the file and the fix. With ``skip_bad_samples=True`` a
bad sample is **dropped, not replaced** (:mod:`hazardseg.data.dataset`): index ``i`` always means item
``i`` and no image is counted twice; the run lists them in results.json and the loggers.
Training samples are requested as :class:`~hazardseg.data.sampling.SampleKey` ``(index, epoch, seed)``
and augmented with torch's RNG seeded by that key alone (:mod:`hazardseg.data.sampling`): a run's
batches do not depend on ``num_workers``, persistent workers, DDP ranks or a resume.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import lightning as L
import torch

from hazardseg.data.dataset import SegDataLoader, SegmentationDataset, collate
from hazardseg.data.labels import LabelSpec
from hazardseg.data.outliers import build_paste_transform
from hazardseg.data.readers import Item, check_values, load_index_mask, load_rgb, skip_or_raise  # noqa: F401  (dataset API)
from hazardseg.data.sampling import EpochSampler, check_seed
from hazardseg.data.transforms import build_eval_transform, build_train_transform, parse_augment, parse_image_size
from hazardseg.data.workers import loader_workers
from hazardseg.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


class DataModuleBase(L.LightningDataModule):
    """What every datamodule shares. Subclasses declare their facts as class attributes (below) and
    implement :meth:`build_dataset`; their constructors take only their own options and pass the
    common ones (``**common``) through."""

    name: ClassVar[str] = "segmentation"
    # The facts of the labels (:attr:`labels` turns them into the LabelSpec that the rest of hazardseg reads).
    NUM_CLASSES: ClassVar[int | None] = 0  # None: no semantic classes (test-only benchmarks)
    CLASS_NAMES: ClassVar[tuple[str, ...]] = ()
    PALETTE: ClassVar[tuple[tuple[int, int, int], ...] | None] = None
    DEFAULT_IGNORE_INDEX: ClassVar[int | None] = None
    ANOMALY_INDEX: ClassVar[int | None] = None
    # native "void" value in the encoded masks (remapped to ignore_index); None when the dataset has none
    VOID_VALUE: ClassVar[int | None] = None
    DEFAULT_BATCH_SIZE: ClassVar[int] = 8
    SPLITS_PROVIDED: ClassVar[tuple[str, ...]] = SPLITS
    test_only: ClassVar[bool] = False

    def __init__(
        self,
        root: str | Path | None = None,
        batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        num_classes: int | None = None,
        ignore_index: int | None | str = "default",
        skip_bad_samples: bool = False,
        persistent_workers: bool | None = None,
    ):
        super().__init__()
        self.root = None if root in (None, "", "null") else Path(str(root)).expanduser()
        batch_size = self.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
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
        self.ignore_index: int | None = self._check_ignore_index(self.DEFAULT_IGNORE_INDEX if ignore_index == "default" else ignore_index)
        self.anomaly_index: int | None = self.ANOMALY_INDEX
        self.class_names: list[str] = list(self.CLASS_NAMES)
        assert len(self.class_names) == (self.num_classes or 0), (self.name, len(self.class_names))
        self.datasets: dict[str, SegmentationDataset] = {}
        # Where scorer statistics are fitted when this datamodule is only the test data of an eval run on
        # another dataset (set by the eval run's build stage: the checkpoint's training data); None = this one.
        self.scorer_fit_data: DataModuleBase | None = None

    def _check_ignore_index(self, ignore_index: Any) -> int | None:
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
        return ignore_index

    # --- facts ------------------------------------------------------------------------------
    @property
    def labels(self) -> LabelSpec:
        """What this datamodule's mask values mean (the one place losses, metrics and panels ask)."""
        anomaly = () if self.anomaly_index is None else (int(self.anomaly_index),)
        return LabelSpec(tuple(self.class_names), self.ignore_index, anomaly, self.PALETTE)

    @property
    def semantic_labels(self) -> bool:
        return self.labels.semantic

    @classmethod
    def refuse(cls, what: str) -> ConfigError:
        """The one-line error for a split this datamodule does not provide."""
        return ConfigError(f"data={cls.name} has no {what}. Fix: choose a dataset that has it")

    # --- to implement -----------------------------------------------------------------------
    def build_dataset(self, split: str) -> SegmentationDataset:
        """Return the dataset of ``split`` (one of ``SPLITS_PROVIDED``) with ``transform=None``."""
        raise NotImplementedError

    def eval_transform_of(self, split: str) -> Callable | None:
        """The transform of ``split`` as evaluated (no augmentation)."""
        raise NotImplementedError

    def check_root(self) -> None:
        """Raise DataError (with download instructions) when the data root is missing."""
        if self.root is None or not self.root.is_dir():
            raise DataError(f"data.root={self.root}: folder not found; set data.root=/path/to/{self.name}")

    # --- Lightning hooks ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.check_root()

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}.get(stage or "", SPLITS)
        missing = [s for s in splits if s not in self.SPLITS_PROVIDED]
        if stage is not None and missing:
            raise self.refuse(f"{missing[0]} split (setup('{stage}'))")
        self.check_root()
        for split in splits:
            if split in self.SPLITS_PROVIDED:
                self._get(split)

    # A split a datamodule does not have: one line, not Lightning's "must be implemented".
    def train_dataloader(self):
        raise self.refuse("training split")

    def val_dataloader(self):
        raise self.refuse("validation split")

    def fit_dataloader(self):
        raise self.refuse("training split to fit scorer statistics on (fit them on the checkpoint's own training data)")

    def test_dataloader(self) -> SegDataLoader:
        return self._loader(self.dataset("test"))

    def predict_dataloader(self) -> SegDataLoader:
        return self.test_dataloader()

    # --- datasets -----------------------------------------------------------------------------
    def _get(self, split: str) -> SegmentationDataset:
        if split not in self.SPLITS_PROVIDED:
            raise self.refuse(f"{split} split")
        if split not in self.datasets:
            ds = self.build_dataset(split)
            if len(ds) == 0:
                raise DataError(f"{self.name} {split} split is empty (data.root={self.root}); check data.root and the dataset layout")
            ds.skip_bad_samples = self.skip_bad_samples
            if self.VOID_VALUE is not None and self.ignore_index != self.VOID_VALUE:
                ds.void_remap = (self.VOID_VALUE, int(self.ignore_index))
            self.datasets[split] = ds
            self.on_dataset_built(split)
        return self.datasets[split]

    def on_dataset_built(self, split: str) -> None:
        """Hook after a split's dataset is read (the training datamodule checks for leakage here)."""

    def dataset(self, split: str, train_transform: bool = False) -> SegmentationDataset:
        """The dataset of ``split`` with its evaluation transform."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if train_transform:
            raise self.refuse(f"training transform for the {split} split")
        return self._get(split).with_transform(self.eval_transform_of(split))

    @property
    def bad_samples(self) -> dict[str, str]:
        """All bad samples met so far (file -> reason), over every split."""
        out: dict[str, str] = {}
        for ds in self.datasets.values():
            out.update(ds.bad_samples)
        return out

    def _loader(self, ds: SegmentationDataset, sampler: EpochSampler | None = None, generator_seed: int = 0) -> SegDataLoader:
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
            generator=torch.Generator().manual_seed(generator_seed),
        )

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
            size = getattr(self, "image_size", None)
            found.update(image_size=None if size is None else list(size), transform=repr(self.eval_transform_of(split)))
        return found

    def state_dict(self) -> dict[str, Any]:
        return {}


class SegmentationDataModule(DataModuleBase):
    """A dataset with train / val / test splits of semantic labels: transforms, outlier pasting, loaders."""

    DEFAULT_IMAGE_SIZE: ClassVar[tuple[int, int]] = (256, 256)

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
        allow_external_paths: bool = False,
    ):
        """``outliers``: the ``data.outliers`` config (see ``hazardseg.data.outliers``); when enabled, the
        TRAIN transform pastes outlier objects (label ``OUTLIER_LABEL``); test never does.
        ``val_outliers``: a paste config (same keys as ``outliers``) or transform that turns the VAL split
        into an anomaly proxy (the same objects every epoch; see :mod:`hazardseg.data.proxy`).
        ``eval_image_size``: [H, W] that val/test images *and masks* are resized to (null = ``image_size``).
        Training crops can be smaller than the evaluated images, as in most segmentation recipes; set it to
        the label size to score every label pixel as the papers do (labels are then not resampled).
        ``allow_external_paths``: accept file-list entries (odgt, the outlier manifest) that leave their folder."""
        # Shuffle order and augmentation of every (epoch, training sample) derive from this seed only.
        self.train_seed = check_seed(train_seed)
        super().__init__(root, batch_size, num_workers, pin_memory, num_classes, ignore_index, skip_bad_samples, persistent_workers)
        self.image_size = parse_image_size(image_size or self.DEFAULT_IMAGE_SIZE)
        self.eval_image_size = self.image_size if eval_image_size is None else parse_image_size(eval_image_size, "data.eval_image_size")
        self.augment = parse_augment(augment)
        if not isinstance(allow_external_paths, bool):
            raise ConfigError(f"data.allow_external_paths={allow_external_paths!r}: expected true or false")
        self.allow_external_paths = allow_external_paths
        self.outliers = build_paste_transform(outliers, allow_external_paths=allow_external_paths)
        self.train_transform = build_train_transform(self.image_size, self.augment, self.ignore_index, self.outliers)
        self.eval_transform = build_eval_transform(self.eval_image_size)
        self.val_outliers = val_outliers if callable(val_outliers) else build_paste_transform(
            val_outliers, key="data.val_outliers", allow_external_paths=allow_external_paths)
        self.val_transform = self.eval_transform
        if self.val_outliers is not None:
            from hazardseg.data.proxy import build_proxy_transform

            self.val_transform = build_proxy_transform(self.eval_image_size, self.val_outliers, val_outliers_seed)

    def eval_transform_of(self, split: str) -> Callable:
        return self.val_transform if split == "val" else self.eval_transform

    def on_dataset_built(self, split: str) -> None:
        """An image of the val or test split that is also a training image makes their numbers meaningless."""
        train = self.datasets.get("train")
        if train is None:
            return
        seen = {os.path.abspath(item.image) for item in train.items}  # abspath normalises "../"
        for other_split in ("val", "test"):
            other = self.datasets.get(other_split)
            if other is None or other is train:
                continue
            shared = [item.image for item in other.items if os.path.abspath(item.image) in seen]
            if shared:
                raise DataError(
                    f"{len(shared)} image(s) of the {other_split} split are also training images (e.g. {shared[0]}): the "
                    f"{other_split} numbers would be measured on training data. Fix: correct the split's index file or folders"
                )

    def dataset(self, split: str, train_transform: bool = False) -> SegmentationDataset:
        """The dataset of ``split`` with eval (default) or train transforms."""
        if train_transform:
            return self._get(split).with_transform(self.train_transform)
        return super().dataset(split)

    def train_dataloader(self) -> SegDataLoader:
        """Shuffled training batches, each sample a function of (``train_seed``, epoch, index)."""
        ds = self.dataset("train", train_transform=True)
        return self._loader(ds, EpochSampler(ds, self.train_seed, shuffle=True, **self._replica()), self.train_seed)

    def val_dataloader(self) -> SegDataLoader:
        return self._loader(self.dataset("val"), generator_seed=self.train_seed)

    def test_dataloader(self) -> SegDataLoader:
        return self._loader(self.dataset("test"), generator_seed=self.train_seed)

    def fit_dataloader(self) -> SegDataLoader:
        """TRAIN split with eval transforms, not shuffled: for fitting post-hoc scorer statistics."""
        return self._loader(self.dataset("train"), generator_seed=self.train_seed)

    def _replica(self) -> dict[str, int]:
        """This process's share of the training split under DDP (Lightning's sampler arguments)."""
        trainer = getattr(self, "trainer", None)
        kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
        return {"num_replicas": int(kwargs["num_replicas"]), "rank": int(kwargs["rank"])} if kwargs else {}

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
