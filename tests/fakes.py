"""Test doubles importable by `_target_` (tests put this folder on PYTHONPATH for subprocesses)."""

from __future__ import annotations

import torch
from torchvision import tv_tensors

from hazardseg.data.transforms import OUTLIER_LABEL


class PasteSquare(torch.nn.Module):
    """Minimal paste transform (the interface of the outlier-paste transform): one square of random colour
    at a random place (torch RNG), its mask pixels set to OUTLIER_LABEL."""

    def __init__(self, size: float = 0.25):
        super().__init__()
        self.size = size

    def forward(self, sample: dict) -> dict:
        image, mask = sample["image"].clone(), sample["mask"].clone()
        h, w = mask.shape[-2:]
        side = max(2, int(self.size * min(h, w)))
        top = int(torch.randint(0, h - side + 1, ()).item())
        left = int(torch.randint(0, w - side + 1, ()).item())
        image[:, top:top + side, left:left + side] = torch.randint(0, 256, (3, 1, 1), dtype=image.dtype)
        mask[top:top + side, left:left + side] = OUTLIER_LABEL
        return {**sample, "image": tv_tensors.Image(image), "mask": tv_tensors.Mask(mask)}



try:  # the submitit plugin is optional (pip install -e ".[cluster]")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
except ImportError:
    LocalLauncher = object


class SlurmPresetOnLocalExecutor(LocalLauncher):
    """The `hydra/launcher=slurm` preset run by submitit's local executor (no SLURM here): generic
    resources (tasks, GPUs, CPUs, memory, time) are kept, SLURM-only ones are recorded in
    ``<sweep>/slurm_only_params.json`` so a test can check what sbatch would have received."""

    def __init__(self, **params):
        from omegaconf import OmegaConf

        generic = set(OmegaConf.structured(BaseQueueConf).keys()) | {"submitit_folder"}
        self.slurm_only = {k: v for k, v in params.items() if k not in generic}
        super().__init__(**{k: v for k, v in params.items() if k in generic})

    def launch(self, job_overrides, initial_job_idx):
        import json
        from pathlib import Path

        sweep = Path(str(self.config.hydra.sweep.dir))
        sweep.mkdir(parents=True, exist_ok=True)
        (sweep / "slurm_only_params.json").write_text(json.dumps(self.slurm_only, default=str))
        return super().launch(job_overrides, initial_job_idx)
