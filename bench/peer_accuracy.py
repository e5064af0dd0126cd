"""Same-budget accuracy: CargoNet against Ultralytics YOLOv8n, trained on the same scans for
the same wall-clock time, judged by the same `cargoscan evaluate` figures (issue 30).

1. The same data. CargoNet reads the COCO sets (`--data`, repeatable, with `--weight`)
   as `cargoscan train` does. The peer gets them as an engineer would feed Ultralytics:
   tiles of the full-resolution scan as 3-channel 8-bit PNGs (high and low attenuation
   and their ratio; the high one three times on single-energy scans; the window is in
   bench/peer/tiles.py and OUT/peer_data/tiles.json), YOLO label files and a data.yaml,
   cut by our training crop (512 px, around a threat 75 % of the time) from scans drawn
   as our training draws them, so the share of tiles without a threat is ours.
2. The same budget. Both train from scratch (no pretrained weights can be fetched here,
   and none are used: YOLOv8n is built from its YAML), one after the other, alone on the
   machine, for `--minutes` of wall clock each: Ultralytics' `train()` with its own recipe
   and augmentations (`time=` hours, pretrained=False, device cpu), ours with
   `training.train` (`time_budget_s`, no --init). Both get `--threads` torch threads.
   Preparing the data (the tiles, CargoNet's pre-processing cache) is not timed.
3. The same test. The last weights of each (their averaged weights) as ONNX, through
   `training.evaluate.evaluate_detector` on every `--test` set: scan-level and
   per-category detection at 1 % false alarms, mAP50; the peer through a tiled adapter
   (overlapping tiles, stitching, per-category NMS; bench/peer/adapter.py). With
   `--clean`, the share of those clean scans that alarm at the thresholds each model
   reached on the first test set. Each scan is timed (decoded scan to findings).
4. The report. OUT/report.md and report.json (one table, both models, the same rows)
   and OUT/curves.png: detection at 1 % false alarms on the `--val` scans against the
   training minutes, from the snapshots each run left after every epoch.

    .venv/bin/pip install -e '.[training,bench]'
    .venv/bin/python bench/peer_accuracy.py --data data/synth --data data/tip-train \\
        --weight 1 --weight 2 --val data/val --test data/test --test data/tip-held \\
        --clean data/real-held --out out/peer --minutes 120

The full run wants at least 2 hours a model on the CPU, alone (on a GPU the same script
takes a larger --minutes, as tools/train_gpu.py does). Where one sitting cannot hold both,
`--only CargoNet` and `--only YOLOv8n` run each half on its own (the same arguments, the
same data regenerated from the same seeds), and `--merge A --merge B --out OUT` joins
them into one report after checking that both halves saw the same data (a fingerprint of
every set: its annotations.json, or a clean folder's file names and sizes), the same
budget and the same tests:

    .venv/bin/python bench/peer_accuracy.py ... --only YOLOv8n --out out/peer-yolo
    .venv/bin/python bench/peer_accuracy.py ... --only CargoNet --out out/peer-ours
    .venv/bin/python bench/peer_accuracy.py --merge out/peer-yolo --merge out/peer-ours \\
        --out out/peer
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: bench.peer and the project's packages
    sys.path.insert(0, str(REPO))

from bench.peer import measure, report  # noqa: E402


def in_own_process(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` in a fresh (spawned) process: each training has the machine's
    threads and no state the other left; Ultralytics' import-time settings stay there."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, action="append", required=True,
                   help="a COCO training set (repeatable)")  # fmt: skip
    p.add_argument("--weight", type=float, action="append", default=None,
                   help="each --data set's draw weight, in order (default all 1)")  # fmt: skip
    p.add_argument("--val", type=Path, required=True, help="validation scans (the curves)")
    p.add_argument("--test", type=Path, action="append", required=True,
                   help="a labelled test set (repeatable): synthetic, projections")  # fmt: skip
    p.add_argument("--clean", type=Path, default=None, help="a folder of clean (real) scans")
    p.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    p.add_argument("--minutes", type=float, required=True, help="training budget per model")
    p.add_argument("--crop", type=int, default=512, help="training crop and tile size (px)")
    p.add_argument("--tiles", type=int, default=3000, help="peer training tiles")
    p.add_argument("--val-tiles", type=int, default=64, help="peer val tiles (Ultralytics)")
    p.add_argument("--overlap", type=int, default=128, help="adapter tile overlap (px)")
    p.add_argument("--batch", type=int, default=8, help="CargoNet crops per step")
    p.add_argument("--yolo-batch", type=int, default=16, help="YOLOv8n tiles per batch")
    p.add_argument("--steps", type=int, default=200, help="CargoNet steps per epoch")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "auto"],
                   help="CargoNet's arithmetic (default fp32 on a CPU, auto on a GPU, as "
                   "Ultralytics' AMP; bf16 adds channels last)")  # fmt: skip
    p.add_argument("--loader-workers", type=int, default=None,
                   help="loader processes of both (default 0 on a CPU, 8 on a GPU)")  # fmt: skip
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--curve-points", type=int, default=12, help="snapshots evaluated per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="", help="a note for the picture's title")
    p.add_argument("--only", choices=report.MODELS, default=None,
                   help="train and judge this model alone (half of a split run)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.weight = args.weight or [1.0] * len(args.data)
    cuda = _cuda()
    if args.precision is None:
        args.precision = "auto" if cuda else "fp32"
    if args.loader_workers is None:
        args.loader_workers = min(8, (os.cpu_count() or 1) // 2) if cuda else 0
    if len(args.weight) != len(args.data):
        p.error(f"{len(args.weight)} --weight for {len(args.data)} --data")
    if args.minutes <= 0 or args.crop % 32 or args.tiles < 1 or args.curve_points < 1:
        p.error("--minutes > 0, --crop a multiple of 32, --tiles and --curve-points >= 1")
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} is not empty: each run gets a folder of its own")
    return args


def prepare(args: argparse.Namespace, categories: list[str]) -> Path:
    """Untimed: CargoNet's pre-processing cache, then the peer's tiles; data.yaml's path."""
    from bench.peer.cargonet import warm_cache
    from bench.peer.tiles import write_yolo_set
    from training.data import MixedScans, open_source

    data = [str(d) for d in args.data]
    warm_cache(data, args.weight, progress=not args.quiet)
    train = MixedScans(
        [
            (open_source(d, categories, cache=True), w)
            for d, w in zip(data, args.weight, strict=True)
        ]
    )
    val = MixedScans([(open_source(args.val, categories, cache=True), 1.0)])
    return write_yolo_set(
        train, val, args.out / "peer_data", tiles=args.tiles, val_tiles=args.val_tiles,
        crop=args.crop, seed=args.seed, progress=not args.quiet,
    )  # fmt: skip


