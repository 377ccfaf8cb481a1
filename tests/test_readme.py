"""Every command the README shows runs as written, and its statements about the model store hold.

Commands come from the README's ```bash blocks and from inline `python ...` spans. Each runs in a fresh
folder in a short variant: tiny data appended, training as a smoke run (``trainer=debug``, which changes
how long it trains, not what the command means), ``logger=none``. What a test machine lacks is replaced
by a stand-in rather than skipped: a generated StreetHazards-format folder for real-data paths, a local
file of (random) encoder weights for ``imagenet`` downloads, the CPU for ``trainer=gpu`` without CUDA,
the checkpoint of a tiny training for ``<hash>`` / ``...``. The default suite runs DEFAULT_SUITE, the
slow suite every command.
Commands that cannot run inside a test are listed in NOT_RUNNABLE with the reason; any other command a
README edit adds is run automatically (or makes this test say what to do).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_folders import benchmark_roots
from conftest import CONF, REPO, TINY_DATA, compose_config

README = REPO / "README.md"
# Generator parameters of TINY_DATA (the stand-in data folder and the tiny checkpoint use the same data).
TINY_GENERATOR = dict(n_train=8, n_val=4, n_test=4, width=128, height=72, seed=0)
STAND_IN_ROOT = re.compile(r"^(/data/StreetHazards|/path/to/[^ ]*|/path)$")
# Test-only benchmarks: generated format-faithful folders, given as the variables their data configs read.
BENCHMARK_ENV = {"smiyc_anomaly": "SMIYC_ANOMALY_ROOT", "smiyc_obstacle": "SMIYC_OBSTACLE_ROOT", "lost_and_found": "LAF_ROOT",
                 "fishyscapes_laf": "FISHYSCAPES_LAF_ROOT", "road_anomaly": "ROAD_ANOMALY_ROOT"}

NOT_RUNNABLE = {
    "pip install": "installs packages: changes the environment and needs the network",
    "pytest": "runs the test suite itself (from inside a test it would recurse)",
    "python -m hazardseg.data.coco_outliers": "needs a COCO download; runs on a generated COCO-format set in test_outliers.py",
    "python -m hazardseg.report": "needs a finished multirun folder; runs on one in test_report.py",
    "python tests/faults.py": "needs a trained checkpoint; the helper runs train.py / eval.py this way in test_faults.py",
    "python train.py -m hydra/launcher=slurm": "needs a SLURM cluster; the preset runs through submitit's local executor "
                                               "in test_launchers.py",
    "python train.py -m +sweep=families": "six trainings (19 min on 2 CPU cores); its presets compose and its fine-tunes "
                                          "run from a stored model in test_mask2former.py",
    "python train.py model=mask2former loss=rba init_from=": "needs a trained Mask2Former; test_mask2former.py fine-tunes one "
                                                             "this way",
    "export ": "sets the data folders of a machine that has them (the test machine's stand-ins are set per command)",
    "python train.py experiment=rba_cityscapes": "needs Cityscapes, COCO cut-outs and a GPU; test_mask2former.py runs the preset "
                                                 "as typed on the genuine Cityscapes and SMIYC samples",
    "python train.py -m hydra/launcher=ray": "needs hydra-ray-launcher (installed apart, see README) and a Ray cluster; "
                                             "runs on a local Ray in test_launchers.py where installed",
}


def readme_commands() -> list[str]:
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        commands += [line.split(" #")[0].strip() for line in block.splitlines()]
    commands += [span.strip() for span in re.findall(r"`((?:python|pytest|pip) [^`]+)`", text)]
    return list(dict.fromkeys(c for c in commands if c))


# The default suite runs these (the default run, the data-path and device stand-ins, eval's overrides);
# every other README command, including any added later, runs with `pytest -m slow` (each command is a
# fresh process: ~10-30 s on 2 CPU cores).
DEFAULT_SUITE = (
    "python train.py",
    "python train.py data=streethazards data.root=/path/to/that/folder",
    "python eval.py ckpt_path=outputs/models/<hash>/checkpoints/best.ckpt data.root=/data/StreetHazards",
    "python eval.py ckpt_path=... trainer=gpu",
    "python predict.py ckpt_path=outputs/models/<hash>/checkpoints/best.ckpt input=path/to/images",
)


def _params() -> list:
    params = []
    for command in readme_commands():
        if any(command.startswith(prefix) for prefix in NOT_RUNNABLE):
            continue
        marks = [] if command in DEFAULT_SUITE else [pytest.mark.slow]
        params.append(pytest.param(command, id=re.sub(r"[^\w=.,+-]+", "_", command)[:80], marks=marks))
    return params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A folder with a tiny trained model in outputs/models (for `<hash>` and `...`), a generated
    StreetHazards-format data folder, and random encoder weights files made on demand."""
    from hazardseg.data import generate_streethazards
    from hazardseg.pipeline import train

    cwd = tmp_path_factory.mktemp("readme")
    results = train(compose_config("train", [*TINY_DATA, "trainer.max_epochs=1", "logger=none", "eval.panels=0",
                                             "trainer.enable_progress_bar=false", "model.decoder_channels=32"],
                                   cwd / "outputs" / "train" / "runs" / "fixture", cwd / "outputs" / "models"))
    data = generate_streethazards(tmp_path_factory.mktemp("standin") / "StreetHazards", **TINY_GENERATOR)
    return {"cwd": cwd, "checkpoint": results["checkpoint"], "hash": results["train_hash"], "data": data,
            "weights": tmp_path_factory.mktemp("weights"), "benchmarks": benchmark_roots(tmp_path_factory.mktemp("benchmarks")),
            "frames": _frames(tmp_path_factory.mktemp("frames"))}


