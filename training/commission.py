"""`cargoscan commission`: a site's operating point from its own cleared traffic.

A model's card is calibrated where the model was made (synthetic validation scans and
whatever real scans were at hand). A site's traffic differs: its scanner, its export
curve, its cargo. Commissioning runs the model over scans the site's officers cleared
(a folder, or the service's released reviews exported as a data set) and sets, for the
alarm rate and the review rate the site wants:

- per-category **alarm thresholds**, never below the card's (the model's own calibrated
  operating point) unless ``below_card``: the same per-category clean-scan quantile for
  every category, as low as keeps at most ``alarm_rate`` of the cleared scans alarming.
  The floor matters: on the shared real scans, thresholds set on 93 cleared scans without
  it (each category's highest clean score) let 11 of 62 other clean scans alarm, with it 2;
- per-category **review thresholds** and the **anomaly level**, likewise, until at most
  ``review_rate`` of them alarm or go to review;

for each bit depth the cleared scans hold (8-bit exports and 16-bit scans score
differently). Scores are those the result builder acts on: findings big enough to be a
threat (:func:`inference.result.min_side_px`), anomaly regions likewise. The result is
an operating-point file (:mod:`inference.operating_point`) beside the model; the model
and its card stay as they are. With projected threats at hand (`cargoscan tip`) the
report says what the site's thresholds cost in detection against the card's.

The rates are counted as new scans would meet them: each cleared scan against thresholds
set without it (leave one out). Counted in-sample instead, a point set on 124 of the shared
real scans at 2 % alarmed on 8 % of the other 31 (docs/real-scans.md).

A rate needs scans: with ``n`` cleared scans, ``floor(rate * n)`` may alarm; under one
allowed scan the threshold would only be "above everything seen", which says nothing of
the rate, so commissioning refuses and says how many scans it needs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inference import operating_point as site_op
from inference.contracts import ModelCard, card_text
from inference.engine import Analysis, Engine, ModelError
from inference.result import (
    ANOMALY_LEVEL,
    anomaly_regions,
    min_side_px,
    operating_point,
)

__all__ = [
    "ClearedScores",
    "alarm_thresholds",
    "commission",
    "review_thresholds",
    "scores_of",
    "site_thresholds",
]

MIN_REVIEW_SCORE = 0.05
"""Review thresholds never go below the engine's own floor for listing a finding."""
SCORE_SLACK = 1e-5
"""Thresholds sit this far above the cleared score that sets them: ONNX Runtime's scores of
the same scan differ by ~3e-7 between CPUs (AVX2, AVX-512), enough to flip a scan that sat
exactly on its threshold from clear to alarm on another machine."""
_ANOMALY_GRID = np.round(np.arange(0.30, 1.0, 0.01), 2)


@dataclass
class ClearedScores:
    """What the result builder would act on, per cleared scan of one bit depth."""

    categories: list[str]
    detector: list[np.ndarray] = field(default_factory=list)  # (C,) best eligible score
    anomaly: list[float] = field(default_factory=list)  # highest level with a sizable region

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        det = np.array(self.detector, np.float64).reshape(-1, len(self.categories))
        return det, np.array(self.anomaly, np.float64)


def scores_of(engine: Engine, analysis: Analysis) -> tuple[np.ndarray, float]:
    """(best score per category among findings big enough to count, anomaly score): the
    anomaly score is the highest level (0.01 steps) at which the anomaly map still has a
    region big enough to be shown (0 when none even at 0.30)."""
    best = np.zeros(len(engine.categories), np.float64)
    pitch = analysis.pixel_pitch_mm
    for f in analysis.findings:
        x0, y0, x1, y1 = f.box
        if max(x1 - x0, y1 - y0) >= min_side_px(f.category, pitch):
            c = engine.categories.index(f.category)
            best[c] = max(best[c], f.score)
    amap = np.asarray(analysis.anomaly)
    anomaly = 0.0
    if amap.size and float(np.nanmax(amap)) > _ANOMALY_GRID[0]:
        smallest = min_side_px("anomaly", pitch)

        def shown_at(level: float) -> bool:
            regions = anomaly_regions(analysis, engine.stride, level)
            return any(max(b[2] - b[0], b[3] - b[1]) >= smallest for _, b in regions)

        # A region above a level lies inside one above any lower level, so "a region big
        # enough is shown" holds up to some level and not beyond: bisect the grid for it.
        lo, hi = -1, len(_ANOMALY_GRID)  # shown at grid[lo] (or below the grid), not at hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if shown_at(float(_ANOMALY_GRID[mid])) else (lo, mid)
        anomaly = float(_ANOMALY_GRID[lo]) if lo >= 0 else 0.0
    return best, anomaly


