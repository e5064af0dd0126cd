"""Earlier scans of the same container or vehicle (``GET /api/v1/scans/{id}/related``).

Why: an experienced officer compares a load with the last time the same container or
truck came through (the same density where the reefer unit is, a new false wall). The
viewer lists these scans beside the one under review and shows one next to it.

Who sees what is decided as for the scan itself (``deps.owned_scan``): a station sees its
own scans only, so its list holds only its own; users and the admin key see every
station's. Where a review stands (status and verdict) is the officers' side: stations get
neither, as ``GET /scans/{id}`` gives them no ``review_status``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from inference.service.auth import AnyCaller
from inference.service.core import API
from inference.service.db import iso
from inference.service.deps import Verdict, get_service, owned_scan
from inference.service.records import Related
from inference.service.records.identifiers import identifiers_of
from inference.service.reviews import top_finding

router = APIRouter(prefix=API)


class Identifier(BaseModel):
    kind: Literal["container", "vehicle"]
    value: str = Field(description="normalised: upper case, letters and digits only")


class TopFinding(BaseModel):
    category: str | None
    score: float | None


class RelatedScan(BaseModel):
    """One earlier scan: enough to judge whether to open it."""

    scan_id: str
    station: str
    station_scan_id: str | None
    received_at: str
    scan_time: str | None
    verdict: Verdict | None = Field(description="its newest result's (none: no result)")
    risk: float | None
    findings: int
    top_finding: TopFinding | None
    review_status: Literal["pending", "reviewed", "reopened"] | None = Field(
        None, description="users and the admin only (absent for stations)"
    )
    review_verdict: Literal["release", "inspect"] | None = Field(
        None, description="the latest review's verdict (users and the admin only)"
    )
    matched: list[Identifier] = Field(description="the ids it shares with the scan asked about")
    width: int
    height: int
    pixel_pitch_mm: float | None
    url: str


class RelatedScans(BaseModel):
    """The scans received before this one that share a container or vehicle id with it,
    newest first (``total``: how many there are in all)."""

    scan_id: str
    identifiers: list[Identifier]
    items: list[RelatedScan]
    total: int
    limit: int


def _item(it: Related, for_users: bool) -> dict[str, Any]:
    scan, result = it.scan, it.result
    pitch = (scan.meta or {}).get("pixel_pitch_mm")
    out: dict[str, Any] = {
        "scan_id": scan.id,
        "station": it.station,
        "station_scan_id": scan.station_scan_id,
        "received_at": iso(scan.received_at),
        "scan_time": iso(scan.scan_time),
        "verdict": result.verdict if result else None,
        "risk": result.risk if result else None,
        "findings": len(result.body.get("findings") or []) if result else 0,
        "top_finding": top_finding(result.body) if result else None,
        "matched": [{"kind": k, "value": v} for k, v in it.matched],
        "width": scan.width,
        "height": scan.height,
        "pixel_pitch_mm": pitch if isinstance(pitch, (int, float)) else None,
        "url": f"{API}/scans/{scan.id}",
    }
    if for_users:
        out["review_status"] = it.review_status
        out["review_verdict"] = it.review_verdict
    return out


@router.get("/scans/{scan_id}/related", tags=["scans"], response_model=RelatedScans)
def related_scans(
    request: Request,
    who: AnyCaller,
    scan_id: str,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Earlier scans (received before this one) that share a container ISO id or the
    vehicle id with it, newest first, with their verdict, risk and, for users, where their
    review stands. Only scans the caller may read; 404 for a scan it may not."""
    service = get_service(request)
    scan, _ = owned_scan(service, who, scan_id)
    page = service.records.related_scans(scan, station_id=who.station_id, limit=limit)
    return {
        "scan_id": scan.id,
        "identifiers": [{"kind": k, "value": v} for k, v in identifiers_of(scan.meta)],
        "items": [_item(it, not who.is_station) for it in page.items],
        "total": page.total,
        "limit": limit,
    }
