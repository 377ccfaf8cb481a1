"""What ``train.py`` and ``eval.py`` do, as plain functions of a composed Hydra config.

The pipeline only assembles and orders: data, network, loss, scorers, loggers and callbacks are all
``_target_`` entries of their config groups; evaluation work (scorer fitting, metrics, panels) runs
inside the Trainer's callbacks and its results come back from ``Trainer.test``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from hazardseg.callbacks import scorer_rows
from hazardseg.config import instantiate
from hazardseg.errors import ConfigError
from hazardseg.instantiators import instantiate_callbacks, instantiate_loggers
from hazardseg.io import atomic_write_json, atomic_write_text
from hazardseg.loggers import close_loggers
from hazardseg.module import Segmenter
from hazardseg.scorers import build_scorers
from hazardseg.store import ModelEntry, config_hash, launch_rank, training_config


# ---------------------------------------------------------------------------- entry points
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or reuse / resume) the model described by ``cfg``, then test it with every scorer."""
    started = time.time()
    L.seed_everything(cfg.seed, workers=True)
    entry = ModelEntry(cfg.paths.model_store, config_hash(training_config(cfg)))
    with open_dict(cfg):
        cfg.paths.model_dir = str(entry.dir)  # where the checkpoint callbacks write
    datamodule = instantiate(cfg.data, key="data")
    module = build_module(cfg, cfg, datamodule, {"config": training_config(cfg), "train_hash": entry.hash})
    results: dict[str, Any] = {"task": "train", "train_hash": entry.hash}
    loggers = instantiate_loggers(cfg.logger)
    with recorded(results, cfg, loggers, started):
        balanced = getattr(module.loss, "needs_class_counts", False)
        if cfg.eval.get("class_distribution", True) or balanced:
            report = class_report(datamodule, entry)
            if cfg.eval.get("class_distribution", True):
                results["class_distribution"] = report
            if balanced:  # class-balanced loss terms: weights from the TRAINING split only
                module.loss.set_class_counts(report["train"]["counts"])
                results["class_weights"] = loss_class_weights(module.loss)
        trainer = build_trainer(cfg, loggers)
        ckpt = fit_or_reuse(cfg, trainer, module, datamodule, entry, results)
        if cfg.get("test_after_fit", True):
            if ckpt is not None:
                load_net_weights(module, ckpt)
            results.update(test(trainer, module, datamodule))
    return results


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint with the configured scorers (``python eval.py ckpt_path=...``)."""
    started = time.time()
    L.seed_everything(cfg.seed, workers=True)
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    meta = read_checkpoint_meta(ckpt)
    train_cfg = OmegaConf.create(meta["config"])
    data_cfg = OmegaConf.merge(train_cfg.data, cfg.get("data") or {})
    datamodule = instantiate(data_cfg, key="data")
    module = build_module(train_cfg, cfg, datamodule, meta)
    load_net_weights(module, ckpt)
    results: dict[str, Any] = {"task": "eval", "checkpoint": str(ckpt), "train_hash": meta.get("train_hash")}
    loggers = instantiate_loggers(cfg.logger)
    with recorded(results, cfg, loggers, started):
        results.update(test(build_trainer(cfg, loggers), module, datamodule))
    return results


@contextlib.contextmanager
def recorded(results: dict[str, Any], cfg: DictConfig, loggers: list, started: float) -> Iterator[None]:
    """Close the loggers whatever happens; write results.json (atomically) only for a completed run.
    A failed run's results.json is written by the entry point with the error message."""
    results["status"] = "running"
    failed = True
    for logger in loggers:
        logger.log_hyperparams(_plain(cfg))
    try:
        yield
        results["status"] = "completed"
        failed = False
    finally:
        results["wall_time_s"] = round(time.time() - started, 1)
        results["config"] = _plain(cfg)
        results["wandb_sync"] = close_loggers(loggers, failed=failed)
        for command in results["wandb_sync"]:
            print(f"[hazardseg] W&B run logged offline; to upload it: {command}", flush=True)
        if not failed and launch_rank() == 0:  # DDP ranks > 0 share rank 0's run folder
            write_results(Path(cfg.paths.output_dir), results)


