"""What ``train.py`` and ``eval.py`` do, as plain functions of a composed Hydra config."""

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
from omegaconf import DictConfig, OmegaConf

from hazardseg.config import instantiate
from hazardseg.callbacks import AtomicCheckpointIO, PreemptionCheckpoint, RNGStateCheckpoint
from hazardseg.errors import ConfigError
from hazardseg.io import atomic_path, atomic_torch_save, atomic_write_json, atomic_write_text
from hazardseg.loggers import build_loggers, finish_loggers, log_panels, log_summary
from hazardseg.module import Segmenter
from hazardseg.scorers import build_scorers
from hazardseg.store import ModelEntry, config_hash, file_sha256, launch_rank, training_config

ANOMALY_KEYS = ("aupr", "auroc", "fpr95")


# ---------------------------------------------------------------------------- entry points
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or reuse / resume) the model described by ``cfg``, then test it with every scorer."""
    started = time.time()
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data, key="data")
    loss = instantiate(cfg.loss, key="loss")
    train_cfg = training_config(cfg)
    entry = ModelEntry(cfg.paths.model_store, config_hash(train_cfg))
    meta = {"config": train_cfg, "train_hash": entry.hash}
    module = Segmenter(
        net=build_net(cfg.model, with_aux=loss.uses_aux),
        loss=loss,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        scorers=build_scorers(cfg.get("scorer")),
        checkpoint_meta=meta,
        **dataset_info(datamodule),
    )
    loggers = build_loggers(cfg.get("logger"), run_dir, run_name(cfg), sweep_group(), _plain(cfg))
    results: dict[str, Any] = {"task": "train", "train_hash": entry.hash}
    with recorded(results, cfg, loggers, started):
        if cfg.eval.get("class_distribution", True):
            results["class_distribution"] = class_report(datamodule, entry)
        trainer, ckpt = fit_or_reuse(cfg, module, datamodule, loggers, entry, results)
        if cfg.get("test_after_fit", True):
            if ckpt is not None:
                load_net_weights(module, ckpt)
            results.update(test(cfg, module, datamodule, trainer, ckpt, loggers))
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
    module = Segmenter(
        net=build_net(train_cfg.model, with_aux=False),
        loss=instantiate(train_cfg.loss, key="loss"),
        optim=OmegaConf.to_container(train_cfg.optim, resolve=True),
        scorers=build_scorers(cfg.get("scorer")),
        checkpoint_meta=meta,
        **dataset_info(datamodule),
    )
    load_net_weights(module, ckpt)
    run_dir = Path(cfg.paths.output_dir)
    loggers = build_loggers(cfg.get("logger"), run_dir, run_name(cfg), sweep_group(), _plain(cfg))
    results: dict[str, Any] = {"task": "eval", "checkpoint": str(ckpt), "train_hash": meta.get("train_hash")}
    with recorded(results, cfg, loggers, started):
        trainer = build_trainer(cfg.trainer, loggers, callbacks=[], ckpt_dir=None)
        results.update(test(cfg, module, datamodule, trainer, ckpt, loggers))
    return results


@contextlib.contextmanager
def recorded(results: dict[str, Any], cfg: DictConfig, loggers: list, started: float) -> Iterator[None]:
    """Close the loggers whatever happens; write results.json (atomically) only for a completed run.
    A failed run's results.json is written by the entry point with the error message."""
    results["status"] = "running"
    failed = True
    try:
        yield
        results["status"] = "completed"
        failed = False
    finally:
        results["wall_time_s"] = round(time.time() - started, 1)
        results["config"] = _plain(cfg)
        results["wandb_sync"] = finish_loggers(loggers, failed=failed)
        for command in results["wandb_sync"]:
            print(f"[hazardseg] W&B run logged offline; to upload it: {command}", flush=True)
        if not failed and launch_rank() == 0:  # DDP ranks > 0 share rank 0's run folder
            write_results(Path(cfg.paths.output_dir), results)


