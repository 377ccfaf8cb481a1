"""Qualitative test panels of the first ``num_panels`` test images (:mod:`hazardseg.visualize`: a grid with
class legend, anomaly-GT contour and colour bars), saved as PNGs in ``<run dir>/panels`` and sent to
loggers that show images; W&B also gets the inputs with prediction / ground-truth masks (mask overlay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

IGNORED = 255  # W&B mask value of ignored pixels


class PredictionPanels(L.Callback):
    """Args:
        num_panels: how many test images to render (0 = none).
        out_dir: folder for the PNGs (``${paths.output_dir}/panels``).
        scorer: the scorer whose map fills the anomaly column (default: the first configured one).
    """

    def __init__(self, num_panels: int = 8, out_dir: str | None = None, scorer: str | None = None):
        self.num_panels = int(num_panels)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.scorer = scorer
        self.panels: list[tuple[str, Any, float]] = []
        self.files: list[Path] = []
        self.masks: list[dict[str, Any]] = []  # inputs with prediction / ground-truth masks for W&B's mask overlay

    def on_test_start(self, trainer, pl_module) -> None:
        self.panels, self.files, self.masks = [], [], []

    def on_test_batch_end(self, trainer, pl_module, outputs: dict[str, Any], batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        from hazardseg.visualize import prediction_panel

        if len(self.panels) >= self.num_panels or not trainer.is_global_zero:
            return
        scores = outputs["scores"]
        name = self.scorer or next(iter(scores), None)
        logits = outputs["outputs"]["logits"]
        for i in range(min(len(batch["name"]), self.num_panels - len(self.panels))):
            image, mask = batch["image"][i].cpu(), batch["mask"][i].cpu()
            panel, miou = prediction_panel(
                image, mask, logits[i].detach().float().cpu(), pl_module.num_classes,
                str(batch["name"][i]), pl_module.ignore_index, pl_module.anomaly_index,
                None if name is None else scores[name][i].detach().cpu(),
                class_names=pl_module.class_names, scorer=name or "", semantic_labels=pl_module.semantic_labels,
            )
            self.panels.append((str(batch["name"][i]), panel, miou))
            if pl_module.semantic_labels:
                self.masks.append(_wandb_sample(image, mask, logits[i], str(batch["name"][i]), miou))

    def on_test_end(self, trainer, pl_module) -> None:
        if not self.panels or not trainer.is_global_zero:
            return
        if self.out_dir is not None:
            self.files = save_panels(self.out_dir, self.panels)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image("test/panels", [p for _, p, _ in self.panels],
                                 caption=[f"{n} mIoU {100 * m:.1f}%" for n, _, m in self.panels])
            if self.masks and hasattr(logger, "log_segmentation"):
                logger.log_segmentation("test/segmentation", self.masks, mask_labels(pl_module))


def mask_labels(pl_module) -> dict[int, str]:
    """Class id -> name for W&B masks, with the anomaly and ignore labels named too."""
    labels = dict(enumerate(pl_module.class_names))
    if pl_module.anomaly_index is not None:
        labels[int(pl_module.anomaly_index)] = "anomaly"
    labels[IGNORED] = "ignored"
    return labels


def _wandb_sample(image, mask, logits, name: str, miou: float) -> dict[str, Any]:
    import numpy as np

    from hazardseg.data.transforms import denormalize

    gt = mask.numpy().astype(np.int64)
    gt[gt >= 254] = IGNORED  # pasted outliers / padding: not a class
    return {"image": (denormalize(image.float()).permute(1, 2, 0).numpy() * 255).astype(np.uint8),
            "prediction": logits.argmax(0).cpu().numpy().astype(np.uint8), "ground_truth": gt.astype(np.uint8),
            "caption": f"{name} mIoU {100 * miou:.1f}%"}


def save_panels(folder: Path, panels: list) -> list[Path]:
    from PIL import Image

    from hazardseg.io import atomic_path

    files = []
    for i, (name, panel, _) in enumerate(panels):
        path = (folder / f"{i:02d}_{name.replace('/', '_')}").with_suffix(".png")
        with atomic_path(path) as tmp:
            Image.fromarray(panel).save(tmp, format="PNG")
        files.append(path)
    return files
