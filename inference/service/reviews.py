"""The officers' side of the API: the review queue, reviews and re-openings.

A review judges one result of a scan: accept, reject or re-label each finding, confirm or
reject each manifest discrepancy of its cargo section (``cargo_review``), add boxes for
threats the model missed, and give the scan a verdict (release, or physical inspection)
with a comment. Reviews are append-only; a scan's review status is whichever
came last of its latest review and its latest re-opening:

- ``pending``: never reviewed; ``reviewed``; ``reopened``: a supervisor sent it back.

Who may do what (``auth`` has the dependencies):

- officers read every scan and the queue, write reviews, and see their own reviews;
- supervisors also see every officer's reviews and re-open a reviewed scan;
- a scan that is ``reviewed`` takes another review from a supervisor or admin, or from the
  officer who wrote its latest review (a correction), not from another officer: the
  second opinion is the supervisor's to ask for, by re-opening it;
- the admin key reads everything but writes no review (a review is a person's word).

Categories for re-labelling and added boxes are the serving model card's, so that every
reviewed box is a class the model can be trained on.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from inference.service.auth import AccountCaller, SupervisorAccount, UserCaller
from inference.service.cargo_review import (
    MAX_DISCREPANCIES,
    DiscrepancyDecision,
    decide_discrepancies,
    discrepancies_of,
)
from inference.service.core import API, Service, ServiceUnavailable
from inference.service.db import Review, ScanRecord, iso
from inference.service.deps import Verdict, get_service, owned_scan, station_name_for
from inference.service.evidence import review_dict
from inference.service.records.reviews import ScanClosed

router = APIRouter(prefix=API)

MAX_COMMENT = 4000
DECLARED_CHARS = 120


def model_categories(service: Service) -> list[str]:
    """The serving model card's categories (503 while no model is loaded)."""
    model = service.models.current
    if model is None:
        raise ServiceUnavailable("no model is loaded: the review categories come from its card")
    return list(model.engine.categories)


@router.get("/categories", tags=["reviews"])
def get_categories(request: Request, _who: UserCaller) -> dict[str, Any]:
    """The categories a review may give a finding or an added box."""
    service = get_service(request)
    model = service.models.current
    return {"categories": model_categories(service), "model_version": model and model.version}


# --------------------------------------------------------------------------- the queue


def declared_text(meta: dict[str, Any] | None) -> str:
    """The declared manifest in one short line: "coffee 9000 kg; tyres" (may be "")."""
    parts = []
    for item in (meta or {}).get("manifest") or []:
        if not isinstance(item, dict):
            continue
        text = str(item.get("description") or item.get("hs_code") or "?")
        weight = item.get("declared_weight_kg")
        if isinstance(weight, (int, float)) and not isinstance(weight, bool):
            text += f" {weight:g} kg"
        parts.append(text)
    line = "; ".join(parts)
    return line if len(line) <= DECLARED_CHARS else line[: DECLARED_CHARS - 1] + "…"


def top_finding(result: dict[str, Any]) -> dict[str, Any] | None:
    """The finding with the highest score (category and score), for the queue's row: the
    officer sees what the model thinks is there before opening the scan."""
    findings = [f for f in result.get("findings") or [] if isinstance(f, dict)]
    if not findings:
        return None
    best = max(findings, key=lambda f: float(f.get("score") or 0.0))
    return {"category": best.get("category"), "score": best.get("score")}


