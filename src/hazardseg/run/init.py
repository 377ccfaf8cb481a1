"""``init_from``: start a training from a trained hazardseg model's whole network (fine-tuning, as RbA,
Mask2Anomaly, UNO and Meta-OoD do).

``init_from`` is either a checkpoint (``.../checkpoints/best.ckpt``) or a list of training overrides naming
another training config (``init_from: [experiment=families/mask2former]``): that config is composed with
this job's other command-line overrides (except the method's own: :data:`FINE_TUNE_KEYS`), and its
finished model is looked up in the model store, so one sweep can train a network and fine-tune it (the
store's lock makes a parallel job wait for it).

The model-store hash of the fine-tune includes the init checkpoint's content hash (:func:`init_material`).
Loading (:func:`init_network`): every tensor of the trained network must fit; tensors the new network has
and the old one lacks are new heads and keep their initialisation (said); anything else that differs is a
one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from hazardseg.console import say
from hazardseg.errors import ConfigError
from hazardseg.run.checkpoints import load_checkpoint
from hazardseg.store import ModelEntry, config_hash, file_sha256, training_config


def resolve_init_from(cfg: DictConfig) -> Path | None:
    """The checkpoint ``init_from`` names, or None without ``init_from``."""
    value = cfg.get("init_from")
    if value is None:
        return None
    if isinstance(value, (list, tuple, ListConfig)):
        return _from_training_overrides(cfg, [str(v) for v in value])
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"init_from={value}: file not found. Fix: give a trained model's checkpoint (results.json 'checkpoint'), "
                          f"or a list of training overrides, e.g. init_from=[model=mask2former]")
    return path


def refuse_frozen_random_init(cfg: DictConfig, init: Path | None) -> None:
    """``trainable`` without anything trained to start from would freeze randomly initialised parts for good
    (``loss=rba`` typed without ``init_from``): one line naming the fixes."""
    model = cfg.get("model") or {}
    if cfg.get("trainable") is None or init is not None or model.get("pretrained") or model.get("encoder_weights"):
        return
    raise ConfigError(f"trainable={list(cfg.trainable)} freezes the rest of the network, but nothing trained is loaded into it "
                      f"(no init_from, model.pretrained or model.encoder_weights): the frozen parts would stay random. Fix: "
                      f"init_from=<a trained model's best.ckpt> (the fine-tune), or trainable=null to train everything")


def init_material(cfg: DictConfig, init: Path | None) -> dict[str, Any]:
    """The training config to hash: with ``init_from``, the init checkpoint's content hash replaces how it was named."""
    material = training_config(cfg)
    if init is not None:
        material["init_from"] = {"sha256": file_sha256(init)}
    return material


def init_network(net, ckpt: Path) -> None:
    """Load a trained hazardseg model's network into ``net`` (new heads initialised, anything else must fit)."""
    state = load_checkpoint(Path(ckpt)).get("state_dict", {})
    trained = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    if not trained:
        raise ConfigError(f"init_from={ckpt}: no network weights inside. Fix: a checkpoint written by train.py")
    trained = net.adapt_init_state(trained)
    own = net.state_dict()
    head_names = _head_tensor_names(net)
    unexpected = [k for k in trained if k not in own]
    shapes = [f"{k} {tuple(trained[k].shape)} -> {tuple(own[k].shape)}" for k in own if k in trained and own[k].shape != trained[k].shape]
    missing = [k for k in own if k not in trained]
    not_heads = [k for k in missing if k not in head_names]
    if unexpected or shapes or not_heads:
        detail = "; ".join(part for part in (
            f"{len(shapes)} of other shape (e.g. {shapes[0]})" if shapes else "",
            f"{len(not_heads)} missing outside the heads (e.g. {not_heads[0]})" if not_heads else "",
            f"{len(unexpected)} not in this network (e.g. {unexpected[0]})" if unexpected else "") if part)
        raise ConfigError(f"init_from={ckpt}: its network does not fit this one ({detail}). Fix: the same model options "
                          f"(model.*, data.num_classes) as the trained model; only new heads may be added")
    net.load_state_dict({**own, **trained})
    new = sorted({k.rsplit(".", 1)[0] for k in missing})
    say(f"[hazardseg] init_from {ckpt}: {len(trained)} tensors loaded" + (f"; new, initialised: {', '.join(new)}" if new else ""))


def _head_tensor_names(net) -> set[str]:
    """state_dict keys of the parameters in the network's ``heads`` group, and the buffers of those modules."""
    head_ids = {id(p) for p in net.param_groups()["heads"]}
    names = {name for name, p in net.named_parameters() if id(p) in head_ids}
    modules = {name.rsplit(".", 1)[0] for name in names}
    names |= {name for name, _ in net.named_buffers() if name.rsplit(".", 1)[0] in modules}
    return names


# Command-line overrides that make a job a fine-tune (its method): they never carry over to the model it starts
# from. Every other override does (data, model, trainer, optim, ...: what a sweep gives all its jobs), options of
# loss terms only for terms the named model has, and the list's own overrides win over inherited ones:
# init_from=[experiment=families/mask2former,trainer.max_epochs=20].
FINE_TUNE_KEYS = ("init_from", "trainable", "loss")
FINE_TUNE_PREFIXES = ("data.outliers",)


def _from_training_overrides(cfg: DictConfig, overrides: list[str]) -> Path:
    """The finished model of the training config that ``overrides`` name (on top of this job's other overrides)."""
    from hydra.core.hydra_config import HydraConfig

    own = {_key(o) for o in overrides}
    job = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    inherited = [o for o in job if _key(o) not in own and _key(o) not in FINE_TUNE_KEYS and not _key(o).startswith(FINE_TUNE_PREFIXES)]
    try:
        base = _compose_train([o for o in inherited if not _key(o).startswith("loss.")] + overrides)
        terms = set((base.get("loss") or {}).get("terms") or {})
        inherited = [o for o in inherited if not _key(o).startswith("loss.terms.") or _key(o).split(".")[2] in terms]
        base = _compose_train(inherited + overrides)
    except Exception as err:  # an unknown option or key in the list
        raise ConfigError(f"init_from=[{', '.join(overrides)}]: cannot compose that training config ({str(err).splitlines()[0]}). "
                          f"Fix: overrides as on the train.py command line") from None
    base_init = resolve_init_from(base)
    entry = ModelEntry(cfg.paths.model_store, config_hash(init_material(base, base_init)))
    with entry.lock(timeout=cfg.get("lock_timeout")):  # a job training it now holds the lock: wait for it
        ckpt = entry.finished_checkpoint()
    if ckpt is None:
        raise ConfigError(f"init_from=[{', '.join(overrides)}]: that model (store entry {entry.hash}) is not trained yet. "
                          f"Fix: train it first (python train.py {' '.join(inherited + overrides)}); in a sweep, list it "
                          f"before the jobs that start from it")
    say(f"[hazardseg] init_from [{' '.join(overrides)}]: the trained model {entry.hash} ({ckpt})")
    return ckpt


def _compose_train(overrides: list[str]) -> DictConfig:
    """``train`` composed with ``overrides`` from this run's config folder (inside @hydra.main or not)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=overrides)
    sources = HydraConfig.get().runtime.config_sources if HydraConfig.initialized() else []
    folder = next((s.path for s in sources if s.provider == "main" and s.schema == "file"), None)
    if folder is None:
        raise ConfigError("init_from as training overrides needs the run's Hydra config folder (run it through train.py)")
    with initialize_config_dir(config_dir=folder, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]
