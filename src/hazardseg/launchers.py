"""Resources of one sweep job, from the run's own config: what ``conf/hydra/launcher/ray.yaml`` asks Ray for.

A preset that asks every job for a GPU hangs forever on a Ray cluster without one ("No available node types can
fulfill resource request"). The preset therefore derives a job's request from the trainer and the data loader
(``${hazardseg.job_gpus:...}``, ``${hazardseg.job_cpus:...}``), and :func:`unfit_request` tells the launcher
(``hydra_plugins.hazardseg_ray``) before the sweep starts when no node of the cluster could ever run a job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf


def job_gpus(accelerator: Any, devices: Any) -> int:
    """GPUs one job trains on: 0 on CPU; the trainer's device count on GPU (``-1``/``auto``: this machine's)."""
    if str(accelerator).lower() == "cpu":
        return 0
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)
    try:
        count = int(devices)
    except (TypeError, ValueError):  # "auto"
        count = -1
    if count >= 0 and str(accelerator).lower() in ("gpu", "cuda"):
        return count
    local = _local_gpus()
    return local if str(accelerator).lower() == "auto" else max(1, local)


def job_cpus(num_workers: Any) -> int:
    """CPUs one job uses: the main process and its data loader workers, at most this machine's cores."""
    try:
        workers = max(0, int(num_workers))
    except (TypeError, ValueError):
        workers = 0
    return max(1, min(workers + 1, os.cpu_count() or 1))


def unfit_request(request: Mapping[str, Any], nodes: list[Mapping[str, Any]]) -> str | None:
    """Why no node (Ray's ``ray.nodes()``: alive flag, ``Resources``) can ever run a job asking ``request``
    (``num_cpus``, ``num_gpus``, ``resources``), or None when one can."""
    wanted = {"CPU": float(request.get("num_cpus") or 0), "GPU": float(request.get("num_gpus") or 0),
              **{k: float(v) for k, v in (request.get("resources") or {}).items()}}
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    if any(all(have.get(k, 0.0) >= v for k, v in wanted.items() if v > 0) for have in alive):
        return None
    asked = ", ".join(f"{v:g} {k}" for k, v in wanted.items() if v > 0)
    largest = ", ".join(f"{max((have.get(k, 0.0) for have in alive), default=0.0):g} {k}" for k, v in wanted.items() if v > 0)
    return (f"hydra.launcher.ray.remote asks {asked} per job, but no node of the Ray cluster has that much ({len(alive)} "
            f"node(s), at most {largest}): the jobs would wait forever. Fix: hydra.launcher.ray.remote.num_cpus / "
            f"num_gpus (the preset derives them from trainer and data.num_workers), or a cluster with those resources")


def register_resolvers() -> None:
    for name, fn in (("hazardseg.job_gpus", job_gpus), ("hazardseg.job_cpus", job_cpus)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch / no driver: none
        return 0
