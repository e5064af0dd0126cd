"""`cargoscan export`: checkpoint -> ONNX model + model card, checked against torch.

The card (NAME.json next to NAME.onnx) is what the service reads: categories,
input spec, pre-processing version, per-category thresholds calibrated at a
stated false-alarm rate on validation data, verdict rules, metrics, a summary
of the training data and the ONNX file's sha256. Export refuses to write a
model whose ONNX outputs differ from torch's on real scans.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from inference.contracts import card_text
from inference.engine import Engine
from inference.preprocess import ATTENUATION_SCALE, PREPROCESS_VERSION
from inference.result import ANOMALY_LEVEL
from training.augment import eight_bit_export_of
from training.commission import review_thresholds, scores_of
from training.data import data_label, data_origin, open_sources
from training.evaluate import findings_arrays
from training.metrics import ScanFindings, detection_rate_at_far
from training.model import ONNX_OPSET, STRIDE, ExportWrapper, pad32, to_onnx
from training.train import load_checkpoint

CARD_VERSION = "1"
CALIBRATION_FAR = 0.01
REVIEW_RATE = 0.10
"""Share of clean validation scans allowed to alarm or go to review (the review thresholds
and the anomaly level are set for it, the alarm thresholds staying at CALIBRATION_FAR)."""
VERDICT_RULES = {
    "alarm": "a finding scoring above its category's alarm threshold",
    "review": "otherwise, a finding above its category's review threshold, or an anomaly "
    "region above the anomaly level",
    "clear": "otherwise; findings smaller than the smallest threat of their category at "
    "the scan's pitch are dropped, and overlapping findings are one",
}
EIGHT_BIT_CALIBRATION = (
    "the same scans as simulated 8-bit single-energy JPEG exports "
    "(training.augment.eight_bit_export, seeded [EIGHT_BIT_SEED, scan index])"
)
# Outputs may differ by float rounding between torch and ONNX Runtime, no more
# (absolute for probabilities, relative for box sides in pixels).
PARITY_ATOL = 1e-3
MIN_PEAK = 0.05  # the decoder's lowest score


class ExportError(RuntimeError):
    """Export refused: the ONNX graph does not reproduce the torch model."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _heat_disagreement(onnx_heat: np.ndarray, raw_heat: torch.Tensor) -> float:
    """Largest difference between ONNX Runtime's peak map and torch's, ties forgiven.

    Where the heat is flat (air, or an untrained model) neighbouring cells differ by
    float rounding only, and the 3x3 peak test may keep a different one of them in
    each runtime. So: every ONNX peak must hold torch's value there and be a peak in
    torch up to that rounding, and every torch peak must have an ONNX peak of the
    same height (up to rounding) within two cells.
    """
    tie = 2 * PARITY_ATOL
    raw = raw_heat.numpy()
    around = F.max_pool2d(raw_heat, 3, 1, 1).numpy()
    torch_peaks = np.where(raw == around, raw, 0.0)
    onnx_near = F.max_pool2d(torch.from_numpy(onnx_heat), 5, 1, 2).numpy()
    worst = 0.0
    kept = onnx_heat > MIN_PEAK
    if kept.any():
        value_gap = np.abs(onnx_heat - raw)[kept]
        not_a_peak = np.clip(around - raw - tie, 0.0, None)[kept]
        worst = max(worst, float(value_gap.max()), float(not_a_peak.max()))
    # Only torch peaks that stand clear of every neighbour must be found: on a plateau
    # (a saturated, barely trained heat map) each runtime may keep a different cell.
    padded = np.pad(raw, [(0, 0)] * (raw.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    h, w = raw.shape[-2:]
    neighbours = np.max(
        [padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
         for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx],
        axis=0,
    )  # fmt: skip
    wanted = (torch_peaks > MIN_PEAK) & (raw > neighbours + tie)
    if wanted.any():
        missing = np.clip(torch_peaks - onnx_near - tie, 0.0, None)[wanted]
        worst = max(worst, float(missing.max()))
    return worst


def check_parity(onnx_path: Path, wrapper: ExportWrapper, inputs: list[torch.Tensor]) -> float:
    """Largest difference between ONNX Runtime and torch over the given inputs
    (probabilities absolute, box sides relative to their length)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        got = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            raw_heat, box, anomaly = wrapper.probabilities(x)
        worst = max(worst, _heat_disagreement(got[0], raw_heat))
        # Box sides are in pixels (up to hundreds): float32 rounding grows with
        # the length, so they are compared relative to it (absolute below 1 px).
        box_gap = np.abs(got[1] - box.numpy()) / np.maximum(np.abs(box.numpy()), 1.0)
        worst = max(worst, float(box_gap.max(initial=0.0)))
        worst = max(worst, float(np.abs(got[2] - anomaly.numpy()).max(initial=0.0)))
    return worst


def thresholds_at(
    scans: list[ScanFindings], categories: list[str], far: float
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-category thresholds letting `far` of the clean scans alarm, and the detection
    rates they give."""
    if not any(s.clean for s in scans):
        raise ValueError("the validation set has no clean scans: thresholds cannot be calibrated")
    thresholds, metrics = {}, {"categories": {}, "clean_scans": sum(s.clean for s in scans)}
    for c, name in enumerate(categories):
        rates, t = detection_rate_at_far(scans, c, [far])
        thresholds[name] = t[far]
        rate = None if np.isnan(rates[far]) else rates[far]
        metrics["categories"][name] = {"detection_rate_at_far": {str(far): rate}}
    return thresholds, metrics


def engine_thresholds(
    engine: Engine, source: Any, far: float, progress: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card's operating point from validation scans through the engine (ONNX Runtime,
    as the service runs them), for the scans as recorded and for their 8-bit exports
    (`eight_bit_export_of`, the same export per scan as `cargoscan evaluate --eight-bit`):
    per-category alarm thresholds at `far` false alarms, then review thresholds and the
    anomaly level letting REVIEW_RATE of the clean scans alarm or go to review; and the
    detection rates. Returns (card keys, validation metrics).
    """
    as_recorded: list[ScanFindings] = []
    as_8bit: list[ScanFindings] = []
    clean_scores: dict[str, tuple[list[np.ndarray], list[float]]] = {
        "": ([], []),
        "_8bit": ([], []),
    }
    # Each scan is decoded once and analysed twice: as recorded and as its 8-bit export.
    for k in tqdm(range(len(source)), desc="calibrate", unit="scan", disable=not progress):
        item = source.labelled(k)
        for scan, found, key in (
            (item.scan, as_recorded, ""),
            (eight_bit_export_of(item.scan, k), as_8bit, "_8bit"),
        ):
            analysis = engine.analyze(scan)
            boxes, scores, labels = findings_arrays(engine, analysis)
            found.append(ScanFindings(boxes, scores, labels, item.boxes, item.labels))
            if not len(item.labels):
                det, anomaly = scores_of(engine, analysis)
                clean_scores[key][0].append(det)
                clean_scores[key][1].append(anomaly)
    thresholds, val_metrics = thresholds_at(as_recorded, engine.categories, far)
    thresholds_8bit, val_8bit = thresholds_at(as_8bit, engine.categories, far)
    val_metrics["eight_bit"] = val_8bit
    keys: dict[str, Any] = {"thresholds": thresholds, "thresholds_8bit": thresholds_8bit}
    for suffix, alarm in (("", thresholds), ("_8bit", thresholds_8bit)):
        det = np.array(clean_scores[suffix][0], np.float64).reshape(-1, len(engine.categories))
        anomaly = np.array(clean_scores[suffix][1], np.float64)
        floor = np.array([alarm[c] for c in engine.categories])
        review, level = review_thresholds(det, anomaly, floor, ANOMALY_LEVEL, REVIEW_RATE)
        keys[f"review_thresholds{suffix}"] = dict(
            zip(engine.categories, map(float, review), strict=True)
        )
        keys[f"anomaly_level{suffix}"] = level
    return keys, val_metrics


def recalibrate(
    model: Path, val: Path | Sequence[Path], far: float = CALIBRATION_FAR, *, progress: bool = True
) -> Path:
    """Calibrate an exported model's thresholds again, 16-bit and 8-bit, on `val`.

    For a model whose training run is gone, or a station that wants its own
    operating point: the scans go through the engine (ONNX Runtime, as the
    service runs them), the card gets new `thresholds`, `thresholds_8bit`,
    `calibration` and `metrics.validation`; the ONNX bytes, and so the sha256
    the card holds, do not change. Returns the card's path.
    """
    engine = Engine.load(model)
    source = open_sources(val, engine.categories)
    keys, val_metrics = engine_thresholds(engine, source, far, progress)
    card_path = Path(model).with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update(keys)
    card["verdict"] = VERDICT_RULES
    card["calibration"] = {
        "false_alarm_rate": far,
        "review_rate": REVIEW_RATE,
        "data": data_label(val),
        "thresholds_8bit": EIGHT_BIT_CALIBRATION,
        "recalibrated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "through": "the engine (ONNX Runtime), after export",
    }
    card.setdefault("metrics", {})["validation"] = val_metrics
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(card_text(card, str(card_path)))
    os.replace(tmp, card_path)
    return card_path


def export(
    checkpoint: Path,
    out: Path,
    val: Path | Sequence[Path] | None = None,
    far: float = CALIBRATION_FAR,
) -> Path:
    """Write OUT (.onnx) and its card (.json); returns the card's path."""
    net, ck = load_checkpoint(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    wrapper = to_onnx(net, tmp)
    categories = list(net.config.categories)
    source = open_sources(val, categories) if val else None
    # Parity on real scans when there are some, else on a synthetic-looking input.
    if source is not None and len(source):
        inputs = [
            pad32(torch.from_numpy(np.asarray(source[k].image, np.float32))[None])
            for k in range(min(2, len(source)))
        ]
    else:
        inputs = [torch.rand(1, 2, 320, 960) * 2]
    worst = check_parity(tmp, wrapper, inputs)
    if worst > PARITY_ATOL:
        tmp.unlink()
        raise ExportError(f"ONNX differs from torch by {worst:.2e} (> {PARITY_ATOL}): not exported")
    os.replace(tmp, out)
    train_cfg = ck.get("train_config", {})
    card = {
        "card_version": CARD_VERSION,
        "name": out.stem,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "onnx": {"file": out.name, "sha256": _sha256(out), "opset": ONNX_OPSET},
        "categories": categories,
        "input": {
            "name": "input",
            "shape": ["batch", 2, "height", "width"],
            "multiple_of": 32,
            "channels": ["high", "low (copy of high on single-energy scans)"],
            "attenuation_scale": ATTENUATION_SCALE,
            "preprocess_version": PREPROCESS_VERSION,
        },
        "outputs": {
            "stride": STRIDE,
            "heat": "(batch, categories, H/stride, W/stride): probabilities at local peaks only",
            "box": "(batch, 4, H/stride, W/stride): pixels to the left, top, right, bottom sides",
            "anomaly": "(batch, 1, H/stride, W/stride): probability",
        },
        "thresholds": None,  # calibrated below when there is validation data
        # For 8-bit scans (single-energy JPEG/PNG exports), whose clean scans score higher.
        "thresholds_8bit": None,
        "calibration": {
            "false_alarm_rate": far,
            "review_rate": REVIEW_RATE,
            "data": data_label(val) if val else None,
            "thresholds_8bit": EIGHT_BIT_CALIBRATION,
        },
        "verdict": VERDICT_RULES,
        "metrics": {"validation": None, "training": ck.get("metrics")},
        "training": {
            "data": train_cfg.get("data"),
            "data_summary": ck.get("data_summary"),
            # Each training set's origin and licences, read again where it still exists.
            "sources": [
                {"path": str(d), "origin": data_origin(d)} for d in train_cfg.get("data") or []
            ],
            "weights": train_cfg.get("weights"),
            "epochs": train_cfg.get("epochs"),
            "steps_per_epoch": train_cfg.get("steps_per_epoch"),
            # What else `cargoscan train` was given, so the run can be redone from the card.
            "batch_size": train_cfg.get("batch_size"),
            "crop": train_cfg.get("crop"),
            "crop_weights": train_cfg.get("crop_weights", {}),
            "place_weights": train_cfg.get("place_weights", {}),
            "eight_bit_share": train_cfg.get("eight_bit_share"),
            "hard_negative_share": train_cfg.get("hard_negative_share", 0.0),
            "hard_negative_scans": train_cfg.get("hard_negative_scans"),
            "hard_negative_min_score": train_cfg.get("hard_negative_min_score"),
            "lr": train_cfg.get("lr"),
            "seed": train_cfg.get("seed"),
            "checkpoint": str(checkpoint),
            # None for a checkpoint written outside `cargoscan train` (no epoch in it).
            "checkpoint_epoch": int(ck["epoch"]) + 1 if "epoch" in ck else None,
            # The model the run started from (--init), with its own training record.
            "init": ck.get("init"),
        },
        "model_config": ck["model_config"],
        "parity_max_abs_diff": worst,
    }
    if source is not None:
        # Calibrated on the file that ships, through the engine the service runs.
        engine = Engine.from_bytes(out.read_bytes(), card, threads=torch.get_num_threads())
        keys, val_metrics = engine_thresholds(engine, source, far, progress=len(source) >= 50)
        card.update(keys)
        card["metrics"]["validation"] = val_metrics
    card_path = out.with_suffix(".json")
    card_path.write_text(card_text(card, str(card_path)))
    return card_path
