"""The datamodule of the synthetic StreetHazards: the real StreetHazards reader on a generated tree."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hazardseg.data.streethazards import StreetHazardsDataModule
from hazardseg.data.synthetic.writer import DEFAULTS, _params, dataset_id, default_cache_dir, generate_streethazards, is_complete
from hazardseg.errors import DataError


class SyntheticStreetHazardsDataModule(StreetHazardsDataModule):
    """StreetHazards datamodule on the synthetic dataset.

    ``root=None`` (the default) -> ``$HAZARDSEG_CACHE`` or ``~/.cache/hazardseg`` /
    ``synthetic_streethazards-v<ver>-<hash>``, generated there on first use. An explicit ``root`` must
    already hold a synthetic dataset: data is generated only where the user asked for the default,
    never as a fallback for a folder that does not exist (that would report metrics on data the user
    never meant, e.g. after a typo in ``data.root``).
    """

    name = "synthetic_streethazards"

    DEFAULT_IMAGE_SIZE = (144, 256)
    DEFAULT_BATCH_SIZE = 8

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        n_train: int = DEFAULTS["n_train"],
        n_val: int = DEFAULTS["n_val"],
        n_test: int = DEFAULTS["n_test"],
        width: int = DEFAULTS["width"],
        height: int = DEFAULTS["height"],
        seed: int = DEFAULTS["seed"],
        **common: Any,
    ):
        self.gen_params = _params(n_train, n_val, n_test, width, height, seed)
        self.generate = root in (None, "", "null")
        target = default_cache_dir() / dataset_id(**self.gen_params) if self.generate else Path(root).expanduser()
        super().__init__(root=target, **common)
        self.generation_seconds: float | None = None

    def prepare_data(self) -> None:
        if not self.generate:
            self.check_explicit_root()
        elif not is_complete(self.root):
            t0 = time.perf_counter()
            try:
                generate_streethazards(self.root, **self.gen_params)
            except OSError as err:
                raise DataError(
                    f"cannot write the synthetic dataset to {self.root} ({err.strerror or type(err).__name__}). "
                    f"Fix: export HAZARDSEG_CACHE=/a/writable/folder"
                ) from None
            self.generation_seconds = time.perf_counter() - t0
        else:
            generate_streethazards(self.root, **self.gen_params)  # validates the parameters

    def check_explicit_root(self) -> None:
        root = self.root
        default = f"drop data.root to use the generated default (in $HAZARDSEG_CACHE, now {default_cache_dir()})"
        if is_complete(root):
            generate_streethazards(root, **self.gen_params)  # validates the parameters; generates nothing
        elif not root.exists():
            raise DataError(f"data.root={root}: folder not found. The synthetic dataset is only generated at its default "
                            f"location. Fix: {default}, or point data.root to an existing dataset")
        elif (root / "train").is_dir() or (root / "test").is_dir():
            raise DataError(f"data.root={root} looks like a real StreetHazards folder (train/, test/), but the synthetic "
                            f"dataset is selected. Fix: select it with data=streethazards data.root={root}")
        else:
            raise DataError(f"data.root={root} holds no synthetic dataset (no synthetic.json). Fix: {default}")

    def setup(self, stage: str | None = None) -> None:
        if not is_complete(self.root):
            self.prepare_data()
        super().setup(stage)
