"""hydra-ray-launcher that refuses, before the sweep starts, a per-job request no node of the Ray cluster can meet.
(Here, not in ``hazardseg``: Hydra instantiates launchers only from the ``hydra_plugins`` namespace.) Importing it
also registers the ``${hazardseg.job_gpus:...}`` / ``${hazardseg.job_cpus:...}`` resolvers of the ray preset."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hazardseg.launchers import register_resolvers, unfit_request

register_resolvers()

try:  # the Ray plugin is optional (pip install -e ".[cluster]"); Hydra imports this module at every start
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _RayLauncher
except ImportError:  # then hydra/launcher=ray fails in Hydra's own words (the plugin's config is missing)
    _RayLauncher = object


class RayLauncher(_RayLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        import ray
        from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray
        from omegaconf import OmegaConf

        started_here = not ray.is_initialized()
        self.ray_cfg.init.setdefault("object_store_memory", 78643200)  # as the plugin does before start_ray
        start_ray(self.ray_cfg.init)
        request = OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}
        reason = unfit_request(request, ray.nodes())
        if reason:
            if started_here:
                ray.shutdown()
            print(f"error: {reason}", file=sys.stderr, flush=True)
            sys.exit(2)
        return super().launch(job_overrides, initial_job_idx)