# ---------------------------------------------------------------------------- training
def fit_or_reuse(cfg, module, datamodule, loggers, entry: ModelEntry, results: dict):
    """Return (trainer, best checkpoint or None). Holds the model's lock while training."""
    callbacks = [RNGStateCheckpoint()]
    fast_dev_run = bool(cfg.trainer.get("fast_dev_run", False))
    if fast_dev_run:  # smoke runs write no checkpoints and never enter the model store
        trainer = build_trainer(cfg.trainer, loggers, callbacks, ckpt_dir=None)
        trainer.fit(module, datamodule=datamodule)
        results.update(reused_checkpoint=False, checkpoint=None)
        return trainer, None
    with entry.lock():
        if cfg.get("reuse", True) and entry.is_finished() and cfg.get("ckpt_path") is None:
            print(f"[hazardseg] reusing trained model {entry.hash} ({entry.best_ckpt}); set reuse=false to retrain", flush=True)
            results.update(reused_checkpoint=True, checkpoint=str(entry.best_ckpt), trained=entry.finished_info())
            return build_trainer(cfg.trainer, loggers, [], ckpt_dir=None), entry.best_ckpt
        if launch_rank() == 0:
            entry.clear_finished()
            entry.write_config(module.checkpoint_meta["config"])
        callbacks.append(PreemptionCheckpoint(entry.last_ckpt))
        trainer = build_trainer(cfg.trainer, loggers, callbacks, ckpt_dir=entry.ckpt_dir)
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
    return trainer, best


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


def build_trainer(trainer_cfg: DictConfig, loggers: list, callbacks: list, ckpt_dir: Path | None) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    callbacks = list(callbacks)
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(
            dirpath=ckpt_dir, filename="best", monitor="val/miou", mode="max", save_top_k=1,
            save_last=True, enable_version_counter=False, auto_insert_metric_name=False,
        ))
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar(leave=True))
    return instantiate(
        trainer_cfg, key="trainer", logger=loggers or False, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
        enable_checkpointing=ckpt_dir is not None, default_root_dir=str(ckpt_dir or "."),
    )


# ---------------------------------------------------------------------------- testing
def test(cfg, module: Segmenter, datamodule, trainer: L.Trainer, ckpt: Path | None, loggers: list) -> dict[str, Any]:
    """Fit scorer statistics if needed (cached per checkpoint), run the test split, collect results."""
    fit_scorers(cfg, module, datamodule, ckpt, device=trainer.strategy.root_device)
    module.num_panels = int(cfg.eval.get("panels", 0))
    module.per_image = bool(cfg.eval.get("per_image", True))
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = module.test_results
    rows = scorer_rows(metrics, list(module.scorers))
    log_summary(loggers, metrics, module.test_curves if cfg.eval.get("curves", True) else {}, rows)
    panel_files = save_panels(Path(cfg.paths.output_dir) / "panels", module.panels)
    log_panels(loggers, module.panels)
    return {"metrics": metrics, "scorers": rows, "panels": [str(p) for p in panel_files]}


def save_panels(folder: Path, panels: list) -> list[Path]:
    from PIL import Image

    files = []
    for i, (name, panel, _) in enumerate(panels):
        path = folder / f"{i:02d}_{name.replace('/', '_')}"
        path = path.with_suffix(".png")
        with atomic_path(path) as tmp:
            Image.fromarray(panel).save(tmp, format="PNG")
        files.append(path)
    return files


def fit_scorers(cfg, module: Segmenter, datamodule, ckpt: Path | None, device) -> None:
    pending = {name: s for name, s in module.scorers.items() if s.requires_fit}
    if not pending:
        return
    fingerprint = file_sha256(ckpt) if ckpt is not None else None
    for name, scorer in pending.items():
        stats_file = scorer_stats_path(cfg, ckpt, name, scorer)
        if stats_file is not None and _load_stats(scorer, stats_file, fingerprint):
            print(f"[hazardseg] scorer '{name}': reusing statistics {stats_file}", flush=True)
            continue
        print(f"[hazardseg] scorer '{name}': fitting statistics on the training split", flush=True)
        scorer.fit(_training_outputs(module, datamodule, device, cfg.eval.get("fit_batches")))
        if stats_file is not None:
            atomic_torch_save({"state_dict": scorer.state_dict(), "checkpoint_sha256": fingerprint}, stats_file)


