"""The curves behind the evaluation pictures, on hand-made findings."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import ScanFindings
from training.report import detection_vs_far, precision_recall, scan_level_curve

BOX = np.array([[100.0, 100.0, 140.0, 140.0]])


def _scan(scores: list[float], labels: list[int], gt: bool, gt_label: int = 0) -> ScanFindings:
    n = len(scores)
    return ScanFindings(
        np.repeat(BOX, n, axis=0),
        np.array(scores, np.float64),
        np.array(labels, np.int64),
        BOX if gt else np.zeros((0, 4)),
        np.array([gt_label] if gt else [], np.int64),
    )


def test_precision_recall_matches_each_instance_once():
    # Two findings on one instance: the second is a duplicate, a false positive.
    scans = [_scan([0.9, 0.8], [0, 0], gt=True), _scan([0.7], [0], gt=True)]
    precision, recall = precision_recall(scans, 0)
    assert recall.tolist() == pytest.approx([0.5, 0.5, 1.0])
    assert precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3])


@pytest.mark.parametrize(
    ("clean_scores", "threat_scores", "point"),
    [
        ([0.2, 0.1], [0.9, 0.5], (0.0, 1.0)),  # separable: full detection, no false alarm
        ([0.6, 0.1], [0.9, 0.5], (0.5, 1.0)),  # one clean scan above a threat
    ],
)
def test_detection_vs_far_passes_through_the_operating_points(clean_scores, threat_scores, point):
    scans = [_scan([s], [0], gt=False) for s in clean_scores]
    scans += [_scan([s], [0], gt=True) for s in threat_scores]
    far, dr = detection_vs_far(scans, 0)
    assert far[0] == 0.0 and dr[0] == 0.0  # the highest threshold: nothing alarms
    assert far[-1] == 1.0 and dr[-1] == 1.0  # threshold 0: everything does
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(dr) >= 0)
    assert any(f == point[0] and d == point[1] for f, d in zip(far, dr, strict=True))


def test_scan_level_curve_scores_scans_by_score_over_threshold():
    # Category 1 has a high threshold: its 0.5 on a clean scan is only 0.5 x threshold.
    scans = [_scan([0.5], [1], gt=False), _scan([0.3], [0], gt=True)]
    far, dr = scan_level_curve(scans, {0: 0.2, 1: 1.0})
    assert (0.0, 1.0) in list(zip(far.tolist(), dr.tolist(), strict=True))
