"""The manifest check's part in a scan's risk and verdict, with every reason shown.

Why a table in code: a discrepancy is the station's declaration against the image, not a
score a card could calibrate; how much each kind should weigh is a policy, so it is one
table here (docs/cargo.md, "Risk and review"), and the result shows it per reason.

A discrepancy's **contribution** is ``weight x score`` on the risk's level scale, the one
the findings use (:func:`inference.result.score_level`): above 0.5 it asks for review,
above 1 it alarms. The scan's level is the largest contribution of all its reasons, the
findings' and the discrepancies' alike (the strongest reason decides, as the strongest
finding always has), and ``risk = 1 - 2**-level``. So the verdict levels stay at fixed
risks (alarm above 0.5, review above 0.29) and a scan with no discrepancy keeps exactly
the risk and verdict its findings give it.
"""

from __future__ import annotations

from collections.abc import Sequence

from inference.contracts import ManifestCheck, ResultFinding, RiskReason

__all__ = [
    "ALARM_LEVEL",
    "DISCREPANCY_WEIGHTS",
    "REVIEW_LEVEL",
    "combine",
    "discrepancy_reasons",
    "finding_reasons",
]

REVIEW_LEVEL = 0.5
"""A contribution above this asks for review (a finding at its review threshold)."""
ALARM_LEVEL = 1.0
"""A contribution above this alarms (a finding at its alarm threshold)."""

DISCREPANCY_WEIGHTS: dict[str, float] = {
    # Declared empty, yet loaded: the classic smuggling route (goods behind the front
    # wall of an "empty" box). Alarms above a score of 0.8, asks for review above 0.4
    # (so always: a discrepancy is reported with a score of 0.5 or more).
    "declared_empty_but_loaded": 1.25,
    # Goods heavier than declared and of another material: review above 0.5; never an
    # alarm on its own.
    "undeclared_goods": 1.0,
    # Goods declared, the box empty: a paper load (fraud, or the goods went elsewhere).
    # Review above a score of 0.56; never an alarm on its own.
    "declared_loaded_but_empty": 0.9,
    # The declared goods' material is not what dual energy sees: review above 0.56.
    "false_description": 0.9,
    # Off the declared weight by more than the mass estimate's error explains. The
    # weakest: the estimate's tail is long (docs/cargo.md), so a mismatch just over the
    # flag (score 0.5) raises the risk without sending the scan to review; above a score
    # of 0.63 it does.
    "weight_mismatch": 0.8,
}
"""Weight of each discrepancy kind: its contribution is ``weight x score``."""


def _said(contribution: float) -> str:
    if contribution > ALARM_LEVEL:
        return f"above {ALARM_LEVEL:g}: alarm"
    if contribution > REVIEW_LEVEL:
        return f"above {REVIEW_LEVEL:g}: for review"
    return f"not above {REVIEW_LEVEL:g}: raises the risk only"


def discrepancy_reasons(check: ManifestCheck) -> list[RiskReason]:
    """One reason per discrepancy of the manifest check (``ref``: its index)."""
    out = []
    for k, d in enumerate(check.discrepancies):
        weight = DISCREPANCY_WEIGHTS[d.kind]
        contribution = weight * d.score
        out.append(
            RiskReason(
                source="manifest",
                ref=k,
                kind=d.kind,
                score=d.score,
                weight=weight,
                contribution=round(contribution, 4),
                decides=False,
                explanation=(
                    f"{d.explanation}; {d.kind.replace('_', ' ')} weighs {weight:g} x score "
                    f"{d.score:.2f} = {contribution:.2f} ({_said(contribution)})"
                ),
            )
        )
    return out


def finding_reasons(
    findings: Sequence[ResultFinding],
    levels: Sequence[float],
    hidden: tuple[float, str, float] | None,
) -> list[RiskReason]:
    """One reason per finding shown (``levels``: each one's level, in the same order), and
    ``hidden`` = (level, category, score) of the strongest detector score under its review
    threshold when it outranks them all (it ranks a clear scan in the queue)."""
    out = [
        RiskReason(
            source="finding",
            ref=f.id,
            kind=f.category,
            score=f.score,
            weight=None,
            contribution=round(level, 4),
            decides=False,
            explanation=f.explanation,
        )
        for f, level in zip(findings, levels, strict=True)
    ]
    if hidden is not None and hidden[0] > max(levels, default=0.0):
        level, category, score = hidden
        out.append(
            RiskReason(
                source="finding",
                ref=None,
                kind=category,
                score=round(min(max(score, 0.0), 1.0), 4),
                weight=None,
                contribution=round(level, 4),
                decides=False,
                explanation=(
                    f"{category} score {score:.2f} under its review threshold (not shown): "
                    "ranks the scan only"
                ),
            )
        )
    return out


def combine(
    level: float, alarm: bool, review: bool, reasons: list[RiskReason], check: ManifestCheck
) -> tuple[float, bool, bool, list[RiskReason]]:
    """The findings' (level, alarm, review) with the manifest check's discrepancies laid
    over them: (level, alarm, review, every reason strongest first, the one that decides
    marked). Exact contributions decide; the reasons show them rounded."""
    manifest = discrepancy_reasons(check)
    for d in check.discrepancies:
        contribution = DISCREPANCY_WEIGHTS[d.kind] * d.score
        level = max(level, contribution)
        alarm = alarm or contribution > ALARM_LEVEL
        review = review or contribution > REVIEW_LEVEL
    ranked = sorted([*reasons, *manifest], key=lambda r: (-r.contribution, r.source != "finding"))
    if ranked and ranked[0].contribution > 0:
        ranked[0].decides = True
    return level, alarm, review and not alarm, ranked