# ---------------------------------------------------------------------------- building blocks
def build_module(train_cfg: DictConfig, run_cfg: DictConfig, datamodule, meta: dict[str, Any]) -> Segmenter:
    """The LightningModule from the *training* config (network, loss, optimiser) and the run's scorers."""
    net = instantiate(train_cfg.model, key="model")
    loss = instantiate(train_cfg.loss, key="loss")
    check_loss_outputs(loss, net)
    return Segmenter(
        net=net,
        loss=loss,
        optim=OmegaConf.to_container(train_cfg.optim, resolve=True),
        scorers=build_scorers(run_cfg.get("scorer")),
        checkpoint_meta=meta,
        num_classes=datamodule.num_classes,
        ignore_index=datamodule.ignore_index,
        anomaly_index=datamodule.anomaly_index,
        class_names=list(datamodule.class_names),
    )


def check_loss_outputs(loss, net) -> None:
    """Every loss term must read an output the network produces in training (a one-line error at start)."""
    available = net.output_names(training=True)
    for term, output in getattr(loss, "required_outputs", {}).items():
        if output not in available:
            raise ConfigError(
                f"loss.terms.{term} reads the network output '{output}', but the model has no such head "
                f"(outputs: {sorted(available - {'feature_stride'})}). Fix: add model.heads.{output}, or use a loss option that adds it."
            )


def build_trainer(cfg: DictConfig, loggers: list) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return instantiate(cfg.trainer, key="trainer", logger=loggers or False, callbacks=callbacks,
                       enable_checkpointing=checkpointing, default_root_dir=cfg.paths.output_dir)


def fit_or_reuse(cfg, trainer: L.Trainer, module, datamodule, entry: ModelEntry, results: dict) -> Path | None:
    """Train, resume or reuse; return the best checkpoint (None for smoke runs). Holds the model's lock."""
    if trainer.fast_dev_run:  # smoke runs write no checkpoints and never enter the model store
        trainer.fit(module, datamodule=datamodule)
        results.update(reused_checkpoint=False, checkpoint=None)
        return None
    with entry.lock():
        if cfg.get("reuse", True) and entry.is_finished() and cfg.get("ckpt_path") is None:
            print(f"[hazardseg] reusing trained model {entry.hash} ({entry.best_ckpt}); set reuse=false to retrain", flush=True)
            results.update(reused_checkpoint=True, checkpoint=str(entry.best_ckpt), trained=entry.finished_info())
            return entry.best_ckpt
        if launch_rank() == 0:
            entry.clear_finished()
            entry.write_config(module.checkpoint_meta["config"])
        resume_from = resolve_resume(cfg, entry, module)
        results["resumed_from"] = str(resume_from) if resume_from else None
        # weights_only: resuming never unpickles arbitrary objects (our checkpoints hold only tensors and primitives).
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        best = Path(trainer.checkpoint_callback.best_model_path or entry.last_ckpt)
        info = {"best_ckpt": str(best), "best_val_miou": _float(trainer.checkpoint_callback.best_model_score),
                "epochs": trainer.current_epoch, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if launch_rank() == 0:
            entry.mark_finished(info)
    results.update(reused_checkpoint=False, checkpoint=str(best), trained=info)
    return best


def class_report(datamodule, entry: ModelEntry) -> dict[str, Any]:
    """Pixel share of every class per split, computed once per data config (cached in the model store)."""
    from hazardseg.data.stats import format_distribution, split_distribution

    cache = entry.dir / "class_distribution.json"
    if cache.is_file():
        report = json.loads(cache.read_text())
    else:
        datamodule.prepare_data()
        datamodule.setup()
        report = split_distribution(datamodule)
        atomic_write_json(cache, report)
    print("[hazardseg] class distribution (% of labelled pixels):\n" + format_distribution(report), flush=True)
    return report


def loss_class_weights(loss) -> dict[str, list[float]]:
    """The class weights each loss term trains with (printed and written to results.json)."""
    weights = {name: [round(float(w), 4) for w in term.class_weights]
               for name, term in getattr(loss, "terms", {}).items() if getattr(term, "class_weights", None) is not None}
    for name, values in weights.items():
        print(f"[hazardseg] loss.terms.{name} class weights: {values}", flush=True)
    return weights


def resolve_resume(cfg, entry: ModelEntry, module: Segmenter) -> str | None:
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        if not entry.last_ckpt.is_file():
            raise ConfigError(f"ckpt_path=last: no {entry.last_ckpt} for this config. Fix: drop ckpt_path to start fresh.")
        return str(entry.last_ckpt)
    if ckpt_path is not None:
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: file not found. Fix: give an existing .ckpt, `last`, or null.")
        matching_net_state(module, Path(ckpt_path))  # a clear error now, not a size-mismatch traceback mid-fit
        return str(ckpt_path)
    mode = cfg.get("resume", "auto")
    if mode not in ("auto", "never"):
        raise ConfigError(f"resume={mode!r}: Fix: resume=auto or resume=never.")
    if mode == "auto" and entry.last_ckpt.is_file():
        print(f"[hazardseg] resuming interrupted training from {entry.last_ckpt} (resume=never to start over)", flush=True)
        return str(entry.last_ckpt)
    return None


# ---------------------------------------------------------------------------- testing
def test(trainer: L.Trainer, module: Segmenter, datamodule) -> dict[str, Any]:
    """Run the test split; the callbacks fit scorer statistics, compute anomaly metrics and save panels."""
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False) or [{}]
    metrics = {k: float(v) for k, v in metrics.items()}
    panels = next((c.files for c in trainer.callbacks if hasattr(c, "files")), [])
    return {"metrics": metrics, "scorers": scorer_rows(metrics, list(module.scorers)), "panels": [str(p) for p in panels]}


