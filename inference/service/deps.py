"""What the routers share: the running service of a request, the scan a caller may read,
and the query types more than one router takes.

Station isolation is in the queries, not in filters after them: a station's lookups
carry its id, so another station's scan is simply not found (404, never 403, which would
confirm the id exists). Users (officers, supervisors, admins) and the admin key read every
station's scans.
"""

from __future__ import annotations

import re
from typing import Literal

from fastapi import HTTPException, Request

from inference.render import VIEWS
from inference.service.auth import Principal
from inference.service.core import Service
from inference.service.db import ResultRecord, ScanRecord

Verdict = Literal["clear", "review", "alarm"]
View = Literal["grey", "inverse", "material", "window", "edge"]
assert set(View.__args__) == set(VIEWS)  # type: ignore[attr-defined]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def get_service(request: Request) -> Service:
    """The service of the app that answers ``request`` (set by ``create_app``)."""
    return request.app.state.service


def owned_scan(
    service: Service, who: Principal, scan_id: str
) -> tuple[ScanRecord, ResultRecord | None]:
    """The scan and its newest result if ``who`` may read it; 404 otherwise."""
    # Scan ids are UUIDs: anything else cannot exist (and never reaches the database).
    found = service.records.get_scan(scan_id, who.station_id) if _UUID.match(scan_id) else None
    if found is None:
        raise HTTPException(404, f"no scan {scan_id[:80]!r}")
    return found


def station_name_for(scan: ScanRecord, who: Principal) -> str:
    """The name of the station that sent ``scan`` (a station caller's own, without a query)."""
    return who.name if who.is_station else scan.station.name
