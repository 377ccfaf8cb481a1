"""Qualitative test panels of the first ``num_panels`` test images (:mod:`hazardseg.visualize`: a grid with
class legend, anomaly-GT contour and colour bars), saved as PNGs in ``<run dir>/panels`` and sent to
loggers that show images; W&B also gets the inputs with prediction / ground-truth masks (mask overlay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hazardseg.callbacks.base import EvaluationCallback
from hazardseg.data.labels import IGNORE_LABEL, OUTLIER_LABEL
from hazardseg.maps import resize


class PredictionPanels(EvaluationCallback):
    results_key = "panels"  # the PNG files written
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

    def results(self) -> list[str]:
        return [str(p) for p in self.files]

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
            image, mask, frame_logits = batch["image"][i].cpu(), batch["mask"][i].cpu(), logits[i].detach().float().cpu()
            if image.shape[-2:] != mask.shape[-2:]:  # input resized (data.image_size): show it at the labels' size
                image, frame_logits = resize(image, mask.shape[-2:]), resize(frame_logits, mask.shape[-2:])
            panel, miou = prediction_panel(
                image, mask, frame_logits, pl_module.num_classes, str(batch["name"][i]),
                pl_module.labels, None if name is None else scores[name][i].detach().cpu(),
                class_names=pl_module.class_names, scorer=name or "",
            )
            self.panels.append((str(batch["name"][i]), panel, miou))
            if pl_module.labels.semantic:
                self.masks.append(_wandb_sample(image, mask, frame_logits, str(batch["name"][i]), miou))

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
                logger.log_segmentation("test/segmentation", self.masks, pl_module.labels.legend())


def _wandb_sample(image, mask, logits, name: str, miou: float) -> dict[str, Any]:
    import numpy as np

    from hazardseg.data.transforms import denormalize

    gt = mask.numpy().astype(np.int64)
    gt[gt >= OUTLIER_LABEL] = IGNORE_LABEL  # pasted outliers / padding: not a class
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
