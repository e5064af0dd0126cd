"""Both models through `cargoscan evaluate`'s own figures (`training.evaluate.evaluate_detector`):
the same scans, sent the same way, counted by the same code; each scan timed.

CargoNet runs through the service's engine (`inference.engine.Engine`), YOLOv8n through
the tiled adapter (`bench.peer.adapter.TiledYolo`), each with the same ONNX Runtime
threads. A scan's time runs from the decoded scan to its findings (pre-processing, the
network, decoding, NMS); decoding the files is the same work for both and left out.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inference.engine import Engine
from inference.scan import Scan
from training.evaluate import (
    Detections,
    clean_scan_paths,
    evaluate_detector,
    findings_arrays,
    load_clean_scan,
)

FAR = 0.01
Detector = Callable[[Scan], Detections]


def cargonet_detector(model: Path, threads: int) -> Detector:
    """The exported CargoNet through the engine the service runs."""
    engine = Engine.load(model, threads=threads)

    def detect(scan: Scan) -> Detections:
        return findings_arrays(engine, engine.analyze(scan))

    return detect


def yolo_detector(model: Path, tile: int, overlap: int, threads: int) -> Detector:
    """YOLOv8n's ONNX export through the tiled adapter."""
    from bench.peer.adapter import TiledYolo

    return TiledYolo(model, tile=tile, overlap=overlap, threads=threads)


def figures(
    detect: Detector, categories: Sequence[str], data: Path, progress: bool = True
) -> dict[str, Any]:
    """The headline figures on one labelled set at 1 % false alarms: scan-level detection
    (and the false-alarm rate it really reached), per-category detection, mAP50, and the
    per-category thresholds (to carry to other scans), with the time per scan."""
    metrics, _ = evaluate_detector(detect, categories, data, (FAR,), progress=progress)
    key = str(FAR)
    seconds = metrics["seconds_per_scan"]
    return {
        "data": str(data),
        "scans": len(seconds),
        "clean_scans": metrics["clean_scans"],
        "threat_instances": metrics["threat_instances"],
        "scan_detection_rate": metrics["scan"]["detection_rate_at_far"][key],
        "scan_false_alarm_rate": metrics["scan"]["false_alarm_rate_at_far"][key],
        "map50": metrics["map50"],
        "categories": {
            name: {"detection_rate": c["detection_rate_at_far"][key], "ap50": c["ap50"]}
            for name, c in metrics["categories"].items()
        },
        "thresholds": {
            name: c["threshold_at_far"][key] for name, c in metrics["categories"].items()
        },
        "ms_per_scan": {
            "median": 1000 * statistics.median(seconds) if seconds else None,
            "mean": 1000 * statistics.fmean(seconds) if seconds else None,
        },
        "seconds_per_scan": seconds,
    }


def clean_alarm_share(
    detect: Detector,
    categories: Sequence[str],
    folder: Path,
    thresholds: dict[str, float],
    progress: bool = True,
) -> dict[str, Any]:
    """Scans known to hold no contraband: the share with a finding above its category's
    threshold (those of a test set at 1 % false alarms), overall and per category."""
    paths = clean_scan_paths(folder)
    limits = np.array([thresholds[name] for name in categories])
    alarms = np.zeros(len(paths), bool)
    per_category = np.zeros(len(categories), np.int64)
    for n, path in enumerate(tqdm(paths, desc="clean scans", unit="scan", disable=not progress)):
        _, scores, labels = detect(load_clean_scan(path))
        over = scores > limits[labels] if len(labels) else np.zeros(0, bool)
        alarms[n] = bool(over.any())
        for c in set(labels[over].tolist()):
            per_category[c] += 1
    return {
        "data": str(folder),
        "scans": len(paths),
        "alarm_share": float(alarms.mean()),
        "per_category": {n: int(c) for n, c in zip(categories, per_category, strict=True)},
    }


def curve_point(
    detect: Detector, categories: Sequence[str], val: Path, progress: bool = False
) -> float | None:
    """Scan-level detection rate at 1 % false alarms on the validation scans."""
    return figures(detect, categories, val, progress)["scan_detection_rate"]


def pick(records: list[dict[str, Any]], points: int) -> list[dict[str, Any]]:
    """At most `points` snapshots spread evenly over the run, the last always among them."""
    if len(records) <= points:
        return list(records)
    chosen = np.unique(np.round(np.linspace(0, len(records) - 1, points)).astype(int))
    return [records[int(k)] for k in chosen]
