"""Detection rate at a fixed false-alarm rate, checked against counts done by hand."""

from __future__ import annotations

import numpy as np
import pytest

from inference.boxes import box_iou, hits, iou_matrix
from training.metrics import (
    ScanFindings,
    band_names,
    detection_by_attenuation,
    detection_by_concealment,
    detection_by_contrast,
    detection_rate_at_far,
    threshold_at_far,
)


def _scan(findings: list[tuple[list[float], float, int]], truth: list[tuple[list[float], int]]):
    return ScanFindings(
        boxes=np.array([f[0] for f in findings], np.float64).reshape(-1, 4),
        scores=np.array([f[1] for f in findings], np.float64),
        labels=np.array([f[2] for f in findings], np.int64),
        gt_boxes=np.array([t[0] for t in truth], np.float64).reshape(-1, 4),
        gt_labels=np.array([t[1] for t in truth], np.int64),
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 10, 10], [0, 0, 5, 5], 25 / 100),
    ],
)
def test_iou_by_hand(a, b, expected):
    assert iou_matrix([a], [b])[0, 0] == pytest.approx(expected)
    assert box_iou(a, b) == pytest.approx(expected)  # the one-pair form cargo checks use


@pytest.mark.parametrize(
    ("pred", "gt", "hit"),
    [
        ([0, 0, 10, 10], [2, 2, 12, 12], True),  # IoU 0.47
        ([0, 0, 40, 40], [15, 15, 25, 25], True),  # IoU 0.06 but centre inside
        ([0, 0, 10, 10], [6, 6, 30, 30], False),  # IoU 0.03, centre (5, 5) outside
    ],
)
def test_a_hit_is_iou_or_centre_inside(pred, gt, hit):
    assert bool(hits([pred], [gt])[0, 0]) is hit


@pytest.mark.parametrize(
    ("far", "expected"),
    [(0.0, 0.9), (0.1, 0.8), (0.2, 0.7), (0.25, 0.7), (1.0, 0.0)],
)
def test_threshold_lets_through_at_most_far_of_clean_scans(far, expected):
    clean = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    t = threshold_at_far(clean, far)
    assert t == pytest.approx(expected)
    assert np.mean(clean > t) <= far


def test_threshold_needs_clean_scans_and_a_valid_rate():
    with pytest.raises(ValueError, match="no clean scans"):
        threshold_at_far(np.array([]), 0.01)
    with pytest.raises(ValueError, match="within"):
        threshold_at_far(np.array([0.5]), 1.5)


def test_detection_rate_at_far_counts_instances_by_hand():
    firearm, narcotics = 0, 1
    scans = [
        # 4 clean scans: firearm false alarms at 0.6 and 0.2, one narcotics at 0.9.
        _scan([([0, 0, 5, 5], 0.6, firearm)], []),
        _scan([([0, 0, 5, 5], 0.2, firearm), ([9, 9, 20, 20], 0.9, narcotics)], []),
        _scan([], []),
        _scan([], []),
        # 3 firearms: hit at 0.8, hit at 0.5 (centre inside), missed (finding elsewhere).
        _scan([([10, 10, 20, 20], 0.8, firearm)], [([11, 11, 21, 21], firearm)]),
        _scan(
            [([30, 30, 70, 70], 0.5, firearm), ([100, 100, 110, 110], 0.99, firearm)],
            [([45, 45, 55, 55], firearm), ([300, 300, 310, 310], firearm)],
        ),
        # A narcotics finding on a firearm does not count for firearms.
        _scan([([0, 0, 10, 10], 0.95, narcotics)], [([0, 0, 10, 10], firearm)]),
    ]
    rates, thresholds = detection_rate_at_far(scans, firearm, [0.0, 0.25, 0.5])
    # FAR 0: threshold at the top clean score 0.6 -> only the 0.8 hit counts: 1 of 4.
    assert thresholds[0.0] == pytest.approx(0.6) and rates[0.0] == pytest.approx(1 / 4)
    # FAR 0.25: one clean scan may alarm -> threshold 0.2 -> hits 0.8 and 0.5: 2 of 4.
    assert thresholds[0.25] == pytest.approx(0.2) and rates[0.25] == pytest.approx(2 / 4)
    assert thresholds[0.5] == pytest.approx(0.0) and rates[0.5] == pytest.approx(2 / 4)


