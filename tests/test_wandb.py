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


def test_sweep_report_figures_reach_wandb(tmp_path):
    """The sweep report's PNGs and table go to W&B as one `sweep-report` run in the group of the sweep's jobs."""
    from omegaconf import OmegaConf

    from hazardseg.report import write_sweep_report
    from hazardseg.sweep import send_to_wandb
    from test_report import _completed, _job

    sweep = tmp_path / "2026-01-01_00-00-00"
    for i, loss in enumerate(["ce", "meta_ood"]):
        _job(sweep, i, [f"loss={loss}", "scorer=msp,sml"], _completed({"msp": 0.2 + i / 10, "sml": 0.4}, 0.5 + i / 10, loss))
        (sweep / str(i) / "pr_curves.json").write_text(json.dumps({s: {"recall": [0, 0.5, 1], "precision": [1, 0.5, 0.1],
                                                                       "fpr": [0, 0.2, 1], "tpr": [0, 0.5, 1]} for s in ("msp", "sml")}))
    written = write_sweep_report(sweep)
    config = OmegaConf.create({"tags": ["ablation"], "logger": {"wandb": {
        "_target_": "hazardseg.loggers.WandbLogger", "project": "hazardseg", "mode": "offline", "entity": None, "init_timeout": 60}}})
    send_to_wandb(config, sweep, written)
    inv = inventory(_offline_run(sweep))
    assert inv["run"].job_type == "sweep-report" and inv["run"].run_group == sweep.name and list(inv["run"].tags) == ["ablation"]
    for key in ("sweep/pr_curves", "sweep/tradeoff", "sweep/metrics"):
        assert inv["summary"][(key, "_type")] == "image-file", key
    assert inv["summary"][("sweep_report", "_type")] == "table-file"
    images = [f for f in inv["files"] if f.startswith("media/images/sweep/")]
    assert len(images) == 3
