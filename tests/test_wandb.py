"""What a W&B project receives, read back from the offline run file (no server, no account)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY_DATA, TINY_TRAIN
from hazardseg.pipeline import train
from wandb_reader import inventory

WANDB = ["logger=wandb", "logger.wandb.mode=offline", "tags=[ablation,tiny]"]
PROXY = ["data.val_outliers.enabled=true"]


def _offline_run(run_dir):
    (path,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    return path


def test_wandb_inventory_answers_the_ablation(make_cfg):
    overrides = [*TINY_DATA, *TINY_TRAIN, *WANDB, *PROXY, "scorer=[msp,maxlogit]", "trainer.max_epochs=2", "eval.panels=2"]
    cfg = make_cfg([o for o in overrides if o != "logger=none"])
    results = train(cfg)
    run_dir = cfg.paths.output_dir
    inv = inventory(_offline_run(Path(run_dir)))

    run = inv["run"]
    assert run.job_type == "train" and list(run.tags) == ["ablation", "tiny"]
    config = inv["config"]
    # every key flattened (a runs-table column / parallel-coordinates axis) and each group's chosen option
    assert config["optim.optimizer.lr"] == pytest.approx(cfg.optim.optimizer.lr) and config["data.batch_size"] == 4
    assert config["model.decoder_channels"] == 32 and config["data.image_size"] == "[64, 112]"
    assert {config[f"choice.{g}"] for g in ("data", "model", "loss", "optim")} == {"synthetic", "deeplabv3plus", "ce", "adamw_onecycle"}
    assert config["choice.scorer"] == "[msp, maxlogit]" and config["train_hash"] == results["train_hash"]
    assert "choice.tags" not in config  # a list value of a plain key is not a config-group choice
    assert not any(isinstance(v, dict) for k, v in config.items() if isinstance(k, str) and k != "_wandb")

    # summaries: the BEST val mIoU over epochs (define_metric), the objective, test metrics
    history = [row["val/miou"] for row in inv["history"] if "val/miou" in row]
    assert len(history) >= 2 and inv["summary"]["val/miou"] == {"max": pytest.approx(max(history))}
    assert "max" in inv["summary"]["val/msp/aupr"] and "min" in inv["summary"]["val/msp/fpr95"]
    assert inv["summary"]["objective"] == pytest.approx(results["objective"]["value"])
    # the sweepers' value is the selected checkpoint's VALIDATION mIoU, not the test mIoU
    assert results["objective"] == {"metric": "val/miou", "value": pytest.approx(max(history)), "split": "val"}
    assert results["trained"]["best_val_miou"] == pytest.approx(max(history)) != results["metrics"]["test/miou"]
    assert inv["summary"]["test/maxlogit/aupr"] == pytest.approx(results["metrics"]["test/maxlogit/aupr"])

    # the results table: one row per (run, scorer) with AUPR / AUROC / FPR95 / mIoU and the run's choices
    table_path = inv["summary"][("results", "path")]
    (table_file,) = list((Path(run_dir) / "wandb").glob(f"offline-run-*/files/{table_path}"))
    table = json.loads(table_file.read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [r["scorer"] for r in rows] == ["msp", "maxlogit"]
    assert {"aupr", "auroc", "fpr95", "miou", "choice.loss", "choice.model"} <= set(table["columns"])
    assert rows[1]["aupr"] == pytest.approx(results["metrics"]["test/maxlogit/aupr"])

    # images with segmentation masks and class labels (W&B's mask overlay), the panel PNGs, PR curves
    assert inv["summary"][("test/segmentation", "_type")] == "images/separated"
    masks = [f for f in inv["files"] if f.startswith("media/images/mask/")]
    assert len(masks) == 2 * 2  # prediction + ground truth for 2 panels
    labels = config["_wandb"]["mask/class_labels"]
    assert any(v["value"].get("13") == "anomaly" and v["value"].get("7") == "road" for v in labels.values())
    top = {k[0] if isinstance(k, tuple) else k for k in inv["summary"]}
    assert {"test/panels", "test/msp/pr_curve_table", "test/maxlogit/roc_curve_table"} <= top


def test_preset_tags_survive_the_defaults_order(make_cfg):
    """train.yaml lists `_self_` first, so an experiment preset's tags are not wiped by `tags: []`."""
    cfg = make_cfg(["experiment=streethazards_deeplabv3"])
    assert list(cfg.tags) == ["streethazards", "deeplabv3", "aux"]
    assert list(cfg.logger.wandb.tags) == list(cfg.tags)  # the W&B logger gets them (read back above)
