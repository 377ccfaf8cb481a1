"""Validation proxy for choosing a method's hyperparameters without touching the test split.

Pastes outlier objects of the *training* family (``data.outliers`` of the checkpoint's own config, with
another source seed, i.e. other objects of the same family) into every VALIDATION image, with a fixed
seed per image, and reports for each scorer the pooled AUPR / AUROC / FPR95 of "pasted pixel" against
the rest, plus the val mIoU on the non-pasted pixels. Hyperparameters (lambda, margins, ...) are
chosen on these numbers; the test anomalies (another family) are only looked at for the final table.

    python bench/val_proxy.py CKPT [CKPT ...] [--scorers msp,entropy,energy] [--seed 1] [--csv out.csv]

Checkpoints are those written by ``train.py`` (``<model_store>/<hash>/checkpoints/best.ckpt``); each
brings its own config. For checkpoints trained without outliers (``loss=ce``) the proxy pastes with
the data config's ``data.outliers`` options switched on.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict
from torchvision.transforms import v2

from hazardseg.config import instantiate
from hazardseg.data.outliers import build_paste_transform
from hazardseg.data.transforms import OUTLIER_LABEL
from hazardseg.metrics import AnomalyMetrics
from hazardseg.run.build import build_module
from hazardseg.run.checkpoints import load_net_weights, read_checkpoint_meta
from hazardseg.scorers import applicable_scorers, build_scorers

CONF = Path(__file__).resolve().parents[1] / "conf"
STATELESS = "msp,maxlogit,entropy,energy,void,densehybrid"


class SeededPaste(torch.utils.data.Dataset):
    """``dataset`` with outliers pasted after its eval resize; the RNG is seeded per index (same pastes
    for every checkpoint)."""

    def __init__(self, dataset, paste, seed: int):
        self.dataset, self.seed = dataset, seed
        resize, *finish = dataset.transform.transforms  # eval transform = Resize + ToDtype + Normalize
        self.dataset.transform = None
        self.transform = v2.Compose([resize, paste, *finish])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample = self.dataset[index]
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 100_003 + index)
            return self.transform(sample)


def scorer_config(names: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("eval", overrides=[f"scorer=[{names}]", "ckpt_path=unused"]).scorer


@torch.no_grad()
def evaluate(ckpt: Path, scorer_names: str, seed: int) -> list[dict]:
    meta = read_checkpoint_meta(ckpt)
    cfg = OmegaConf.create(meta["config"])
    with open_dict(cfg):
        cfg.data.outliers.enabled = True
        cfg.data.outliers.probability = 1.0
        cfg.data.outliers.source.seed = int(cfg.data.outliers.source.get("seed", 0)) + seed
        cfg.data.num_workers = 0
    datamodule = instantiate(cfg.data, key="data")
    module = build_module(cfg, OmegaConf.create({"scorer": None}), datamodule, meta)
    load_net_weights(module.net, ckpt)
    net = module.net.eval()
    scorers = applicable_scorers(build_scorers(scorer_config(scorer_names)), net)
    datamodule.prepare_data()
    datamodule.setup()
    for scorer in scorers.values():
        if scorer.requires_fit:
            fit_loader = datamodule.fit_dataloader()
            scorer.fit({**net(b["image"]), "mask": b["mask"]} for b in fit_loader)
    paste = build_paste_transform(cfg.data.outliers)
    dataset = SeededPaste(datamodule.dataset("val"), paste, seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=datamodule.batch_size, collate_fn=datamodule.val_dataloader().collate_fn)
    metrics = {name: AnomalyMetrics() for name in scorers}
    module.val_metrics.reset()
    for batch in loader:
        outputs = net(batch["image"])
        mask = batch["mask"]
        module.val_metrics.update(outputs["logits"].argmax(1), module._metric_target(mask))
        for name, scorer in scorers.items():
            metrics[name].update(scorer(outputs), mask == OUTLIER_LABEL)
    iou = module.val_metrics.compute()["val/iou"]
    miou = float(torch.nanmean(iou.float()))
    rows = []
    for name, metric in metrics.items():
        values = {k: float(v) for k, v in metric.compute().items()}
        rows.append({"checkpoint": str(ckpt), "hash": meta.get("train_hash"), "scorer": name, **values, "val_miou_rest": miou})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--scorers", default=STATELESS, help=f"comma-separated scorer options (default {STATELESS})")
    parser.add_argument("--seed", type=int, default=1, help="offset of the outlier source seed and paste RNG (training uses +0)")
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = [row for ckpt in args.checkpoints for row in evaluate(ckpt, args.scorers, args.seed)]
    print("| checkpoint | scorer | proxy AUPR | proxy AUROC | proxy FPR95 | val mIoU (rest) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['hash']} | {r['scorer']} | {r['aupr']:.3f} | {r['auroc']:.3f} | {r['fpr95']:.3f} | {r['val_miou_rest']:.3f} |")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