def train_both(args: argparse.Namespace, data_yaml: Path) -> dict[str, list[dict[str, Any]]]:
    """Each model (or the --only one) for --minutes in a process of its own, one after the
    other."""
    from bench.peer.cargonet import train_cargonet
    from bench.peer.yolo import train_yolo

    runs: dict[str, list[dict[str, Any]]] = {}
    if args.only in (None, "YOLOv8n"):
        print(f"YOLOv8n: {args.minutes:g} min of training", flush=True)
        runs["YOLOv8n"] = in_own_process(
            train_yolo, str(data_yaml), str(args.out / "yolov8n"), args.minutes, args.crop,
            args.yolo_batch, args.threads, args.seed, args.loader_workers,
        )  # fmt: skip
    if args.only in (None, "CargoNet"):
        print(f"CargoNet: {args.minutes:g} min of training", flush=True)
        runs["CargoNet"] = in_own_process(
            train_cargonet, [str(d) for d in args.data], args.weight, str(args.out / "cargonet"),
            args.minutes, crop=args.crop, batch=args.batch, steps_per_epoch=args.steps,
            threads=args.threads, precision=args.precision, seed=args.seed,
            loader_workers=args.loader_workers, progress=not args.quiet,
        )  # fmt: skip
    if not all(runs.values()):
        raise SystemExit("a run ended before its first epoch: give it more --minutes")
    return runs


