"""The scanner API (``/api/v1``): post a scan, read results, views and anomaly maps; admin.

A station reads only its own scans, users (officers, supervisors, admins) and the admin
key every station's (``deps.owned_scan``); the officers' own endpoints (queue, reviews)
are in ``reviews.py``.

Records and signatures: the router's lifespan loads (or, on the first start, makes) the
service's Ed25519 key once the database is open, so every result and review stored from
then on is signed in its own transaction (``records``). A scan's evidence package
(``evidence.py``) and its DICOS Threat Detection Report (``dicos.py``) are read here.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool

from inference.contracts import ScanResult
from inference.render import render
from inference.scan import ScanMetadata
from inference.service.auth import (
    AdminCaller,
    AnyCaller,
    StationCaller,
    SupervisorCaller,
)
from inference.service.core import API, Service, ServiceUnavailable, retry_conflict
from inference.service.db import ResultRecord, ScanRecord, iso
from inference.service.deps import Verdict, View, get_service, owned_scan, station_name_for
from inference.service.rollout import RolloutBusy, RolloutError


@asynccontextmanager
async def _signing_key(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's lifespan, after ``Service.open``: give the records the key."""
    from inference.service.signing import signer_for

    service: Service = app.state.service
    service.records.signer = await asyncio.to_thread(signer_for, service.settings)
    yield


router = APIRouter(prefix=API, lifespan=_signing_key)
MAX_STATION_SCAN_ID = 200  # the column's size


class ScanSummary(BaseModel):
    """What was received (:func:`scan_summary`), as the OpenAPI document describes it."""

    id: str
    station: str
    station_scan_id: str | None
    received_at: str
    scan_time: str | None
    width: int
    height: int
    bit_depth: int
    channels: list[Literal["high", "low"]]
    high_sha256: str
    low_sha256: str | None
    metadata: dict[str, Any] = Field(description="the station's metadata, as it sent it")
    image: str = Field(description="the scan's image URL")


class ScanResponse(ScanResult):
    """A scan's newest result (docs/design.md, "The result: what goes out") with what was
    received; users and the admin also get its review status."""

    scan: ScanSummary
    review_status: Literal["pending", "reviewed", "reopened"] | None = Field(
        None, description="users and the admin only (absent for stations)"
    )


class ScanResults(BaseModel):
    """Every result a scan has had, oldest first (one per model version)."""

    scan_id: str
    results: list[ScanResult]


class ScanListItem(BaseModel):
    """One scan in the list: enough to sort and open it, not its findings."""

    scan_id: str
    station: str
    station_scan_id: str | None
    received_at: str
    scan_time: str | None
    verdict: Verdict | None = Field(description="none while the scan waits for a model")
    risk: float | None
    findings: int = Field(description="how many findings its newest result has")
    model_version: str | None
    url: str


class ScanList(BaseModel):
    """A page of scans, newest first; ``next`` is the next page's URL, if any."""

    items: list[ScanListItem]
    total: int
    limit: int
    offset: int
    next: str | None


_STORED_JSON = TypeAdapter(dict[str, Any])


def _as_stored(body: dict[str, Any]) -> Response:
    """``body`` as JSON, serialized as these routes always did (pydantic's JSON of a plain
    dict). Their ``response_model`` documents the result; a stored, signed result goes out
    as stored, not re-validated or re-ordered by the model."""
    return Response(_STORED_JSON.dump_json(body), media_type="application/json")


def scan_summary(scan: ScanRecord, station_name: str) -> dict[str, Any]:
    """What was received: the station's words and the stored bytes' SHA-256 (documented
    by :class:`ScanSummary`)."""
    return {
        "id": scan.id,
        "station": station_name,
        "station_scan_id": scan.station_scan_id,
        "received_at": iso(scan.received_at),
        "scan_time": iso(scan.scan_time),
        "width": scan.width,
        "height": scan.height,
        "bit_depth": scan.bit_depth,
        "channels": ["high", "low"] if scan.low_sha256 else ["high"],
        "high_sha256": scan.high_sha256,
        "low_sha256": scan.low_sha256,
        "metadata": scan.meta,
        "image": f"{API}/scans/{scan.id}/image",
    }