@router.get("/queue", tags=["reviews"])
def get_queue(
    request: Request,
    _who: UserCaller,
    status: Literal["pending", "reviewed", "all"] = "pending",
    verdict: Verdict | None = None,
    station: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$")] = None,
    since: Annotated[datetime | None, Query(description="received at or after (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Every station's scans, riskiest first then newest; "pending" includes re-opened ones.
    Poll with ``since`` = the newest ``received_at`` seen (inclusive: dedupe by id)."""
    page = get_service(request).records.queue(
        status=status,
        verdict=verdict,
        station_name=station,
        since=since,
        limit=limit,
        offset=offset,
    )
    items = []
    for it in page.items:
        scan, result = it.scan, it.result
        items.append(
            {
                "id": scan.id,
                "risk": result.risk if result else None,
                "verdict": result.verdict if result else None,
                "station": it.station,
                "station_scan_id": scan.station_scan_id,
                "received_at": iso(scan.received_at),
                "scan_time": iso(scan.scan_time),
                "declared": declared_text(scan.meta),
                "findings": len(result.body.get("findings", [])) if result else 0,
                "top_finding": top_finding(result.body) if result else None,
                "discrepancies": len(discrepancies_of(result.body)) if result else 0,
                "review_status": it.review_status,
                "review_verdict": it.review_verdict,
                "model_version": result.model_version if result else None,
                "width": scan.width,
                "height": scan.height,
            }
        )
    return {"items": items, "total": page.total, "limit": limit, "offset": offset}


# --------------------------------------------------------------------------- reviews


class Decision(BaseModel):
    finding_id: int = Field(ge=0, le=1_000_000)
    decision: Literal["accept", "reject", "relabel"]
    category: str | None = Field(None, max_length=100)


class Added(BaseModel):
    category: str = Field(max_length=100)
    box: list[float] = Field(min_length=4, max_length=4, description="x0, y0, x1, y1 (pixels)")


class ReviewBody(BaseModel):
    findings: list[Decision] = Field(default_factory=list, max_length=1000)
    discrepancies: list[DiscrepancyDecision] = Field(
        default_factory=list,
        max_length=MAX_DISCREPANCIES,
        description="a decision on each manifest discrepancy of the result (by index)",
    )
    added: list[Added] = Field(default_factory=list, max_length=500)
    verdict: Literal["release", "inspect"]
    comment: str = Field("", max_length=MAX_COMMENT)


class ReopenBody(BaseModel):
    reason: str = Field("", max_length=MAX_COMMENT)


def _no_nul(text: str, where: str) -> str:
    if "\x00" in text:
        raise HTTPException(422, f"{where}: NUL characters are not allowed")
    return text


def _decisions(body: ReviewBody, result: dict[str, Any], cats: list[str]) -> list[dict[str, Any]]:
    """Every finding of the result with the officer's decision (422 naming what is wrong)."""
    findings = {int(f["id"]): f for f in result.get("findings", [])}
    out: dict[int, dict[str, Any]] = {}
    for k, d in enumerate(body.findings):
        where = f"findings[{k}]"
        f = findings.get(d.finding_id)
        if f is None:
            known = ", ".join(str(i) for i in sorted(findings)) or "none"
            raise HTTPException(
                422, f"{where}: no finding {d.finding_id} in the scan's result (ids: {known})"
            )
        if d.finding_id in out:
            raise HTTPException(422, f"{where}: finding {d.finding_id} is decided twice")
        if d.decision == "relabel":
            if d.category is None:
                raise HTTPException(422, f"{where}: relabel needs a category")
            if d.category not in cats:
                raise HTTPException(
                    422, f"{where}: unknown category {d.category[:100]!r} (one of {cats})"
                )
            category: str | None = d.category
        else:
            if d.category is not None and d.category != f["category"]:
                raise HTTPException(
                    422, f"{where}: to change the category use the decision 'relabel'"
                )
            category = f["category"] if d.decision == "accept" else None
        out[d.finding_id] = {
            "finding_id": d.finding_id,
            "decision": d.decision,
            "category": category,
            "original_category": f["category"],
            "box": f["box"],
            "score": f.get("score"),
            "source": f.get("source"),
        }
    missing = sorted(set(findings) - set(out))
    if missing:
        raise HTTPException(
            422,
            "findings: every finding needs a decision (accept, reject or relabel); "
            f"none for {', '.join(str(i) for i in missing)}",
        )
    return [out[i] for i in sorted(out)]


def _added(body: ReviewBody, scan: ScanRecord, cats: list[str]) -> list[dict[str, Any]]:
    """The boxes drawn for missed threats, checked against the scan's size."""
    out = []
    for k, a in enumerate(body.added):
        where = f"added[{k}]"
        if a.category not in cats:
            raise HTTPException(
                422, f"{where}: unknown category {a.category[:100]!r} (one of {cats})"
            )
        x0, y0, x1, y1 = a.box
        if not all(math.isfinite(v) for v in a.box):
            raise HTTPException(422, f"{where}.box: numbers must be finite")
        if not (0 <= x0 < x1 <= scan.width and 0 <= y0 < y1 <= scan.height):
            raise HTTPException(
                422,
                f"{where}.box: [x0, y0, x1, y1] must satisfy 0 <= x0 < x1 <= {scan.width} and "
                f"0 <= y0 < y1 <= {scan.height} (the scan's pixels); got {a.box}",
            )
        out.append({"category": a.category, "box": [round(v, 1) for v in a.box]})
    return out


@router.post("/scans/{scan_id}/reviews", status_code=201, tags=["reviews"])
def post_review(
    request: Request, who: AccountCaller, scan_id: str, body: ReviewBody
) -> JSONResponse:
    """Review the scan's current result; 201 with the stored review (appended, never
    replacing an earlier one). 422 names what is wrong; 409 if another officer's review
    closed the scan (a supervisor can re-open it)."""
    service = get_service(request)
    scan, result = owned_scan(service, who, scan_id)
    if result is None:
        raise HTTPException(409, f"scan {scan_id} has no result to review")
    cats = model_categories(service)
    decisions = _decisions(body, result.body, cats)
    discrepancies = decide_discrepancies(body.discrepancies, result.body)
    added = _added(body, scan, cats)
    comment = _no_nul(body.comment, "comment")
    state = service.records.review_state(scan.id)
    if (
        state.status == "reviewed"
        and state.latest is not None
        and state.latest.user_id != who.user_id
        and not who.has_role("supervisor")
    ):
        raise HTTPException(
            409,
            f"scan {scan.id} was reviewed by {state.latest.user.name}; "
            "a supervisor can re-open it for another review",
        )
    assert who.user_id is not None and who.role is not None
    try:
        review = service.records.add_review(
            Review(
                scan_id=scan.id,
                result_id=result.id,
                user_id=who.user_id,
                user_role=who.role,
                model_version=result.model_version,
                verdict=body.verdict,
                comment=comment,
                findings=decisions,
                added=added,
                discrepancies=discrepancies,
            ),
            unless_closed_by_another=not who.has_role("supervisor"),
        )
    except ScanClosed as exc:  # another officer saved first, after the check above
        raise HTTPException(409, str(exc)) from None
    return JSONResponse(
        review_dict(review),
        status_code=201,
        headers={"Location": f"{API}/scans/{scan.id}/reviews"},
    )


@router.get("/scans/{scan_id}/reviews", tags=["reviews"])
def get_reviews(request: Request, who: UserCaller, scan_id: str) -> dict[str, Any]:
    """The scan's reviews, oldest first: every one for supervisors and admins, an officer's
    own for an officer."""
    service = get_service(request)
    scan, _ = owned_scan(service, who, scan_id)
    mine = None if who.has_role("supervisor") else who.user_id
    reviews = service.records.reviews(scan.id, user_id=mine)
    state = service.records.review_state(scan.id)
    return {
        "scan_id": scan.id,
        "station": station_name_for(scan, who),
        "review_status": state.status,
        "items": [review_dict(r) for r in reviews],
    }


@router.post("/scans/{scan_id}/reopen", tags=["reviews"])
def reopen(
    request: Request, who: SupervisorAccount, scan_id: str, body: ReopenBody | None = None
) -> dict[str, Any]:
    """Send a reviewed scan back to the queue (its reviews stay); 409 if not reviewed."""
    service = get_service(request)
    scan, _ = owned_scan(service, who, scan_id)
    reason = _no_nul(body.reason if body else "", "reason")
    state = service.records.review_state(scan.id)
    if state.status != "reviewed":
        raise HTTPException(409, f"scan {scan.id} is {state.status}: only a reviewed scan re-opens")
    assert who.user_id is not None
    row = service.records.add_reopening(scan.id, who.user_id, reason)
    return {
        "scan_id": scan.id,
        "review_status": "reopened",
        "by": who.name,
        "at": iso(row.created_at),
        "reason": row.reason,
    }