def _kth_highest(ordered: np.ndarray, k: int) -> np.ndarray:
    """From scores sorted highest first (along axis 0), the score that leaves exactly the
    ``k`` highest above it (strictly): the (k+1)-th highest, per column."""
    if not len(ordered):
        return np.zeros(ordered.shape[1:], np.float64)
    return ordered[min(k, len(ordered) - 1)]


def _highest_first(scores: np.ndarray) -> np.ndarray:
    return np.sort(scores, axis=0)[::-1]


def alarm_thresholds(
    det: np.ndarray, floor: np.ndarray, rate: float, margin: int = 1
) -> np.ndarray:
    """Per-category alarm thresholds, never below ``floor``, letting at most ``rate`` of
    the cleared scans (scores ``det``, (N, C)) alarm: the same per-category quantile k
    for every category (k scans above per category), as large as the joint rate allows.

    With ``margin`` 1 the rate is counted as on new scans (leave one out): a cleared scan
    over the k-th highest score of its category stays over it when the threshold is set
    without it, which is the (k+1)-th: so scans are counted at quantile k + 1. Why: with
    one quantile per category the in-sample count misses that a new scan may top any of
    them; on the 155 shared real scans, points set in-sample at 2 % alarmed on 8 % of
    other trucks (docs/real-scans.md)."""
    return _alarm_at(_highest_first(det), floor, _alarm_rank(det, floor, rate, margin))


def _alarm_at(ordered: np.ndarray, floor: np.ndarray, k: int) -> np.ndarray:
    """Each category's (k+1)-th highest score (``ordered``: highest first), never below
    ``floor``."""
    return np.maximum(np.minimum(_kth_highest(ordered, k) + SCORE_SLACK, 1.0), floor)


def _alarm_rank(det: np.ndarray, floor: np.ndarray, rate: float, margin: int) -> int:
    """The common quantile k of :func:`alarm_thresholds`."""
    allowed = math.floor(rate * det.shape[0] + 1e-9)
    ordered = _highest_first(det)
    best = 0
    for k in range(allowed + 1):
        if int((det > _alarm_at(ordered, floor, k + margin)).any(axis=1).sum()) <= allowed:
            best = k
    return best


