"""What ``train.py`` and ``eval.py`` do, as plain functions of a composed Hydra config.

The pipeline only assembles and orders: data, network, loss, scorers, loggers and callbacks are all
``_target_`` entries of their config groups; evaluation work (scorer fitting, metrics, panels) runs
inside the Trainer's callbacks and its results come back from ``Trainer.test``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from hazardseg.callbacks import scorer_rows
from hazardseg.cache import cache_key, load_json, save_json
from hazardseg.config import instantiate, validate
from hazardseg.console import say
from hazardseg.errors import ConfigError
from hazardseg.instantiators import instantiate_callbacks, instantiate_loggers
from hazardseg.io import atomic_write_json, atomic_write_text
from hazardseg.loggers import close_loggers, hydra_choices
from hazardseg.module import Segmenter
from hazardseg.objective import check_objective, validation_objective
from hazardseg.report import finish_run, save_curves
from hazardseg.scorers import build_scorers
from hazardseg.store import ModelEntry, config_hash, launch_rank, training_config


# ---------------------------------------------------------------------------- entry points
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or reuse / resume) the model described by ``cfg``, then test it with every scorer."""
    started = time.time()
    refuse_test_only_data(cfg.data)  # before the schema: its model.num_classes check would hide the real reason
    validate(cfg, "train")
    L.seed_everything(cfg.seed, workers=True)
    entry = ModelEntry(cfg.paths.model_store, config_hash(training_config(cfg)))
    with open_dict(cfg):
        cfg.paths.model_dir = str(entry.dir)  # where the checkpoint callbacks write
    datamodule = instantiate(cfg.data, key="data")
    choices = hydra_choices()
    meta = {"config": training_config(cfg), "train_hash": entry.hash, "data_env": env_sources(cfg.data), "choices": choices}
    module = build_module(cfg, cfg, datamodule, meta)
    check_outlier_data(module.loss, datamodule)
    check_objective(cfg.get("objective"), module, datamodule)  # before training: a bad objective is a one-line error now
    results: dict[str, Any] = {"task": "train", "train_hash": entry.hash, "choices": choices}
    loggers = instantiate_loggers(cfg.logger)
    with recorded(results, cfg, loggers, started, datamodule=datamodule):
        module.checkpoint_meta["trained_in"] = run_refs(loggers)  # eval runs of this checkpoint link back to this run
        trainer = build_trainer(cfg, loggers)
        preflight(module, datamodule)
        balanced = module.loss.needs_class_counts  # class-balanced loss terms: weights from the TRAINING split only
        if cfg.eval.get("class_distribution", True) or balanced:
            report = class_report(datamodule, Path(cfg.paths.model_store) / "class_distribution", smoke=bool(trainer.fast_dev_run))
            if cfg.eval.get("class_distribution", True):
                results["class_distribution"] = report
            if balanced:
                set_class_weights(module.loss, report, datamodule.num_classes, results)
        ckpt = fit_or_reuse(cfg, trainer, module, datamodule, entry, results)
        if ckpt is not None:
            load_net_weights(module, ckpt)
        results["objective"] = validation_objective(cfg.get("objective"), trainer, module, datamodule, results.get("trained"))
        if cfg.get("test_after_fit", True):
            results.update(test(trainer, module, datamodule))
    return results


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint with the configured scorers (``python eval.py ckpt_path=...``)."""
    started = time.time()
    validate(cfg, "eval")
    L.seed_everything(cfg.seed, workers=True)
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    meta = read_checkpoint_meta(ckpt)
    train_cfg = OmegaConf.create(meta["config"])
    test_cfg, fit_cfg = eval_data_configs(train_cfg.data, meta, cfg.get("data"))
    validate(OmegaConf.create({"data": test_cfg}), "eval")
    datamodule = instantiate(test_cfg, key="data")
    datamodule.prepare_data()  # a missing data.root is a one-line error now, not after loading the model
    if fit_cfg is not test_cfg:  # testing on another dataset: scorer statistics still come from the model's own
        datamodule.scorer_fit_data = instantiate(fit_cfg, key="data")
    module = build_module(train_cfg, cfg, datamodule, meta)
    load_net_weights(module, ckpt)
    trained_choices = meta.get("choices") or {}
    choices = {**trained_choices, **hydra_choices()}  # the model's data/model/loss, this run's scorer (and test data)
    results: dict[str, Any] = {"task": "eval", "checkpoint": str(ckpt), "train_hash": meta.get("train_hash"), "choices": choices,
                               "trained_in": meta.get("trained_in"), "train_data": trained_choices.get("data")}
    loggers = instantiate_loggers(cfg.logger)
    # The W&B run gets the model's training config too (same columns as training runs) and a link to its training run.
    params = {**_plain(OmegaConf.merge(train_cfg, cfg)), "train_hash": meta.get("train_hash"), **_link(meta.get("trained_in")),
              **{f"choice.{group}": option for group, option in choices.items()}}
    with recorded(results, cfg, loggers, started, params=params, datamodule=datamodule):
        results.update(test(build_trainer(cfg, loggers), module, datamodule))
    return results


_ENV_REF = re.compile(r"^\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")


def env_sources(data_cfg: DictConfig) -> dict[str, str]:
    """Data keys set from an environment variable (``root: ${oc.env:STREETHAZARDS_ROOT,null}``) -> its name.

    Checkpoints store the *resolved* training config; with this map eval.py lets the variable point
    somewhere else later (data moved to another machine) instead of silently using the old path."""
    raw = OmegaConf.to_container(data_cfg, resolve=False)
    found = {k: _ENV_REF.match(v) for k, v in raw.items() if isinstance(v, str)}
    return {k: m.group(1) for k, m in found.items() if m}


def eval_data_configs(trained: DictConfig, meta: dict[str, Any], chosen: DictConfig | None) -> tuple[DictConfig, DictConfig]:
    """(test data config, data config that scorer statistics are fitted on) of an eval run.

    The checkpoint's data config, updated by the environment variables it was read from (if set now), fits
    the scorers. Without a data option on the command line it is also the test data, updated by the command
    line's ``data.<key>=...`` (highest precedence), and both are the same object. With one (``data=<option>``:
    a config with a ``_target_``), that dataset is the test data, e.g. a test-only anomaly benchmark."""
    from_env = {k: os.environ[var] for k, var in (meta.get("data_env") or {}).items() if os.environ.get(var)}
    own = OmegaConf.merge(trained, from_env)
    if chosen is not None and chosen.get("_target_") is not None:
        return chosen, own
    test_cfg = OmegaConf.merge(own, chosen or {})
    return test_cfg, test_cfg


def refuse_test_only_data(data_cfg: DictConfig) -> None:
    """``train.py data=<test-only benchmark>``: the datamodule's own one-line error, before anything is built."""
    from hydra.utils import get_class

    target = data_cfg.get("_target_")
    try:
        cls = get_class(target) if target else None
    except Exception:  # an unknown target: instantiate() reports it with its config key
        return
    if getattr(cls, "test_only", False):
        raise cls.refuse("training or validation split")


