"""Officers' decisions on the manifest check, and the cargo part of what leaves the service.

A review decides each discrepancy of the result's manifest check (``cargo.manifest_check
.discrepancies``, by index) as it decides each finding: ``confirm`` (the scan does not
match its declaration) or ``reject`` (a false flag). The decision is stored with a
snapshot of the discrepancy (kind, container, region, score, explanation), so the review
reads alone, and it goes wherever the review goes: the signed review statement, its audit
entry, the review export, the DICOS report and the evidence package (docs/cargo.md,
"Risk and review").

The evidence package's ``cargo.json`` (:func:`cargo_part`) gathers the cargo section, the
risk's reasons and every review's decisions in one place for a reader without our tools;
:func:`check_cargo_part` holds it against ``result.json`` and ``reviews.json``, so the
parts cannot say different things.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

CARGO = "cargo.json"
"""The evidence package's cargo member (only where the result has a cargo section)."""
MAX_DISCREPANCIES = 100


class DiscrepancyDecision(BaseModel):
    """An officer's decision on one manifest discrepancy of the result."""

    index: int = Field(ge=0, le=1_000_000, description="its index in manifest_check.discrepancies")
    decision: Literal["confirm", "reject"]


def discrepancies_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest check's discrepancies of a result body ([] without a cargo section)."""
    cargo = result.get("cargo")
    check = cargo.get("manifest_check") if isinstance(cargo, dict) else None
    found = check.get("discrepancies") if isinstance(check, dict) else None
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def decide_discrepancies(
    decisions: Sequence[DiscrepancyDecision], result: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """Every discrepancy of the result with the officer's decision, oldest index first
    (None when the result has none); 422 naming an unknown index, a discrepancy decided
    twice or one left undecided."""
    from fastapi import HTTPException  # here: `cargoscan verify` reads this module offline

    found = discrepancies_of(result)
    out: dict[int, dict[str, Any]] = {}
    for k, d in enumerate(decisions):
        where = f"discrepancies[{k}]"
        if not 0 <= d.index < len(found):
            known = ", ".join(str(i) for i in range(len(found))) or "none"
            raise HTTPException(
                422,
                f"{where}: no manifest discrepancy {d.index} in the scan's result "
                f"(indices: {known})",
            )
        if d.index in out:
            raise HTTPException(422, f"{where}: discrepancy {d.index} is decided twice")
        seen = found[d.index]
        out[d.index] = {
            "index": d.index,
            "decision": d.decision,
            "kind": seen.get("kind"),
            "container": seen.get("container"),
            "box": seen.get("box"),
            "score": seen.get("score"),
            "explanation": seen.get("explanation"),
        }
    missing = [i for i in range(len(found)) if i not in out]
    if missing:
        raise HTTPException(
            422,
            "discrepancies: every manifest discrepancy needs a decision (confirm or reject); "
            f"none for {', '.join(str(i) for i in missing)}",
        )
    return [out[i] for i in sorted(out)] or None


# --------------------------------------------------------------------------- the package


def _decisions(review: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"index": d.get("index"), "kind": d.get("kind"), "decision": d.get("decision")}
        for d in review.get("discrepancies") or []
        if isinstance(d, dict)
    ]


def cargo_part(
    result: dict[str, Any], result_id: int, reviews: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """``cargo.json``: the result's cargo section and risk reasons, and each review's
    decisions on its discrepancies (the reviews of this result, oldest first); None when
    the result has no cargo section."""
    if not isinstance(result.get("cargo"), dict):
        return None
    return {
        "scan_id": result.get("scan_id"),
        "result_id": result_id,
        "verdict": result.get("verdict"),
        "risk": result.get("risk"),
        "risk_reasons": result.get("risk_reasons"),
        "cargo": result["cargo"],
        "reviews": [
            {
                "review_id": r.get("id"),
                "officer": r.get("officer"),
                "created_at": r.get("created_at"),
                "verdict": r.get("verdict"),
                "discrepancies": _decisions(r),
            }
            for r in reviews
            if r.get("result_id") == result_id
        ],
    }


def check_cargo_part(part: Any, result: Any, reviews: Any, result_id: Any) -> list[str]:
    """Problems of ``cargo.json`` against ``result.json`` and ``reviews.json`` (and of
    the reviews' decisions against the discrepancies they name): [] when they agree."""
    if not isinstance(result, dict) or not isinstance(reviews, list):
        return []  # those files' own problems are reported where they are read
    reviews = [r for r in reviews if isinstance(r, dict)]
    problems = []
    found = discrepancies_of(result)
    for r in reviews:
        if r.get("result_id") != result_id:
            continue  # a review of an earlier result judged that result's discrepancies
        for d in r.get("discrepancies") or []:
            i = d.get("index") if isinstance(d, dict) else None
            if not isinstance(i, int) or not 0 <= i < len(found):
                problems.append(
                    f"reviews.json: review {r.get('id')} decides discrepancy {i}, which "
                    "result.json does not have"
                )
            elif d.get("kind") != found[i].get("kind"):
                problems.append(
                    f"reviews.json: review {r.get('id')} decides discrepancy {i} as "
                    f"{d.get('kind')}, but result.json has {found[i].get('kind')}"
                )
    if part is None:
        return problems
    want = cargo_part(result, result_id, reviews) if isinstance(result_id, int) else None
    if want is None:
        problems.append(f"{CARGO}: the package's result has no cargo section to match")
        return problems
    differ = [k for k in want if not isinstance(part, dict) or part.get(k) != want[k]]
    if differ:
        problems.append(f"{CARGO}: {', '.join(differ)} differ from result.json and reviews.json")
    return problems
