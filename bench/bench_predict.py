"""predict.py throughput against the bare forward pass of the same model on the same frames, and its memory over a
long video.

    python bench/bench_predict.py --ckpt outputs/models/<hash>/checkpoints/best.ckpt            # 1280x720 frames
    python bench/bench_predict.py --ckpt ... --video-frames 1000 --video-size 144x256            # memory over a video
    python bench/bench_predict.py --ckpt ... --onnx --scorer sml                                  # exported graph vs PyTorch

Throughput: N copies of the genuine StreetHazards test frame (1280x720; a generated frame of that size when the
samples are absent) in a folder. "bare forward" = ``net(x)`` under ``no_grad`` on the already decoded, resized and
normalised batches (what the network costs); "predict.py" = the whole entry point in this process (read, decode,
resize, forward, scores, upsampling to 1280x720, PNGs, index, contact sheet), with the threshold given (the one-off
calibration is timed apart). Median of ``--repeats``, alternating. Memory: the process's RSS sampled every 0.1 s
while predict.py streams a generated video; flat = the last tenth of the run is no higher than the first.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "samples" / "streethazards" / "test" / "images" / "test" / "t6" / "1028.png"


def config(ckpt: str, input_path: Path, out: Path, extra: list[str], name: str = "predict"):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        first = [f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false"] + ([f"input={input_path}"] if name == "predict" else [])
        cfg = compose(name, [*first, *extra], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.model_store = str(Path(ckpt).resolve().parents[2])
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(out.parent)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def throughput(args) -> None:
    from hazardseg.data.frames import FrameSource, collate_frames
    from hazardseg.pipeline import predict
    from hazardseg.run.build import eval_run

    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    folder = work / "frames"
    folder.mkdir()
    frame = Image.open(SAMPLE).convert("RGB") if SAMPLE.is_file() else Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8))
    for i in range(args.frames):
        frame.save(folder / f"{i:04d}.png")
    size = [int(v) for v in args.image_size.split(",")]
    extra = [f"predict.image_size=[{size[0]},{size[1]}]", f"predict.batch_size={args.batch_size}", f"scorer={args.scorer}"]
    cfg = config(args.ckpt, folder, work / "calibrate", extra)
    t0 = time.perf_counter()
    calibrated = predict(cfg)["thresholds"]
    calibration_s = time.perf_counter() - t0
    given = "{" + ", ".join(f"{k}: {v['threshold']}" for k, v in calibrated.items()) + "}"
    net = eval_run(config(args.ckpt, folder, work / "net", extra), task="predict").module.net.eval()
    loader = torch.utils.data.DataLoader(FrameSource(folder, tuple(size)), batch_size=args.batch_size, collate_fn=collate_frames)
    batches = [b["image"] for b in loader]
    bare, full = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            for x in batches:
                net(x)
        bare.append(time.perf_counter() - t0)
        cfg = config(args.ckpt, folder, work / f"run{r}", [*extra, f"predict.threshold={given}"])
        t0 = time.perf_counter()
        predict(cfg)
        full.append(time.perf_counter() - t0)
    fb, ff = args.frames / statistics.median(bare), args.frames / statistics.median(full)
    print(f"frames 1280x720 -> network {size[0]}x{size[1]}, batch {args.batch_size}, scorer {args.scorer}, {args.frames} frames, "
          f"{torch.get_num_threads()} threads")
    print(f"| bare forward | {fb:.2f} frames/s (median of {args.repeats}: {statistics.median(bare):.2f} s) |")
    print(f"| predict.py end to end | {ff:.2f} frames/s ({statistics.median(full):.2f} s) |")
    print(f"| ratio | {ff / fb:.2f} of the bare forward |")
    print(f"| calibration (once per checkpoint + scorer, then cached) | {calibration_s:.1f} s |")


def onnx_vs_torch(args) -> None:
    """The exported graph (onnxruntime) and the same graph in PyTorch on the same frames: frames/s, max |diff|."""
    import onnxruntime as ort

    from hazardseg.export import DeploymentGraph, compare, read_metadata
    from hazardseg.pipeline import export
    from hazardseg.run.build import eval_run
    from hazardseg.run.predict import fit_statistics

    work = Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    extra = [f"scorer={args.scorer}"]
    path = export(config(args.ckpt, work, work / "export", extra, name="export"))["onnx"]
    multiple = read_metadata(path)["size_multiple"]
    frame = np.asarray(Image.open(SAMPLE).convert("RGB")) if SAMPLE.is_file() else \
        np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    frame = np.ascontiguousarray(frame[: frame.shape[0] // multiple * multiple, : frame.shape[1] // multiple * multiple])
    run = eval_run(config(args.ckpt, work, work / "ref", extra, name="export"), task="export")
    fit_statistics(run)
    graph = DeploymentGraph(run.module.net, run.module.scorers[args.scorer]).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    batch = np.ascontiguousarray(frame.transpose(2, 0, 1)[None])
    times = {"onnxruntime": [], "pytorch": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.frames):
            session.run(None, {"image": batch})
        times["onnxruntime"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(args.frames):
                graph(torch.from_numpy(batch))
        times["pytorch"].append(time.perf_counter() - t0)
    check = compare(graph, session, (0, 0), multiple, frames=[frame])
    print(f"scorer {args.scorer}, frames {frame.shape[1]}x{frame.shape[0]}, {args.frames} frames x {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    for name, values in times.items():
        print(f"| {name} | {args.frames / statistics.median(values):.2f} frames/s |")
    print(f"| segmentation pixels that differ | {check['segmentation_mismatch_share']:.2e} |")
    print(f"| anomaly values within 1e-4 (relative above 1) | {check['anomaly_within_tolerance_share']:.6%} (max abs diff "
          f"{check['anomaly_max_abs_diff']:.2e}) |")


def memory(args) -> None:
    import av

    from hazardseg.pipeline import predict

    work = Path(tempfile.mkdtemp(prefix="bench_predict_video_"))
    h, w = (int(v) for v in args.video_size.split("x"))
    video = work / "long.mp4"
    container = av.open(str(video), "w")
    stream = container.add_stream("libx264", rate=Fraction(25))
    stream.height, stream.width, stream.pix_fmt = h, w, "yuv420p"
    rng = np.random.default_rng(0)
    for i in range(args.video_frames):
        img = np.roll(rng.integers(0, 255, (h, w, 3), dtype=np.uint8) // 4 + 100, i, axis=1).astype(np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), _rss_mib()))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    cfg = config(args.ckpt, video, work / "run", [f"predict.image_size=[{h},{w}]", "predict.threshold=0.0", "scorer=msp",
                                                  "predict.contact_sheet=12"])
    t0 = time.perf_counter()
    watcher.start()
    predict(cfg)
    done.set()
    watcher.join()
    elapsed = time.perf_counter() - t0
    rss = [m for _, m in samples]
    tenth = max(1, len(rss) // 10)
    first, last = max(rss[:tenth]), max(rss[-tenth:])
    print(f"video {args.video_frames} frames {w}x{h}: {args.video_frames / elapsed:.1f} frames/s; RSS MiB: first tenth max "
          f"{first:.0f}, last tenth max {last:.0f}, peak {max(rss):.0f} (ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f})")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--image-size", default="360,640")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--scorer", default="msp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--video-frames", type=int, default=0)
    parser.add_argument("--video-size", default="144x256")
    parser.add_argument("--onnx", action="store_true", help="the exported graph (onnxruntime) vs PyTorch")
    args = parser.parse_args()
    if args.onnx:
        onnx_vs_torch(args)
    elif args.video_frames:
        memory(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
