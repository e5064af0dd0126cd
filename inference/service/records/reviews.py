"""Reviews, re-openings and the review queue: append-only, a scan's status is whichever
came last of its latest review and its latest re-opening."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session, aliased

from inference.service import audit
from inference.service.db import Reopening, ResultRecord, Review, ScanRecord, Station, User
from inference.service.records.base import Repository, signature_fields
from inference.service.signing import Signer, canonical, sha256_hex

REVIEW_STATUSES = ("pending", "reviewed", "reopened")


@dataclass
class QueueItem:
    """One row of the review queue: the scan, its newest result and where its review stands."""

    scan: ScanRecord
    result: ResultRecord | None
    station: str
    review_status: str
    review_verdict: str | None


@dataclass
class QueuePage:
    """One page of the queue and how many rows the whole queue has."""

    items: list[QueueItem]
    total: int


@dataclass
class ReviewState:
    """Where a scan stands: its review status and the review and re-opening that set it."""

    status: str  # one of REVIEW_STATUSES
    latest: Review | None
    reopened: Reopening | None


def statement_for_review(signer: Signer, review: Review, *, later: bool) -> dict[str, Any]:
    """What the service key signs for a review (``later``: signed after it was stored)."""
    from inference.service.evidence import review_dict, review_statement

    return review_statement(review_dict(review), key_sha256=signer.key_sha256, signed_later=later)


def _discrepancy_fields(review: Review) -> dict[str, Any]:
    """The review's decisions on manifest discrepancies as its audit entry names them
    (nothing for a review without any): what an auditor reads without the row."""
    if not review.discrepancies:
        return {}
    return {
        "discrepancies": [
            {"index": d.get("index"), "kind": d.get("kind"), "decision": d.get("decision")}
            for d in review.discrepancies
        ]
    }


class ScanClosed(Exception):
    """Another officer's review closed the scan; a supervisor can re-open it."""

    def __init__(self, scan_id: str, reviewer: str) -> None:
        super().__init__(
            f"scan {scan_id} was reviewed by {reviewer}; "
            "a supervisor can re-open it for another review"
        )


def _state_in(s: Session, scan_id: str) -> ReviewState:
    latest = s.scalars(
        select(Review).where(Review.scan_id == scan_id).order_by(Review.id.desc()).limit(1)
    ).first()
    reopened = s.scalars(
        select(Reopening).where(Reopening.scan_id == scan_id).order_by(Reopening.id.desc()).limit(1)
    ).first()
    if latest is None:
        return ReviewState("pending", None, reopened)
    if reopened is not None and reopened.created_at > latest.created_at:
        return ReviewState("reopened", latest, reopened)
    return ReviewState("reviewed", latest, reopened)


