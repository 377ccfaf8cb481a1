"""What ``train.py`` and ``eval.py`` do: a short sequence of named run stages, each in the module that owns it.

=========  ==============================  ===========================================================
stage      module                          what it does
=========  ==============================  ===========================================================
build      :mod:`hazardseg.run.build`      config -> datamodule (+ its label spec), network, loss, scorers,
                                           loggers, Trainer and callbacks (all ``_target_`` entries)
check      :mod:`hazardseg.run.checks`     each component checked against its neighbours: one line now
fit        :mod:`hazardseg.run.fit`        class weights; the model store trains, resumes or reuses
test       :mod:`hazardseg.run.evaluation` ``Trainer.test``; evaluation callbacks return their results
predict    :mod:`hazardseg.run.predict`    thresholds (calibrated or given); ``Trainer.predict`` on the user's frames
export     :mod:`hazardseg.run.deploy`     one scorer's checked ONNX graph, its threshold in the metadata
record     :mod:`hazardseg.run.record`     the only writer of results.json (+ csv, curves, W&B summary)
=========  ==============================  ===========================================================

Each function returns the run's results (what results.json holds) and, as lightning-hydra-template's
``train()`` does, nothing else is global: the objects a run is made of are on the ``Run`` of its build stage.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from hazardseg.errors import ConfigError

from hazardseg.run import build, checks, deploy, evaluation, fit, record
from hazardseg.run import predict as predict_stage


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or reuse / resume) the model described by ``cfg``, then test it with every scorer."""
    run = build.train_run(cfg)
    with record.recording(run) as results:
        checks.check(run)
        fit.fit(run)
        if cfg.get("test_after_fit", True):
            results.update(evaluation.test(run))
    return results


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint with the configured scorers (``python eval.py ckpt_path=...``)."""
    run = build.eval_run(cfg)
    with record.recording(run) as results:
        results.update(evaluation.test(run))
    return results


def predict(cfg: DictConfig) -> dict[str, Any]:
    """A checkpoint on the user's own images or video (``python predict.py ckpt_path=... input=...``), or an exported
    graph (``backend=onnx model_path=...``)."""
    if cfg.get("backend", "torch") == "onnx":
        return record.plain_run(cfg, lambda: predict_stage.predict_onnx(cfg))
    if cfg.get("backend", "torch") != "torch":
        raise ConfigError(f"backend={cfg.backend}: expected torch (a checkpoint) or onnx (a graph from export.py)")
    run = build.eval_run(cfg, task="predict")
    with record.recording(run) as results:
        results.update(predict_stage.predict(run))
    return results


def export(cfg: DictConfig) -> dict[str, Any]:
    """A checkpoint and one scorer as a checked ONNX graph (``python export.py ckpt_path=... scorer=<name>``)."""
    run = build.eval_run(cfg, task="export")
    with record.recording(run) as results:
        results.update(deploy.export(run))
    return results
