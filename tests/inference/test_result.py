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
        (0.2, "clear", False),  # exactly half
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
    engine.card["thresholds_8bit"] = {"firearm": 0.6}
    finding = [Finding("firearm", 0.5, (1, 2, 30, 40)), Finding("person", 0.45, (50, 2, 90, 40))]
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
    assert "8-bit" in by_cat["firearm"]["explanation"]
    assert "above the alarm threshold 0.40" in by_cat["person"]["explanation"]
    assert res["verdict"] == "alarm"  # person 0.45 > 0.40 still alarms
    del engine.card["thresholds_8bit"]
    assert (
        "above the alarm threshold 0.40"
        in build_result(engine, eight, "c", 1.0)["findings"][0]["explanation"]
    )


def test_risk_orders_verdicts_whatever_the_thresholds():
    low = dict(THRESH, narcotics=0.1)
    res = [
        build_result(_engine(low), _analysis([Finding(c, s, (0, 0, 5, 5))]), "x", 1.0)
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
        _analysis([Finding("person", DEFAULT_THRESHOLD + 0.01, (0, 0, 9, 9))]),
        "u",
        1,
    )
    assert res["verdict"] == "alarm"
    assert "uncalibrated" in res["findings"][0]["explanation"]


def test_a_zero_threshold_alarms_on_any_finding_of_the_category():
    # 0 = no clean validation scan had a finding of this category at all.
    res = build_result(
        _engine(dict(THRESH, currency=0.0)), _analysis([Finding("currency", 0.06, (0, 0, 9, 9))]),
        "z", 1.0,
    )  # fmt: skip
    assert res["verdict"] == "alarm" and res["risk"] == 1.0


def test_anomaly_regions_become_review_findings_in_original_pixels():
    # scale 0.5: model pixel = 2 original pixels; stride 4 -> a cell is 8 original pixels
    ana = _analysis([], scale=0.5)
    ana.anomaly[2:4, 5:8] = 0.8  # cells x 5..7, y 2..3 -> model px x 20..32, y 8..16
    ana.anomaly[10, 30] = 0.6  # a second, separate region
    res = build_result(_engine(THRESH), ana, "a", 1.0, anomaly_map_url="/m")
    assert res["verdict"] == "review" and res["anomaly_map"] == "/m"
    assert REVIEW_RISK <= res["risk"] < 0.5
    boxes = [(f["score"], f["box"]) for f in res["findings"]]
    assert boxes[0] == (0.8, [40.0, 16.0, 64.0, 32.0])
    assert boxes[1][0] == 0.6 and boxes[1][1] == [240.0, 80.0, 248.0, 88.0]
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
