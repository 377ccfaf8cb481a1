"""Which process of a distributed launch this is, before (or without) torch.distributed being initialised."""

from __future__ import annotations

import os


def launch_rank() -> int:
    """Global rank of this process as set by the DDP launcher (Lightning, torchrun, SLURM); 0 otherwise.
    Only rank 0 writes run files (results, caches, the model store's markers)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0
