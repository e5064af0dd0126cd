"""An engine's analysis -> its result (torch-free, no web framework).

The result's shape is :class:`inference.contracts.ScanResult` (docs/design.md, "The result:
what goes out").

The same builder serves the HTTP service and the command line, so a scan gets the same
verdict wherever it is analysed. The card (or a site's operating point laid over it,
:mod:`inference.operating_point`) decides, not code:

- ``thresholds`` {category: score}: a finding scoring above its category's threshold is an
  **alarm**. "Above", strictly, as in `training.metrics`: a threshold calibrated at 1 %
  false alarms is the highest score among the clean scans allowed to alarm, so the scan
  that set it must stay clear. A card without thresholds (an uncalibrated model) or a
  category without one uses :data:`DEFAULT_THRESHOLD`, and the explanation says so.
- ``review_thresholds`` {category: score}: above it (and not above the alarm threshold) a
  finding asks for **review**. Calibrated on clean scans at a stated review rate; a card
  without them falls back to half the alarm threshold (cards before this rule).
- ``thresholds_8bit`` / ``review_thresholds_8bit`` replace both for 8-bit scans (JPEG/PNG
  exports of single-energy scanners), whose clean scans score higher.
- ``anomaly_level`` (``anomaly_level_8bit``): each connected region of the anomaly map
  above it becomes a finding with ``source: "anomaly"`` and category ``anomaly`` and asks
  for review. Anomalies never alarm on their own.

One region, one finding: overlapping detector findings of different categories are
merged into the one whose score stands highest over its own threshold; the runner-up is
named in its explanation, and an anomaly region on the same spot joins it. A finding
smaller than the smallest threat its category allows at the scan's pixel pitch
(:data:`MIN_OBJECT_MM`) is dropped: a 4x4 px speck is no pistol.

Risk: ``risk = 1 - 2 ** (-r)`` where ``r`` is the largest level over the findings: a
score maps piecewise linearly onto 0 (score 0), 0.5 (its review threshold) and 1 (its
alarm threshold), and ``s / t`` beyond; an anomaly peak onto 0.5 at its level and at most
0.99. It is monotone in every score, 0 for nothing, and it puts the verdict levels at fixed
risks: ``alarm`` <=> risk > 0.5, ``review`` <=> risk > 1 - 2 ** -0.5 (about 0.29), so a
queue sorted by risk lists alarms first, then reviews, then clear scans, whatever the
categories' thresholds.

With the cargo analysis (``analysis.cargo``), the manifest check's discrepancies join the
findings as reasons (:mod:`inference.risk`: a weight per kind times the score, on the same
level scale; the strongest reason decides), and the result lists every reason with its
weight and contribution in ``risk_reasons``. Without it, or without a discrepancy, the
risk and verdict are the findings' alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.boxes import hits
from inference.contracts import ModelCard, ResultFinding, ResultModel, ScanResult, ScoreTable
from inference.engine import Analysis, Engine, anomaly_cells
from inference.risk import combine, finding_reasons

__all__ = [
    "ANOMALY_LEVEL",
    "DEFAULT_THRESHOLD",
    "REVIEW_RISK",
    "anomaly_png",
    "anomaly_regions",
    "build_result",
    "model_info",
    "model_version",
    "result_model",
    "risk_from_ratio",
    "scan_cells",
    "scan_result",
    "thresholds_for",
]

DEFAULT_THRESHOLD = 0.5
"""Alarm threshold for a category the card gives none for (uncalibrated model)."""
ANOMALY_LEVEL = 0.5
"""Anomaly probability above which a region is shown, where the card sets no level."""
_ANOMALY_RATIO_CAP = 0.99
"""An anomaly alone never reaches the alarm risk (0.5)."""
REVIEW_RISK = 1.0 - 2.0**-0.5
"""Smallest risk of a scan whose verdict is review (see the module docstring)."""
DEFAULT_PITCH_MM = 5.0
"""Pixel pitch assumed when the station does not send one (the synthetic scanner's)."""
MIN_OBJECT_MM = {
    "firearm": 60.0,
    "narcotics": 60.0,
    "cigarettes": 120.0,
    "currency": 50.0,
    "person": 250.0,
    "anomaly": 50.0,
}
"""Smallest longer side (mm) a finding's box may have: about half the smallest object of
the category seen from its narrowest side (a pistol's frame or a loose barrel, a 1 kg
brick, a carton of cigarettes, a thin bundle of notes, a crouching person) so that tilt and
partial occlusion keep real ones in. Anything smaller is a speck of texture."""
MERGE_IOU = 0.3
"""Findings overlap (one region) at this IoU, or when one's centre lies in the other's
box: the rule that counts a finding as a hit on a threat in evaluation."""


@dataclass(frozen=True)
class OperatingPoint:
    """What decides a scan's verdict: per-category alarm and review thresholds and the
    anomaly level, for one bit depth, as the card (or a site's file over it) sets them."""

    alarm: dict[str, float]
    review: dict[str, float]
    anomaly_level: float
    calibrated: bool  # False: the card had no thresholds (DEFAULT_THRESHOLD used)
    note: str  # said in each explanation: which table decided


def model_version(card: ModelCard | Mapping[str, Any]) -> str:
    """``NAME@SHA12``: the card's name and the ONNX file's sha256 prefix.

    The bytes identify a model (two exports in the same second still differ; the same
    file copied under another name is the same model), the name keeps it readable.
    """
    card = ModelCard.of(card)
    name = card.name or "model"
    sha = card.onnx.sha256 or ""
    created = card.created if card.created is not None else "unknown"
    return f"{name}@{sha[:12]}" if sha else f"{name}@{created}"


def result_model(card: ModelCard | Mapping[str, Any]) -> ResultModel:
    """The ``model`` part of a result: name, version, sha256 (and the site's operating
    point, where one is laid over the card; left unset, so absent, otherwise)."""
    card = ModelCard.of(card)
    info = ResultModel(
        name=card.name or "model", version=model_version(card), sha256=card.onnx.sha256 or ""
    )
    if card.operating_point_site:
        info.operating_point = card.operating_point_site
    if card.verifier and card.verifier.get("sha256"):
        info.verifier_sha256 = str(card.verifier["sha256"])
    return info


def model_info(card: ModelCard | Mapping[str, Any]) -> dict[str, str]:
    """:func:`result_model` as the dict a result holds (what the service's records and
    metrics label a model with)."""
    return result_model(card).model_dump(exclude_unset=True)


def risk_from_ratio(ratio: float) -> float:
    """Monotone map of score/threshold onto [0, 1): 0 -> 0, 0.5 -> 0.29, 1 -> 0.5, 2 -> 0.75."""
    if math.isnan(ratio) or ratio <= 0.0:
        return 0.0
    if math.isinf(ratio):
        return 1.0
    return min(1.0, 1.0 - 2.0 ** (-ratio))


def _most_specific(
    general: ScoreTable | None, eight_bit: ScoreTable | None, bit_depth: int
) -> list[ScoreTable]:
    """The card's tables for a scan of this bit depth, most specific first (the 8-bit one
    for 8-bit scans); absent tables left out. The card's validation has made every value a
    finite score >= 0 (0 is a real threshold: no clean validation scan had a finding)."""
    tables = [eight_bit, general] if bit_depth == 8 else [general]
    return [t for t in tables if t is not None]


def thresholds_for(
    card: ModelCard | Mapping[str, Any], bit_depth: int = 16
) -> tuple[dict[str, float], bool]:
    """Per-category alarm thresholds for a scan of this bit depth, and whether the card
    had them (False: uncalibrated). 8-bit scans use ``thresholds_8bit`` where the card
    has them; a category missing there falls back to ``thresholds``."""
    card = ModelCard.of(card)
    tables = _most_specific(card.thresholds, card.thresholds_8bit, bit_depth)
    out: dict[str, float] = {}
    for cat in card.categories:
        found = [t[cat] for t in tables if cat in t]
        out[cat] = found[0] if found else DEFAULT_THRESHOLD
    return out, bool(tables)


def operating_point(card: ModelCard | Mapping[str, Any], bit_depth: int = 16) -> OperatingPoint:
    """The card's operating point for a scan of this bit depth (see the module docstring)."""
    card = ModelCard.of(card)
    alarm, calibrated = thresholds_for(card, bit_depth)
    review_tables = _most_specific(card.review_thresholds, card.review_thresholds_8bit, bit_depth)
    review = {}
    for cat, t in alarm.items():
        found = [r[cat] for r in review_tables if cat in r]
        review[cat] = min(found[0], t) if found else t / 2
    levels = (
        [card.anomaly_level_8bit, card.anomaly_level] if bit_depth == 8 else [card.anomaly_level]
    )
    level = next((v for v in levels if v is not None), ANOMALY_LEVEL)
    note = "" if calibrated else " (uncalibrated model: default threshold)"
    if calibrated and bit_depth == 8 and card.thresholds_8bit is not None:
        note = " (8-bit scan: thresholds for 8-bit exports)"
    site = card.operating_point_site
    if calibrated and site:
        note += f" (site {site})"
    return OperatingPoint(alarm, review, level, calibrated, note)


def score_level(score: float, review: float, alarm: float) -> float:
    """A score on the common scale of the risk: 0.5 at its review threshold, 1 at its alarm
    threshold, piecewise linear between and ``score / alarm`` above."""
    if not math.isfinite(score) or score <= 0:
        return 0.0
    if score > alarm:
        return score / alarm if alarm > 0 else math.inf
    if score > review:
        return 0.5 + 0.5 * (score - review) / max(alarm - review, 1e-12)
    return 0.5 * score / review if review > 0 else 0.5


def anomaly_level_of(peak: float, level: float) -> float:
    """An anomaly peak on the risk's scale: 0.5 at the level, at most 0.99 (never alarms)."""
    if not math.isfinite(peak) or peak <= 0:
        return 0.0
    if peak <= level:
        return 0.5 * peak / level if level > 0 else 0.5
    return min(0.5 + 0.5 * (peak - level) / max(1.0 - level, 1e-6), _ANOMALY_RATIO_CAP)


def min_side_px(category: str, pitch_mm: float | None) -> float:
    """Smallest longer box side (scan pixels) a finding of ``category`` may have."""
    pitch = pitch_mm if pitch_mm and math.isfinite(pitch_mm) and pitch_mm > 0 else DEFAULT_PITCH_MM
    return MIN_OBJECT_MM.get(category, MIN_OBJECT_MM["anomaly"]) / pitch


def scan_cells(analysis: Analysis, stride: int) -> np.ndarray:
    """The analysis's anomaly map without the cells that lie wholly in the padding
    (:func:`~inference.engine.anomaly_cells`)."""
    return anomaly_cells(analysis.anomaly, analysis.model_input, stride)


def anomaly_regions(
    analysis: Analysis, stride: int, level: float = ANOMALY_LEVEL
) -> list[tuple[float, tuple[float, float, float, float]]]:
    """(peak probability, box in original pixels) of each connected region above ``level``.

    8-connected components of the stride-cell map; a cell covers ``stride`` model pixels,
    which :meth:`~inference.preprocess.ModelInput.to_original` maps back to the scan
    (undoing any resampling, clipping the padding away).
    """
    import cv2

    amap = scan_cells(analysis, stride)
    if amap.ndim != 2 or amap.size == 0:
        return []
    mask = (np.nan_to_num(amap, nan=0.0) > level).astype(np.uint8)
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


def _longer_side(box: tuple[float, float, float, float]) -> float:
    return max(box[2] - box[0], box[3] - box[1])


def _regions(boxes: list[tuple[float, float, float, float]]) -> list[int]:
    """Region index of each box: boxes that overlap (either way, by :func:`hits`) share
    one, transitively (a union-find over the overlap graph)."""
    n = len(boxes)
    if n == 0:
        return []
    b = np.asarray(boxes, np.float64)
    touch = hits(b, b)
    touch |= touch.T
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(touch, 1)), strict=True):
        parent[root(int(i))] = root(int(j))
    return [root(i) for i in range(n)]


