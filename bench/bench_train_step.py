"""Training-step time of the default network on the CPU: encoder / decoder width / memory layout / precision.

Not a test. Times one optimizer step (forward, cross-entropy, backward, AdamW) of DeepLabV3+ on a batch
of the default run (8 x 3 x 128 x 224, 13 classes, random init), for each variant in turn, and repeats
the round several times so that every variant sees the same machine load; prints the median per variant
and its speed relative to the previous default (ResNet18, 256 decoder channels, NCHW, float32).

    python bench/bench_train_step.py                 # ~3 min on 2 cores
    python bench/bench_train_step.py --rounds 3 --batch 8 --size 144 256

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds over all variants (median)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and round (after one warm-up)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=[128, 224], metavar=("H", "W"))
    a = p.parse_args()
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
