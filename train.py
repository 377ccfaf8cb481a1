"""Train a segmentation model, then test it with the configured anomaly scorers.

    python train.py                                   # synthetic StreetHazards, DeepLabV3+
    python train.py model=deeplabv3plus loss=ce+aux
    python train.py -m scorer=msp,maxlogit,sml        # trains once, evaluates three scorers
"""

import hydra
from omegaconf import DictConfig

from hazardseg.cli import launch, run_task
from hazardseg.pipeline import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_task(train, cfg)


if __name__ == "__main__":
    launch(main)
