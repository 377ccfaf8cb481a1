"""Leaderboard metrics and submission files of every scorer on a test-only anomaly benchmark.

Active only when the test datamodule is a test-only benchmark (``datamodule.test_only``: ``data=smiyc_anomaly``,
``smiyc_obstacle``, ``fishyscapes_laf``, ``lost_and_found``, ``road_anomaly``); on any other data it does nothing.
Per scorer it drives one :class:`~hazardseg.metrics.BenchmarkEvaluator` with ``test_step``'s score maps (already
upsampled bilinearly to the label's size, as the benchmark does), so it computes the SMIYC convention (Chan et al.,
NeurIPS 2021 D&B; ``road_anomaly_benchmark/metrics``) from the float16 maps that are exported:

* pixel level: ``AP``, ``AUROC``, ``FPR95`` (+ ``FPR95_threshold``), ``best_F1`` (+ ``best_F1_threshold``);
* component level at the best-F1 threshold: ``sIoU_gt``, ``sIoU_pred``, ``PPV``, ``F1_25`` .. ``F1_75`` and
  ``mean_F1`` (+ ``component_threshold``, in the encoded score space, and its raw value).

Off the critical path: ``on_test_batch_end`` only hands each frame's maps to one worker thread (a bounded queue of
two frames per scorer), which encodes them, updates the pixel curves and writes the maps, while the main thread runs
the next batch's forward pass (PyTorch releases the GIL in its kernels). The worker takes the frames in order, so the
results are those of a sequential run. Labels are kept once per frame for all scorers, and the component pass at
the end runs frame by frame over every scorer (:func:`~hazardseg.metrics.benchmark.compute_all`).

They are logged as ``test/<scorer>/<benchmark name>`` next to the exact pooled ``test/<scorer>/{aupr,auroc,fpr95}``
that :class:`~hazardseg.callbacks.AnomalyEvaluation` computes on the same maps (float32, void excluded). Frames
without a public label (private test splits) only get their submission file. With ``submission=True`` every frame
is written as ``<run_dir>/anomaly_p/<method>/<dataset>/<fid>.hdf5`` (the leaderboard's format), ``<method>`` from
the ``method`` template (``{train_hash}``, ``{scorer}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from hazardseg.callbacks.base import Background, EvaluationCallback
from hazardseg.config import is_number
from hazardseg.console import say
from hazardseg.errors import DataError
from hazardseg.metrics import BenchmarkEvaluator
from hazardseg.metrics.benchmark import LabelledFrames, as_uint8_label, compute_all
from hazardseg.metrics.names import BENCHMARK_COLUMNS
from hazardseg.metrics.submission import Float16Encoder
from hazardseg.module import as_float64

# Benchmark-named metrics of the results table (one row per scorer); every numeric result is logged.
BENCHMARK_KEYS = BENCHMARK_COLUMNS


class BenchmarkEvaluation(EvaluationCallback):
    """Args:
        run_dir: the run folder (submission files and scratch maps go below it).
        submission: write the leaderboard's submission files of every frame.
        method: template of the submission's method folder; ``{train_hash}`` (the model) and ``{scorer}``.
    """

    results_key = "benchmark"  # scorer -> every leaderboard number, method and submission folder

    def __init__(self, run_dir: str, submission: bool = False, method: str = "{train_hash}-{scorer}",
                 background: bool = True):
        self.run_dir = Path(run_dir)
        self.background = bool(background)
        self.submission = bool(submission)
        self.method = method
        self.evaluators: dict[str, BenchmarkEvaluator] = {}
        self.results_by_scorer: dict[str, dict[str, Any]] = {}
        self.worker: Background | None = None
        self.frames = LabelledFrames()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluators, self.results_by_scorer = {}, {}
        datamodule = trainer.datamodule
        if not getattr(datamodule, "test_only", False):
            return
        if not self.submission and not any(frame.mask is not None for frame in datamodule.frames):
            raise DataError(
                f"{datamodule.name}: none of the {len(datamodule.frames)} frames in data.root={datamodule.root} has a "
                f"label ({datamodule.LABELS_AT} expected), so there is nothing to score. Fix: point data.root at the "
                f"folder with the labels, or add submission=true to only write the leaderboard's files"
            )
        train_hash = str(pl_module.checkpoint_meta.get("train_hash") or "model")
        self.frames = LabelledFrames()
        for name in pl_module.scorers:
            method = self.method.format(train_hash=train_hash, scorer=name)
            self.evaluators[name] = BenchmarkEvaluator(self.run_dir, method, datamodule.TRACK, submission=self.submission,
                                                       pooled=False,  # pooled exact metrics: AnomalyEvaluation's
                                                       frames=self.frames)
        self.worker = Background(depth=2 * len(self.evaluators) if self.background else 0, name="benchmark")
        if trainer.is_global_zero:
            where = f"; submission files in {self.run_dir / 'anomaly_p'}" if self.submission else ""
            say(f"[hazardseg] {datamodule.name} is a test-only anomaly benchmark (labels normal / anomaly / void): "
                f"no mIoU; every scorer gets the leaderboard's metrics{where}")

    def on_test_batch_end(self, trainer, pl_module, outputs: dict[str, Any], batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.evaluators:
            return
        for name, scores in outputs["scores"].items():
            evaluator = self.evaluators[name]
            if not evaluator.encoder.fitted and trainer.world_size > 1:
                self.worker.drain()  # the encoder is fitted on this rank's first frame, in this thread
                _share_encoder(trainer, evaluator.encoder, scores[0])
        scores = {name: s.detach().cpu() for name, s in outputs["scores"].items()}  # device copies: here, not in the worker
        for i, fid in enumerate(batch["name"]):
            label = as_uint8_label(batch["mask"][i]) if bool(batch["has_label"][i]) else None
            index = None if label is None else self.frames.add(label)  # once for every scorer
            for name, evaluator in self.evaluators.items():
                self.worker.submit(evaluator.add, fid, batch["group"][i], scores[name][i], label, index)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values: dict[str, float] = {}
        if self.worker is not None:
            self.worker.close()  # every frame added (re-raises the worker's error, if any)
        results = compute_all(list(self.evaluators.values()))  # every rank: the metric states are gathered
        for (name, evaluator), result in zip(self.evaluators.items(), results):
            result["method"] = evaluator.method
            if self.submission:
                result["submission_dir"] = str(self.run_dir / "anomaly_p" / evaluator.method)
            self.results_by_scorer[name] = result
            if "note" in result and trainer.is_global_zero:
                say(f"[hazardseg] scorer '{name}': {result['note']}")
            values.update({f"test/{name}/{k}": float(v) for k, v in result.items() if is_number(v)})
        if values:
            pl_module.log_dict(as_float64(values), sync_dist=True)  # equal on every rank: averaging is a no-op

    def results(self) -> dict[str, dict[str, Any]]:
        return self.results_by_scorer

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.worker is not None:
            self.worker.close(cancel=True)  # the frame being written is finished (files are written atomically)
        for evaluator in self.evaluators.values():
            evaluator.close()  # scratch maps; submission files written so far stay


def benchmark_row(metrics: dict[str, Any], name: str) -> dict[str, Any]:
    """The benchmark-named metrics of one scorer's results row (empty on data that is no test-only benchmark)."""
    return {k: metrics[f"test/{name}/{k}"] for k in BENCHMARK_KEYS if f"test/{name}/{k}" in metrics}


def _share_encoder(trainer: L.Trainer, encoder: Float16Encoder, first_frame) -> None:
    """Under DDP all ranks export with one float16 map: rank 0's, fitted on its first frame."""
    encoder.fit(first_frame)
    encoder.load_state_dict(trainer.strategy.broadcast(encoder.state_dict(), src=0))
