"""The manifest check in the scan's risk and verdict (inference.risk, docs/cargo.md "Risk
and review"): each discrepancy kind's weight times its score, the strongest reason deciding,
every reason shown; a scan without the cargo analysis or without a discrepancy keeps the
findings' risk and verdict exactly."""

from __future__ import annotations

import math

import pytest

from inference.contracts import CargoContainer, CargoReport, ManifestCheck, ManifestDiscrepancy
from inference.engine import Finding
from inference.result import REVIEW_RISK, build_result, risk_from_ratio
from inference.risk import DISCREPANCY_WEIGHTS
from tests.inference.test_result import THRESH, _analysis, _engine

BOX = [10, 10, 290, 90]


def _report(*discrepancies: tuple[str, float], status: str | None = None) -> CargoReport:
    check = ManifestCheck(
        status=status or ("discrepancies" if discrepancies else "consistent"),
        discrepancies=[
            ManifestDiscrepancy(
                kind=kind, score=score, container=0, box=BOX, explanation=f"{kind} here"
            )
            for kind, score in discrepancies
        ],
    )
    box = CargoContainer(box=BOX, empty=False, score=0.95, mass_kg=8000.0, fill=0.5,
                         kind="organic, packaged", material="organic", packing="packaged",
                         tank=False, load_box=BOX)  # fmt: skip
    return CargoReport(containers=[box], manifest_check=check, processing_ms=5.0)


def _result(findings: list[Finding], cargo: CargoReport | None) -> dict:
    analysis = _analysis(findings)
    analysis.cargo = cargo
    return build_result(_engine(THRESH), analysis, "s1", 10.0)


FINDINGS = [
    [],
    [Finding("firearm", 0.1, (1, 2, 40, 50))],  # under review: ranks the scan only
    [Finding("narcotics", 0.3, (1, 2, 40, 50))],  # review
    [Finding("firearm", 0.9, (1, 2, 40, 50))],  # alarm
]


@pytest.mark.parametrize("findings", FINDINGS)
@pytest.mark.parametrize("status", ["no_manifest", "no_container", "consistent"])
def test_without_a_discrepancy_the_risk_and_verdict_are_the_findings(findings, status):
    plain = _result(findings, None)
    assert "cargo" not in plain and "risk_reasons" not in plain  # cargo analysis off
    checked = _result(findings, _report(status=status))
    assert (checked["risk"], checked["verdict"]) == (plain["risk"], plain["verdict"])
    assert checked["findings"] == plain["findings"]
    reasons = checked["risk_reasons"]
    assert all(r["source"] == "finding" and r["weight"] is None for r in reasons)
    if plain["risk"] > 0:  # the strongest finding, shown or not, is the reason
        (top,) = [r for r in reasons if r["decides"]]
        assert risk_from_ratio(top["contribution"]) == pytest.approx(plain["risk"], abs=1e-4)
    else:
        assert reasons == []


@pytest.mark.parametrize(
    ("kind", "score", "verdict"),
    [
        ("declared_empty_but_loaded", 0.95, "alarm"),  # 1.25 x 0.95 = 1.19
        ("declared_empty_but_loaded", 0.8, "review"),  # exactly 1: not above it
        ("declared_empty_but_loaded", 0.5, "review"),  # 0.625
        ("undeclared_goods", 0.8, "review"),
        ("declared_loaded_but_empty", 1.0, "review"),  # 0.9: never an alarm on its own
        ("declared_loaded_but_empty", 0.55, "clear"),  # 0.495
        ("false_description", 0.7, "review"),
        ("weight_mismatch", 0.7, "review"),  # 0.56
        ("weight_mismatch", 0.55, "clear"),  # 0.44: raises the risk only
    ],
)
def test_a_discrepancy_weighs_its_kinds_weight_times_its_score(kind, score, verdict):
    clear = _result([], _report())
    res = _result([], _report((kind, score)))
    contribution = DISCREPANCY_WEIGHTS[kind] * score
    assert res["verdict"] == verdict
    assert res["risk"] == pytest.approx(risk_from_ratio(contribution))
    assert res["risk"] > clear["risk"] == 0.0
    # the verdict levels stay at their fixed risks
    assert (res["risk"] > 0.5) == (verdict == "alarm")
    assert (REVIEW_RISK < res["risk"] <= 0.5) == (verdict == "review")
    (reason,) = res["risk_reasons"]
    assert reason == {
        "source": "manifest",
        "ref": 0,
        "kind": kind,
        "score": score,
        "weight": DISCREPANCY_WEIGHTS[kind],
        "contribution": round(contribution, 4),
        "decides": True,
        "explanation": reason["explanation"],
    }
    assert reason["explanation"].startswith(f"{kind} here; ")
    assert f"x score {score:.2f} = {contribution:.2f}" in reason["explanation"]


def test_the_strongest_reason_decides_and_every_reason_is_listed():
    # A review finding (level about 0.75) and a weak weight mismatch: the finding decides.
    weak = _result([FINDINGS[2][0]], _report(("weight_mismatch", 0.55)))
    assert weak["verdict"] == "review"
    assert weak["risk"] == _result([FINDINGS[2][0]], None)["risk"]
    assert [(r["source"], r["decides"]) for r in weak["risk_reasons"]] == [
        ("finding", True),
        ("manifest", False),
    ]
    assert weak["risk_reasons"][0]["ref"] == weak["findings"][0]["id"]
    # The same finding and a declared-empty box with a load: the manifest decides, alarm.
    strong = _result([FINDINGS[2][0]], _report(("declared_empty_but_loaded", 1.0)))
    assert strong["verdict"] == "alarm" and strong["risk"] == risk_from_ratio(1.25)
    assert [(r["source"], r["decides"]) for r in strong["risk_reasons"]] == [
        ("manifest", True),
        ("finding", False),
    ]
    # Two discrepancies: both listed (ref = their index), strongest first.
    two = _result([], _report(("weight_mismatch", 0.9), ("false_description", 0.7)))
    assert [(r["ref"], r["kind"]) for r in two["risk_reasons"]] == [
        (0, "weight_mismatch"),
        (1, "false_description"),
    ]
    assert two["risk"] == pytest.approx(risk_from_ratio(0.8 * 0.9))
    assert math.isclose(sum(r["decides"] for r in two["risk_reasons"]), 1)


def test_every_discrepancy_kind_has_a_weight():
    kinds = ManifestDiscrepancy.model_fields["kind"].annotation.__args__
    assert set(kinds) == set(DISCREPANCY_WEIGHTS)
    assert max(DISCREPANCY_WEIGHTS, key=DISCREPANCY_WEIGHTS.get) == "declared_empty_but_loaded"
    assert min(DISCREPANCY_WEIGHTS, key=DISCREPANCY_WEIGHTS.get) == "weight_mismatch"
