"""training.cargo_metrics: contents verification measured against the generator's truth."""

from __future__ import annotations

import pytest

from inference.cargo import KINDS
from training.cargo_metrics import (
    CargoRecord,
    ContainerOutcome,
    cargo_figures,
    cargo_lines,
    station_metadata,
    threshold_at,
)


def _record(
    discrepancy: str | None, evidence: dict[str, float], flagged: set[str], empty: bool = False
) -> CargoRecord:
    box = ContainerOutcome("empty" if empty else "cartons", 0.0 if empty else 8000.0, 0.9,
                           empty, 0.0 if empty else 8800.0, "organic")  # fmt: skip
    return CargoRecord("s", discrepancy, empty, True, (box,), frozenset(flagged), evidence, 5.0)


def test_the_threshold_lets_at_most_the_rate_of_scores_pass() -> None:
    scores = [0.0] * 15 + [0.2, 0.3, 0.4, 0.6, 0.9]  # 20 consistent scans
    t = threshold_at(scores, 0.05)
    assert sum(s > t for s in scores) == 1  # 5 % of 20
    assert threshold_at(scores, 0.0) == 0.9
    assert sum(s > threshold_at([0.0] * 20, 0.05) for s in [0.0] * 20) == 0


def test_detection_at_a_fixed_false_flag_rate_and_at_the_shipped_thresholds() -> None:
    consistent = [_record(None, {"weight_mismatch": 0.1 * k}, set()) for k in range(10)]
    consistent.append(_record(None, {"weight_mismatch": 0.95}, {"weight_mismatch"}))
    consistent.append(_record(None, {}, set(), empty=True))
    lies = [
        _record("weight_mismatch", {"weight_mismatch": 0.97}, {"weight_mismatch"}),
        _record("weight_mismatch", {"weight_mismatch": 0.85}, {"weight_mismatch"}),
        _record("weight_mismatch", {"weight_mismatch": 0.45}, set()),
    ]
    fig = cargo_figures(consistent + lies, false_flag_rate=0.1)
    kind = fig["manifest"]["kinds"]["weight_mismatch"]
    # 12 consistent scans at 10 %: one may score above the threshold (0.9 < t <= 0.95).
    assert kind["false_flag_rate"] == pytest.approx(1 / 12)
    assert kind["detection_rate_at_false_flag_rate"] == pytest.approx(1 / 3)
    assert kind["detection_rate_at_shipped"] == pytest.approx(2 / 3)
    assert fig["manifest"]["consistent_flagged_at_shipped"] == pytest.approx(1 / 12)
    assert fig["manifest"]["consistent_empty_flagged_at_shipped"] == 0.0
    assert set(fig["manifest"]["kinds"]) == set(KINDS)
    assert fig["mass_error"]["all"]["median_abs"] == pytest.approx(0.1)
    assert fig["empty_loaded"]["right"] == 1.0
    assert any("weight_mismatch" in line for line in cargo_lines(fig))


def test_the_station_sends_the_manifest_without_the_generator_s_box_index() -> None:
    line = {"container": 1, "hs_code": "0901.11", "description": "coffee"}
    line |= {"declared_weight_kg": 9000.0, "quantity": 10}
    entry = {"scanner": {"pixel_pitch_mm": 5.0}, "declared_manifest": [line], "containers": []}
    meta = station_metadata(entry)
    assert meta.pixel_pitch_mm == 5.0
    assert meta.manifest[0].container is None and meta.manifest[0].declared_weight_kg == 9000.0
