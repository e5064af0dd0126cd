"""training.cargo_metrics: contents verification measured against the generator's truth."""

from __future__ import annotations

import pytest

from inference.cargo import KINDS
from training.cargo_metrics import (
    CargoRecord,
    ContainerOutcome,
    cargo_figures,
    cargo_lines,
    hidden_goods_kg,
    station_metadata,
    threshold_at,
)


def _record(
    discrepancy: str | None,
    evidence: dict[str, float],
    flagged: set[str],
    empty: bool = False,
    hidden_kg: float = 0.0,
) -> CargoRecord:
    box = ContainerOutcome("empty" if empty else "cartons", 0.0 if empty else 8000.0, 0.9,
                           empty, 0.0 if empty else 8800.0, "organic")  # fmt: skip
    return CargoRecord("s", discrepancy, empty, hidden_kg <= 0, hidden_kg, (box,),
                       frozenset(flagged), evidence, 5.0)  # fmt: skip


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


def test_goods_hidden_in_a_declared_empty_box_are_not_a_false_flag() -> None:
    """A stowaway in a box declared empty is what the check is for: that scan leaves the
    consistent set (whose flags are false ones) and is counted apart."""
    consistent = [_record(None, {}, set(), empty=True) for _ in range(9)]
    consistent.append(_record(None, {"weight_mismatch": 0.7}, {"weight_mismatch"}))
    hiding = [
        _record(
            None,
            {"declared_empty_but_loaded": 0.9},
            {"declared_empty_but_loaded"},
            empty=True,
            hidden_kg=95.0,
        ),
        _record(None, {}, set(), empty=True, hidden_kg=2.5),
    ]
    fig = cargo_figures(consistent + hiding)
    man = fig["manifest"]
    assert man["consistent_scans"] == 10
    assert man["consistent_flagged_at_shipped"] == pytest.approx(0.1)
    hid = man["hidden_goods"]
    assert hid["scans"] == 2 and hid["empty_vehicles"] == 2
    assert hid["flagged_at_shipped"] == 0.5
    assert hid["empty_flagged_declared_empty_but_loaded"] == 0.5
    assert hid["hidden_kg_median"] == pytest.approx(48.75)
    assert any("hidden in the cargo space" in line for line in cargo_lines(fig))


def test_sets_without_the_hidden_mass_count_every_threat_as_hidden() -> None:
    entry = {"containers": [{"box": [0, 0, 9, 9], "mass_kg": 0.0}], "clean": False}
    assert hidden_goods_kg(entry) == float("inf")
    assert hidden_goods_kg(entry | {"clean": True}) == 0.0
    entry["containers"][0]["hidden_kg"] = 80.0
    assert hidden_goods_kg(entry) == 80.0


def test_the_station_sends_the_manifest_without_the_generator_s_box_index() -> None:
    line = {"container": 1, "hs_code": "0901.11", "description": "coffee"}
    line |= {"declared_weight_kg": 9000.0, "quantity": 10}
    entry = {"scanner": {"pixel_pitch_mm": 5.0}, "declared_manifest": [line], "containers": []}
    meta = station_metadata(entry)
    assert meta.pixel_pitch_mm == 5.0
    assert meta.manifest[0].container is None and meta.manifest[0].declared_weight_kg == 9000.0
