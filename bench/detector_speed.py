"""Detector speed: CargoNet against Ultralytics YOLOv8n, both in ONNX Runtime, same input.

What a user would otherwise pick is YOLOv8n exported to ONNX; this runs both
side by side in one process, on the same full-size dual-energy input (two
channels, 800x3008 by default: a 3000x800 scan padded to a multiple of 32),
with the same ONNX Runtime settings (2 intra-op threads, sequential), and
prints both medians and the ratio. Random weights are fine for speed: nothing
is downloaded, YOLOv8n is built from its YAML with two input channels and our
category count.

The CargoNet model is `models/cargoscan-default.onnx` when it exists; until a
default model is shipped, an untrained CargoNet of the default configuration
is exported for the measurement (the printout says which).

    .venv/bin/pip install -e '.[training,bench]'
    .venv/bin/python bench/detector_speed.py [--sizes 800x3008 640x2048] [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["800x3008", "640x2048"], help="HxW inputs")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = ap.parse_args()

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
        ours_sess = session(ours, args.threads)
        n_classes = len(config.categories)
        print(f"CargoNet: {which}; YOLOv8n: random weights, 2 input channels, {n_classes} classes")
        print(
            f"ONNX Runtime {ort.__version__}, {args.threads} intra-op threads, {args.runs} runs\n"
        )
        print(
            f"{'input (HxW)':>12} {'CargoNet ms':>12} {'YOLOv8n ms':>11} {'speed-up':>9} "
            f"{'CargoNet GMAC':>14} {'YOLOv8n GMAC':>13}"
        )
        for size in args.sizes:
            h, w = (int(v) for v in size.lower().split("x"))
            shape = (1, 2, h, w)
            yolo = tmpdir / f"yolov8n_{h}x{w}.onnx"
            gflops = export_yolov8n(yolo, shape, n_classes)
            t_ours = median_ms(ours_sess, shape, args.runs)
            t_yolo = median_ms(session(yolo, args.threads), shape, args.runs)
            macs = count_macs(CargoNet(config).eval(), shape) / 1e9
            print(
                f"{size:>12} {t_ours:>12.1f} {t_yolo:>11.1f} {t_yolo / t_ours:>8.1f}x "
                f"{macs:>14.2f} {gflops / 2:>13.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
