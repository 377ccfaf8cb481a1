"""Fit stage: class weights from the training split, then train, resume or reuse, and the validation objective.

The model store (:class:`~hazardseg.store.ModelEntry`: one folder per training-config hash, a lock, a
``finished`` marker) decides: a finished identical training is reused (a scorer-only sweep never retrains),
an interrupted one resumes from its ``last.ckpt``, anything else trains from scratch.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L

from hazardseg.cache import cache_key, load_json, save_json
from hazardseg.console import say
from hazardseg.objective import validation_objective
from hazardseg.run.build import Run, run_refs
from hazardseg.run.checkpoints import load_checkpoint, load_net_weights, matching_net_state
from hazardseg.dist import launch_rank
from hazardseg.store import ModelEntry


def fit(run: Run) -> None:
    """Train (or reuse / resume) ``run.module``; leave the weights to test in it and the outcome in ``run.results``."""
    cfg, results, module, datamodule, trainer = run.cfg, run.results, run.module, run.datamodule, run.trainer
    module.checkpoint_meta["trained_in"] = run_refs(run.loggers)  # (the W&B run exists once the run is recording)
    balanced = module.loss.needs_class_counts  # class-balanced loss terms: weights from the TRAINING split only
    if cfg.eval.get("class_distribution", True) or balanced:
        report = class_report(datamodule, Path(cfg.paths.model_store) / "class_distribution", smoke=bool(trainer.fast_dev_run))
        if cfg.eval.get("class_distribution", True):
            results["class_distribution"] = report
        if balanced:
            set_class_weights(module.loss, report, datamodule.num_classes, results)
    ckpt = fit_or_reuse(cfg, trainer, module, datamodule, run.entry, results)
    if ckpt is not None:
        load_net_weights(module.net, ckpt)
    results["objective"] = validation_objective(run.cfg.get("objective"), trainer, module, datamodule, results.get("trained"))


def fit_or_reuse(cfg, trainer: L.Trainer, module, datamodule, entry: ModelEntry, results: dict) -> Path | None:
    """Train, resume or reuse; return the checkpoint to test (None: in-memory weights). Holds the model's lock."""
    if trainer.fast_dev_run:  # smoke runs write no checkpoints and never enter the model store
        trainer.fit(module, datamodule=datamodule)
        results.update(reused_checkpoint=False, checkpoint=None)
        return None
    with entry.lock(timeout=cfg.get("lock_timeout")):
        entry.remove_stale_temp_files()
        reusable = entry.reusable(cfg.get("reuse", True), cfg.get("ckpt_path"))
        if reusable is not None:
            say(f"[hazardseg] reusing trained model {entry.hash} ({reusable}); set reuse=false to retrain")
            results.update(reused_checkpoint=True, checkpoint=str(reusable), trained=entry.finished_info())
            module.checkpoint_meta["trained_in"] = load_checkpoint(reusable).get("hazardseg", {}).get("trained_in")
            results["trained_in"] = module.checkpoint_meta["trained_in"]
            return reusable
        if launch_rank() == 0:
            entry.clear_finished()
            entry.write_config(module.checkpoint_meta["config"])
        resume_from = resolve_resume(cfg, entry, module)
        results["resumed_from"] = str(resume_from) if resume_from else None
        # weights_only: resuming never unpickles arbitrary objects (our checkpoints hold only tensors and primitives).
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        best = trained_checkpoint(trainer, entry)
        callback = trainer.checkpoint_callback
        info = {"best_ckpt": str(best) if best else None, "best_val_miou": _float(callback.best_model_score) if callback else None,
                "epochs": trainer.current_epoch, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if best is not None and launch_rank() == 0:
            entry.mark_finished({**info, "checkpoint": best.name})
    results.update(reused_checkpoint=False, checkpoint=str(best) if best else None, trained=info)
    return best


def resolve_resume(cfg, entry: ModelEntry, module) -> str | None:
    """The store's resume point; an explicit ``ckpt_path`` must also fit the configured network."""
    point = entry.resume_point(cfg.get("ckpt_path"), cfg.get("resume", "auto"))
    if point is not None and cfg.get("ckpt_path") not in (None, "last"):
        matching_net_state(module.net, point)  # a clear error now, not a size-mismatch traceback mid-fit
    return None if point is None else str(point)


def trained_checkpoint(trainer: L.Trainer, entry: ModelEntry) -> Path | None:
    """The checkpoint a training left: the best one, else ``last.ckpt`` (said), else None (in-memory weights)."""
    callback = trainer.checkpoint_callback
    if callback is None:
        say("[hazardseg] no checkpoint callback (callbacks.model_checkpoint=null): testing the in-memory weights; "
            "nothing is stored for reuse")
        return None
    recorded_best = Path(callback.best_model_path) if callback.best_model_path else None
    if recorded_best is not None:
        for candidate in (recorded_best, entry.ckpt_dir / recorded_best.name):  # a moved store keeps file names
            if candidate.is_file():
                return candidate
    if entry.last_ckpt.is_file():
        if recorded_best is not None:
            say(f"[hazardseg] {recorded_best} is missing: using {entry.last_ckpt} (the final epoch's weights)", logging.WARNING)
        return entry.last_ckpt
    say("[hazardseg] the training wrote no checkpoint: testing the in-memory weights; nothing is stored for reuse")
    return None


def class_report(datamodule, cache_dir: Path | None, smoke: bool = False) -> dict[str, Any] | None:
    """Pixel share of every class per split, cached under a key of what it depends on: every split's
    files (names and sizes), dataset, root and label handling, and the report's code version."""
    from hazardseg.data.stats import DISTRIBUTION_VERSION, format_distribution, split_distribution

    if smoke:  # a smoke run stays a smoke run: no pass over every mask of the dataset
        say("[hazardseg] class distribution: skipped in a fast_dev_run")
        return None
    datamodule.prepare_data()
    datamodule.setup()
    material = {"splits": {split: datamodule.fingerprint(split, transforms=False) for split in ("train", "val", "test")},
                "skip_bad_samples": datamodule.skip_bad_samples, "version": DISTRIBUTION_VERSION}
    cache = None if cache_dir is None else Path(cache_dir) / f"{cache_key(material)}.json"
    report = None if cache is None else load_json(cache)
    if report is None:
        report = json.loads(json.dumps(split_distribution(datamodule)))  # the cached form (int keys -> str), either way
        if cache is not None and launch_rank() == 0:
            save_json(cache, report)
    say("[hazardseg] class distribution (% of labelled pixels):\n" + format_distribution(report))
    return report


def set_class_weights(loss, report: dict[str, Any] | None, num_classes: int, results: dict[str, Any]) -> None:
    """Give class-balanced loss terms the training split's class counts; print and record their weights.
    A smoke run (no class report) trains with uniform weights: it checks the plumbing, not the numbers."""
    if report is None:
        say("[hazardseg] class-balanced loss: uniform class weights in a fast_dev_run (no pass over the training masks)")
        counts = [1] * num_classes
    else:
        counts = report["train"]["counts"]
    loss.set_class_counts(counts)
    weights = {name: [round(float(w), 4) for w in term.class_weights]
               for name, term in loss.terms.items() if getattr(term, "class_weights", None) is not None}
    for name, values in weights.items():
        say(f"[hazardseg] loss.terms.{name} class weights: {values}")
    results["class_weights"] = weights


def _float(value) -> float | None:
    return None if value is None else float(value)
