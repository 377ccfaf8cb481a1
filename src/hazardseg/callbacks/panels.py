"""Qualitative test panels (Input | GT | Pred | Overlay | Confidence | Error | Anomaly) of the first
``num_panels`` test images, saved as PNGs and sent to loggers that show images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L


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

    def on_test_start(self, trainer, pl_module) -> None:
        self.panels, self.files = [], []

    def on_test_batch_end(self, trainer, pl_module, outputs: dict[str, Any], batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        from hazardseg.visualize import prediction_panel

        if len(self.panels) >= self.num_panels or not trainer.is_global_zero or not pl_module.semantic_labels:
            return
        scores = outputs["scores"]
        name = self.scorer or next(iter(scores), None)
        logits = outputs["outputs"]["logits"]
        for i in range(min(len(batch["name"]), self.num_panels - len(self.panels))):
            panel, miou = prediction_panel(
                batch["image"][i].cpu(), batch["mask"][i].cpu(), logits[i].detach().float().cpu(), pl_module.num_classes,
                str(batch["name"][i]), pl_module.ignore_index, pl_module.anomaly_index,
                None if name is None else scores[name][i].detach().cpu(),
            )
            self.panels.append((str(batch["name"][i]), panel, miou))

    def on_test_end(self, trainer, pl_module) -> None:
        if not self.panels or not trainer.is_global_zero:
            return
        if self.out_dir is not None:
            self.files = save_panels(self.out_dir, self.panels)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image("test/panels", [p for _, p, _ in self.panels],
                                 caption=[f"{n} mIoU {100 * m:.1f}%" for n, _, m in self.panels])


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
