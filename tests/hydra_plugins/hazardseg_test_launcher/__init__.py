"""A test-only Hydra launcher (Hydra loads launchers only from the ``hydra_plugins`` namespace): the
``hydra/launcher=slurm`` preset run by submitit's local executor, since there is no SLURM cluster in tests."""

from __future__ import annotations

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
