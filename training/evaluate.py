"""`cargoscan evaluate`: an ONNX model through the service's engine on a labelled COCO set.

Writes OUT/metrics.json:

    {"categories": {name: {"ap50", "detection_rate_at_far": {far: rate},
                           "threshold_at_far": {far: threshold}}},
     "scan": {"detection_rate_at_far": {far: rate}, "false_alarm_rate_at_far": {far: rate}},
     "map50", "map", "clean_scans", "threat_instances"}

Per category, the threshold is the one that lets at most `far` of the clean
scans alarm (see `training.metrics`). At scan level a scan alarms when any
finding reaches its category's threshold; the measured scan-level false-alarm
rate is reported beside the detection rate, since several categories can
each add false alarms. mAP comes from pycocotools with area ranges and
detection limits set for scans (threats from a few pixels to a person).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inference.engine import Engine
from inference.scan import load_scan
from training.data import CocoScans
from training.metrics import ScanFindings, detection_rate_at_far

FARS = (0.01, 0.001)
# Area ranges in px^2 at 5 mm pitch: a pistol part ~15x15, a brick stack ~60x30, a person ~100x200.
AREA_RANGES = [[0, 1e10], [0, 32**2], [32**2, 96**2], [96**2, 1e10]]
MAX_DETS = [10, 50, 100]


def _coco_map(
    gt_path: Path, detections: list[dict[str, Any]], image_ids: list[int]
) -> tuple[float, float, dict[int, float]]:
    """(mAP@[.5:.95], mAP@.5, AP@.5 per category id) from pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        if not detections:
            return 0.0, 0.0, {c: 0.0 for c in gt.getCatIds()}
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = image_ids
        ev.params.areaRng = AREA_RANGES
        ev.params.maxDets = MAX_DETS
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # precision is [iou, recall, category, area, max dets]: IoU 0.5, all areas, most dets.
    p50 = ev.eval["precision"][0, :, :, 0, -1]
    per_cat = {}
    for k, cat in enumerate(ev.params.catIds):
        valid = p50[:, k][p50[:, k] > -1]
        per_cat[cat] = float(valid.mean()) if valid.size else float("nan")
    return float(max(ev.stats[0], 0.0)), float(max(ev.stats[1], 0.0)), per_cat


def evaluate(model: Path, data: Path, out: Path, fars: tuple[float, ...] = FARS) -> dict[str, Any]:
    engine = Engine.load(model)
    source = CocoScans(data, engine.categories)
    coco = json.loads((data / "annotations.json").read_text())
    cat_ids = {c["name"]: c["id"] for c in coco["categories"]}
    scans, detections, image_ids = [], [], []
    for file_name, low, boxes, labels, image_id, _ in tqdm(
        source.items, desc="evaluate", unit="scan"
    ):
        scan = load_scan(data / file_name, data / low if low else None)
        found = engine.analyze(scan).findings
        scans.append(
            ScanFindings(
                np.array([f.box for f in found], np.float64).reshape(-1, 4),
                np.array([f.score for f in found]),
                np.array([engine.categories.index(f.category) for f in found], np.int64),
                boxes,
                labels,
            )
        )
        image_ids.append(image_id)
        for f in found:
            if f.category in cat_ids:
                x0, y0, x1, y1 = f.box
                detections.append(
                    {"image_id": image_id, "category_id": cat_ids[f.category],
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "score": f.score}
                )  # fmt: skip
    m, m50, per_cat_ap = _coco_map(data / "annotations.json", detections, image_ids)
    metrics: dict[str, Any] = {"categories": {}}
    thresholds: dict[float, dict[int, float]] = {far: {} for far in fars}
    for c, name in enumerate(engine.categories):
        rates, t = detection_rate_at_far(scans, c, fars)
        for far in fars:
            thresholds[far][c] = t[far]
        ap = per_cat_ap.get(cat_ids.get(name, -1), float("nan"))
        metrics["categories"][name] = {
            "ap50": None if np.isnan(ap) else ap,
            "detection_rate_at_far": {
                str(f): (None if np.isnan(r) else r) for f, r in rates.items()
            },
            "threshold_at_far": {str(f): v for f, v in t.items()},
        }
    scan_rates, scan_fars = {}, {}
    for far in fars:
        alarms = [
            bool(
                np.any(
                    [s.scores[k] > thresholds[far][int(s.labels[k])] for k in range(len(s.scores))]
                )
            )
            for s in scans
        ]
        threat = [a for a, s in zip(alarms, scans, strict=True) if not s.clean]
        clean = [a for a, s in zip(alarms, scans, strict=True) if s.clean]
        scan_rates[str(far)] = float(np.mean(threat)) if threat else None
        scan_fars[str(far)] = float(np.mean(clean)) if clean else None
    metrics["scan"] = {"detection_rate_at_far": scan_rates, "false_alarm_rate_at_far": scan_fars}
    metrics["map50"], metrics["map"] = m50, m
    metrics["clean_scans"] = sum(s.clean for s in scans)
    metrics["threat_instances"] = int(sum(len(s.gt_labels) for s in scans))
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return metrics
