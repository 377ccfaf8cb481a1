"""Config checks at start, and ``instantiate`` with one-line errors.

Configs are open-ended (``_target_`` entries take arbitrary kwargs; new loss terms, heads and scorers
bring their own), so a bad value is caught by one of two layers, both before anything heavy runs:

1. :data:`SCHEMA`, a typed schema of the keys the pipeline reads and of the common kwargs of the
   shipped components: each rule is a dotted key pattern (``*`` = any one key, e.g.
   ``loss.terms.*.label_smoothing``) and a :class:`Spec` (type, range, or a writable folder). Keys
   that are absent are not checked, unknown keys are left alone. :func:`validate` answers the first
   bad value with ``ConfigError("<key>=<value>: expected <what>. Fix: <how>")``.
2. Components validate their own kwargs in their constructors; :func:`instantiate` turns those errors
   (and Hydra's own) into one line naming the config key (Hydra's ``full_key``).

The pipeline then builds every component (data, model, loss, scorers, callbacks, loggers, trainer)
and dry-runs the optimiser and scheduler (``hazardseg.run.checks.preflight``) before training starts.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hazardseg.errors import ConfigError, HazardsegError


# ---------------------------------------------------------------------------- value specs
@dataclass(frozen=True)
class Spec:
    """What a key accepts: ``accepts(value)`` is True for good values; ``expected`` says what in words."""

    expected: str
    example: str
    accepts: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _bounds(lo=None, hi=None, gt=None, lt=None) -> tuple[str, Callable[[float], bool]]:
    parts, tests = [], []
    for bound, sign, test in ((lo, ">=", lambda v, b: v >= b), (gt, ">", lambda v, b: v > b),
                              (hi, "<=", lambda v, b: v <= b), (lt, "<", lambda v, b: v < b)):
        if bound is not None:
            parts.append(f"{sign} {bound}")
            tests.append(lambda v, b=bound, t=test: t(v, b))
    return " and ".join(parts), lambda v: all(t(v) for t in tests)


def _nullable(spec: Spec, null: bool) -> Spec:
    if not null:
        return spec
    return Spec(f"{spec.expected} or null", spec.example, lambda v: v is None or spec.accepts(v))


def integer(lo: int | None = None, hi: int | None = None, *, also: Sequence[int] = (), null: bool = False, example: Any = None) -> Spec:
    words, in_range = _bounds(lo, hi)
    extra = f" (or {', '.join(map(str, also))})" if also else ""
    spec = Spec(f"an integer {words}".strip() + extra, str(example if example is not None else (lo if lo is not None else 0)),
                lambda v: _is_int(v) and (in_range(v) or v in also))
    return _nullable(spec, null)


def number(lo: float | None = None, hi: float | None = None, *, gt: float | None = None, lt: float | None = None,
           null: bool = False, example: Any = None) -> Spec:
    words, in_range = _bounds(lo, hi, gt, lt)
    spec = Spec(f"a number {words}".strip(), str(example if example is not None else (lo if lo is not None else 1.0)),
                lambda v: is_number(v) and in_range(v))
    return _nullable(spec, null)


def boolean(null: bool = False) -> Spec:
    return _nullable(Spec("true or false", "true", lambda v: isinstance(v, bool)), null)


def choice(*values: str) -> Spec:
    return Spec(f"one of {', '.join(values)}", values[0], lambda v: v in values)


def text(null: bool = False, example: str = "...", empty: bool = False) -> Spec:
    return _nullable(Spec("a string", example, lambda v: isinstance(v, str) and (empty or v != "")), null)


def numbers(lo: float | None = None, null: bool = False, example: str = "[1.0,2.0]") -> Spec:
    words, in_range = _bounds(lo)
    spec = Spec(f"a list of numbers {words}".strip(), example,
                lambda v: isinstance(v, list) and len(v) > 0 and all(is_number(x) and in_range(x) for x in v))
    return _nullable(spec, null)


def size_pair(null: bool = False) -> Spec:
    spec = Spec("[height, width] as two positive integers", "[360,640]",
                lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v))
    return _nullable(spec, null)


def one_of(*specs: Spec) -> Spec:
    return Spec(" or ".join(s.expected for s in specs), specs[0].example, lambda v: any(s.accepts(v) for s in specs))


FOLDER = Spec("a folder where files can be written", "/a/writable/folder", lambda v: isinstance(v, str) and v != "")


@dataclass(frozen=True)
class Rule:
    pattern: str
    spec: Spec
    fix: str | None = None  # default: "set <key>=<example>"
    required_in: tuple[str, ...] = ()  # tasks in which the key must be set
    warn_in: tuple[str, ...] = ()  # tasks in which a bad value is only a warning (e.g. a cache folder)


# The keys read by the pipeline and the common kwargs of the shipped components. Components check the
# rest of their own kwargs when they are built (before training). Order matters for the message: keys
# that others interpolate (data.num_classes, trainer.max_epochs) come before the keys that read them.
SCHEMA: tuple[Rule, ...] = (
    Rule("seed", integer(null=True, example=42)),
    Rule("ckpt_path", text(null=True, example="outputs/models/<hash>/checkpoints/best.ckpt"), required_in=("eval", "predict", "export"),
         fix="ckpt_path=outputs/models/<hash>/checkpoints/best.ckpt (the 'checkpoint' in a training's results.json)"),
    Rule("input", text(example="path/to/images"), required_in=("predict",),
         fix="python predict.py ckpt_path=... input=<image | folder | 'dir/*.jpg' | video.mp4>"),
    Rule("predict.image_size", size_pair(null=True)),
    Rule("predict.batch_size", integer(lo=1, example=1)),
    Rule("predict.fpr", number(gt=0, lt=1, example=0.05)),
    Rule("predict.calibration_batches", integer(lo=1, null=True, example=50)),
    Rule("predict.save_scores", boolean()),
    Rule("predict.contact_sheet", integer(lo=0, example=12)),
    Rule("reuse", boolean()),
    Rule("resume", choice("auto", "never")),
    Rule("test_after_fit", boolean()),
    Rule("lock_timeout", number(lo=0, null=True, example=3600), fix="set lock_timeout=SECONDS, or null to wait without limit"),
    Rule("eval.fit_batches", integer(lo=1, null=True, example=100),
         fix="set eval.fit_batches=null (the whole training split) or a number of batches >= 1"),
    Rule("eval.per_image", boolean()),
    Rule("eval.curves", boolean()),
    Rule("eval.class_distribution", boolean()),
    Rule("eval.panels", integer(lo=0, example=8)),
    Rule("data.root", text(null=True, empty=True, example="/path/to/dataset")),  # "" = unset (an empty env variable)
    Rule("data.batch_size", integer(lo=1, example=8)),
    Rule("data.num_workers", integer(lo=0, example=2)),
    Rule("data.image_size", size_pair(null=True)),  # null: the dataset's default (native size for test-only benchmarks)
    Rule("data.eval_image_size", size_pair(null=True)),  # null: data.image_size
    Rule("data.num_classes", integer(lo=1, null=True, example=13)),
    Rule("data.ignore_index", integer(lo=0, null=True, example=255)),
    Rule("data.skip_bad_samples", boolean()),
    Rule("data.train_seed", integer(lo=0, example=0), fix="set seed=<int >= 0> (data.train_seed follows it) or data.train_seed=<int>"),
    Rule("data.allow_external_paths", boolean()),
    Rule("data.pin_memory", boolean()),
    Rule("data.persistent_workers", boolean(null=True)),
    Rule("trainer.max_epochs", integer(lo=1, also=(-1,), null=True, example=16),
         fix="set trainer.max_epochs=16 (-1 = until stopped); to only evaluate a checkpoint use eval.py ckpt_path=..."),
    Rule("trainer.check_val_every_n_epoch", integer(lo=1, null=True, example=1)),
    Rule("trainer.log_every_n_steps", integer(lo=1, example=5)),
    Rule("trainer.gradient_clip_val", number(lo=0, null=True, example=1.0)),
    Rule("trainer.accumulate_grad_batches", integer(lo=1, example=1)),
    Rule("trainer.enable_progress_bar", boolean()),
    Rule("model.num_classes", integer(lo=1, example=13), fix="set data.num_classes (the model reads it)"),
    Rule("model.arch", text(example="DeepLabV3Plus")),
    Rule("model.encoder_name", text(example="resnet18")),
    Rule("model.encoder_weights", text(null=True, example="null")),
    Rule("model.freeze_encoder", boolean()),
    Rule("model.channels_last", boolean()),
    Rule("loss.terms.*.weight", number(example=1.0)),
    Rule("loss.terms.*.output", text(example="logits")),
    Rule("loss.terms.*.label_smoothing", number(lo=0, lt=1, example=0.1)),
    Rule("loss.terms.*.class_weights", one_of(numbers(lo=0, null=True, example="[w_0,...,w_K-1] (one per class)"),
                                              choice("inverse_sqrt", "enet"))),
    Rule("loss.terms.*.focal_gamma", number(lo=0, example=2.0)),
    Rule("optim.optimizer.lr", number(gt=0, example="1e-4")),
    Rule("optim.optimizer.weight_decay", number(lo=0, example=0.0)),
    Rule("optim.optimizer.momentum", number(lo=0, example=0.9)),
    Rule("optim.encoder_lr_scale", number(lo=0, example=0.1)),
    Rule("optim.monitor", text(example="val/miou")),
    Rule("optim.interval", choice("epoch", "step")),
    Rule("optim.frequency", integer(lo=1, example=1)),
    Rule("optim.scheduler.patience", integer(lo=0, example=3)),
    Rule("optim.scheduler.factor", number(gt=0, lt=1, example=0.5)),
    Rule("optim.scheduler.gamma", number(gt=0, example=0.98)),
    Rule("optim.scheduler.T_max", integer(lo=1, example=50)),
    Rule("scorer.*.temperature", number(gt=0, example=1.0)),
    Rule("paths.output_dir", FOLDER, fix="run from a writable folder or set hydra.run.dir=/a/writable/folder"),
    Rule("paths.model_store", FOLDER, warn_in=("eval", "predict", "export"),
         fix="set paths.model_store=/a/writable/folder (or export HAZARDSEG_MODEL_STORE)"),
)


# ---------------------------------------------------------------------------- validation
def validate(cfg: DictConfig, task: str, schema: Sequence[Rule] = SCHEMA) -> None:
    """Check every present key of ``cfg`` that a rule of ``schema`` covers; raise the first problem as a
    one-line :class:`ConfigError` (or warn, for rules that only warn in ``task``)."""
    for rule in schema:
        for key, value, missing in _matches(cfg, rule.pattern):
            problem = _problem(rule, key, value, missing, task)
            if problem is None:
                continue
            if task in rule.warn_in:
                warnings.warn(problem, RuntimeWarning, stacklevel=2)
            else:
                raise ConfigError(problem)


def _problem(rule: Rule, key: str, value: Any, missing: bool, task: str) -> str | None:
    fix = rule.fix or f"set {key}={rule.spec.example}"
    if missing:
        return f"{key} is not set. Fix: {fix}" if task in rule.required_in else None
    if not rule.spec.accepts(value):
        return f"{key}={_show(value)}: expected {rule.spec.expected}. Fix: {fix}"
    if rule.spec is FOLDER:
        from hazardseg.io import unwritable_reason

        reason = unwritable_reason(value)
        if reason is not None:
            return f"{key}={value}: cannot write files there ({reason}). Fix: {fix}"
    return None


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _matches(node: Any, pattern: str, prefix: str = "") -> Iterator[tuple[str, Any, bool]]:
    """(key, resolved plain value, is_missing) for every key of ``node`` matching the dotted ``pattern``."""
    head, _, rest = pattern.partition(".")
    if not isinstance(node, DictConfig):
        return
    present = [k for k in node.keys() if isinstance(k, str)]  # keys() also lists ??? (missing) values, `in` does not
    keys = present if head == "*" else [k for k in present if k == head]
    for k in keys:
        key = f"{prefix}{k}"
        if OmegaConf.is_missing(node, k):
            if not rest:
                yield key, None, True
            continue
        try:
            child = node[k]
        except OmegaConfBaseException as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(f"{key}: cannot be resolved ({reason}). Fix: correct the interpolation or the value") from None
        if rest:
            yield from _matches(child, rest, f"{key}.")
        else:
            yield key, OmegaConf.to_container(child, resolve=True) if isinstance(child, (DictConfig, ListConfig)) else child, False


# ---------------------------------------------------------------------------- instantiate
_FULL_KEY = re.compile(r"^full_key: (\S+)$", re.M)
_TARGET = re.compile(r"target '([^']+)'")


def instantiate(cfg: Any, key: str = "", **kwargs: Any) -> Any:
    """Hydra's instantiate; a failing constructor becomes one ConfigError line naming the config key."""
    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as err:
        found = _FULL_KEY.search(str(err))
        where = found.group(1) if found else (key or "config")
        cause = err.__cause__
        while cause is not None and not isinstance(cause, HazardsegError):
            cause = cause.__cause__
        if cause is not None:
            cause.args = (_with_key(str(cause), where),)
            raise cause from None
        reason = repr(err.__cause__) if err.__cause__ is not None else str(err).strip().splitlines()[0]
        target = _TARGET.search(str(err))
        target = target.group(1) if target else (cfg.get("_target_") if hasattr(cfg, "get") else None)
        raise ConfigError(f"{where}: cannot instantiate {target!r}: {reason}") from err


def _with_key(message: str, key: str) -> str:
    """Prefix a component's message with its config key unless it already names one:
    ``label_smoothing=1.5: ...`` from ``loss.terms.ce`` -> ``loss.terms.ce.label_smoothing=1.5: ...``."""
    root = key.split(".")[0]
    if message.startswith((f"{root}.", f"{root}:", f"{root}=", "/")) or key in message:
        return message
    if re.match(r"^[A-Za-z_]\w*=", message):
        return f"{key}.{message}"
    return f"{key}: {message}"