@contextlib.contextmanager
def recorded(results: dict[str, Any], cfg: DictConfig, loggers: list, started: float, params: dict | None = None,
             datamodule=None) -> Iterator[None]:
    """Close the loggers whatever happens; write results.json (atomically) only for a completed run.
    A failed run's results.json is written by the entry point with the error message.
    A completed run ends with its results table (terminal, <task>.log, W&B ``results`` table)."""
    results["status"] = "running"
    results.update(host=socket.gethostname(), pid=os.getpid(), started_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)))
    failed = True
    for logger in loggers:
        logger.log_hyperparams(params or {**_plain(cfg), "train_hash": results.get("train_hash")})
    try:
        yield
        if datamodule is not None:
            results["skipped_samples"] = dict(getattr(datamodule, "bad_samples", {}))
            log_skipped_samples(loggers, results["skipped_samples"], bool(getattr(datamodule, "skip_bad_samples", False)))
        results["status"] = "completed"
        if launch_rank() == 0:
            _finish(results, loggers)
        failed = False
    finally:
        results["wall_time_s"] = round(time.time() - started, 1)
        results["config"] = _plain(cfg)
        results["wandb_sync"] = close_loggers(loggers, failed=failed)
        for command in results["wandb_sync"]:
            say(f"[hazardseg] W&B run logged offline; to upload it: {command}")
        if not failed and launch_rank() == 0:  # DDP ranks > 0 share rank 0's run folder
            write_results(Path(cfg.paths.output_dir), results)


