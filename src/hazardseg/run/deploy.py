"""Export stage (``export.py``): the model and one post-hoc scorer as a checked ONNX graph (:mod:`hazardseg.export`),
with the scorer's calibrated threshold (as ``predict.py`` computes it) and the class names in its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hazardseg.errors import ConfigError
from hazardseg.export import export_onnx
from hazardseg.run.build import Run
from hazardseg.run.predict import calibrated, fit_statistics


def export(run: Run) -> dict[str, Any]:
    cfg, module = run.cfg, run.module
    if cfg.format != "onnx":
        raise ConfigError(f"format={cfg.format}: the only export format is onnx. Fix: format=onnx")
    asked = list(cfg.scorer or {})
    if len(asked) != 1:
        raise ConfigError(f"scorer={asked}: export.py exports one scorer per graph. Fix: scorer=<one of {asked or 'msp, sml, ...'}>")
    if asked[0] not in module.scorers:
        raise ConfigError(f"scorer={asked[0]}: it does not apply to this model (it reads an output the network does not "
                          f"have). Fix: a post-hoc scorer such as scorer=msp or scorer=sml")
    name = asked[0]
    threshold = calibrated(run)[name]
    fit_statistics(run)  # thresholds from the cache: the statistics are still to be read
    path = Path(str(cfg.out)) if cfg.get("out") else Path(cfg.paths.output_dir) / f"model_{name}.onnx"
    meta = run.results
    metadata = {"scorer": name, "threshold": threshold["threshold"], "fpr": threshold["fpr"], "class_names": list(module.class_names),
                "train_hash": str(meta.get("train_hash")), "input": "image: uint8 RGB (N, 3, H, W), ImageNet normalisation inside",
                "outputs": "segmentation: int64 (N, H, W) class ids; anomaly: float32 (N, H, W), flagged when >= threshold"}
    check = export_onnx(module.net, module.scorers[name], path, metadata, opset=int(cfg.opset))
    return {"onnx": str(path), "scorer": name, "threshold": threshold, "check": check}