def _body(scan: ScanRecord, result: ResultRecord | None, station_name: str) -> dict[str, Any]:
    body: dict[str, Any] = dict(result.body) if result is not None else {"scan_id": scan.id}
    body["scan"] = scan_summary(scan, station_name)
    return body


def _sha(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _check_station_scan_id(value: str | None) -> None:
    if value is None:
        return
    if len(value) > MAX_STATION_SCAN_ID:
        raise HTTPException(
            422, f"metadata: station_scan_id: at most {MAX_STATION_SCAN_ID} characters"
        )
    if not value.isprintable():
        raise HTTPException(422, "metadata: station_scan_id: control characters are not allowed")


def _stored(
    service: Service,
    station_id: int,
    station_scan_id: str,
    high: bytes,
    low: bytes | None,
    meta: ScanMetadata,
) -> tuple[ScanRecord, ResultRecord | None] | None:
    """The scan stored before under this station scan id (409 if its bytes or metadata
    differ: that is no retry)."""
    found = service.records.scan_by_station_scan_id(station_id, station_scan_id)
    if found is not None:
        conflict = retry_conflict(found[0], _sha(high) or "", _sha(low), meta.to_dict())
        if conflict is not None:
            raise HTTPException(409, conflict)
    return found


@router.post(
    "/scans",
    status_code=201,
    tags=["scans"],
    response_model=ScanResponse,
    responses={
        200: {
            "model": ScanResponse,
            "description": "the stored result of a repeated station_scan_id (a retry)",
        }
    },
)
async def post_scan(
    request: Request,
    who: StationCaller,
    high: Annotated[UploadFile, File(description="high-energy (or only) channel image")],
    low: Annotated[UploadFile | None, File(description="low-energy channel image")] = None,
    metadata: Annotated[str | None, Form(description="JSON: station_scan_id, ...")] = None,
) -> JSONResponse:
    """Analyse a scan: 201 with the result; 200 with the stored one for a repeated
    ``station_scan_id`` (a retry after a timeout), nothing stored twice."""
    service = get_service(request)
    meta = ScanMetadata.from_dict(metadata)  # ScanError -> 422 naming the fields
    _check_station_scan_id(meta.station_scan_id)
    high_bytes = await high.read()
    low_bytes = await low.read() if low is not None else None
    if not high_bytes:
        raise HTTPException(422, "high: the file is empty")
    if low_bytes is not None and not low_bytes:
        raise HTTPException(422, "low: the file is empty (leave the field out if there is none)")
    assert who.station_id is not None

    if meta.station_scan_id is not None:
        found = await run_in_threadpool(
            _stored, service, who.station_id, meta.station_scan_id, high_bytes, low_bytes, meta
        )
        if found is not None:  # a retry: answered even while draining, nothing to compute
            scan, result = found
            return JSONResponse(
                _body(scan, result, who.name),
                status_code=200,
                headers={"Location": f"{API}/scans/{scan.id}"},
            )

    if service.draining:
        raise ServiceUnavailable("the service is shutting down; send the scan to another")
    if service.models.current is None:
        raise ServiceUnavailable(f"not ready: {service.models.status}")
    outcome = await service.pool.run(
        service.analyze_upload, who.station_id, high_bytes, low_bytes, meta
    )
    body = dict(outcome.result)
    body["scan"] = scan_summary(outcome.scan, who.name)
    return JSONResponse(
        body,
        status_code=201 if outcome.created else 200,
        headers={"Location": f"{API}/scans/{outcome.scan.id}"},
    )


@router.get("/scans", tags=["scans"], response_model=ScanList)
def list_scans(
    request: Request,
    who: AnyCaller,
    verdict: Verdict | None = None,
    station: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$")] = None,
    since: Annotated[datetime | None, Query(description="received at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="received before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """The caller's scans (users and the admin: every station's), newest first, with their
    verdicts."""
    service = get_service(request)
    if who.is_station and station is not None and station != who.name:
        return {"items": [], "total": 0, "limit": limit, "offset": offset, "next": None}
    page = service.records.list_scans(
        station_id=who.station_id,
        station_name=station if not who.is_station else None,
        verdict=verdict,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    items = []
    for scan, result in page.items:
        items.append(
            {
                "scan_id": scan.id,
                "station": station_name_for(scan, who),
                "station_scan_id": scan.station_scan_id,
                "received_at": iso(scan.received_at),
                "scan_time": iso(scan.scan_time),
                "verdict": result.verdict if result else None,
                "risk": result.risk if result else None,
                "findings": len(result.body.get("findings", [])) if result else 0,
                "model_version": result.model_version if result else None,
                "url": f"{API}/scans/{scan.id}",
            }
        )
    nxt = None
    if offset + len(items) < page.total:
        params = dict(request.query_params)
        params.update(offset=str(offset + len(items)), limit=str(limit))
        nxt = f"{request.url.path}?{urlencode(params)}"
    return {"items": items, "total": page.total, "limit": limit, "offset": offset, "next": nxt}


@router.get("/scans/{scan_id}", tags=["scans"], response_model=ScanResponse)
def get_scan(request: Request, who: AnyCaller, scan_id: str) -> Response:
    """The scan's newest result (docs/design.md, "The result: what goes out") with what
    was received; users also get its ``review_status`` (pending, reviewed, reopened)."""
    service = get_service(request)
    scan, result = owned_scan(service, who, scan_id)
    body = _body(scan, result, station_name_for(scan, who))
    if not who.is_station:
        body["review_status"] = service.records.review_state(scan.id).status
    return _as_stored(body)


@router.get("/scans/{scan_id}/results", tags=["scans"], response_model=ScanResults)
def get_results(request: Request, who: AnyCaller, scan_id: str) -> Response:
    """Every result the scan has had, oldest first (one per model version)."""
    service = get_service(request)
    scan, _ = owned_scan(service, who, scan_id)
    results = [r.body for r in service.records.results(scan.id)]
    return _as_stored({"scan_id": scan.id, "results": results})


@router.get(
    "/scans/{scan_id}/image",
    tags=["scans"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def get_image(
    request: Request,
    who: AnyCaller,
    scan_id: str,
    view: View = "grey",
    level: Annotated[float | None, Query(description="window view: attenuation level")] = None,
    width: Annotated[float | None, Query(gt=0, description="window view: width")] = None,
) -> Response:
    """The scan drawn as an officer view (PNG, full resolution)."""
    service = get_service(request)
    scan, _ = await run_in_threadpool(owned_scan, service, who, scan_id)
    if (level is None) != (width is None):
        raise HTTPException(422, "window: give both level and width, or neither")
    window = (level, width) if level is not None and width is not None else None

    def draw() -> bytes:
        from PIL import Image

        rgb = render(service.load_scan(scan), view, window=window)
        buf = io.BytesIO()
        Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=3)
        return buf.getvalue()

    png = await service.pool.run(draw)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/scans/{scan_id}/anomaly-map",
    tags=["scans"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_anomaly_map(
    request: Request,
    who: AnyCaller,
    scan_id: str,
    model_version: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
) -> Response:
    """The anomaly probability map as a grey PNG (0-255 = 0-1), one pixel per model stride
    cell, covering the whole scan (stretch it over the image to overlay)."""
    service = get_service(request)
    scan, result = owned_scan(service, who, scan_id)
    if model_version is not None:
        result = service.records.result_for(scan.id, model_version)
    if result is None or not result.anomaly_sha256:
        raise HTTPException(404, f"no anomaly map for scan {scan_id!r}")
    png = service.blobs.get(result.anomaly_sha256)
    return Response(
        png,
        media_type="image/png",
        headers={"X-Model-Version": result.model_version, "Cache-Control": "private"},
    )


# --------------------------------------------------------------------------- admin


class Activate(BaseModel):
    path: str = Field(min_length=1, max_length=4096, description="MODEL.onnx on the server")
    operating_point: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="a site's operating-point file for that model (cargoscan commission)",
    )


@router.get("/admin/model", tags=["admin"])
def current_model(request: Request, _who: AdminCaller) -> dict[str, Any]:
    """The serving model and the last roll-outs."""
    service = get_service(request)
    model = service.models.current
    last = service.records.latest_activation()
    return {
        "model": model.info if model else None,
        "path": str(model.path) if model else None,
        "operating_point": str(model.operating_point) if model and model.operating_point else None,
        "status": service.models.status,
        "follow_error": service.follow_error,  # a roll-out by another replica not followed
        "last_activation": None
        if last is None
        else {
            "source": last.source,
            "path": last.path,
            "version": last.version,
            "at": iso(last.created_at),
        },
    }


@router.post("/admin/model", tags=["admin"])
async def activate_model(request: Request, _who: AdminCaller, body: Activate) -> dict[str, Any]:
    """Roll out ``path``: load, warm up, check on recent scans, swap. 422 if a step fails
    (the serving model stays), 409 while another roll-out runs."""
    service = get_service(request)
    path = Path(body.path).expanduser()
    if not path.is_file():
        raise HTTPException(422, f"load: no model file at {str(path)!r} on the server")
    op = Path(body.operating_point).expanduser() if body.operating_point else None
    if op is not None and not op.is_file():
        raise HTTPException(422, f"load: no operating-point file at {str(op)!r} on the server")
    try:
        return await asyncio.to_thread(
            service.activate, path.resolve(), op.resolve() if op is not None else None
        )
    except RolloutBusy as exc:
        raise HTTPException(409, str(exc)) from None
    except RolloutError as exc:
        current = service.models.current
        keeps = f"; still serving {current.version}" if current else ""
        raise HTTPException(422, f"roll-out failed at {exc}{keeps}") from None


# --------------------------------------------------------------------------- records


def _signer(service: Service):  # -> signing.Signer
    signer = service.records.signer
    if signer is None:
        raise ServiceUnavailable("the signing key is not loaded yet")
    return signer


@router.get("/signing-key", tags=["records"])
def signing_key(request: Request, _who: AnyCaller) -> dict[str, Any]:
    """The public key that signs results, reviews and evidence packages, and its
    fingerprint (SHA-256 of the raw key): publish it for whoever checks the packages."""
    signer = _signer(get_service(request))
    return {
        "algorithm": "Ed25519",
        "key_sha256": signer.key_sha256,
        "public_key_pem": signer.public_pem.decode("ascii"),
    }


@router.get(
    "/scans/{scan_id}/evidence",
    tags=["records"],
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def get_evidence(request: Request, who: SupervisorCaller, scan_id: str) -> Response:
    """The scan's evidence package (ZIP): original channels, current result, reviews, their
    signed statements and signatures, the scan's audit entries and the public key, checked
    offline by ``cargoscan verify PACKAGE``. Supervisors and admins; the export is logged."""
    from inference.service.audit import actor_of
    from inference.service.evidence import export_package

    service = get_service(request)
    _signer(service)
    scan, result = owned_scan(service, who, scan_id)
    if result is None:
        raise HTTPException(409, f"scan {scan.id} has no result to put in a package")
    package = export_package(
        service.records,
        service.blobs,
        scan,
        scan_summary(scan, station_name_for(scan, who)),
        actor_of(who),
    )
    return Response(
        package,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="cargoscan-evidence-{scan.id}.zip"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/scans/{scan_id}/dicos",
    tags=["records"],
    response_class=Response,
    responses={200: {"content": {"application/dicom": {}}}},
)
def get_dicos(
    request: Request,
    who: AnyCaller,
    scan_id: str,
    model_version: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
) -> Response:
    """The scan's result as a DICOS Threat Detection Report (DICOM file, see ``dicos.py``);
    ``model_version``: that model's result instead of the newest."""
    from inference.preprocess import PREPROCESS_VERSION
    from inference.service.dicos import tdr_bytes, tdr_dataset
    from inference.service.evidence import review_dict

    service = get_service(request)
    scan, result = owned_scan(service, who, scan_id)
    if model_version is not None:
        result = service.records.result_for(scan.id, model_version)
    if result is None:
        raise HTTPException(404, f"no result for scan {scan_id!r}")
    # The latest review of this result decides its manifest discrepancies (a station's
    # report has none: reviews are the officers').
    reviews = [] if who.is_station else service.records.reviews(scan.id)
    review = next((r for r in reversed(reviews) if r.result_id == result.id), None)
    ds = tdr_dataset(
        scan_summary(scan, station_name_for(scan, who)),
        result.body,
        result_id=result.id,
        result_created_at=result.created_at,
        preprocess_version=PREPROCESS_VERSION,
        review=review_dict(review) if review is not None else None,
    )
    return Response(
        tdr_bytes(ds),
        media_type="application/dicom",
        headers={
            "Content-Disposition": f'attachment; filename="cargoscan-tdr-{scan.id}.dcm"',
            "X-Model-Version": result.model_version,
            "Cache-Control": "private",
        },
    )
