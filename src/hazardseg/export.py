"""Export for deployment: one ONNX graph from an RGB image to the segmentation and one post-hoc scorer's anomaly map.

The graph takes ``image``: uint8 (N, 3, H, W) RGB, any batch, any height and width that are multiples of the
network's stride (metadata ``size_multiple``, 32 for the SMP encoders: the padding that PyTorch does in Python is
not part of a traced graph, so pad or resize frames before; ImageNet normalisation is inside), and
returns ``segmentation`` (int64 (N, H, W), class ids) and ``anomaly`` (float32 (N, H, W), the scorer's map, higher =
more anomalous; fitted statistics such as SML's are constants of the graph). Its metadata (``metadata_props``) hold
``threshold`` (flagged when ``anomaly >= threshold``: the calibrated threshold of ``predict.py``, at ``fpr`` of the
known-class validation pixels), ``fpr``, ``scorer``, ``class_names`` (JSON), ``train_hash`` and the input format.

Every export is checked before it is written: onnxruntime runs the graph on smooth random frames of two sizes (one a
batch of two) and its outputs must match PyTorch's: anomaly within 1e-4 (relative above magnitude 1:
``|d| <= 1e-4 * max(1, |score|)``) and the segmentation identical, except at near-ties of two class logits, which
float reordering can flip (at most 1e-4 of the pixels, and the anomaly map within tolerance on 99.9% of them: a
flipped class moves SML's statistics around it). A scorer or network the exporter cannot translate, or a graph
that does not match, is a one-line error that says why.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hazardseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from hazardseg.errors import ConfigError
from hazardseg.io import atomic_path

EXPORT_EXTRA = 'pip install -e ".[export]"'
TOLERANCE = 1e-4


class DeploymentGraph(nn.Module):
    """uint8 RGB image -> (segmentation, anomaly) of one network and one scorer."""

    def __init__(self, net: nn.Module, scorer: nn.Module):
        super().__init__()
        self.net, self.scorer = net.eval(), scorer.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.net((image.float() - self.mean) / self.std)
        return outputs["logits"].argmax(1), self.scorer(outputs).float()


def export_onnx(net: nn.Module, scorer: nn.Module, path: Path, metadata: dict[str, Any], opset: int = 17,
                check_size: tuple[int, int] = (96, 160)) -> dict[str, Any]:
    """Write the checked graph to ``path`` (atomically); returns what the check measured."""
    onnx, ort = _libraries()
    multiple = int(getattr(net, "pad_multiple", 32))
    check_size = tuple(-(-v // multiple) * multiple for v in check_size)  # sizes the graph takes (no padding traced)
    metadata = {**metadata, "size_multiple": multiple}
    graph = DeploymentGraph(net, scorer).cpu().eval()
    example = torch.randint(0, 256, (1, 3, *check_size), dtype=torch.uint8)
    buffer = io.BytesIO()
    try:
        # the TorchScript exporter's deprecation and tracer notes are not the user's business: the graph is checked below
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)  # TracerWarning and the shape-inference notes among them
            torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=opset, input_names=["image"],
                              output_names=["segmentation", "anomaly"],
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "segmentation": {0: "batch", 1: "height", 2: "width"},
                                            "anomaly": {0: "batch", 1: "height", 2: "width"}})
    except Exception as err:  # an operation the exporter cannot translate
        raise ConfigError(f"scorer={metadata['scorer']}: the ONNX exporter cannot translate this network + scorer "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    data = model.SerializeToString()
    check = compare(graph, ort.InferenceSession(data, providers=["CPUExecutionProvider"]), check_size, multiple)
    if "size_mismatch" in check:
        raise ConfigError(f"scorer={metadata['scorer']}: the ONNX graph of this network does not follow the frame size "
                          f"({check['size_mismatch']}: the exporter fixed the traced example's size); nothing was written. "
                          f"export.py supports networks whose graph is size-independent (the per-pixel SMP family); use "
                          f"predict.py with the checkpoint instead")
    if check["segmentation_mismatch_share"] > 1e-4 or check["anomaly_within_tolerance_share"] < 0.999:
        raise ConfigError(f"scorer={metadata['scorer']}: the exported graph does not match PyTorch (segmentation differs on "
                          f"{check['segmentation_mismatch_share']:.2e} of the pixels, anomaly within {TOLERANCE:g} on "
                          f"{check['anomaly_within_tolerance_share']:.4%}, max |diff| {check['anomaly_max_abs_diff']:.2e})")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return check


def compare(graph: nn.Module, session, size: tuple[int, int], multiple: int = 32, frames: list[np.ndarray] | None = None) -> dict[str, Any]:
    """onnxruntime vs PyTorch on ``frames`` (uint8 HxWx3; default: smooth random frames of two sizes, one a batch of 2)."""
    if frames is None:
        rng = np.random.default_rng(0)
        batches = [_smooth(rng, 1, size), _smooth(rng, 2, (size[0] + multiple, size[1] + 2 * multiple))]
    else:
        batches = [np.ascontiguousarray(f.transpose(2, 0, 1)[None]) for f in frames]
    pixels = mismatched = within = finite_total = 0
    worst, infinite_mismatch = 0.0, 0
    for batch in batches:
        seg, anomaly = session.run(None, {"image": batch})
        with torch.no_grad():
            ref_seg, ref_anomaly = (t.numpy() for t in graph(torch.from_numpy(batch)))
        if seg.shape != ref_seg.shape:  # the trace baked its example's size into the graph (size-dependent Python)
            return {"segmentation_equal": False, "segmentation_mismatch_share": 1.0, "anomaly_max_abs_diff": float("inf"),
                    "anomaly_within_tolerance_share": 0.0, "frames_checked": 0,
                    "size_mismatch": f"a {batch.shape[2]}x{batch.shape[3]} frame gave {seg.shape[1]}x{seg.shape[2]} maps"}
        pixels += seg.size
        mismatched += int((seg != ref_seg).sum())
        finite = np.isfinite(ref_anomaly)
        infinite_mismatch += int((np.isfinite(anomaly) != finite).sum())
        diff = np.abs(anomaly[finite] - ref_anomaly[finite])
        within += int((diff <= TOLERANCE * np.maximum(1.0, np.abs(ref_anomaly[finite]))).sum())
        finite_total += int(finite.sum())
        worst = max(worst, float(diff.max(initial=0.0)))
    return {"segmentation_equal": mismatched == 0, "segmentation_mismatch_share": mismatched / pixels,
            "anomaly_max_abs_diff": worst, "anomaly_within_tolerance_share": (within / finite_total if finite_total else 1.0)
            if infinite_mismatch == 0 else 0.0, "frames_checked": sum(len(b) for b in batches)}


def _smooth(rng: np.random.Generator, n: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 (n, 3, H, W) frames of smooth random colour (photo-like: white noise makes near-ties of classes common)."""
    coarse = torch.from_numpy(rng.integers(0, 256, (n, 3, max(2, size[0] // 16), max(2, size[1] // 16))).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False).round().to(torch.uint8).numpy()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The graph's metadata, JSON values decoded."""
    onnx, _ = _libraries()
    out = {}
    for entry in onnx.load(str(path), load_external_data=False).metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except ValueError:
            out[entry.key] = entry.value
    return out


def _libraries():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError(f"format=onnx needs onnx and onnxruntime. Fix: {EXPORT_EXTRA}") from None
    return onnx, onnxruntime



class OnnxSegmenter(torch.nn.Module):
    """An exported graph run by onnxruntime, with the part of the Segmenter contract ``predict.py`` reads: ``scorers``
    (the graph's one scorer), ``num_classes``, ``class_names``, and ``predict_step`` returning ``segmentation`` (class
    ids) and ``scores`` at the input's size. Frames are padded (replicate) to the graph's size multiple and cropped back:
    a scorer with spatial post-processing (SML's boundary suppression) then also sees the padded border, unlike the
    checkpoint, which crops before scoring; with frame sizes that are multiples (or ``predict.image_size``) both agree."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        _, ort = _libraries()
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"model_path={path}: file not found. Fix: the .onnx file written by export.py (its results.json 'onnx')")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ConfigError(f"model_path={path}: onnxruntime cannot load it ({type(err).__name__}: {str(err)[:160]})") from None
        self.meta = read_metadata(path)
        missing = {"scorer", "threshold", "class_names", "size_multiple"} - set(self.meta)
        if missing:
            raise ConfigError(f"model_path={path}: not a graph written by export.py (metadata lacks {sorted(missing)})")
        self.scorers = {self.meta["scorer"]: None}
        self.class_names = list(self.meta["class_names"])
        self.num_classes = len(self.class_names)
        self.multiple = int(self.meta["size_multiple"])

    def forward(self, image: torch.Tensor) -> dict[str, Any]:
        h, w = image.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        padded = torch.nn.functional.pad(image.float(), (0, pw, 0, ph), mode="replicate").to(torch.uint8) if ph or pw else image
        seg, anomaly = self.session.run(None, {"image": np.ascontiguousarray(padded.numpy().astype(np.uint8))})
        return {"segmentation": torch.from_numpy(seg[:, :h, :w]), "scores": {self.meta["scorer"]: torch.from_numpy(anomaly[:, :h, :w])}}