def test_detection_by_attenuation_counts_each_band_by_hand():
    firearm, narcotics = 0, 1
    thresholds = {firearm: 0.5, narcotics: 0.5}
    found = _scan(
        [([0, 0, 10, 10], 0.9, firearm), ([50, 50, 60, 60], 0.4, narcotics)],
        [([0, 0, 10, 10], firearm), ([50, 50, 60, 60], narcotics), ([90, 0, 99, 9], firearm)],
    )
    found.gt_attenuation = np.array([1.0, 4.0, 7.0])  # 7 is on an edge: it opens ">=7"
    deep = _scan([([0, 0, 10, 10], 0.95, firearm)], [([0, 0, 10, 10], firearm)])
    deep.gt_attenuation = np.array([9.5])
    scans = [found, deep, _scan([([0, 0, 5, 5], 0.3, firearm)], [])]
    assert band_names() == ["<3", "3-5", "5-7", ">=7"]
    every = detection_by_attenuation(scans, None, thresholds)
    assert {b: (v["detected"], v["instances"]) for b, v in every.items()} == {
        "<3": (1, 1),  # the firearm found at 0.9
        "3-5": (0, 1),  # narcotics at 0.4, under its threshold
        "5-7": (0, 0),
        ">=7": (1, 2),  # the unfound firearm at 7.0 and the one found at 9.5
    }
    assert every["5-7"]["rate"] is None and every[">=7"]["rate"] == pytest.approx(0.5)
    only_narcotics = detection_by_attenuation(scans, narcotics, thresholds)
    assert sum(v["instances"] for v in only_narcotics.values()) == 1
    assert only_narcotics["3-5"]["detected"] == 0


def test_detection_by_attenuation_needs_the_attenuations():
    scans = [_scan([], [([0, 0, 10, 10], 0)])]
    with pytest.raises(ValueError, match="gt_attenuation"):
        detection_by_attenuation(scans, None, {0: 0.5})


def test_detection_by_contrast_and_by_concealment_count_by_hand():
    firearm, currency = 0, 3
    thresholds = {firearm: 0.5, currency: 0.5}
    scan = _scan(
        [([0, 0, 10, 10], 0.9, currency), ([50, 50, 60, 60], 0.8, firearm)],
        [([0, 0, 10, 10], currency), ([50, 50, 60, 60], firearm), ([90, 0, 99, 9], currency)],
    )
    # Bank notes packed among paper change nothing (-0.02); a hollow that displaced
    # denser cargo shows by its size, whatever the sign (-0.5); NaN: not recorded.
    scan.gt_contrast = np.array([0.2, -0.5, -0.02])
    scan.gt_places = ("load", "floor_cavity", "load")
    unknown = _scan([([0, 0, 10, 10], 0.9, firearm)], [([0, 0, 10, 10], firearm)])
    unknown.gt_contrast = np.array([np.nan])
    scans = [scan, unknown, _scan([([0, 0, 5, 5], 0.3, firearm)], [])]
    by_contrast = detection_by_contrast(scans, None, thresholds)
    assert {b: (v["detected"], v["instances"]) for b, v in by_contrast.items()} == {
        "<0.1": (0, 1),
        "0.1-0.3": (1, 1),
        "0.3-1": (1, 1),
        ">=1": (0, 0),
    }
    only_currency = detection_by_contrast(scans, currency, thresholds)
    assert sum(v["instances"] for v in only_currency.values()) == 2
    by_place = detection_by_concealment(scans, None, thresholds)
    # The most common place first; the instance with no recorded place is left out.
    assert list(by_place) == ["load", "floor_cavity"]
    assert by_place["load"] == {"instances": 2, "detected": 1, "rate": 0.5}
    assert by_place["floor_cavity"]["rate"] == 1.0