def _frames(folder: Path) -> dict[str, Path]:
    """Stand-ins for a user's images (a folder of two) and dash-cam video (8 frames) for predict.py."""
    import numpy as np
    from PIL import Image

    from test_predict import _video

    images = folder / "images"
    images.mkdir()
    for i, size in enumerate([(72, 128), (90, 160)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
    return {"images": images, "video": _video(folder / "dashcam.mp4")}


def stand_in(command: str, ws: dict) -> list[str]:
    """The command's arguments with stand-ins for what a test machine lacks, plus the short-run overrides."""
    import torch

    args = shlex.split(command)
    assert args[0] == "python" and args[1] in ("train.py", "eval.py", "predict.py", "export.py"), f"README command not understood: {command}; " \
        f"make it runnable here or add it to NOT_RUNNABLE with the reason"
    script, overrides = args[1], args[2:]
    benchmark = next((a.partition("=")[2] for a in overrides if a.startswith("data=") and a[5:] in BENCHMARK_ENV), None)
    out = []
    for arg in overrides:
        key, sep, value = arg.partition("=")
        if key == "ckpt_path" and (value == "..." or "<hash>" in value):
            value = value.replace("<hash>", ws["hash"]) if "<hash>" in value else ws["checkpoint"]
        elif key == "data.root" and benchmark is not None:
            value = ws["benchmarks"][BENCHMARK_ENV[benchmark]]
        elif key == "data.root" and STAND_IN_ROOT.match(value):
            value = str(ws["data"])
        elif key == "trainer" and value == "gpu" and not torch.cuda.is_available():
            value = "cpu"
        elif key == "input":  # a user's images / video / glob
            frames = ws["frames"]
            value = str(frames["video"] if value.endswith(".mp4") else
                        frames["images"] / value.rpartition("/")[2] if "*" in value else frames["images"])
        out.append(f"{key}={value}" if sep else arg)
    out += ["logger=none", "trainer.enable_progress_bar=false"]
    if script == "train.py":
        cfg = _compose(out)
        synthetic = "Synthetic" in cfg.data._target_
        out += ["trainer=debug"] + (TINY_DATA if synthetic else ["data.image_size=[64,112]", "data.batch_size=4", "data.num_workers=0"])
        if cfg.data.get("root") is None and not synthetic:
            out.append(f"data.root={ws['data']}")
        if cfg.model.get("encoder_weights") == "imagenet":  # no network here: the same encoder's weights from a file
            out.append(f"model.encoder_weights={_encoder_file(cfg.model.encoder_name, ws['weights'])}")
    elif script in ("predict.py", "export.py"):
        out += ["predict.fit_batches=1", "predict.calibration_batches=1"]
    else:
        out += ["eval.fit_batches=1", "eval.panels=2"]
        if not torch.cuda.is_available() and any(a.startswith("eval_preset=") for a in overrides):
            out.append("trainer=cpu")  # the preset's GPU trainer, on the CPU here
    return [sys.executable, str(REPO / script), *out]


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # one job of a sweep stands for all (`loss=ce,ce+aux` -> `loss=ce`; lists like [64,112] stay)
        first = [re.sub(r"^([^=\[]+=)([^\[,]+),.*$", r"\1\2", o) for o in overrides if o not in ("-m", "--multirun")]
        cfg = compose(config_name="train", overrides=first)
    GlobalHydra.instance().clear()
    return cfg


def _encoder_file(encoder_name: str, folder: Path) -> Path:
    import segmentation_models_pytorch as smp
    import torch

    path = folder / f"{encoder_name}.pth"
    if not path.is_file():
        torch.save(smp.encoders.get_encoder(encoder_name, weights=None).state_dict(), path)
    return path


def test_every_readme_command_is_run_or_explained():
    commands = readme_commands()
    assert any(c.startswith("python eval.py") and "data.root=" in c for c in commands)  # the one that failed as written
    assert not set(DEFAULT_SUITE) - set(commands), "DEFAULT_SUITE names commands the README no longer shows"
    for command in commands:
        runnable = command.startswith(("python train.py", "python eval.py", "python predict.py", "python export.py"))
        assert runnable or any(command.startswith(p) for p in NOT_RUNNABLE), f"{command}: runnable by this test or listed"


@pytest.mark.parametrize("command", _params())
def test_readme_command_runs_as_written(command, workspace):
    argv = stand_in(command, workspace)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **workspace["benchmarks"]}  # as a user exports them (README)
    env.pop("HAZARDSEG_MODEL_STORE", None)  # outputs/models of the workspace, as the README says
    proc = subprocess.run(argv, cwd=workspace["cwd"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{command}\n-> {' '.join(argv[1:])}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr


def test_readme_model_store_layout_holds(workspace):
    """The layout block of the README against a real store: a trained model plus an SML evaluation."""
    text = README.read_text()
    block = re.search(r"```\n\s*(outputs/models/\n.*?)```", text, re.S)
    assert block, "README: the model-store layout block is gone"
    listed, stack = [], []  # full paths from the indented tree: (indent, folder) of the enclosing folders
    for line in block.group(1).splitlines()[1:]:
        if not line.strip():
            continue
        indent, name = len(line) - len(line.lstrip()), line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        listed.append("".join(folder for _, folder in stack) + name)
        if name.endswith("/"):
            stack.append((indent, name))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HAZARDSEG_MODEL_STORE", None)
    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), f"ckpt_path={workspace['checkpoint']}", "scorer=sml",
                           "logger=none", "eval.fit_batches=1", "trainer.enable_progress_bar=false"],
                          cwd=workspace["cwd"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = workspace["cwd"] / "outputs" / "models"
    assert re.fullmatch(r"[0-9a-f]{12}", workspace["hash"]) and "12 hex characters of the SHA-256" in block.group(1)
    assert len(listed) >= 8, listed
    for entry in listed:
        glob = re.sub(r"<[^>]+>", "*", entry.rstrip("/"))
        assert list(store.glob(glob)), f"README says the model store holds {entry}; not in {sorted(store.rglob('*'))}"