def export_all(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> None:
    """The snapshots the curves use (and the last) to ONNX: record["onnx"]."""
    from bench.peer.cargonet import export_cargonet
    from bench.peer.yolo import export_yolo
    from training.model import ONNX_OPSET

    for records in runs.values():
        for r in measure.pick(records, args.curve_points):
            r["curve"] = True
    yolo = [r for r in runs.get("YOLOv8n", []) if r.get("curve")]
    # ONNX_OPSET: CargoNet's own, which this onnxruntime runs; the same for both.
    if yolo:
        paths = in_own_process(export_yolo, [r["path"] for r in yolo], args.crop, ONNX_OPSET)
        for r, path in zip(yolo, paths, strict=True):
            r["onnx"] = path
    for r in (r for r in runs.get("CargoNet", []) if r.get("curve")):
        r["onnx"] = str(export_cargonet(Path(r["path"]), Path(r["path"]).with_suffix(".onnx")))


def detector(name: str, onnx: str, args: argparse.Namespace) -> measure.Detector:
    if name == "CargoNet":
        return measure.cargonet_detector(Path(onnx), args.threads)
    return measure.yolo_detector(Path(onnx), args.crop, args.overlap, args.threads)


def judge(
    args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], categories: list[str]
) -> dict[str, Any]:
    """Curves on --val, then the last weights on every --test and --clean."""
    progress = not args.quiet
    models: dict[str, Any] = {}
    for name, records in runs.items():
        curve = []
        for r in (r for r in records if r.get("curve")):
            rate = measure.curve_point(detector(name, r["onnx"], args), categories, args.val)
            curve.append(
                {"epoch": r["epoch"], "minutes": r["elapsed_s"] / 60, "detection_rate": rate}
            )
            print(
                f"{name} epoch {r['epoch']} ({r['elapsed_s'] / 60:.1f} min): val {rate}", flush=True
            )
        last = records[-1]
        done = f"{last['epoch']} epochs, {last['images']} crops, {last['steps']} steps"
        models[name] = {
            "training": {"minutes": args.minutes, "elapsed_s": last["elapsed_s"], "done": done,
                         "snapshots": len(records)},
            "onnx": last["onnx"],
            "onnx_mb": Path(last["onnx"]).stat().st_size / 1e6,
            "curve": curve,
            "tests": [],
        }  # fmt: skip
    for test in args.test:
        for name in runs:  # one model after the other, the same scans
            detect = detector(name, models[name]["onnx"], args)
            models[name]["tests"].append(measure.figures(detect, categories, test, progress))
    if args.clean is not None:
        for name in runs:
            detect = detector(name, models[name]["onnx"], args)
            limits = models[name]["tests"][0]["thresholds"]
            models[name]["clean"] = measure.clean_alarm_share(
                detect, categories, args.clean, limits, progress
            )
    return models


def fingerprint(path: Path) -> str:
    """What must be equal for two halves of a split run to have seen the same data: a COCO
    set's annotations.json (boxes, file names, the generator's truth: a seed's scans
    regenerate byte for byte), else every file's name and size under the folder."""
    digest = hashlib.sha256()
    annotations = path / "annotations.json"
    if annotations.is_file():
        digest.update(annotations.read_bytes())
    else:
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path)}\t{f.stat().st_size}\n".encode())
    return digest.hexdigest()


def host() -> dict[str, Any]:
    """The kind of machine a half ran on. Two halves of one budget must share it: hosts
    of one name differ (CargoNet ran 2.6x faster on an "AMD EPYC" with AVX-512 than on an
    AVX2-only one of the same name, 2026-12-07), and a wall-clock budget is only fair on
    the same kind."""
    from inference.preprocess import cpu_features

    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    simd = sorted(k for k, v in cpu_features().items() if v and k.startswith(("AVX2", "AVX512")))
    gpu = None
    if _cuda():
        import torch

        gpu = torch.cuda.get_device_name(0)
    return {"cpu": name, "cores": os.cpu_count(), "simd": simd, "gpu": gpu}