def review_thresholds(
    det: np.ndarray,
    anomaly: np.ndarray,
    alarm: np.ndarray,
    floor_anomaly: float,
    rate: float,
    margin: int = 1,
    alarm_new: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Per-category review thresholds (at most the ``alarm`` ones) and the anomaly level
    (at least ``floor_anomaly``) letting at most ``rate`` of the cleared scans alarm or
    go to review, by the same common quantile (and ``margin``) as
    :func:`alarm_thresholds`; ``alarm_new`` are the alarm thresholds as a new scan meets
    them (one quantile higher), ``alarm`` when not given."""
    alarm_new = alarm if alarm_new is None else alarm_new
    k = _review_rank(det, anomaly, alarm, floor_anomaly, rate, margin, alarm_new)
    return _review_at(_highest_first(det), _highest_first(anomaly), alarm, floor_anomaly, k)


def _review_at(
    ordered: np.ndarray,
    ordered_anomaly: np.ndarray,
    alarm: np.ndarray,
    floor_anomaly: float,
    k: int,
) -> tuple[np.ndarray, float]:
    """Review thresholds and anomaly level at the common quantile k (scores highest first)."""
    # An anomaly score is the highest 0.01 level with a region: flagged at level L when the
    # score reaches L, so one step above the (k+1)-th highest leaves k.
    level = max(float(_kth_highest(ordered_anomaly, k)) + 0.01, floor_anomaly)
    review = np.clip(_kth_highest(ordered, k) + SCORE_SLACK, MIN_REVIEW_SCORE, alarm)
    return review, round(min(level, 0.99), 2)


def _review_rank(
    det: np.ndarray,
    anomaly: np.ndarray,
    alarm: np.ndarray,
    floor_anomaly: float,
    rate: float,
    margin: int,
    alarm_new: np.ndarray,
) -> int:
    """The common quantile k of :func:`review_thresholds`."""
    allowed = math.floor(rate * det.shape[0] + 1e-9)
    ordered, ordered_anomaly = _highest_first(det), _highest_first(anomaly)
    best = 0
    for k in range(allowed + 1):
        review, level = _review_at(ordered, ordered_anomaly, alarm, floor_anomaly, k + margin)
        if int(flagged_scans(det, anomaly, alarm_new, review, level).sum()) <= allowed:
            best = k
    return best


def flagged_scans(
    det: np.ndarray, anomaly: np.ndarray, alarm: np.ndarray, review: np.ndarray, level: float
) -> np.ndarray:
    """(N,) bool: which scans an officer must look at (alarm or review)."""
    return (det > alarm).any(axis=1) | (det > review).any(axis=1) | (anomaly >= level)


def site_thresholds(
    det: np.ndarray,
    anomaly: np.ndarray,
    floor_alarm: np.ndarray,
    floor_anomaly: float,
    alarm_rate: float,
    review_rate: float,
    margin: int = 1,
) -> dict[str, Any]:
    """Alarm and review thresholds per category and the anomaly level (see the module
    docstring) for cleared scans' scores ``det`` (N, C) and ``anomaly`` (N,), the rates
    counted as on new scans (``margin`` 1, :func:`alarm_thresholds`) or in-sample (0).

    Besides the in-sample counts, ``*_new`` counts each cleared scan as a new one would
    fare: against thresholds set without it (leave one out)."""
    ordered, ordered_anomaly = _highest_first(det), _highest_first(anomaly)
    k = _alarm_rank(det, floor_alarm, alarm_rate, margin)
    alarm, alarm_new = _alarm_at(ordered, floor_alarm, k), _alarm_at(ordered, floor_alarm, k + 1)
    kr = _review_rank(det, anomaly, alarm, floor_anomaly, review_rate, margin, alarm_new)
    review, level = _review_at(ordered, ordered_anomaly, alarm, floor_anomaly, kr)
    review_new, level_new = _review_at(ordered, ordered_anomaly, alarm, floor_anomaly, kr + 1)
    return {
        "alarm": alarm,
        "review": review,
        "anomaly_level": level,
        "alarmed": int((det > alarm).any(axis=1).sum()),
        "alarm_or_review": int(flagged_scans(det, anomaly, alarm, review, level).sum()),
        "anomaly_flagged": int((anomaly >= level).sum()),
        "alarmed_new": int((det > alarm_new).any(axis=1).sum()),
        "alarm_or_review_new": int(
            flagged_scans(det, anomaly, alarm_new, review_new, level_new).sum()
        ),
        "scans": det.shape[0],
    }


def needed_scans(rate: float) -> int:
    """Cleared scans needed for one of them to be allowed over the threshold at ``rate``."""
    return math.ceil(1.0 / rate - 1e-9)


def commission(
    model: Path,
    cleared: list[Path],
    out: Path,
    site: str,
    *,
    alarm_rate: float = 0.02,
    review_rate: float = 0.10,
    below_card: bool = False,
    in_sample: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Set ``site``'s operating point on ``cleared`` scans (folders, searched recursively)
    and write it to ``out`` (JSON); returns what it wrote. The rates are those new scans
    would meet (leave one out, :func:`alarm_thresholds`), or the cleared scans' own with
    ``in_sample``. Raises ValueError with what is missing when there are too few scans for
    the rates."""
    from training.evaluate import clean_scan_paths, load_clean_scan

    if not (0 < alarm_rate < 1 and 0 < review_rate < 1 and alarm_rate <= review_rate):
        raise ValueError(
            f"rates must satisfy 0 < alarm rate <= review rate < 1, got {alarm_rate} and "
            f"{review_rate}"
        )
    engine = Engine.load(model)
    if not engine.card.thresholds:
        raise ModelError(f"{model}: its card has no thresholds (export it with --val)")
    paths = [p for folder in cleared for p in clean_scan_paths(folder)]
    need = needed_scans(alarm_rate)
    if len(paths) < need:
        raise ValueError(
            f"{len(paths)} cleared scans cannot set a threshold at an alarm rate of "
            f"{alarm_rate:g}: it needs at least {need} (one of them allowed to alarm)"
        )
    by_depth: dict[int, ClearedScores] = {}
    for path in tqdm(paths, desc="cleared scans", unit="scan", disable=not progress):
        analysis = engine.analyze(load_clean_scan(path))
        det, anomaly = scores_of(engine, analysis)
        s = by_depth.setdefault(analysis.bit_depth, ClearedScores(engine.categories))
        s.detector.append(det)
        s.anomaly.append(anomaly)
    op: dict[str, Any] = {
        "kind": site_op.KIND,
        "site": site,
        "model": engine.card.name,
        "model_sha256": engine.card.onnx.sha256,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": {
            "alarm_rate": alarm_rate,
            "review_rate": review_rate,
            "below_card": below_card,
            "rates_counted": "in-sample" if in_sample else "leave-one-out",
        },
        "cleared_scans": {},
        "report": {},
    }
    for depth, scores in sorted(by_depth.items()):
        det, anomaly = scores.matrix()
        n = det.shape[0]
        if n < need:
            raise ValueError(
                f"{n} cleared {depth}-bit scans cannot set {depth}-bit thresholds at an alarm "
                f"rate of {alarm_rate:g}: it needs at least {need}"
            )
        card_op = operating_point(engine.card, depth)
        card_alarm = np.array([card_op.alarm[c] for c in engine.categories])
        floor = np.full_like(card_alarm, MIN_REVIEW_SCORE) if below_card else card_alarm
        card_level = max(card_op.anomaly_level, ANOMALY_LEVEL)
        set_ = site_thresholds(
            det, anomaly, floor, card_level, alarm_rate, review_rate, 0 if in_sample else 1
        )
        suffix = "_8bit" if depth == 8 else ""
        names = engine.categories
        op[f"thresholds{suffix}"] = dict(zip(names, map(float, set_["alarm"]), strict=True))
        op[f"review_thresholds{suffix}"] = dict(zip(names, map(float, set_["review"]), strict=True))
        op[f"anomaly_level{suffix}"] = float(set_["anomaly_level"])
        card_review = np.array([card_op.review[c] for c in names])
        card_alarmed = (det > card_alarm).any(axis=1)
        card_flagged = flagged_scans(det, anomaly, card_alarm, card_review, card_op.anomaly_level)
        op["cleared_scans"][f"{depth}-bit"] = n
        op["report"][f"{depth}-bit"] = {
            "scans": n,
            "card": {
                "alarmed": int(card_alarmed.sum()),
                "alarm_or_review": int(card_flagged.sum()),
            },
            "site": {
                "alarmed": set_["alarmed"],
                "alarm_or_review": set_["alarm_or_review"],
                "anomaly_flagged": set_["anomaly_flagged"],
                # each cleared scan against thresholds set without it: as a new scan fares
                "left_out": {
                    "alarmed": set_["alarmed_new"],
                    "alarm_or_review": set_["alarm_or_review_new"],
                },
            },
        }
    site_op.validate(op, engine.card, str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(op, indent=2) + "\n")
    return op


def write_into_card(model: Path, op: dict[str, Any], data: list[Path]) -> Path:
    """Lay an operating point into the model's own card (the ONNX file and its sha256 stay):
    for a shipped default whose card must already carry what real traffic taught."""
    card_path = Path(model).with_suffix(".json")
    card = json.loads(card_path.read_text())
    site_op.validate(op, ModelCard.of(card, str(card_path)), str(card_path))
    for key in site_op.KEYS:
        if key in op:
            card[key] = op[key]
    card.setdefault("calibration", {})["commissioned"] = {
        "site": op["site"],
        "data": [str(d) for d in data],
        "target": op["target"],
        "cleared_scans": op["cleared_scans"],
        "report": op["report"],
        "created": op["created"],
        "keys": [k for k in site_op.KEYS if k in op],
    }
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(card_text(card, str(card_path)))
    os.replace(tmp, card_path)
    return card_path
