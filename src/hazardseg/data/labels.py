"""The label vocabulary: the one place that spells out what a mask value means.

Every datamodule describes its masks with a :class:`LabelSpec` (``datamodule.labels``); losses, metrics,
panels and benchmark code ask it instead of comparing with literals. Values a mask can hold:

==================  =========================================================================================
``0 .. K-1``        the K known classes (``class_names``); test-only benchmarks have none (``K = 0``:
                    their masks hold normal ``0`` / anomaly ``1`` / void ``255``)
``ignore_index``    the dataset's "not labelled" value (Cityscapes / VOC / benchmarks: 255; StreetHazards:
                    none, its ``unlabeled`` is a class): never trained on, never scored
:data:`PAD_LABEL`   (255) padding added by a random crop: ignored like ``ignore_index``
:data:`OUTLIER_LABEL` (254) pixels of outlier objects pasted into *training* images (``data.outliers``;
                    PEBAL uses 254 too): outlier-exposure losses train on them, plain CE ignores them,
                    the validation proxy counts them as anomalies
``anomaly_values``  the anomaly label(s) of test / benchmark masks (StreetHazards test: 13; benchmarks: 1)
==================  =========================================================================================

This module imports nothing of hazardseg: it stands below every other data module, as do the synthetic
test anomalies' colours (:data:`ANOMALY_COLORS`), which the outlier generator must stay away from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

# Reserved mask values; class ids must stay below both.
IGNORE_LABEL = 255  # what losses and metrics use for "not scored", whatever the dataset's own ignore value
PAD_LABEL = IGNORE_LABEL  # crop padding is not image content: never learned as a class
OUTLIER_LABEL = 254  # pasted outlier pixels (training / validation proxy only)

# Colours of the synthetic StreetHazards' test anomalies (:mod:`hazardseg.data.synthetic`). The procedural
# training outliers (:mod:`hazardseg.data.outlier_synth`) keep their hues away from these, so that pasting
# cannot teach the test anomalies themselves.
ANOMALY_COLORS = [(235, 40, 210), (40, 230, 230), (170, 240, 20), (255, 130, 0), (140, 40, 230), (250, 250, 60)]


@dataclass(frozen=True)
class LabelSpec:
    """What the values of one dataset's masks mean (see the module docstring).

    Args:
        class_names: names of the known classes 0..K-1 (empty for test-only benchmarks).
        ignore_index: the dataset's ignore value, or None.
        anomaly_values: mask values that mark anomalies in test / benchmark labels.
        palette: optional RGB colour per class (None: the panels' generated palette).
    """

    class_names: tuple[str, ...] = ()
    ignore_index: int | None = None
    anomaly_values: tuple[int, ...] = ()
    palette: tuple[tuple[int, int, int], ...] | None = field(default=None, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def semantic(self) -> bool:
        """True when masks carry classes (mIoU is defined); False for normal / anomaly / void benchmarks."""
        return self.num_classes > 0

    @property
    def anomaly_index(self) -> int | None:
        """The (first) anomaly value, for code that names one (W&B mask legends, panels)."""
        return self.anomaly_values[0] if self.anomaly_values else None

    def is_anomaly(self, mask: Tensor, outliers: bool = False) -> Tensor:
        """Anomaly pixels of ``mask``; with ``outliers`` pasted outlier pixels count too (validation proxy)."""
        found = torch.zeros_like(mask, dtype=torch.bool)
        for value in self.anomaly_values + ((OUTLIER_LABEL,) if outliers else ()):
            found |= mask == value
        return found

    def valid(self, mask: Tensor) -> Tensor | None:
        """Pixels that count in an anomaly metric (all but ``ignore_index``); None = every pixel."""
        return None if self.ignore_index is None else mask != self.ignore_index

    def not_a_class(self, mask: Tensor) -> Tensor:
        """Pixels that do not count towards mIoU: ignored, padding, pasted outliers and anomalies."""
        out = mask >= OUTLIER_LABEL
        if self.ignore_index is not None:
            out |= mask == self.ignore_index
        return out | self.is_anomaly(mask)

    def metric_target(self, mask: Tensor) -> Tensor:
        """``mask`` with every pixel that is not a known class set to :data:`IGNORE_LABEL` (segmentation metrics)."""
        return mask.masked_fill(self.not_a_class(mask), IGNORE_LABEL)

    def legend(self) -> dict[int, str]:
        """Mask value -> name, anomaly and ignore values included (W&B mask overlays)."""
        names = dict(enumerate(self.class_names))
        for value in self.anomaly_values:
            names[int(value)] = "anomaly"
        names[IGNORE_LABEL] = "ignored"
        return names


__all__ = ["ANOMALY_COLORS", "IGNORE_LABEL", "OUTLIER_LABEL", "PAD_LABEL", "LabelSpec"]
