"""Training throughput on a CPU: float32 against bfloat16 autocast, channels-last and
`torch.compile`, for the shipped network's configuration (issue 27, item 3).

Each variant runs the training step `cargoscan train` runs (forward, the objective,
backward, AdamW) on the same batches of 8 random 384 px crops with a few threats each,
alone, after warm-up steps; it prints steps per second and the ratio to float32, and the
loss after the same steps (a variant that trains differently shows there). Random inputs
are fine for speed. The machine must be quiet: a second job halves every figure.

    .venv/bin/python bench/train_throughput.py [--steps 20] [--variants fp32 bf16 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from inference import DEFAULT_MODEL
from training.model import CargoNet, ModelConfig
from training.objective import loss, make_targets

VARIANTS = ("fp32", "bf16", "channels_last", "bf16+channels_last", "compile")


def batches(n: int, batch: int, crop: int, classes: int) -> list[tuple]:
    """`n` batches of random attenuation crops, each crop with two random threat boxes."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        images = torch.from_numpy(rng.random((batch, 2, crop, crop), dtype=np.float32) * 2)
        boxes, labels = [], []
        for _ in range(batch):
            xy = rng.uniform(0, crop - 80, size=(2, 2))
            wh = rng.uniform(16, 80, size=(2, 2))
            boxes.append(np.concatenate([xy, xy + wh], axis=1))
            labels.append(rng.integers(0, classes, size=2))
        out.append((images, make_targets(boxes, labels, classes, (crop, crop))))
    return out


def step_fn(variant: str, config: ModelConfig) -> tuple[Callable[[tuple], float], torch.nn.Module]:
    """One optimiser step of `variant` on a fresh network (same seed for every variant)."""
    torch.manual_seed(0)
    net = CargoNet(config).train()
    fmt = torch.channels_last if "channels_last" in variant else torch.contiguous_format
    net = net.to(memory_format=fmt)
    model = torch.compile(net) if variant == "compile" else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    bf16 = variant.startswith("bf16")

    def step(b: tuple) -> float:
        images, targets = b
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(images.to(memory_format=fmt))
        terms = loss({k: v.float() for k, v in outputs.items()}, targets)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        return float(terms["total"])

    return step, net


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=384)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args()
    from training.warm_start import config_of

    config = config_of(DEFAULT_MODEL) if DEFAULT_MODEL.is_file() else ModelConfig()
    data = batches(args.warmup + args.steps, args.batch, args.crop, len(config.categories))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
        f"crop {args.crop}, {args.steps} timed steps after {args.warmup}"
    )
    base = None
    for variant in args.variants:
        step, _ = step_fn(variant, config)
        for b in data[: args.warmup]:
            step(b)
        times, last = [], 0.0
        for b in data[args.warmup :]:
            t0 = time.perf_counter()
            last = step(b)
            times.append(time.perf_counter() - t0)
        rate = 1.0 / statistics.median(times)
        base = base or rate
        print(
            f"  {variant:<20} {rate:6.2f} steps/s ({rate / base:4.2f}x fp32)  "
            f"loss after {args.warmup + args.steps} steps {last:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
