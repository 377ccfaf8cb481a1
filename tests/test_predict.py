"""predict.py on users' own frames: genuine road images of several sizes and formats, a generated video, the
calibrated threshold (its validation FPR is the target), bad inputs in one line, outputs that are what they say."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, SAMPLES
from hazardseg.callbacks.prediction_writer import STRIP, PredictionWriter, argmax_classes
from hazardseg.errors import ConfigError, DataError
from hazardseg.pipeline import predict

GENUINE = [SAMPLES / "streethazards/test/images/test/t6/1028.png",          # 1280x720 RGBA PNG
           SAMPLES / "smiyc/dataset_AnomalyTrack/images/carriage0002.jpg",  # SMIYC JPEG
           SAMPLES / "smiyc/dataset_ObstacleTrack/images/gravel_boot_5.webp"]
QUIET = ["trainer.enable_progress_bar=false", "predict.fit_batches=1"]


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """Genuine frames where the samples are present (else generated ones of the same sizes and formats)."""
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for path, size in zip(GENUINE, [(1280, 720), (640, 480), (480, 270)]):
        if path.is_file():
            shutil.copy(path, folder / path.name)
        else:
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / path.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


def _video(path: Path, frames: int = 8, fps: int = 12, size: tuple[int, int] = (144, 256)) -> Path:
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=Fraction(fps))
    stream.height, stream.width, stream.pix_fmt = *size, "yuv420p"
    for i in range(frames):
        img = np.zeros((*size, 3), np.uint8)
        img[..., 0] = (np.arange(size[1]) + 20 * i) % 256
        img[60:90, 100 + 5 * i:140 + 5 * i] = (250, 250, 0)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def test_predict_on_a_folder_of_genuine_frames(checkpoint, frames, make_cfg):
    results = predict(make_cfg([f"ckpt_path={checkpoint}", f"input={frames}", "scorer=[msp,energy]", *QUIET], config_name="predict"))
    out = Path(results["predictions"]["out_dir"])
    assert results["status"] == "completed" and results["predictions"]["frames"] == 3
    assert list(results["skipped_frames"]) == [str(frames / "broken.png")]  # skipped and listed, not the end of the run
    assert "cannot decode image" in results["skipped_frames"][str(frames / "broken.png")]
    for path in GENUINE:
        width, height = Image.open(frames / path.name).size
        assert Image.open(out / "segmentation" / f"{path.stem}.png").size == (width, height)  # native size
        for scorer in ("msp", "energy"):
            heat_map = Image.open(out / "anomaly" / scorer / f"{path.stem}.jpg")
            assert heat_map.format == "JPEG" and heat_map.size == (width, height + STRIP)
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert len(rows) == 3 * 2 and {r["scorer"] for r in rows} == {"msp", "energy"}
    for row in rows:  # the flagged share is what the threshold flags on the frame's own map
        assert 0.0 <= float(row["flagged_share"]) <= 1.0 and (out / row["file"]).is_file()
        assert float(row["threshold"]) == results["thresholds"][row["scorer"]]["threshold"]
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert set(thresholds) == {"msp", "energy"} and thresholds["energy"]["fpr"] == 0.05
    for scorer in ("msp", "energy"):
        assert Image.open(out / f"contact_sheet_{scorer}.png").size[0] > 300


def test_calibrated_threshold_flags_the_target_share_of_known_validation_pixels(checkpoint, make_cfg, tmp_path):
    """Recomputed here from the validation split, independently of the calibration code."""
    from hazardseg.maps import resize
    from hazardseg.run.build import eval_run

    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((72, 128, 3), np.uint8)).save(image)
    cfg = make_cfg([f"ckpt_path={checkpoint}", f"input={image}", "scorer=[energy,maxlogit]", "predict.fpr=0.1", *QUIET],
                   config_name="predict")
    results = predict(cfg)
    run = eval_run(cfg, task="predict")
    run.datamodule.setup("validate")
    net = run.module.net.eval()
    scores: dict[str, list] = {"energy": [], "maxlogit": []}
    with torch.no_grad():
        for batch in run.datamodule.val_dataloader():
            outputs = net(batch["image"])
            known = (batch["mask"] >= 0) & (batch["mask"] < run.module.num_classes)
            for name in scores:
                scores[name].append(resize(run.module.scorers[name](outputs), batch["mask"].shape[-2:])[known])
    for name, parts in scores.items():
        values = torch.cat(parts).numpy()
        share = float((values >= results["thresholds"][name]["threshold"]).mean())
        assert abs(share - 0.1) <= 1e-3, (name, share)
        assert share == pytest.approx(results["thresholds"][name]["achieved_fpr"], abs=1e-12)


def test_predict_on_a_video_writes_an_overlay_video_at_its_frame_rate(checkpoint, make_cfg, tmp_path):
    import av

    video = _video(tmp_path / "clip.mp4", frames=8, fps=12)
    results = predict(make_cfg([f"ckpt_path={checkpoint}", f"input={video}", "scorer=msp", "predict.save_scores=true",
                                "predict.image_size=[72,128]", "predict.batch_size=4", *QUIET], config_name="predict"))
    out = Path(results["predictions"]["out_dir"])
    container = av.open(str(out / "anomaly_msp.mp4"))
    stream = container.streams.video[0]
    decoded = list(container.decode(stream))
    assert len(decoded) == 8 and stream.average_rate == 12
    assert (stream.height, stream.width) == (144 + STRIP, 256)
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert [r["frame"] for r in rows] == [f"frame_{i:06d}" for i in range(8)]
    from hazardseg.metrics.submission import read_score_map

    assert read_score_map(out / "scores" / "msp" / "frame_000003.hdf5").shape == (144, 256)


def test_bad_predict_inputs_are_one_line(checkpoint, make_cfg, tmp_path):
    with pytest.raises(DataError, match=r"^input=.*nowhere: no such file or folder\. Fix: input=<image"):
        predict(make_cfg([f"ckpt_path={checkpoint}", f"input={tmp_path / 'nowhere'}", *QUIET], config_name="predict"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="the folder holds no image"):
        predict(make_cfg([f"ckpt_path={checkpoint}", f"input={tmp_path / 'empty'}", *QUIET], config_name="predict", run="b"))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((72, 128, 3), np.uint8)).save(image)
    with pytest.raises(ConfigError, match=r"predict.threshold=0.5: one value for 2 scorers"):
        predict(make_cfg([f"ckpt_path={checkpoint}", f"input={image}", "scorer=[msp,energy]", "predict.threshold=0.5", *QUIET],
                         config_name="predict", run="c"))
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    with pytest.raises(DataError, match=r"fake\.mp4: cannot open it as a video"):
        predict(make_cfg([f"ckpt_path={checkpoint}", f"input={tmp_path / 'fake.mp4'}", *QUIET], config_name="predict", run="d"))


def test_predict_command_as_typed(checkpoint, tmp_path):
    """`python predict.py ckpt_path=... input=...` from a shell: exit 0, outputs in the run folder, a given threshold used."""
    image = tmp_path / "frame.jpg"
    Image.fromarray(np.full((72, 128, 3), 90, np.uint8)).save(image)
    proc = subprocess.run([sys.executable, str(REPO / "predict.py"), f"ckpt_path={checkpoint}", f"input={image}",
                           "predict.threshold=-0.5", *QUIET], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "predict" / "runs").iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["thresholds"] == {"msp": {"threshold": -0.5, "source": "predict.threshold"}}
    assert (run / "anomaly" / "msp" / "frame.jpg").is_file()
    missing = subprocess.run([sys.executable, str(REPO / "predict.py"), f"ckpt_path={checkpoint}"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: input is not set. Fix: python predict.py")


def test_given_threshold_with_a_scorer_that_needs_statistics(checkpoint, make_cfg, tmp_path, capsys):
    """No calibration pass: the statistics are fitted when predicting starts (Trainer.predict has no datamodule)."""
    image = tmp_path / "frame.png"
    Image.fromarray(np.full((72, 128, 3), 120, np.uint8)).save(image)
    results = predict(make_cfg([f"ckpt_path={checkpoint}", f"input={image}", "scorer=sml", "predict.threshold={sml: 0.5}", *QUIET],
                               config_name="predict"))
    assert results["thresholds"] == {"sml": {"threshold": 0.5, "source": "predict.threshold"}}
    assert "scorer 'sml': fitting statistics on the training split" in capsys.readouterr().out
    rows = list(csv.DictReader((Path(results["predictions"]["out_dir"]) / "index.csv").open()))
    assert [(r["frame"], r["scorer"], float(r["threshold"])) for r in rows] == [("frame", "sml", 0.5)]


def test_predict_step_leaves_scoring_to_the_writer_thread_on_the_cpu(checkpoint, frames, make_cfg):
    """On the CPU ``predict_step`` hands the writer a function that computes the maps (called in its worker thread,
    beside the next forward pass): the same maps as scoring at once."""
    from hazardseg.run.build import eval_run

    module = eval_run(make_cfg([f"ckpt_path={checkpoint}", f"input={frames}", "scorer=[msp,entropy]", *QUIET],
                               config_name="predict"), task="predict").module.eval()
    module.on_predict_start()
    image = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        out = module.predict_step({"image": image}, 0)
        assert callable(out["scores"])
        deferred = out["scores"]()
        outputs = module(image)
        direct = {name: scorer(outputs) for name, scorer in module.scorers.items()}
    assert list(deferred) == ["msp", "entropy"]
    assert all(torch.equal(deferred[name], direct[name]) for name in direct)


def test_argmax_classes_is_torch_argmax_with_ties_to_the_first() -> None:
    logits = torch.randint(-3, 3, (13, 37, 53)).float()  # many ties
    assert torch.equal(argmax_classes(logits).long(), logits.argmax(0))
    assert argmax_classes(logits).dtype == torch.uint8
    many = torch.randn(300, 4, 5)
    assert torch.equal(argmax_classes(many), many.argmax(0))  # more classes than uint8 holds: int64
    # classes interleaved per pixel (a channels-last network's logits), ties included: the same classes and type
    interleaved = logits[None].contiguous(memory_format=torch.channels_last)[0]
    assert interleaved.stride(0) == 1 and torch.equal(argmax_classes(interleaved).long(), logits.argmax(0))
    assert argmax_classes(interleaved).dtype == torch.uint8


def test_heat_maps_as_png_on_request_and_a_bad_format_named(checkpoint, make_cfg, tmp_path):
    image = tmp_path / "in" / "frame.jpg"
    image.parent.mkdir()
    Image.fromarray(np.full((72, 128, 3), 90, np.uint8)).save(image)
    results = predict(make_cfg([f"ckpt_path={checkpoint}", f"input={image}", "predict.image_format=png",
                                "predict.threshold=-0.5", *QUIET], config_name="predict"))
    heat_map = Image.open(Path(results["predictions"]["out_dir"]) / "anomaly" / "msp" / "frame.png")
    assert heat_map.format == "PNG" and heat_map.size == (128, 72 + STRIP)
    with pytest.raises(ConfigError, match=r"predict.image_format='gif': expected one of \['jpg', 'png'\]"):
        PredictionWriter(str(tmp_path), image_format="gif")


def test_prefetched_frames_keep_order_raise_errors_in_place_and_stop_when_closed() -> None:
    import threading
    import time

    from hazardseg.data.frames import prefetched

    assert list(prefetched(iter(range(50)), 2)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise ValueError("frame 3 is broken")

    got = []
    with pytest.raises(ValueError, match="frame 3 is broken"):
        for item in prefetched(failing(), 2):
            got.append(item)
    assert got == [1, 2]  # everything before the error, in order

    produced, closed = [], threading.Event()

    def endless():
        try:
            for i in range(10**9):
                produced.append(i)
                yield i
        finally:
            closed.set()

    stream = prefetched(endless(), 2)
    assert next(stream) == 0
    stream.close()  # the consumer stops (Ctrl-C): the thread stops at its next item and closes the source
    assert closed.wait(5)
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 5