def scorer_stats_path(cfg, ckpt: Path | None, name: str, scorer) -> Path | None:
    """Statistics live next to the checkpoint, keyed by the scorer's config, fit version and fit subset."""
    if ckpt is None:
        return None
    key = config_hash({
        "scorer": OmegaConf.to_container(cfg.scorer[name], resolve=True),
        "fit_version": scorer.fit_version,
        "fit_batches": cfg.eval.get("fit_batches"),
    }, 8)
    return Path(ckpt).parent / "scorer_stats" / f"{Path(ckpt).stem}.{name}-{key}.pt"


def _load_stats(scorer, path: Path, fingerprint: str | None) -> bool:
    if not path.is_file():
        return False
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("checkpoint_sha256") != fingerprint:  # the model changed: statistics are stale
        return False
    scorer.load_state_dict(payload["state_dict"])
    return True


@torch.no_grad()
def _training_outputs(module: Segmenter, datamodule, device, max_batches: int | None):
    datamodule.prepare_data()
    datamodule.setup("fit")
    was_training = module.training
    module.to(device).eval()
    try:
        for i, batch in enumerate(datamodule.fit_dataloader()):
            if max_batches is not None and i >= max_batches:
                break
            out = module(batch["image"].to(device))
            yield {"logits": out["logits"].float(), "features": out.get("features"), "mask": batch["mask"].to(device)}
    finally:
        module.train(was_training)


# ---------------------------------------------------------------------------- building blocks
def build_net(model_cfg: DictConfig, with_aux: bool) -> torch.nn.Module:
    """Instantiate the network; the aux head exists only when the loss uses it."""
    overrides = {} if with_aux else {"aux_stage": None}
    return instantiate(model_cfg, key="model", **overrides)


def dataset_info(datamodule) -> dict[str, Any]:
    return {
        "num_classes": datamodule.num_classes,
        "ignore_index": datamodule.ignore_index,
        "anomaly_index": datamodule.anomaly_index,
        "class_names": list(datamodule.class_names),
    }


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
    module.net.load_state_dict(matching_net_state(module, ckpt), strict=False)


def matching_net_state(module: Segmenter, ckpt: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's network weights, or a ConfigError if they do not fit ``module.net``."""
    state = _load_checkpoint(Path(ckpt)).get("state_dict", {})
    net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    own = module.net.state_dict()
    # The aux head is training-only: a checkpoint may have it while the evaluated net does not.
    missing = [k for k in own if k not in net_state and "aux_head" not in k]
    unexpected = [k for k in net_state if k not in own and "aux_head" not in k]
    shapes = [k for k in own if k in net_state and own[k].shape != net_state[k].shape]
    if missing or unexpected or shapes:
        detail = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} shape mismatches (e.g. {(shapes or missing or unexpected)[:2]})"
        raise ConfigError(
            f"ckpt_path={ckpt}: checkpoint does not match the configured model/class count ({detail}). "
            f"Fix: use the model and data config it was trained with."
        )
    return {k: v for k, v in net_state.items() if k in own}


def _load_checkpoint(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file, unsafe pickle
        raise ConfigError(f"ckpt_path={ckpt}: cannot be loaded safely ({type(err).__name__}: {str(err)[:120]}). Fix: use an intact checkpoint written by train.py.") from err


def scorer_rows(metrics: dict[str, Any], scorers: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in scorers:
        row: dict[str, Any] = {"scorer": name}
        for key in ANOMALY_KEYS:
            row[key] = metrics.get(f"test/{name}/{key}")
        for key in ANOMALY_KEYS:
            row[f"per_image_{key}"] = metrics.get(f"test/{name}/per_image/{key}")
        row["test_miou"] = metrics.get("test/miou")
        rows.append(row)
    return rows


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "results.json", results)
    rows = results.get("scorers") or []
    if rows:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(run_dir / "scorers.csv", buffer.getvalue())


def run_name(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig

    try:
        hc = HydraConfig.get()
        overrides = ",".join(o for o in hc.overrides.task if not o.startswith(("logger", "hydra")))
        return f"{cfg.task_name}[{overrides}]" if overrides else str(cfg.task_name)
    except ValueError:
        return str(cfg.task_name)


def sweep_group() -> str | None:
    """Jobs of one multirun share a W&B group named after the sweep folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


def _plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def _float(value) -> float | None:
    return None if value is None else float(value)