class ReviewRecords(Repository):
    """Reviews and re-openings (append-only), and the queue built from them."""

    def add_review(self, review: Review, *, unless_closed_by_another: bool = False) -> Review:
        """Store, sign and log a review (one transaction). With `unless_closed_by_another`
        (an officer's review), raise ScanClosed when another user's review closed the
        scan: checked after taking the audit head's lock, so two officers saving at the
        same moment (in one process or on two replicas) cannot both get in."""
        from inference.service.evidence import review_dict

        with self.session() as s:
            if unless_closed_by_another:
                audit.lock_head(s)
                state = _state_in(s, review.scan_id)
                latest = state.latest
                if state.status == "reviewed" and latest and latest.user_id != review.user_id:
                    raise ScanClosed(review.scan_id, latest.user.name)
            s.add(review)
            s.flush()
            s.refresh(review, ["user"])
            sig = None
            if self.signer is not None:
                sig = self.sign_statement(
                    s, "review", review.id, statement_for_review(self.signer, review, later=False)
                )
            audit.append(
                s,
                "review",
                f"user:{review.user.name}",
                review.scan_id,
                {
                    "review_id": review.id,
                    "result_id": review.result_id,
                    "role": review.user_role,
                    "verdict": review.verdict,
                    "review_sha256": sha256_hex(canonical(review_dict(review))),
                    **signature_fields(sig),
                    **_discrepancy_fields(review),
                },
            )
            return review

    def reviews(self, scan_id: str, user_id: int | None = None) -> list[Review]:
        """The scan's reviews, oldest first; ``user_id``: only that user's."""
        with self.session() as s:
            q = select(Review).where(Review.scan_id == scan_id)
            if user_id is not None:
                q = q.where(Review.user_id == user_id)
            return list(s.scalars(q.order_by(Review.id)))

    def add_reopening(self, scan_id: str, user_id: int, reason: str) -> Reopening:
        with self.session() as s:
            row = Reopening(scan_id=scan_id, user_id=user_id, reason=reason)
            s.add(row)
            s.flush()
            user = s.get(User, user_id)
            audit.append(
                s,
                "review.reopened",
                f"user:{user.name if user else user_id}",
                scan_id,
                {"reopening_id": row.id, "reason": reason},
            )
            return row

    def review_state(self, scan_id: str) -> ReviewState:
        with self.session() as s:
            return _state_in(s, scan_id)

    @staticmethod
    def _review_columns() -> tuple[Any, Any, Any, ColumnElement[str]]:
        """Subqueries of each scan's latest review and re-opening, and its status in SQL."""
        last_review = (
            select(Review.scan_id, func.max(Review.id).label("rid"))
            .group_by(Review.scan_id)
            .subquery()
        )
        last_reopen = (
            select(Reopening.scan_id, func.max(Reopening.created_at).label("at"))
            .group_by(Reopening.scan_id)
            .subquery()
        )
        review = aliased(Review)
        status = case(
            (last_review.c.rid.is_(None), "pending"),
            (
                and_(last_reopen.c.at.is_not(None), last_reopen.c.at > review.created_at),
                "reopened",
            ),
            else_="reviewed",
        )
        return last_review, last_reopen, review, status

    def queue(
        self,
        *,
        status: str = "pending",
        verdict: str | None = None,
        station_name: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> QueuePage:
        """Every station's scans, riskiest first (then newest), with their review status.

        ``status``: "pending" (never reviewed, or re-opened), "reviewed", or "all".
        """
        newest = (
            select(ResultRecord.scan_id, func.max(ResultRecord.id).label("rid"))
            .group_by(ResultRecord.scan_id)
            .subquery()
        )
        last_review, last_reopen, review, state = self._review_columns()
        q = (
            select(ScanRecord, ResultRecord, Station.name, state, review.verdict)
            .join(Station, Station.id == ScanRecord.station_id)
            .join(newest, newest.c.scan_id == ScanRecord.id, isouter=True)
            .join(ResultRecord, ResultRecord.id == newest.c.rid, isouter=True)
            .join(last_review, last_review.c.scan_id == ScanRecord.id, isouter=True)
            .join(review, review.id == last_review.c.rid, isouter=True)
            .join(last_reopen, last_reopen.c.scan_id == ScanRecord.id, isouter=True)
        )
        if status == "pending":
            q = q.where(state.in_(("pending", "reopened")))
        elif status == "reviewed":
            q = q.where(state == "reviewed")
        if verdict is not None:
            q = q.where(ResultRecord.verdict == verdict)
        if station_name is not None:
            q = q.where(Station.name == station_name)
        if since is not None:
            q = q.where(ScanRecord.received_at >= since)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.execute(
                q.order_by(
                    case((ResultRecord.risk.is_(None), 1), else_=0),
                    ResultRecord.risk.desc(),
                    ScanRecord.received_at.desc(),
                    ScanRecord.id.desc(),
                )
                .limit(limit)
                .offset(offset)
            ).all()
        items = [QueueItem(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        return QueuePage(items=items, total=int(total))

    def latest_reviews(self, since: datetime | None = None) -> list[tuple[ScanRecord, Review, str]]:
        """Each reviewed scan's latest review with the scan's status, oldest review first;
        ``since``: only scans whose latest review was made at or after it."""
        last_review, last_reopen, review, state = self._review_columns()
        q = (
            select(ScanRecord, review, state)
            .join(last_review, last_review.c.scan_id == ScanRecord.id)
            .join(review, review.id == last_review.c.rid)
            .join(last_reopen, last_reopen.c.scan_id == ScanRecord.id, isouter=True)
        )
        if since is not None:
            q = q.where(review.created_at >= since)
        with self.session() as s:
            rows = s.execute(q.order_by(review.id)).all()
        return [(r[0], r[1], r[2]) for r in rows]
