"""Evaluate a trained checkpoint on the test split with the configured anomaly scorers.

    python eval.py ckpt_path=outputs/models/<hash>/checkpoints/best.ckpt scorer=all
    python eval.py -m ckpt_path=... scorer=msp,energy,sml
    python eval.py ckpt_path=... data.root=/path/to/StreetHazards   # overrides of the checkpoint's data config
"""

import sys

import hydra
from omegaconf import DictConfig

from hazardseg.cli import allow_data_overrides, launch, run_task
from hazardseg.pipeline import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_task(evaluate, cfg)


if __name__ == "__main__":
    sys.argv = allow_data_overrides(sys.argv)  # `data.root=...` works without Hydra's `+` (see its docstring)
    launch(main)
