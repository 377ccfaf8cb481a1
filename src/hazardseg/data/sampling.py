"""The training stream as a pure function of ``(seed, epoch, sample index)``.

Loader workers each hold their own copy of torch's global RNG, seeded from the worker id and a base
seed drawn when the loader's iterator starts. Augmentations drawn from those streams therefore depend
on ``num_workers``, on whether workers persist across epochs, and on when a run was resumed. Instead:

* :class:`EpochSampler` orders the training split with a generator seeded by ``(seed, epoch)`` (the
  ``torch.utils.data.DistributedSampler`` shuffle) and yields :class:`SampleKey` ``(index, epoch, seed)``;
* the dataset (:meth:`hazardseg.data.base.SegmentationDataset.__getitem__`) seeds torch's global RNG
  with :func:`sample_seed` of that key inside ``torch.random.fork_rng``, so every random transform
  (torchvision v2 draws from the global RNG, and so does outlier pasting) gets the same numbers for
  sample ``index`` in ``epoch`` in whichever process loads it, and the caller's RNG is left untouched.

It subclasses ``DistributedSampler`` so that Lightning does not wrap it under DDP (its wrapper would
not forward ``set_epoch``): each rank takes its share of the same permutation, and a sample's
augmentation does not depend on the rank that loads it either.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import NamedTuple

import numpy as np
from torch.utils.data import DistributedSampler

from hazardseg.errors import ConfigError


class SampleKey(NamedTuple):
    """What a training sample is a function of: its index in the split, the epoch and the run's seed."""

    index: int
    epoch: int
    seed: int


def sample_seed(key: SampleKey) -> int:
    """A 64-bit torch seed for ``key``. ``SeedSequence`` hashes the triple, so nearby keys (epoch e,
    index i+1 / epoch e+1, index i) give unrelated streams, unlike ``seed + epoch + index``."""
    return int(np.random.SeedSequence((key.seed, key.epoch, key.index)).generate_state(1, np.uint64)[0])


def check_seed(seed: object, key: str = "data.train_seed") -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{key}={seed!r}: expected an int >= 0 (it defaults to the top-level `seed`)")
    return seed


class EpochSampler(DistributedSampler):
    """Shuffled (or ordered) indices of one epoch, as :class:`SampleKey` items.

    Lightning calls :meth:`set_epoch` before every training epoch, also after a resume, so the keys
    of epoch ``e`` are the same in an uninterrupted and a resumed run.
    """

    def __init__(self, dataset: Sized, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=check_seed(seed))

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        for index in super().__iter__():
            yield SampleKey(int(index), int(self.epoch), int(self.seed))
