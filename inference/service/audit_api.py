"""The audit log's anchors over HTTP, for the operator's scripts and the admin: take one
(the head signed by the service's key, what `cargoscan audit anchor` writes) and check one
against the log (what `cargoscan audit verify --anchor` does), without a shell on the
database's machine. Admins only (the admin key or an admin's account: 401 without a valid
key, 403 for stations and other users); both are logged in the audit log.

Why over HTTP as well: the anchors must be kept where the database's owner cannot reach
them, and the machine that keeps them (an archive, a write-once bucket's uploader) is
best one that can reach the service's API but not its database.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from inference.service.anchor import check_anchor, take_anchor
from inference.service.audit import actor_of, verify_chain
from inference.service.auth import AdminCaller
from inference.service.core import API, Service, ServiceUnavailable
from inference.service.deps import get_service

router = APIRouter(prefix=f"{API}/admin/audit", tags=["admin"])

MAX_ANCHOR_BYTES = 64 * 1024
"""An anchor is about 1 KB; anything much larger is not one."""


def _signer(service: Service) -> Any:  # -> signing.Signer
    signer = service.records.signer
    if signer is None:
        raise ServiceUnavailable("the signing key is not loaded yet")
    return signer


@router.post(
    "/anchor",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "the signed anchor"}},
)
def make_anchor(request: Request, who: AdminCaller) -> Response:
    """The audit log's head (position and hash) now, signed with the service's key, as a
    file to keep where the database's owner cannot change it (the same JSON as `cargoscan
    audit anchor`). Logged as ``audit.anchored``."""
    service = get_service(request)
    anchor = take_anchor(service.records.engine, _signer(service), actor_of(who))
    seq = anchor["statement"]["seq"]
    return Response(
        json.dumps(anchor, indent=1) + "\n",
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="cargoscan-anchor-{seq}.json"',
            "Cache-Control": "no-store",
        },
    )


class AnchorState(BaseModel):
    """What the anchor's check found."""

    seq: int | None = Field(description="the anchored entry")
    at: str | None = Field(description="when the anchor was taken")
    ok: bool
    problem: str | None = Field(description="why the log does not hold it (None: it does)")


class ChainState(BaseModel):
    """What re-hashing the chain up to its head found."""

    ok: bool
    entries: int
    head_seq: int | None
    broken_seq: int | None = Field(description="the first entry that does not check out")
    problem: str | None


class AnchorVerification(BaseModel):
    """An anchor checked against the log: ``ok`` when both hold."""

    ok: bool
    anchor: AnchorState
    chain: ChainState
    key_sha256: str = Field(description="the service's key, which must have signed it")


ANCHOR_BODY = {
    "requestBody": {
        "required": True,
        "description": "the anchor file, as `POST /api/v1/admin/audit/anchor` gave it",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.post("/anchor/verify", openapi_extra=ANCHOR_BODY)
async def verify_anchor(request: Request, who: AdminCaller) -> AnchorVerification:
    """Check an anchor file (the request body, as `POST .../anchor` gave it) against the
    log: signed by this service's key, its entry still there with the same hash, and the
    chain up to the head unbroken. 200 with ``ok`` false and the problem when the log does
    not hold it; 422 when the body is no anchor; 413 above 64 KB. Logged as
    ``audit.anchor_checked``."""
    body = await request.body()
    if len(body) > MAX_ANCHOR_BYTES:
        raise HTTPException(413, f"an anchor is about 1 KB; this body is {len(body):,} bytes")
    service = get_service(request)
    signer = _signer(service)
    return await run_in_threadpool(_verify, service, signer, body, actor_of(who))


def _verify(service: Service, signer: Any, body: bytes, actor: str) -> AnchorVerification:
    """The checks and their entry (a worker thread: the chain is re-hashed)."""
    engine = service.records.engine
    anchor = check_anchor(engine, body, signer.key_sha256)
    if not anchor.readable:
        raise HTTPException(422, f"the body is not an audit anchor: {anchor.problem}")
    chain = verify_chain(engine)
    ok = anchor.ok and chain.ok
    service.records.audit_event(
        "audit.anchor_checked",
        actor,
        None,
        {"seq": anchor.seq, "ok": ok, "problem": anchor.problem or chain.problem},
    )
    return AnchorVerification(
        ok=ok,
        anchor=AnchorState(seq=anchor.seq, at=anchor.at, ok=anchor.ok, problem=anchor.problem),
        chain=ChainState(
            ok=chain.ok,
            entries=chain.entries,
            head_seq=chain.head_seq,
            broken_seq=chain.broken_seq,
            problem=chain.problem,
        ),
        key_sha256=signer.key_sha256,
    )
