"""The officer's shift: CLEAR scans released in bulk, with a sample kept for review.

A third of a shift's scans come back CLEAR (the model found nothing). Opening each to
press "release" cost an officer three or four actions per scan; here one request releases
the CLEAR scans the officer has in the queue. Each release is an ordinary review (verdict
``release``, no finding to decide, the officer's name, the model version), stored, signed
and written to the audit log exactly as a single review is, so the export and the
evidence packages do not tell them apart except by the comment. With ``sample_every = N``
every Nth CLEAR scan of the list stays in the queue for a full review (a spot check of the
model's CLEARs that the officer cannot choose).

Nothing is written unless the whole request is sound: an unknown scan is a 404, a scan that
is not CLEAR a 422 (it needs its own review); scans that a colleague reviewed meanwhile,
that a supervisor re-opened, or whose CLEAR result still lists findings or manifest
discrepancies (a weak one leaves a scan CLEAR) are skipped, with the reason.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from inference.service.auth import AccountCaller
from inference.service.cargo_review import discrepancies_of
from inference.service.core import API
from inference.service.db import Review
from inference.service.deps import get_service, owned_scan

router = APIRouter(prefix=API)

MAX_BULK = 500
"""Scans in one bulk release: four pages of the queue; bigger lists are a client's bug."""
BULK_COMMENT = "released in bulk: CLEAR result"


class BulkRelease(BaseModel):
    scan_ids: list[str] = Field(min_length=1, max_length=MAX_BULK)
    sample_every: int | None = Field(
        None, ge=2, le=1000, description="keep every Nth CLEAR scan in the queue for review"
    )
    comment: str = Field("", max_length=4000)


def _sampled(n: int, every: int | None) -> set[int]:
    """Positions (0-based) of the scans kept for review: the Nth, 2Nth, ... of ``n``."""
    if not every:
        return set()
    return set(range(every - 1, n, every))


@router.post("/queue/release-clear", tags=["reviews"])
def release_clear(request: Request, who: AccountCaller, body: BulkRelease) -> dict[str, Any]:
    """Release the listed CLEAR scans, one audited review each; ``sample_every`` keeps
    every Nth of them in the queue. 404 names an unknown scan, 422 a scan that is not
    CLEAR; nothing is stored then. Answers what was released, kept and skipped."""
    service = get_service(request)
    if len(set(body.scan_ids)) != len(body.scan_ids):
        raise HTTPException(422, "scan_ids: each scan may be listed once")
    if "\x00" in body.comment:
        raise HTTPException(422, "comment: NUL characters are not allowed")
    found = [owned_scan(service, who, sid) for sid in body.scan_ids]
    for scan, result in found:
        verdict = result.verdict if result is not None else None
        if verdict != "clear":
            raise HTTPException(
                422,
                f"scan {scan.id} is not CLEAR (its result: {verdict or 'none'}): "
                "review it on its own",
            )
    eligible, skipped = [], []
    for scan, result in found:
        assert result is not None
        state = service.records.review_state(scan.id).status
        if state != "pending":
            why = "already reviewed" if state == "reviewed" else "re-opened by a supervisor"
            skipped.append({"id": scan.id, "reason": why})
        elif result.body.get("findings"):
            skipped.append({"id": scan.id, "reason": "its result lists findings: decide them"})
        elif discrepancies_of(result.body):
            skipped.append(
                {"id": scan.id, "reason": "its manifest check lists discrepancies: decide them"}
            )
        else:
            eligible.append((scan, result))
    keep = _sampled(len(eligible), body.sample_every)
    assert who.user_id is not None and who.role is not None
    comment = body.comment.strip() or BULK_COMMENT
    released, kept = [], []
    for i, (scan, result) in enumerate(eligible):
        if i in keep:
            kept.append(scan.id)
            continue
        service.records.add_review(
            Review(
                scan_id=scan.id,
                result_id=result.id,
                user_id=who.user_id,
                user_role=who.role,
                model_version=result.model_version,
                verdict="release",
                comment=comment,
                findings=[],
                added=[],
            )
        )
        released.append(scan.id)
    return {"released": released, "kept_for_review": kept, "skipped": skipped}
