"""Training-step time of the default network on the CPU: encoder / decoder width / memory layout / precision.

Not a test. Times one optimizer step (forward, cross-entropy, backward, AdamW) of DeepLabV3+ on a batch
of the default run (8 x 3 x 128 x 224, 13 classes, random init), for each variant in turn, and repeats
the round several times so that every variant sees the same machine load; prints the median per variant
and its speed relative to the previous default (ResNet18, 256 decoder channels, NCHW, float32).

    python bench/bench_train_step.py                 # ~3 min on 2 cores
    python bench/bench_train_step.py --rounds 3 --batch 8 --size 144 256
    python bench/bench_train_step.py --families      # the CPU defaults of both families, ~3 min

``--families`` times one step of each network family's CPU default as ``train.py`` builds it (the model and
loss YAMLs: DeepLabV3+ with class-weighted cross-entropy, Mask2Former with its set criterion), each in a
fresh process, and reports its peak resident memory (ru_maxrss) too.

``bf16`` runs the network under ``torch.autocast("cpu", torch.bfloat16)`` (``trainer.precision=bf16-mixed``).
Set ``ONEDNN_MAX_CPU_ISA=AVX512_CORE`` or ``AVX2`` to see what a CPU without native bf16 instructions does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch

VARIANTS = {  # name: (encoder, decoder channels, channels_last, bf16)
    "resnet18, 256 ch (previous default)": ("resnet18", 256, False, False),
    "resnet18, 256 ch, channels_last": ("resnet18", 256, True, False),
    "resnet10t, 256 ch, channels_last": ("tu-resnet10t", 256, True, False),
    "resnet10t, 128 ch, NCHW": ("tu-resnet10t", 128, False, False),
    "resnet10t, 128 ch, channels_last (default)": ("tu-resnet10t", 128, True, False),
    "resnet10t, 128 ch, channels_last, bf16": ("tu-resnet10t", 128, True, True),
}


def build(encoder: str, channels: int, channels_last: bool):
    from hazardseg.models import SegmentationNet

    net = SegmentationNet(num_classes=13, encoder_name=encoder, decoder_channels=channels, channels_last=channels_last)
    return net.train(), torch.optim.AdamW(net.parameters(), lr=1e-3)


def step(net, optimizer, image: torch.Tensor, mask: torch.Tensor, bf16: bool) -> float:
    t0 = time.perf_counter()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        logits = net(image)["logits"]
    loss = torch.nn.functional.cross_entropy(logits.float(), mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - t0


FAMILIES = {"DeepLabV3+ (model=deeplabv3plus, loss=ce)": ["model=deeplabv3plus"],
            "Mask2Former (model=mask2former, its set criterion)": ["model=mask2former"]}


def family_step(overrides: list[str], batch: int, size: list[int], steps: int) -> dict:
    """Median step time and peak RSS of one family's default network + loss, built from the configs."""
    import resource
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    net = instantiate(cfg.model).train()
    loss = instantiate(cfg.loss)
    for term in loss.terms.values():
        term.set_class_counts([1] * 13)  # uniform class weights: the step's cost does not depend on them
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, *size, generator=gen)
    mask = torch.randint(0, 13, (batch, *size), generator=gen)

    def one() -> float:
        t0 = time.perf_counter()
        terms = loss(net(image), {"mask": mask})
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        return time.perf_counter() - t0

    one()  # warm-up
    times = [one() for _ in range(steps)]
    return {"seconds": statistics.median(times), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def families(a) -> None:
    import json
    import subprocess
    import sys

    results: dict[str, list[dict]] = {name: [] for name in FAMILIES}
    for _ in range(a.rounds):
        for name, overrides in FAMILIES.items():
            out = subprocess.run([sys.executable, __file__, "--one-family", json.dumps(overrides), "--batch", str(a.batch),
                                  "--size", *map(str, a.size), "--steps", str(a.steps)], capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {a.batch} x 3 x {a.size[0]} x {a.size[1]}; "
          f"median of {a.rounds} fresh processes x {a.steps} steps\n")
    print("| network (CPU default) | s / step | peak RSS (MB) |")
    print("|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(v['seconds'] for v in values):.3f} | {statistics.median(v['peak_mb'] for v in values):.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", action="store_true", help="the CPU default of each network family (model + loss YAMLs)")
    p.add_argument("--one-family", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=5, help="rounds over all variants (median)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and round (after one warm-up)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=[128, 224], metavar=("H", "W"))
    a = p.parse_args()
    if a.one_family:
        import json

        print(json.dumps(family_step(json.loads(a.one_family), a.batch, a.size, a.steps)))
        return
    if a.families:
        families(a)
        return
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(a.batch, 3, *a.size, generator=gen)
    mask = torch.randint(0, 13, (a.batch, *a.size), generator=gen)
    models = {name: build(*spec[:3]) for name, spec in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(a.rounds):
        for name, (net, optimizer) in models.items():
            bf16 = VARIANTS[name][3]
            step(net, optimizer, image, mask, bf16)  # warm-up: allocations, oneDNN primitive caches
            times[name] += [step(net, optimizer, image, mask, bf16) for _ in range(a.steps)]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "all")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, ONEDNN_MAX_CPU_ISA={isa}; batch {a.batch} x 3 x "
          f"{a.size[0]} x {a.size[1]}; median of {a.rounds} x {a.steps} steps\n")
    base = statistics.median(times[next(iter(VARIANTS))])
    print("| network (DeepLabV3+) | s / step | speed vs previous default |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()
