"""Predict stage (``predict.py``): a trained model on the user's own images or video.

1. thresholds: ``predict.threshold`` when given, else each scorer's calibrated threshold (the score that flags
   ``predict.fpr`` of the known-class pixels of the model's validation split, :mod:`hazardseg.callbacks.
   threshold_calibration`), from its cache or by one ``Trainer.validate`` pass (scorer statistics are fitted first);
2. ``Trainer.predict`` streams the frames (:class:`hazardseg.data.frames.FrameSource`) through the network on the
   trainer's device and precision; :class:`hazardseg.callbacks.PredictionWriter` writes each frame while the next
   batch runs.
"""

from __future__ import annotations

import warnings
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from hazardseg.callbacks.prediction_writer import PredictionWriter
from hazardseg.callbacks.scorer_fitting import ScorerFitting
from hazardseg.callbacks.threshold_calibration import ThresholdCalibration
from hazardseg.data.frames import FrameSource, collate_frames
from hazardseg.errors import ConfigError
from hazardseg.io import atomic_write_json
from hazardseg.run.build import Run


def predict(run: Run) -> dict[str, Any]:
    cfg, trainer, module = run.cfg, run.trainer, run.module
    source = _frames(cfg, normalize=True)  # a missing input is one line now, before calibration
    writer = callback(trainer, PredictionWriter, "callbacks.prediction_writer")
    thresholds = _thresholds(run, cfg.predict)
    loader = _prepare(writer, thresholds, source, cfg.predict)
    callback(trainer, ScorerFitting, "callbacks.scorer_fitting").datamodule = run.datamodule  # Trainer.predict has none
    with warnings.catch_warnings():  # frames are read in this process: Lightning's worker caveat does not apply
        warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    return _results(cfg, thresholds, source, writer)


def _thresholds(run: Run, opts: DictConfig) -> dict[str, dict[str, Any]]:
    given = opts.get("threshold")
    scorers = list(run.module.scorers)
    if given is None:
        return calibrated(run)
    values = OmegaConf.to_container(given) if OmegaConf.is_dict(given) else given
    if isinstance(values, dict):
        missing = [s for s in scorers if s not in values]
        if missing:
            raise ConfigError(f"predict.threshold has no value for scorer(s) {missing}. Fix: predict.threshold={{{scorers[0]}: <value>, ...}} "
                              f"for every scorer, or drop it to calibrate")
        return {s: {"threshold": float(values[s]), "source": "predict.threshold"} for s in scorers}
    if len(scorers) > 1:
        raise ConfigError(f"predict.threshold={given}: one value for {len(scorers)} scorers {scorers}, whose scores are on "
                          f"different scales. Fix: predict.threshold={{{scorers[0]}: <value>, ...}}, or drop it to calibrate")
    return {scorers[0]: {"threshold": float(given), "source": "predict.threshold"}}


def calibrated(run: Run) -> dict[str, dict[str, Any]]:
    """Every scorer's threshold: from the cache, or by one ``Trainer.validate`` pass (which first fits the statistics
    of scorers that need them)."""
    calibration = callback(run.trainer, ThresholdCalibration, "callbacks.threshold_calibration")
    if not calibration.cached(run.module, run.datamodule):
        run.trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
    return {name: {**calibration.found[name], "source": "calibrated on the validation split"} for name in run.module.scorers}


def fit_statistics(run: Run) -> None:
    """Statistics of the scorers that need them (SML, Mahalanobis) now, fitted or read from their cache by the
    ``ScorerFitting`` callback before ``Trainer.validate`` (``export.py``; predict.py's ``Trainer.predict`` fits them
    itself)."""
    if _unfitted(run):
        run.trainer.validate(run.module, datamodule=run.datamodule, verbose=False)


def _unfitted(run: Run) -> list[str]:
    return [name for name, scorer in run.module.scorers.items() if not getattr(scorer, "is_fitted", True)]


def callback(trainer, kind: type, key: str):
    found = [c for c in trainer.callbacks if isinstance(c, kind)]
    if not found:
        raise ConfigError(f"{key} is missing: predict.py needs it (conf/callbacks/predict.yaml)")
    return found[0]


def predict_onnx(cfg: DictConfig) -> dict[str, Any]:
    """``predict.py backend=onnx model_path=<graph>``: the same frames and outputs, the network and scorer run by
    onnxruntime (:class:`hazardseg.export.OnnxSegmenter`); the threshold is the graph's own (its metadata) unless
    ``predict.threshold`` is given. A plain loop: there is no LightningModule to train or fit here."""
    import torch

    from hazardseg.export import OnnxSegmenter

    opts = cfg.predict
    if not cfg.get("model_path"):
        raise ConfigError("model_path is not set. Fix: python predict.py backend=onnx model_path=<file written by export.py> input=...")
    model = OnnxSegmenter(cfg.model_path, threads=torch.get_num_threads())
    source = _frames(cfg, normalize=False)  # the graph normalises its uint8 input itself
    name = model.meta["scorer"]
    given = opts.get("threshold")
    if given is not None and OmegaConf.is_dict(given):
        given = given.get(name)
    threshold = ({"threshold": float(given), "source": "predict.threshold"} if given is not None else
                 {"threshold": float(model.meta["threshold"]), "fpr": model.meta.get("fpr"), "source": f"metadata of {cfg.model_path}"})
    writer = PredictionWriter(cfg.paths.output_dir, save_scores=bool(opts.save_scores), contact_sheet=int(opts.contact_sheet),
                              image_format=str(opts.image_format))
    loader = _prepare(writer, {name: threshold}, source, opts)
    writer.on_predict_start(None, model)
    try:
        for index, batch in enumerate(loader):
            writer.on_predict_batch_end(None, model, model(batch["image"]), batch, index)
    except BaseException as err:
        writer.on_exception(None, model, err)
        raise
    writer.on_predict_end(None, model)
    return {**_results(cfg, {name: threshold}, source, writer), "backend": "onnx", "model_path": str(cfg.model_path)}


def _frames(cfg: DictConfig, normalize: bool) -> FrameSource:
    size = cfg.predict.image_size
    return FrameSource(cfg.input, None if size is None else tuple(int(v) for v in size), normalize=normalize)


def _prepare(writer: PredictionWriter, thresholds: dict[str, dict[str, Any]], source: FrameSource, opts: DictConfig) -> DataLoader:
    """Hand the writer its thresholds and the input's frame rate, write thresholds.json; the frames' loader."""
    writer.thresholds = {name: t["threshold"] for name, t in thresholds.items()}
    writer.fps = source.fps
    atomic_write_json(writer.out_dir / "thresholds.json", thresholds)
    return DataLoader(source, batch_size=int(opts.batch_size), collate_fn=collate_frames, num_workers=0)


def _results(cfg: DictConfig, thresholds: dict[str, dict[str, Any]], source: FrameSource, writer: PredictionWriter) -> dict[str, Any]:
    return {"input": str(cfg.input), "thresholds": thresholds, "skipped_frames": dict(source.skipped),
            "predictions": writer.results()}
