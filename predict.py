"""Run a trained model on your own images or video: segmentation, anomaly heat maps at a calibrated threshold.

    python predict.py ckpt_path=outputs/models/<hash>/checkpoints/best.ckpt input=path/to/images
    python predict.py ckpt_path=... input=dashcam.mp4 scorer=sml predict.image_size=[360,640]
    python predict.py ckpt_path=... input='frames/*.jpg' predict.fpr=0.01 predict.save_scores=true
"""

import sys

import hydra
from omegaconf import DictConfig

from hazardseg.cli import allow_data_overrides, launch, run_task
from hazardseg.pipeline import predict


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> float | None:
    return run_task(predict, cfg)


if __name__ == "__main__":
    sys.argv = allow_data_overrides(sys.argv)  # `data.root=...` works without Hydra's `+` (as in eval.py)
    launch(main)