def log_skipped_samples(loggers: list, skipped: dict[str, str], enabled: bool) -> None:
    """Skipped files (``data.skip_bad_samples``) as a count for every logger and a file/reason table for
    loggers that show tables (W&B); they are also in results.json and the sweep report."""
    if not (enabled or skipped):
        return
    if skipped:
        say(f"[hazardseg] {len(skipped)} unreadable samples skipped (listed in results.json), e.g. {next(iter(skipped))}")
    for logger in loggers:
        logger.log_metrics({"data/skipped_samples": len(skipped)})
        if skipped and hasattr(logger, "log_table"):
            logger.log_table("data/skipped_samples", columns=["file", "reason"], data=[[f, r] for f, r in skipped.items()])


# ---------------------------------------------------------------------------- building blocks
def build_module(train_cfg: DictConfig, run_cfg: DictConfig, datamodule, meta: dict[str, Any]) -> Segmenter:
    """The LightningModule from the *training* config (network, loss, optimiser) and the run's scorers.

    Classes come from the data the model was trained on (``datamodule.scorer_fit_data`` when the test data is
    another dataset); the label conventions of the test (ignore / anomaly label, semantic labels) from the test data."""
    net = instantiate(train_cfg.model, key="model")
    loss = instantiate(train_cfg.loss, key="loss")
    check_loss_outputs(loss, net)
    trained_on = getattr(datamodule, "scorer_fit_data", None) or datamodule
    if hasattr(loss, "check"):
        loss.check(trained_on.num_classes)  # e.g. class_weights of the wrong length: now, not at the first step
    return Segmenter(
        net=net,
        loss=loss,
        optim=OmegaConf.to_container(train_cfg.optim, resolve=True),
        scorers=applicable_scorers(build_scorers(run_cfg.get("scorer")), net),
        checkpoint_meta=meta,
        num_classes=trained_on.num_classes,
        ignore_index=datamodule.ignore_index,
        anomaly_index=datamodule.anomaly_index,
        class_names=list(trained_on.class_names),
        semantic_labels=getattr(datamodule, "semantic_labels", True),
    )


def applicable_scorers(scorers: dict[str, Any], net) -> dict[str, Any]:
    """Drop (with a note) scorers that read a head this model does not have, e.g. ``void`` after ``loss=ce``:
    ``scorer=all`` then works after training any method, and reports what it could score."""
    available = net.output_names(training=False)
    kept = {}
    for name, scorer in scorers.items():
        missing = [o for o in getattr(scorer, "required_outputs", ()) if o not in available]
        if missing:
            print(f"[hazardseg] scorer '{name}' skipped: it reads the network output '{missing[0]}', which this model "
                  f"does not produce (a loss option that trains it adds model.heads.{missing[0]})", flush=True)
        else:
            kept[name] = scorer
    return kept


def check_outlier_data(loss, datamodule) -> None:
    """Outlier-exposure terms need pasted outliers: without them they would train on nothing, silently."""
    if getattr(loss, "uses_outliers", False) and getattr(datamodule, "outliers", None) is None:
        terms = [name for name, term in loss.terms.items() if term.uses_outliers]
        raise ConfigError(f"loss.terms.{terms[0]} learns from pasted outlier pixels, but data.outliers.enabled is false. "
                          f"Fix: data.outliers.enabled=true (the loss options set it), or a loss without outlier terms (loss=ce).")


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


def preflight(module: Segmenter, datamodule) -> None:
    """What would otherwise fail only once training runs: the optimiser and scheduler config (built once
    and thrown away), the data (set up now), and a training batch of one image through BatchNorm."""
    module.configure_optimizers()
    datamodule.prepare_data()
    datamodule.setup("fit")
    check_batch_of_one(module, datamodule)