# ---------------------------------------------------------------------------- checkpoints
def read_checkpoint_meta(ckpt: Path) -> dict[str, Any]:
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={ckpt}: file not found. Fix: point ckpt_path to a .ckpt written by train.py (see results.json 'checkpoint').")
    payload = _load_checkpoint(ckpt)
    meta = payload.get("hazardseg")
    if not meta or "config" not in meta:
        raise ConfigError(f"ckpt_path={ckpt}: not a hazardseg checkpoint (no 'hazardseg' config inside). Fix: use a checkpoint written by train.py.")
    return meta


def load_net_weights(module: Segmenter, ckpt: Path) -> None:
    """Load only the network weights (safe ``weights_only`` load); a different model is a clear error."""
    module.net.load_state_dict(matching_net_state(module, ckpt))


def matching_net_state(module: Segmenter, ckpt: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's network weights, or a ConfigError if they do not fit ``module.net``."""
    state = _load_checkpoint(Path(ckpt)).get("state_dict", {})
    net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    own = module.net.state_dict()
    missing = [k for k in own if k not in net_state]
    unexpected = [k for k in net_state if k not in own]
    shapes = [k for k in own if k in net_state and own[k].shape != net_state[k].shape]
    if missing or unexpected or shapes:
        detail = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} shape mismatches (e.g. {(shapes or missing or unexpected)[:2]})"
        raise ConfigError(
            f"ckpt_path={ckpt}: checkpoint does not match the configured model/class count ({detail}). "
            f"Fix: use the model and data config it was trained with."
        )
    return net_state


def _load_checkpoint(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file, unsafe pickle
        raise ConfigError(f"ckpt_path={ckpt}: cannot be loaded safely ({type(err).__name__}: {str(err)[:120]}). Fix: use an intact checkpoint written by train.py.") from err


# ---------------------------------------------------------------------------- results
def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "results.json", results)
    rows = results.get("scorers") or []
    if rows:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(run_dir / "scorers.csv", buffer.getvalue())


def _plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def _float(value) -> float | None:
    return None if value is None else float(value)
