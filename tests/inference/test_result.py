"""The result builder: verdict rules of the card, risk levels, anomaly regions in scan pixels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from inference.engine import Analysis, Engine, Finding
from inference.preprocess import ModelInput
from inference.result import (
    DEFAULT_THRESHOLD,
    REVIEW_RISK,
    build_result,
    model_version,
    risk_from_ratio,
)

CATS = ["firearm", "narcotics", "cigarettes", "currency", "person"]


def _card(thresholds: dict[str, float] | None) -> dict[str, Any]:
    return {
        "name": "unit",
        "created": "2024-01-01T00:00:00+00:00",
        "onnx": {"sha256": "ab" * 32},
        "categories": CATS,
        "outputs": {"stride": 4},
        "thresholds": thresholds,
    }


def _engine(thresholds: dict[str, float] | None) -> Engine:
    # A card without a session: build_result reads only the card.
    return Engine(session=None, card=_card(thresholds), threads=1)


def _analysis(
    findings: list[Finding], anomaly: np.ndarray | None = None, scale: float = 1.0
) -> Analysis:
    h, w = 100, 300
    sh, sw = round(h * scale), round(w * scale)
    hp, wp = -(-sh // 32) * 32, -(-sw // 32) * 32
    mi = ModelInput(np.zeros((1, 2, hp, wp), np.float32), (h, w), (sh, sw), scale, False)
    amap = np.zeros((hp // 4, wp // 4), np.float32) if anomaly is None else anomaly
    return Analysis(findings, amap, (hp, wp), mi)


THRESH = dict.fromkeys(CATS, 0.4)


@pytest.mark.parametrize(
    ("score", "verdict", "listed"),
    [
        (0.9, "alarm", True),
        (0.41, "alarm", True),
        (0.4, "review", True),  # at the threshold: not above it (as the calibration counts)
        (0.3, "review", True),
        (0.21, "review", True),
        (0.2, "clear", False),  # exactly half: a card without review thresholds
    ],
)
def test_verdict_follows_the_card_thresholds(score: float, verdict: str, listed: bool):
    res = build_result(
        _engine(THRESH), _analysis([Finding("firearm", score, (1, 2, 30, 40))]), "s1", 12.34
    )
    assert res["verdict"] == verdict
    assert bool(res["findings"]) is listed
    assert res["scan_id"] == "s1" and res["processing_ms"] == 12.3
    assert res["cargo_region"] is None and res["anomaly_map"] is None
    if listed:
        (f,) = res["findings"]
        assert f["id"] == 1 and f["source"] == "detector" and f["polygon"] is None
        assert f["box"] == [1.0, 2.0, 30.0, 40.0] and f["category"] == "firearm"
        assert "0.40" in f["explanation"]


def test_eight_bit_scans_are_judged_by_the_cards_eight_bit_thresholds():
    # The same 0.5 firearm finding: an alarm on a 16-bit scan (threshold 0.4), a
    # review on an 8-bit export (0.6, as their clean scans score higher). A
    # category the 8-bit table lacks falls back to the 16-bit one.
    engine = _engine(THRESH)
    engine.card.thresholds_8bit = {"firearm": 0.6}
    finding = [Finding("firearm", 0.5, (1, 2, 30, 40)), Finding("person", 0.45, (50, 2, 90, 80))]
    sixteen = build_result(engine, _analysis(finding), "a", 1.0)
    eight = _analysis(finding)
    eight.bit_depth = 8
    res = build_result(engine, eight, "b", 1.0)
    assert sixteen["verdict"] == "alarm"
    assert [f["score"] for f in sixteen["findings"]] == [0.5, 0.45]
    by_cat = {f["category"]: f for f in res["findings"]}
    assert (
        "0.60" in by_cat["firearm"]["explanation"] and "review" in by_cat["firearm"]["explanation"]
    )
    assert not by_cat["firearm"]["alarm"] and by_cat["person"]["alarm"]
    assert "8-bit" in by_cat["firearm"]["explanation"]
    assert "above the alarm threshold 0.40" in by_cat["person"]["explanation"]
    assert res["verdict"] == "alarm"  # person 0.45 > 0.40 still alarms
    engine.card.thresholds_8bit = None
    assert (
        "above the alarm threshold 0.40"
        in build_result(engine, eight, "c", 1.0)["findings"][0]["explanation"]
    )


def test_risk_orders_verdicts_whatever_the_thresholds():
    low = dict(THRESH, narcotics=0.1)
    res = [
        build_result(_engine(low), _analysis([Finding(c, s, (0, 0, 40, 40))]), "x", 1.0)
        for c, s in [("narcotics", 0.11), ("firearm", 0.3), ("firearm", 0.1)]
    ]
    assert [r["verdict"] for r in res] == ["alarm", "review", "clear"]
    assert res[0]["risk"] >= 0.5 > res[1]["risk"] >= REVIEW_RISK > res[2]["risk"] >= 0.0
    assert risk_from_ratio(0.0) == 0.0 and risk_from_ratio(1.0) == 0.5
    assert risk_from_ratio(math.inf) == 1.0 and risk_from_ratio(math.nan) == 0.0
    ratios = np.linspace(0, 10, 101)
    risks = [risk_from_ratio(float(r)) for r in ratios]
    assert risks == sorted(risks) and max(risks) <= 1.0


def test_uncalibrated_card_uses_the_default_threshold_and_says_so():
    res = build_result(
        _engine(None),
        _analysis([Finding("person", DEFAULT_THRESHOLD + 0.01, (0, 0, 90, 90))]),
        "u",
        1,
    )
    assert res["verdict"] == "alarm"
    assert "uncalibrated" in res["findings"][0]["explanation"]


def test_a_zero_threshold_alarms_on_any_finding_of_the_category():
    # 0 = no clean validation scan had a finding of this category at all.
    res = build_result(
        _engine(dict(THRESH, currency=0.0)), _analysis([Finding("currency", 0.06, (0, 0, 30, 30))]),
        "z", 1.0,
    )  # fmt: skip
    assert res["verdict"] == "alarm" and res["risk"] == 1.0


def test_anomaly_regions_become_review_findings_in_original_pixels():
    # scale 0.5: model pixel = 2 original pixels; stride 4 -> a cell is 8 original pixels
    ana = _analysis([], scale=0.5)
    ana.anomaly[2:4, 5:8] = 0.8  # cells x 5..7, y 2..3 -> model px x 20..32, y 8..16
    ana.anomaly[10:12, 30:32] = 0.6  # a second, separate region
    ana.anomaly[12, 2] = 0.9  # one cell: 8 px = 40 mm, smaller than any threat
    res = build_result(_engine(THRESH), ana, "a", 1.0, anomaly_map_url="/m")
    assert res["verdict"] == "review" and res["anomaly_map"] == "/m"
    assert REVIEW_RISK < res["risk"] < 0.5
    boxes = [(f["score"], f["box"]) for f in res["findings"]]
    assert boxes[0] == (pytest.approx(0.8), [40.0, 16.0, 64.0, 32.0])
    assert boxes[1][0] == pytest.approx(0.6) and boxes[1][1] == [240.0, 80.0, 256.0, 96.0]
    assert len(boxes) == 2
    assert {f["source"] for f in res["findings"]} == {"anomaly"}
    assert [f["id"] for f in res["findings"]] == [1, 2]


def test_regions_in_the_padding_only_are_dropped():
    ana = _analysis([])
    ana.anomaly[-1, -1] = 0.9  # padded corner (scan is 100 x 300, model 128 x 320)
    res = build_result(_engine(THRESH), ana, "p", 1.0)
    assert res["findings"] == [] and res["verdict"] == "clear" and res["risk"] == 0.0


def test_model_version_names_the_bytes():
    card = _card(THRESH)
    assert model_version(card) == "unit@" + "ab" * 6
    res = build_result(_engine(THRESH), _analysis([]), "v", 0.0)
    assert res["model"] == {"name": "unit", "version": "unit@" + "ab" * 6, "sha256": "ab" * 32}
    assert res["verdict"] == "clear" and res["risk"] == 0.0


def test_overlapping_findings_of_different_categories_become_one():
    # narcotics and currency on the same brick, a person box over both: one region, one
    # finding, led by the score that stands highest over its own threshold.
    thresholds = dict(THRESH, currency=0.6)
    ana = _analysis(
        [
            Finding("currency", 0.65, (100, 20, 140, 60)),  # 0.65 / 0.6 = 1.08
            Finding("narcotics", 0.5, (102, 22, 141, 58)),  # 0.5 / 0.4 = 1.25
            Finding("person", 0.3, (90, 0, 160, 90)),  # contains both centres
            Finding("firearm", 0.9, (200, 10, 240, 50)),  # elsewhere: its own finding
        ]
    )
    res = build_result(_engine(thresholds), ana, "m", 1.0)
    assert [f["category"] for f in res["findings"]] == ["firearm", "narcotics"]
    merged = res["findings"][1]
    assert merged["box"] == [102.0, 22.0, 141.0, 58.0] and merged["alarm"]
    assert "also seen here as currency 0.65, person 0.30" in merged["explanation"]
    assert res["verdict"] == "alarm"


def test_an_anomaly_region_on_a_detector_finding_joins_it():
    ana = _analysis([Finding("narcotics", 0.3, (40, 16, 64, 40))])
    ana.anomaly[4:10, 10:16] = 0.9  # model px x 40..64, y 16..40: the same spot
    res = build_result(_engine(THRESH), ana, "j", 1.0)
    (only,) = res["findings"]
    assert only["source"] == "detector" and only["category"] == "narcotics"
    assert "also seen here as anomaly 0.90" in only["explanation"]
    assert res["verdict"] == "review"


@pytest.mark.parametrize(
    ("category", "side_px", "pitch_mm", "listed"),
    [
        ("firearm", 4, None, False),  # a 4x4 speck: 20 mm at the default 5 mm
        ("firearm", 12, None, True),  # 60 mm: the smallest pistol part seen edge-on
        ("firearm", 12, 3.0, False),  # 36 mm at a 3 mm pitch
        ("person", 40, None, False),  # 200 mm: no person
        ("person", 60, 5.0, True),
        ("cigarettes", 20, None, False),
    ],
)
def test_findings_smaller_than_any_threat_of_their_category_are_dropped(
    category: str, side_px: float, pitch_mm: float | None, listed: bool
):
    ana = _analysis([Finding(category, 0.9, (10, 10, 10 + side_px, 10 + side_px))])
    ana.pixel_pitch_mm = pitch_mm
    res = build_result(_engine(THRESH), ana, "s", 1.0)
    assert bool(res["findings"]) is listed
    assert res["verdict"] == ("alarm" if listed else "clear")


def test_review_is_its_own_calibrated_threshold():
    engine = _engine(THRESH)
    engine.card.review_thresholds = dict.fromkeys(CATS, 0.35)
    engine.card.review_thresholds_8bit = {"firearm": 0.1}
    engine.card.thresholds_8bit = dict.fromkeys(CATS, 0.5)
    verdicts = []
    for score, depth in [(0.41, 16), (0.36, 16), (0.3, 16), (0.3, 8), (0.05, 8)]:
        ana = _analysis([Finding("firearm", score, (0, 0, 40, 40))])
        ana.bit_depth = depth
        verdicts.append(build_result(engine, ana, "r", 1.0)["verdict"])
    # 0.3 is above half of 0.4 but under the calibrated 0.35: clear; on an 8-bit scan the
    # 8-bit review threshold (0.1) applies.
    assert verdicts == ["alarm", "review", "clear", "review", "clear"]
    # A review threshold above the alarm threshold is capped at it.
    engine.card.review_thresholds = dict.fromkeys(CATS, 0.9)
    ana = _analysis([Finding("firearm", 0.45, (0, 0, 40, 40))])
    assert build_result(engine, ana, "c", 1.0)["verdict"] == "alarm"


def test_risk_levels_hold_with_review_thresholds():
    engine = _engine(THRESH)
    engine.card.review_thresholds = dict.fromkeys(CATS, 0.1)
    risks = {}
    for score in (0.05, 0.1, 0.11, 0.4, 0.41, 0.8):
        ana = _analysis([Finding("firearm", score, (0, 0, 40, 40))])
        res = build_result(engine, ana, "k", 1.0)
        risks[score] = (res["verdict"], res["risk"])
    assert risks[0.05][0] == "clear" and risks[0.05][1] < REVIEW_RISK
    assert risks[0.1][0] == "clear" and risks[0.1][1] == pytest.approx(REVIEW_RISK)
    assert risks[0.11][0] == "review" and REVIEW_RISK < risks[0.11][1] < 0.5
    assert risks[0.4][0] == "review" and risks[0.4][1] == pytest.approx(0.5)
    assert risks[0.41][0] == "alarm" and risks[0.41][1] > 0.5
    assert risks[0.8][1] > risks[0.41][1]


def test_the_anomaly_level_comes_from_the_card():
    engine = _engine(THRESH)
    ana = _analysis([])
    ana.anomaly[2:6, 5:9] = 0.8
    assert build_result(engine, ana, "a", 1.0)["verdict"] == "review"
    engine.card.anomaly_level = 0.85
    assert build_result(engine, ana, "a", 1.0)["findings"] == []
    ana.bit_depth = 8
    engine.card.anomaly_level_8bit = 0.7
    (f,) = build_result(engine, ana, "a", 1.0)["findings"]
    assert f["source"] == "anomaly" and "above 0.70" in f["explanation"] and not f["alarm"]
