"""Export a trained model and one post-hoc scorer for deployment (ONNX; pip install -e ".[export]").

    python export.py ckpt_path=outputs/models/<hash>/checkpoints/best.ckpt scorer=sml format=onnx
"""

import sys

import hydra
from omegaconf import DictConfig

from hazardseg.cli import allow_data_overrides, launch, run_task
from hazardseg.pipeline import export


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> float | None:
    return run_task(export, cfg)


if __name__ == "__main__":
    sys.argv = allow_data_overrides(sys.argv)
    launch(main)
