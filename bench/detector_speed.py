"""Detector speed: CargoNet against Ultralytics YOLOv8n, both in ONNX Runtime, same input.

What a user would otherwise pick is YOLOv8n exported to ONNX; this runs both on the
same full-size dual-energy input (two channels, 800x3008 by default: a 3000x800 scan
padded to a multiple of 32), with the same ONNX Runtime settings (2 intra-op threads,
sequential), and prints the ratio. Each model is timed in a process of its own, in
rounds that alternate the models: in one process, one session's spinning intra-op
threads steal the cores from the other's next run, which costs the faster model more.
The printout gives each model's median over rounds with the spread (lowest-highest
round median) and the speed-up per round. Random weights are fine for speed: nothing
is downloaded, YOLOv8n is built from its YAML with two input channels and our
category count.

The CargoNet model is `models/cargoscan-default.onnx` when it exists (else an
untrained CargoNet of the default configuration); `--int8 MODEL` adds an int8 file
(`cargoscan quantize`) to the same rounds.

    .venv/bin/pip install -e '.[training,bench]'
    .venv/bin/python bench/detector_speed.py [--sizes 800x3008 640x2048] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference import DEFAULT_MODEL


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(
    sess: ort.InferenceSession, shape: tuple[int, ...], runs: int, warmup: int = 3
) -> float:
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def export_cargonet(out: Path) -> None:
    """An untrained CargoNet (default configuration), for speed only."""
    from training.model import CargoNet, ModelConfig, to_onnx

    to_onnx(CargoNet(ModelConfig()), out)


def export_yolov8n(out: Path, shape: tuple[int, int, int, int], n_classes: int) -> float:
    """YOLOv8n from its YAML (random weights), fused as Ultralytics exports it; returns GFLOPs."""
    import logging
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")  # nothing is fetched: weights stay random
    import torch
    from ultralytics.nn.tasks import DetectionModel

    logging.getLogger("ultralytics").setLevel(logging.WARNING)
    from ultralytics.utils.torch_utils import get_flops

    model = DetectionModel("yolov8n.yaml", ch=shape[1], nc=n_classes, verbose=False).eval()
    model = model.fuse(verbose=False)
    for m in model.modules():  # export mode of the detect head: one decoded output
        if hasattr(m, "export"):
            m.export = True
            m.format = "onnx"
    gflops = float(get_flops(model, imgsz=[shape[2], shape[3]]))
    torch.onnx.export(
        model,
        torch.zeros(shape),
        str(out),
        input_names=["images"],
        output_names=["output0"],
        opset_version=17,
        dynamo=False,
    )
    return gflops


def time_in_own_process(path: Path, shape: tuple[int, ...], runs: int, threads: int) -> float:
    """The median of `runs` inferences in a fresh Python process (this script, --time-one)."""
    h, w = shape[2], shape[3]
    cmd = [sys.executable, __file__, "--time-one", str(path), f"{h}x{w}", str(runs), str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["800x3008", "640x2048"], help="HxW inputs")
    ap.add_argument("--runs", type=int, default=10, help="inferences per process (median)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds, a process each")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--int8", type=Path, default=None, help="an int8 CargoNet to time as well")
    ap.add_argument("--time-one", nargs=4, metavar=("MODEL", "HxW", "RUNS", "THREADS"))
    args = ap.parse_args()
    if args.time_one:
        path, size, runs, threads = args.time_one
        h, w = (int(v) for v in size.split("x"))
        print(f"{median_ms(session(Path(path), int(threads)), (1, 2, h, w), int(runs)):.3f}")
        return 0

    import warnings

    warnings.filterwarnings("ignore")
    from training.model import CargoNet, ModelConfig, count_macs
    from training.warm_start import config_of

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        config = ModelConfig()  # the shipped model's own depth and widths when there is one
        if args.model.is_file():
            ours, which = args.model, f"{args.model.name}"
            config = config_of(args.model)
        else:
            ours, which = (
                tmpdir / "cargonet.onnx",
                "untrained CargoNet (no default model shipped yet)",
            )
            export_cargonet(ours)
        n_classes = len(config.categories)
        print(f"CargoNet: {which}; YOLOv8n: random weights, 2 input channels, {n_classes} classes")
        if args.int8:
            print(f"CargoNet int8: {args.int8.name}")
        print(
            f"ONNX Runtime {ort.__version__}, {args.threads} intra-op threads; {args.rounds} "
            f"rounds, each model in its own process per round, median of {args.runs} runs\n"
        )
        for size in args.sizes:
            h, w = (int(v) for v in size.lower().split("x"))
            shape = (1, 2, h, w)
            yolo = tmpdir / f"yolov8n_{h}x{w}.onnx"
            gflops = export_yolov8n(yolo, shape, n_classes)
            macs = count_macs(CargoNet(config).eval(), shape) / 1e9
            models = {"CargoNet": ours, "YOLOv8n": yolo}
            if args.int8:
                models["CargoNet int8"] = args.int8
            times: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(args.rounds):
                for name, path in models.items():
                    times[name].append(time_in_own_process(path, shape, args.runs, args.threads))
            print(f"{size}: CargoNet {macs:.2f} GMAC, YOLOv8n {gflops / 2:.2f} GMAC")
            for name, t in times.items():
                print(
                    f"  {name:<14} median {statistics.median(t):7.1f} ms "
                    f"(rounds {min(t):.1f}-{max(t):.1f})"
                )
            for name in [n for n in models if n.startswith("CargoNet")]:
                ratios = [y / c for y, c in zip(times["YOLOv8n"], times[name], strict=True)]
                print(
                    f"  YOLOv8n / {name}: {statistics.median(ratios):.2f}x "
                    f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x)"
                )
            if args.int8:
                ratios = [
                    f / q for f, q in zip(times["CargoNet"], times["CargoNet int8"], strict=True)
                ]
                print(
                    f"  CargoNet / CargoNet int8: {statistics.median(ratios):.2f}x "
                    f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