def scan_result(
    engine: Engine,
    analysis: Analysis,
    scan_id: str,
    processing_ms: float,
    *,
    anomaly_map_url: str | None = None,
) -> ScanResult:
    """The result of one analysis (see the module docstring for the rules)."""
    op = operating_point(engine.card, analysis.bit_depth)
    pitch = analysis.pixel_pitch_mm
    # Candidates: detector findings over their review threshold, big enough to be a threat.
    # Those under it stay off the list but still rank a clear scan in the queue (risk).
    shown: list[tuple[float, str, float, tuple[float, float, float, float], str]] = []
    best = 0.0
    hidden: tuple[float, str, float] | None = None  # the strongest one under review
    for f in analysis.findings:
        score = float(f.score)
        if not math.isfinite(score) or _longer_side(f.box) < min_side_px(f.category, pitch):
            continue
        level = score_level(score, op.review[f.category], op.alarm[f.category])
        best = max(best, level)
        if score > op.review[f.category]:
            shown.append((level, f.category, score, f.box, "detector"))
        elif hidden is None or level > hidden[0]:
            hidden = (level, f.category, score)
    for p, box in anomaly_regions(analysis, engine.stride, op.anomaly_level):
        if _longer_side(box) >= min_side_px("anomaly", pitch):
            shown.append((anomaly_level_of(p, op.anomaly_level), "anomaly", p, box, "anomaly"))

    groups: dict[int, list[int]] = {}
    for i, r in enumerate(_regions([c[3] for c in shown])):
        groups.setdefault(r, []).append(i)
    # One per region: (level, category, score, box, source, explanation).
    decided: list[tuple[float, str, float, tuple[float, float, float, float], str, str]] = []
    alarm = False
    for members in groups.values():
        # Within a region, detector findings outrank the anomaly map; then the level.
        ranked = sorted(members, key=lambda i: (shown[i][4] != "detector", -shown[i][0]))
        level, category, score, box, source = shown[ranked[0]]
        best = max(best, level)
        if source == "anomaly":
            why = (
                f"region unlike the cargo around it (anomaly {score:.2f} above "
                f"{op.anomaly_level:.2f}){op.note}: for review"
            )
        elif score > op.alarm[category]:
            alarm = True
            why = (
                f"{category} score {score:.2f} above the alarm threshold "
                f"{op.alarm[category]:.2f}{op.note}"
            )
        else:
            why = (
                f"{category} score {score:.2f} above the review threshold "
                f"{op.review[category]:.2f} (alarm above {op.alarm[category]:.2f}){op.note}"
                ": for review"
            )
        others: dict[str, float] = {}
        for i in ranked[1:]:
            other = shown[i]
            if other[1] != category and other[1] not in others:
                others[other[1]] = other[2]
        if others:
            named = ", ".join(f"{c} {s:.2f}" for c, s in others.items())
            why += f"; also seen here as {named}"
        decided.append((level, category, score, box, source, why))
    # Highest level first; the score as shown breaks ties.
    decided.sort(key=lambda d: (-d[0], -round(d[2], 4)))
    findings = [
        ResultFinding(
            id=k,
            category=category,
            score=round(score, 4),
            box=_box(box),
            polygon=None,
            source=source,
            alarm=source == "detector" and score > op.alarm[category],
            explanation=why,
        )
        for k, (_, category, score, box, source, why) in enumerate(decided, start=1)
    ]
    review = bool(findings) and not alarm
    # The cargo section only where it was analysed: to_dict leaves unset fields out.
    cargo: dict[str, Any] = {}
    if analysis.cargo is not None:
        reasons = finding_reasons(findings, [d[0] for d in decided], hidden)
        best, alarm, review, reasons = combine(
            best, alarm, review, reasons, analysis.cargo.manifest_check
        )
        cargo = {"cargo": analysis.cargo, "risk_reasons": reasons}
    return ScanResult(
        scan_id=scan_id,
        model=result_model(engine.card),
        processing_ms=round(float(processing_ms), 1),
        risk=risk_from_ratio(best),  # not rounded: rounding could cross a level
        verdict="alarm" if alarm else "review" if review else "clear",
        findings=findings,
        cargo_region=None,
        anomaly_map=anomaly_map_url,
        **cargo,
    )


def build_result(
    engine: Engine,
    analysis: Analysis,
    scan_id: str,
    processing_ms: float,
    *,
    anomaly_map_url: str | None = None,
) -> dict[str, Any]:
    """:func:`scan_result` as the JSON object stations receive and the service stores and
    signs (:meth:`ScanResult.to_dict`)."""
    return scan_result(
        engine, analysis, scan_id, processing_ms, anomaly_map_url=anomaly_map_url
    ).to_dict()