def check_batch_of_one(module: Segmenter, datamodule) -> None:
    """BatchNorm after global pooling (DeepLabV3's ASPP image pooling) cannot train on a batch of one image.

    A configured (or unavoidable) batch of one is refused at start; with ``data.skip_bad_samples`` a
    batch can shrink to one image mid-training, so the module is told to skip such a batch."""
    train = datamodule.dataset("train")
    smallest = min(datamodule.batch_size, len(train))  # training drops a short last batch when it can
    if smallest >= 2 and not datamodule.skip_bad_samples:
        return
    net = copy.deepcopy(module.net).train()  # a copy: a forward pass in train mode updates BatchNorm statistics
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, *datamodule.image_size))
    except ValueError as err:
        if "Expected more than 1 value per channel" not in str(err):
            raise
        if smallest >= 2:
            module.min_train_batch = 2
            return
        why = f"data.batch_size={datamodule.batch_size}" if datamodule.batch_size == 1 else f"the train split has only {len(train)} image"
        raise ConfigError(
            f"{why}: a training batch of one image cannot pass the model's BatchNorm after global pooling "
            f"(e.g. DeepLabV3's ASPP image pooling). Fix: data.batch_size=2 or more (trainer.accumulate_grad_batches=N "
            f"for a larger effective batch), or a model without it (model=unet)"
        ) from None


def fit_or_reuse(cfg, trainer: L.Trainer, module, datamodule, entry: ModelEntry, results: dict) -> Path | None:
    """Train, resume or reuse; return the checkpoint to test (None: in-memory weights). Holds the model's lock."""
    if trainer.fast_dev_run:  # smoke runs write no checkpoints and never enter the model store
        trainer.fit(module, datamodule=datamodule)
        results.update(reused_checkpoint=False, checkpoint=None)
        return None
    with entry.lock(timeout=cfg.get("lock_timeout")):
        entry.remove_stale_temp_files()
        reusable = entry.finished_checkpoint() if cfg.get("reuse", True) and cfg.get("ckpt_path") is None else None
        if reusable is not None:
            say(f"[hazardseg] reusing trained model {entry.hash} ({reusable}); set reuse=false to retrain")
            results.update(reused_checkpoint=True, checkpoint=str(reusable), trained=entry.finished_info())
            module.checkpoint_meta["trained_in"] = _load_checkpoint(reusable).get("hazardseg", {}).get("trained_in")
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
        say(f"[hazardseg] resuming interrupted training from {entry.last_ckpt} (resume=never to start over)")
        return str(entry.last_ckpt)
    return None


# ---------------------------------------------------------------------------- testing
def test(trainer: L.Trainer, module: Segmenter, datamodule) -> dict[str, Any]:
    """Run the test split; the callbacks fit scorer statistics, compute anomaly metrics and save panels."""
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False) or [{}]
    metrics = {k: float(v) for k, v in metrics.items()}
    panels = next((c.files for c in trainer.callbacks if hasattr(c, "files")), [])
    curves = next((c.curve_points for c in trainer.callbacks if hasattr(c, "curve_points")), {})
    out = {"metrics": metrics, "scorers": scorer_rows(metrics, list(module.scorers)), "panels": [str(p) for p in panels],
           "curves": curves}
    benchmark = next((c.results for c in trainer.callbacks if getattr(c, "results", None)), None)
    if benchmark:  # a test-only benchmark: every leaderboard number per scorer (float16 export, submission folder)
        out["benchmark"] = benchmark
    return out


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
    save_curves(run_dir, results.pop("curves", None) or {})  # pr_curves.json: for the sweep report's PR plot
    atomic_write_json(run_dir / "results.json", results)
    rows = results.get("scorers") or []
    if rows:
        buffer = io.StringIO()
        fields = list(dict.fromkeys(k for row in rows for k in row))  # a metric that is undefined for one scorer
        writer = csv.DictWriter(buffer, fieldnames=fields)  # (no predicted component: PPV) is left out of its row
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(run_dir / "scorers.csv", buffer.getvalue())


def _finish(results: dict[str, Any], loggers: list) -> None:
    try:
        finish_run(results, loggers)
    except Exception as err:  # a report or logger hiccup never turns a finished training into a failed job
        say(f"[hazardseg] warning: final report not complete ({type(err).__name__}: {err})")


def run_refs(loggers: list) -> dict[str, str] | None:
    """The W&B run of this job (id, project, name), if one is logging."""
    return next((ref for logger in loggers if hasattr(logger, "run_ref") and (ref := logger.run_ref())), None)


def _link(trained_in: dict | None) -> dict[str, str]:
    return {f"trained_in.{k}": v for k, v in (trained_in or {}).items()}


def _plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def _float(value) -> float | None:
    return None if value is None else float(value)
