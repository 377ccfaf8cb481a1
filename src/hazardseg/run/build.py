"""Build stage: everything a run is made of, instantiated from its config (all ``_target_`` entries).

:func:`train_run` and :func:`eval_run` return a :class:`Run`: the datamodule (with its label spec), the
``Segmenter`` (network, loss, optimiser config, scorers), loggers and the Trainer with its callbacks, and
the ``results`` dict that the record stage (:mod:`hazardseg.run.record`) writes.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from hazardseg.config import instantiate, validate
from hazardseg.errors import ConfigError
from hazardseg.instantiators import instantiate_callbacks, instantiate_loggers
from hazardseg.loggers import close_loggers, hydra_choices
from hazardseg.module import Segmenter
from hazardseg.run.checkpoints import load_net_weights, read_checkpoint_meta
from hazardseg.run.init import init_material, init_network, refuse_frozen_random_init, resolve_init_from
from hazardseg.scorers import applicable_scorers, build_scorers
from hazardseg.store import ModelEntry, config_hash, training_config


@dataclass
class Run:
    """One train.py / eval.py run as its stages see it."""

    cfg: DictConfig
    datamodule: Any
    module: Segmenter
    loggers: list
    trainer: L.Trainer
    results: dict[str, Any]
    started: float
    entry: ModelEntry | None = None  # train runs: the model store entry of the training config
    params: dict[str, Any] | None = None  # hyperparameters given to the loggers (None: the run's config)


def train_run(cfg: DictConfig) -> Run:
    started = time.time()
    refuse_test_only_data(cfg.data)  # before the schema: its model.num_classes check would hide the real reason
    validate(cfg, "train")
    L.seed_everything(cfg.seed, workers=True)
    init = resolve_init_from(cfg)  # fine-tuning: its content hash is part of the model's identity
    entry = ModelEntry(cfg.paths.model_store, config_hash(init_material(cfg, init)))
    with open_dict(cfg):
        cfg.paths.model_dir = str(entry.dir)  # where the checkpoint callbacks write (callbacks YAML reads it)
    datamodule = instantiate(cfg.data, key="data")
    choices = hydra_choices()
    meta = {"config": training_config(cfg), "train_hash": entry.hash, "data_env": env_sources(cfg.data), "choices": choices}
    module = build_module(cfg, cfg, datamodule, meta)
    refuse_frozen_random_init(cfg, init)
    if init is not None:
        init_network(module.net, init)
        module.checkpoint_meta["init_from"] = str(init)
    results: dict[str, Any] = {"task": "train", "train_hash": entry.hash, "choices": choices,
                               **({"init_from": str(init)} if init is not None else {})}
    loggers, trainer = _loggers_and_trainer(cfg)
    return Run(cfg, datamodule, module, loggers, trainer, results, started, entry=entry)


def eval_run(cfg: DictConfig, task: str = "eval") -> Run:
    """A run of a trained checkpoint (``eval.py``; ``predict.py`` with ``task="predict"``)."""
    started = time.time()
    validate(cfg, task)
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
    load_net_weights(module.net, ckpt)
    trained_choices = meta.get("choices") or {}
    choices = {**trained_choices, **hydra_choices()}  # the model's data/model/loss, this run's scorer (and test data)
    results: dict[str, Any] = {"task": task, "checkpoint": str(ckpt), "train_hash": meta.get("train_hash"), "choices": choices,
                               "trained_in": meta.get("trained_in"), "train_data": trained_choices.get("data")}
    # The W&B run gets the model's training config too (same columns as training runs) and a link to its training run.
    params = {**plain(OmegaConf.merge(train_cfg, cfg)), "train_hash": meta.get("train_hash"), **_link(meta.get("trained_in")),
              **{f"choice.{group}": option for group, option in choices.items()}}
    loggers, trainer = _loggers_and_trainer(cfg)
    return Run(cfg, datamodule, module, loggers, trainer, results, started, params=params)


def build_module(train_cfg: DictConfig, run_cfg: DictConfig, datamodule, meta: dict[str, Any]) -> Segmenter:
    """The LightningModule from the *training* config (network, loss, optimiser) and the run's scorers.

    Classes come from the data the model was trained on (``datamodule.scorer_fit_data`` when the test data is
    another dataset); what the test masks mean (``labels``: ignore / anomaly values, semantic or not) from the test data."""
    net = instantiate(train_cfg.model, key="model")
    trained_on = getattr(datamodule, "scorer_fit_data", None) or datamodule
    predicted = getattr(net, "num_classes", None)
    if predicted is not None and trained_on.num_classes is not None and predicted != trained_on.num_classes:
        raise ConfigError(f"model.num_classes={predicted}: the training data ({trained_on.name}) has "
                          f"{trained_on.num_classes} classes and the network must predict exactly those. Fix: drop the "
                          f"override (model.num_classes follows data.num_classes)")
    loss = _loss(train_cfg, net)
    # Each component checks itself against its neighbours as it is assembled: a one-line error now,
    # not at the first training step.
    loss.check_outputs(net.output_names(training=True))
    loss.check_family(net.output_names(training=True), (meta.get("choices") or {}).get("loss"))
    loss.check(trained_on.num_classes)  # e.g. class_weights of the wrong length
    set_trainable(net, train_cfg.get("trainable"))
    return Segmenter(
        net=net,
        loss=loss,
        optim=OmegaConf.to_container(train_cfg.optim, resolve=True),
        num_classes=trained_on.num_classes,
        class_names=list(trained_on.class_names),
        labels=datamodule.labels,
        scorers=applicable_scorers(build_scorers(run_cfg.get("scorer")), net),
        checkpoint_meta=meta,
    )


def set_trainable(net, trainable) -> None:
    """``trainable`` (a list of parameter groups / name globs, null = all) through the network protocol's
    ``set_trainable``, so every network family supports it."""
    if trainable is not None:
        trainable = OmegaConf.to_container(trainable, resolve=True) if isinstance(trainable, ListConfig) else trainable
        if isinstance(trainable, str) or not all(isinstance(p, str) for p in trainable):
            raise ConfigError(f"trainable={trainable!r}: expected a list of parameter groups or name globs, e.g. [heads]")
        net.set_trainable(trainable)


def _loss(train_cfg: DictConfig, net) -> Any:
    """The configured ``loss``; with ``loss: null`` the criterion the network brings (network protocol)."""
    if train_cfg.get("loss") is not None:
        return instantiate(train_cfg.loss, key="loss")
    criterion = net.criterion() if hasattr(net, "criterion") else None
    if criterion is None:
        raise ConfigError("loss is null but the model brings no criterion of its own. Fix: choose a loss option, e.g. loss=ce")
    return criterion


def _loggers_and_trainer(cfg: DictConfig) -> tuple[list, L.Trainer]:
    loggers = instantiate_loggers(cfg.logger)
    try:
        return loggers, build_trainer(cfg, loggers)
    except BaseException:
        close_loggers(loggers, failed=True)  # a W&B run is never left open (the next sweep job would join it)
        raise


def build_trainer(cfg: DictConfig, loggers: list) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return instantiate(cfg.trainer, key="trainer", logger=loggers or False, callbacks=callbacks,
                       enable_checkpointing=checkpointing, default_root_dir=cfg.paths.output_dir)


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


def run_refs(loggers: list) -> dict[str, str] | None:
    """The W&B run of this job (id, project, name), if one is logging."""
    return next((ref for logger in loggers if hasattr(logger, "run_ref") and (ref := logger.run_ref())), None)


def plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def _link(trained_in: dict | None) -> dict[str, str]:
    return {f"trained_in.{k}": v for k, v in (trained_in or {}).items()}


__all__ = ["Run", "build_module", "build_trainer", "env_sources", "eval_data_configs", "eval_run",
           "refuse_test_only_data", "run_refs", "train_run"]