SAME_IN_BOTH_HALVES = ("minutes", "data", "weights", "val", "tests", "clean", "peer_tiles",
                       "fingerprints", "host")  # fmt: skip


def merge(halves: Sequence[Path], out: Path) -> dict[str, Any]:
    """One report from the two halves of a split run (each `--only` one model), after
    checking that they saw the same data, budget and tests; SystemExit naming what differs."""
    parts = []
    for half in halves:
        path = half / "report.json"
        if not path.is_file():
            raise SystemExit(f"{half}: no report.json (run the half with --only first)")
        parts.append(json.loads(path.read_text()))
    a, b = parts
    for key in SAME_IN_BOTH_HALVES:
        if a.get(key) != b.get(key):
            raise SystemExit(f"the halves differ in {key}: {a.get(key)!r} against {b.get(key)!r}")
    names = [n for part in parts for n in part["models"]]
    if sorted(names) != sorted(report.MODELS):
        raise SystemExit(f"the halves hold {names}: one of each of {list(report.MODELS)} needed")
    merged = dict(a)
    merged["models"] = {**a["models"], **b["models"]}
    merged["part"] = None
    merged["setup"] = (
        a["setup"]
        + " Trained in two sittings on the same machine: "
        + ("; ".join(f"{next(iter(p['models']))} {p.get('date', '?')}" for p in parts))
        + "."
    )
    merged["wall_minutes"] = a["wall_minutes"] + b["wall_minutes"]
    out.mkdir(parents=True, exist_ok=True)
    print(report.write(merged, out))
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--merge" in argv:
        m = argparse.ArgumentParser(description="join the two halves of a split run")
        m.add_argument("--merge", type=Path, action="append", required=True)
        m.add_argument("--out", type=Path, required=True)
        margs = m.parse_args(argv)
        if len(margs.merge) != 2:
            m.error("--merge takes the two halves' output folders")
        merge(margs.merge, margs.out)
        print(f"written: {margs.out / 'report.md'}, report.json, curves.png")
        return 0
    args = parse(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from training.model import ModelConfig

    started = time.monotonic()
    categories = list(ModelConfig().categories)
    args.out.mkdir(parents=True, exist_ok=True)
    data_yaml = prepare(args, categories)
    runs = train_both(args, data_yaml)
    export_all(args, runs)
    models = judge(args, runs, categories)
    tiles = json.loads((data_yaml.parent / "tiles.json").read_text())["train"]
    machine = host()
    simd = "AVX-512" if any(k.startswith("AVX512") for k in machine["simd"]) else "no AVX-512"
    setup = (
        f"{datetime.now(timezone.utc):%Y-%m-%d}, {machine['cpu']} ({simd}), "
        f"{args.threads} threads, CPU only. Both from scratch (no pretrained weights: none can "
        f"be fetched here), {args.minutes:g} min of training each, one after the other. "
        f"Training data: {', '.join(str(d) for d in args.data)} (weights "
        f"{', '.join(f'{w:g}' for w in args.weight)}); the peer's {tiles['tiles']} tiles of "
        f"{args.crop} px, {100 * (tiles['share_without_threat'] or 0):.0f} % without a threat. "
        f"Thresholds at 1 % false alarms on each test set's own clean scans; ms per scan from "
        f"the decoded scan to findings, ONNX Runtime with {args.threads} threads, the peer "
        f"in {args.crop} px tiles overlapping by {args.overlap} px."
    )
    result = {
        "minutes": args.minutes,
        "label": args.label,
        "setup": setup,
        "data": [str(d) for d in args.data],
        "weights": args.weight,
        "val": str(args.val),
        "tests": [str(t) for t in args.test],
        "clean": str(args.clean) if args.clean else None,
        "peer_tiles": tiles,
        "fingerprints": {
            str(d): fingerprint(d)
            for d in [*args.data, args.val, *args.test, *([args.clean] if args.clean else [])]
        },
        "host": machine,
        "part": args.only,
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "models": models,
        "wall_minutes": (time.monotonic() - started) / 60,
    }
    print(report.write(result, args.out))
    print(f"written: {args.out / 'report.md'}, report.json, curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
