"""Evaluate a trained checkpoint on the test split with the configured anomaly scorers.

    python eval.py ckpt_path=outputs/models/<hash>/checkpoints/best.ckpt scorer=all
    python eval.py -m ckpt_path=... scorer=msp,energy,sml
"""

import hydra
from omegaconf import DictConfig

from hazardseg.cli import run_task
from hazardseg.pipeline import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
