"""export.py: one checked ONNX graph per (model, post-hoc scorer), statistics baked in, the calibrated threshold and
class names in its metadata; onnxruntime matches PyTorch on genuine frames; what cannot be exported is one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES
from hazardseg.errors import ConfigError
from hazardseg.pipeline import export

ort = pytest.importorskip("onnxruntime", reason='pip install -e ".[export]"')
FRAMES = [SAMPLES / "streethazards/test/images/test/t6/1028.png", SAMPLES / "smiyc/dataset_AnomalyTrack/images/carriage0002.jpg"]
QUIET = ["trainer.enable_progress_bar=false", "predict.fit_batches=1"]


def _frames(multiple: int) -> list[np.ndarray]:
    """The genuine frames (generated ones where the samples are absent), cropped to the graph's size multiple."""
    rng = np.random.default_rng(0)
    out = []
    for path, size in zip(FRAMES, [(720, 1280), (480, 640)]):
        rgb = np.asarray(Image.open(path).convert("RGB")) if path.is_file() else rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        h, w = (rgb.shape[0] // multiple) * multiple, (rgb.shape[1] // multiple) * multiple
        out.append(np.ascontiguousarray(rgb[:h, :w]))
    return out


@pytest.mark.parametrize("scorer", ["msp", "sml"])
def test_exported_graph_matches_pytorch_on_genuine_frames(checkpoint, make_cfg, scorer):
    from hazardseg.export import DeploymentGraph, compare, read_metadata
    from hazardseg.run.build import eval_run

    cfg = make_cfg([f"ckpt_path={checkpoint}", f"scorer={scorer}", *QUIET], config_name="export")
    results = export(cfg)
    meta = read_metadata(results["onnx"])
    assert meta["scorer"] == scorer and meta["threshold"] == results["threshold"]["threshold"]
    assert meta["class_names"][7] == "road" and len(meta["class_names"]) == 13 and meta["fpr"] == 0.05
    assert results["check"]["segmentation_mismatch_share"] <= 1e-4 and results["check"]["anomaly_within_tolerance_share"] >= 0.999
    # independently: the graph on genuine frames (1280x720 and 640x480, cropped to the size multiple) vs PyTorch
    run = eval_run(make_cfg([f"ckpt_path={checkpoint}", f"scorer={scorer}", *QUIET], config_name="export", run="ref"), task="export")
    from hazardseg.run.predict import fit_statistics

    fit_statistics(run)
    graph = DeploymentGraph(run.module.net, run.module.scorers[scorer])
    session = ort.InferenceSession(results["onnx"], providers=["CPUExecutionProvider"])
    check = compare(graph, session, (0, 0), frames=_frames(meta["size_multiple"]))
    # on real frames: segmentation identical, every anomaly value within 1e-4 (relative above magnitude 1)
    assert check["segmentation_equal"] and check["anomaly_within_tolerance_share"] == 1.0, check


def test_what_cannot_be_exported_is_one_line(checkpoint, make_cfg):
    cases = [(["scorer=[msp,sml]"], r"scorer=\['msp', 'sml'\]: export.py exports one scorer per graph"),
             (["format=torchscript"], r"format=torchscript: the only export format is onnx"),
             (["scorer=void"], r"scorer=void: it does not apply to this model")]
    for i, (extra, message) in enumerate(cases):
        with pytest.raises(ConfigError, match=message) as err:
            export(make_cfg([f"ckpt_path={checkpoint}", *extra, *QUIET], config_name="export", run=f"bad{i}"))
        assert "\n" not in str(err.value)


def test_predict_with_the_exported_graph_matches_the_checkpoint(checkpoint, make_cfg, tmp_path):
    """`predict.py backend=onnx model_path=...` writes what `predict.py ckpt_path=...` writes, at the graph's threshold."""
    import csv
    from pathlib import Path

    from hazardseg.pipeline import predict
    from test_predict import _video

    video = _video(tmp_path / "clip.mp4", frames=4, size=(144, 256))
    graph = export(make_cfg([f"ckpt_path={checkpoint}", "scorer=sml", *QUIET], config_name="export", run="graph"))["onnx"]
    onnx_run = predict(make_cfg(["backend=onnx", f"model_path={graph}", f"input={video}", "trainer.enable_progress_bar=false"],
                                config_name="predict", run="onnx"))
    threshold = onnx_run["thresholds"]["sml"]["threshold"]
    torch_run = predict(make_cfg([f"ckpt_path={checkpoint}", f"input={video}", "scorer=sml", f"predict.threshold={threshold}", *QUIET],
                                 config_name="predict", run="torch"))
    assert onnx_run["status"] == torch_run["status"] == "completed" and onnx_run["predictions"]["frames"] == 4
    out = {k: Path(r["predictions"]["out_dir"]) for k, r in (("onnx", onnx_run), ("torch", torch_run))}
    rows = {k: list(csv.DictReader((o / "index.csv").open())) for k, o in out.items()}
    for a, b in zip(rows["onnx"], rows["torch"]):
        assert a["frame"] == b["frame"] and abs(float(a["flagged_share"]) - float(b["flagged_share"])) <= 1e-3
        assert abs(float(a["max_score"]) - float(b["max_score"])) <= 1e-4
        same = np.array_equal(np.asarray(Image.open(out["onnx"] / "segmentation" / f"{a['frame']}.png")),
                              np.asarray(Image.open(out["torch"] / "segmentation" / f"{a['frame']}.png")))
        assert same, a["frame"]
    with pytest.raises(ConfigError, match="model_path is not set"):
        predict(make_cfg(["backend=onnx", f"input={video}"], config_name="predict", run="nomodel"))
