"""An engine's analysis -> the result of DESIGN section 3 (torch-free, no web framework).

The same builder serves the HTTP service and the command line, so a scan gets the same
verdict wherever it is analysed. The card decides, not code:

- ``thresholds`` {category: score}: a finding scoring above its category's threshold is an
  **alarm**; above half of it, **review**. "Above", strictly, as in `training.metrics`:
  a threshold calibrated at 1 % false alarms is the highest score among the clean scans
  allowed to alarm, so the scan that set it must stay clear. A card without thresholds (an
  uncalibrated model) or a category without one uses :data:`DEFAULT_THRESHOLD`, and the
  explanation says so.
- ``thresholds_8bit`` {category: score}, where the card has them, replace ``thresholds``
  for 8-bit scans (JPEG/PNG exports of single-energy scanners): calibrated at the same
  false-alarm rate on 8-bit exports of the validation scans, whose clean scans score
  higher, so the stated false-alarm rate holds for that input too.
- The anomaly map (probability per stride cell) asks for **review** where it reaches
  :data:`ANOMALY_LEVEL`; each connected region at or above it becomes a finding with
  ``source: "anomaly"`` and category ``anomaly``. Anomalies never alarm on their own: the
  head is trained on synthetic misfits only.
- Findings under the review level are left out: an officer would only have to dismiss them.

Risk: ``risk = 1 - 2 ** (-r)`` where ``r`` is the largest ``score / threshold`` over the
detector findings and ``min(anomaly, 0.99)`` for the anomaly map. It is monotone in every
score, 0 for nothing, and it puts the verdict levels at fixed risks: ``alarm`` <=> risk
> 0.5, ``review`` <=> risk > 1 - 2 ** -0.5 (about 0.29), so a queue sorted by risk
lists alarms first, then reviews, then clear scans, whatever the categories' thresholds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inference.engine import Analysis, Engine

__all__ = [
    "ANOMALY_LEVEL",
    "DEFAULT_THRESHOLD",
    "REVIEW_RISK",
    "anomaly_png",
    "anomaly_regions",
    "build_result",
    "model_info",
    "model_version",
    "risk_from_ratio",
    "scan_cells",
    "thresholds_for",
]

DEFAULT_THRESHOLD = 0.5
"""Alarm threshold for a category the card gives none for (uncalibrated model)."""
ANOMALY_LEVEL = 0.5
"""Anomaly probability from which a region is shown and the scan goes to review."""
_ANOMALY_RATIO_CAP = 0.99
"""An anomaly alone never reaches the alarm risk (0.5)."""
REVIEW_RISK = 1.0 - 2.0**-0.5
"""Smallest risk of a scan whose verdict is review (see the module docstring)."""


def model_version(card: dict[str, Any]) -> str:
    """``NAME@SHA12``: the card's name and the ONNX file's sha256 prefix.

    The bytes identify a model (two exports in the same second still differ; the same
    file copied under another name is the same model), the name keeps it readable.
    """
    name = str(card.get("name") or "model")
    sha = str((card.get("onnx") or {}).get("sha256") or "")
    return f"{name}@{sha[:12]}" if sha else f"{name}@{card.get('created', 'unknown')}"


def model_info(card: dict[str, Any]) -> dict[str, str]:
    """The ``model`` part of a result: name, version, sha256."""
    return {
        "name": str(card.get("name") or "model"),
        "version": model_version(card),
        "sha256": str((card.get("onnx") or {}).get("sha256") or ""),
    }


def risk_from_ratio(ratio: float) -> float:
    """Monotone map of score/threshold onto [0, 1): 0 -> 0, 0.5 -> 0.29, 1 -> 0.5, 2 -> 0.75."""
    if math.isnan(ratio) or ratio <= 0.0:
        return 0.0
    if math.isinf(ratio):
        return 1.0
    return min(1.0, 1.0 - 2.0 ** (-ratio))


def thresholds_for(card: dict[str, Any], bit_depth: int = 16) -> tuple[dict[str, float], bool]:
    """Per-category alarm thresholds for a scan of this bit depth, and whether the card
    had them (False: uncalibrated). 8-bit scans use ``thresholds_8bit`` where the card
    has them; a category missing there falls back to ``thresholds``."""
    raw = card.get("thresholds")
    eight = card.get("thresholds_8bit") if bit_depth == 8 else None
    out: dict[str, float] = {}
    for cat in card.get("categories", []):
        for table in (eight, raw):
            value = table.get(cat) if isinstance(table, dict) else None
            # 0 is a real threshold: no clean validation scan had a finding of the category.
            if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
                out[cat] = float(value)
                break
        else:
            out[cat] = DEFAULT_THRESHOLD
    return out, isinstance(raw, dict) or isinstance(eight, dict)


def scan_cells(analysis: Analysis, stride: int) -> np.ndarray:
    """The anomaly map without the cells that lie wholly in the padding (float32).

    Padding is air the network was shown to fill the stride multiple; what it says there
    is about nothing in the scan.
    """
    amap = np.asarray(analysis.anomaly, dtype=np.float32)
    if analysis.model_input is None or amap.ndim != 2:
        return amap
    sh, sw = analysis.model_input.scaled_hw
    return amap[: -(-sh // stride), : -(-sw // stride)]


def anomaly_regions(
    analysis: Analysis, stride: int, level: float = ANOMALY_LEVEL
) -> list[tuple[float, tuple[float, float, float, float]]]:
    """(peak probability, box in original pixels) of each connected region >= ``level``.

    8-connected components of the stride-cell map; a cell covers ``stride`` model pixels,
    which :meth:`~inference.preprocess.ModelInput.to_original` maps back to the scan
    (undoing any resampling, clipping the padding away).
    """
    import cv2

    amap = scan_cells(analysis, stride)
    if amap.ndim != 2 or amap.size == 0:
        return []
    mask = (np.nan_to_num(amap, nan=0.0) >= level).astype(np.uint8)
    if not mask.any():
        return []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes, peaks = [], []
    for k in range(1, count):
        x, y, w, h = (int(v) for v in stats[k, :4])
        boxes.append([x * stride, y * stride, (x + w) * stride, (y + h) * stride])
        peaks.append(float(amap[labels == k].max()))
    model_boxes = np.asarray(boxes, dtype=np.float64)
    if analysis.model_input is not None:
        original = analysis.model_input.to_original(model_boxes)
    else:  # no mapping kept: model pixels are the scan's
        original = model_boxes
    regions = [
        (p, (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
        for p, b in zip(peaks, original, strict=True)
    ]
    return sorted(regions, key=lambda r: -r[0])


def anomaly_png(cells: np.ndarray) -> bytes:
    """The anomaly map as an 8-bit grey PNG (0 = 0.0, 255 = 1.0), one pixel per stride cell."""
    import cv2

    img = np.clip(np.nan_to_num(cells, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint8 array
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _box(box: tuple[float, float, float, float]) -> list[float]:
    return [round(float(v), 1) for v in box]


def build_result(
    engine: Engine,
    analysis: Analysis,
    scan_id: str,
    processing_ms: float,
    *,
    anomaly_map_url: str | None = None,
) -> dict[str, Any]:
    """The DESIGN section-3 result of one analysis (see the module docstring for the rules)."""
    card = engine.card
    thresholds, calibrated = thresholds_for(card, analysis.bit_depth)
    note = "" if calibrated else " (uncalibrated model: default threshold)"
    if calibrated and analysis.bit_depth == 8 and isinstance(card.get("thresholds_8bit"), dict):
        note = " (8-bit scan: thresholds for 8-bit exports)"
    findings: list[dict[str, Any]] = []
    best_ratio = 0.0
    alarm = review = False
    for f in analysis.findings:
        score = float(f.score)
        if not math.isfinite(score):
            continue
        t = thresholds.get(f.category, DEFAULT_THRESHOLD)
        ratio = score / t if t > 0 else math.inf
        best_ratio = max(best_ratio, ratio)
        if score > t:
            alarm = True
            why = f"{f.category} score {score:.2f} above the alarm threshold {t:.2f}{note}"
        elif score > t / 2:
            review = True
            why = (
                f"{f.category} score {score:.2f} above half the alarm threshold "
                f"{t:.2f}{note}: for review"
            )
        else:
            continue
        findings.append(
            {
                "category": f.category,
                "score": round(score, 4),
                "box": _box(f.box),
                "polygon": None,
                "source": "detector",
                "explanation": why,
            }
        )
    findings.sort(key=lambda d: -d["score"])

    amap = scan_cells(analysis, engine.stride)
    peak = float(np.nanmax(amap)) if amap.size and np.isfinite(amap).any() else 0.0
    if peak >= ANOMALY_LEVEL:
        review = True
    best_ratio = max(best_ratio, min(peak, _ANOMALY_RATIO_CAP))
    for p, box in anomaly_regions(analysis, engine.stride):
        findings.append(
            {
                "category": "anomaly",
                "score": round(p, 4),
                "box": _box(box),
                "polygon": None,
                "source": "anomaly",
                "explanation": (
                    f"region unlike the cargo around it (anomaly {p:.2f} >= {ANOMALY_LEVEL:.2f})"
                    ": for review"
                ),
            }
        )
    for k, finding in enumerate(findings, start=1):
        finding["id"] = k
    verdict = "alarm" if alarm else "review" if review else "clear"
    return {
        "scan_id": scan_id,
        "model": model_info(card),
        "processing_ms": round(float(processing_ms), 1),
        "risk": risk_from_ratio(best_ratio),  # not rounded: rounding could cross a level
        "verdict": verdict,
        "findings": [{"id": d.pop("id"), **d} for d in findings],
        "cargo_region": None,
        "anomaly_map": anomaly_map_url,
    }
