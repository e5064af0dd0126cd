"""Every database read and write of the service, each in its own short transaction.

The functions are synchronous (SQLAlchemy's ORM is) and are called from worker threads,
never on the event loop. Objects are returned detached (``expire_on_commit=False``) so
callers can read their columns after the session closed.

Every write that an auditor cares about appends its audit entry (``audit.py``) in the same
transaction, and results and reviews are signed there too when the service's key is set
(``signer``; the API's start-up sets it): the data, its signature and its audit entry are
stored together or not at all. ``actor`` arguments say who did it (``audit.actor_of``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from inference.service import audit
from inference.service.db import (
    AuditEntry,
    AuditHead,
    ModelActivation,
    Reopening,
    ResultRecord,
    Review,
    ScanRecord,
    Signature,
    Station,
    User,
    UserToken,
    utcnow,
)
from inference.service.signing import Signer, canonical, sha256_hex

REVIEW_STATUSES = ("pending", "reviewed", "reopened")


class DuplicateName(ValueError):
    """A station (or user) of that name exists already."""


@dataclass
class Page:
    items: list[tuple[ScanRecord, ResultRecord | None]]
    total: int


@dataclass
class QueueItem:
    scan: ScanRecord
    result: ResultRecord | None
    station: str
    review_status: str
    review_verdict: str | None


@dataclass
class QueuePage:
    items: list[QueueItem]
    total: int


@dataclass
class ReviewState:
    """Where a scan stands: its review status and the review and re-opening that set it."""

    status: str  # one of REVIEW_STATUSES
    latest: Review | None
    reopened: Reopening | None


class Records:
    """Data access over one SQLAlchemy engine; ``signer`` signs results and reviews."""

    def __init__(self, engine: Engine, signer: Signer | None = None) -> None:
        self.engine = engine
        self.signer = signer
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    # ----------------------------------------------------------------- stations

    def add_station(self, name: str, key_hash: str, actor: str = "cli") -> Station:
        try:
            with self.session() as s:
                station = Station(name=name, key_hash=key_hash)
                s.add(station)
                s.flush()
                audit.append(s, "station.created", actor, name, {"station_id": station.id})
                return station
        except IntegrityError:
            raise DuplicateName(f"a station named {name!r} exists already") from None

    def stations(self) -> list[Station]:
        with self.session() as s:
            return list(s.scalars(select(Station).order_by(Station.name)))

    def station_by_key_hash(self, key_hash: str) -> Station | None:
        with self.session() as s:
            return s.scalars(select(Station).where(Station.key_hash == key_hash)).first()

    # ----------------------------------------------------------------- scans

    def scan_by_station_scan_id(
        self, station_id: int, station_scan_id: str
    ) -> tuple[ScanRecord, ResultRecord | None] | None:
        with self.session() as s:
            scan = s.scalars(
                select(ScanRecord).where(
                    ScanRecord.station_id == station_id,
                    ScanRecord.station_scan_id == station_scan_id,
                )
            ).first()
            return None if scan is None else (scan, self._latest(s, scan.id))

    def add_scan(self, scan: ScanRecord, result: ResultRecord) -> tuple[ScanRecord, bool]:
        """Store a scan with its first result in one transaction.

        Returns (the stored scan, True), or (the scan stored before under the same station
        scan id, False) when a concurrent retry won the race: nothing new is stored.
        """
        try:
            with self.session() as s:
                s.add(scan)
                s.flush()
                station = s.get(Station, scan.station_id)
                actor = f"station:{station.name}" if station else f"station#{scan.station_id}"
                audit.append(
                    s,
                    "scan.received",
                    actor,
                    scan.id,
                    {
                        "station_scan_id": scan.station_scan_id,
                        "high_sha256": scan.high_sha256,
                        "high_bytes": scan.high_bytes,
                        "low_sha256": scan.low_sha256,
                        "low_bytes": scan.low_bytes,
                        "width": scan.width,
                        "height": scan.height,
                        "bit_depth": scan.bit_depth,
                    },
                )
                result.scan_id = scan.id
                s.add(result)
                s.flush()
                self._record_result(s, scan, result, "service")
            return scan, True
        except IntegrityError:
            if scan.station_scan_id is None:
                raise
            found = self.scan_by_station_scan_id(scan.station_id, scan.station_scan_id)
            if found is None:
                raise
            return found[0], False

    def add_result(self, result: ResultRecord) -> bool:
        """Append a result (False: this model version already has one for the scan)."""
        try:
            with self.session() as s:
                s.add(result)
                s.flush()
                scan = s.get(ScanRecord, result.scan_id)
                assert scan is not None  # the foreign key
                self._record_result(s, scan, result, "service")
            return True
        except IntegrityError:
            return False

    # ----------------------------------------------------------------- signatures, audit

    def _sign(
        self, s: Session, subject: str, subject_id: int, statement: dict[str, Any]
    ) -> Signature | None:
        """Sign ``statement`` with the service key and store it (None without a key)."""
        if self.signer is None:
            return None
        text = canonical(statement).decode("utf-8")
        sig = Signature(
            subject=subject,
            subject_id=subject_id,
            key_sha256=self.signer.key_sha256,
            statement=text,
            signature=self.signer.sign(text.encode("utf-8")),
        )
        s.add(sig)
        s.flush()
        return sig

    def _result_statement(
        self, scan: ScanRecord, result: ResultRecord, *, later: bool
    ) -> dict[str, Any]:
        from inference.preprocess import PREPROCESS_VERSION
        from inference.service.evidence import result_statement

        assert self.signer is not None
        return result_statement(
            result_id=result.id,
            created_at=result.created_at,
            high_sha256=scan.high_sha256,
            low_sha256=scan.low_sha256,
            body=result.body,
            preprocess_version=PREPROCESS_VERSION,
            key_sha256=self.signer.key_sha256,
            signed_later=later,
        )

    def _record_result(
        self, s: Session, scan: ScanRecord, result: ResultRecord, actor: str
    ) -> None:
        """Sign a new result and log it (in the transaction that stores it; flushed, so
        its id and time are set)."""
        sig = None
        if self.signer is not None:
            sig = self._sign(
                s, "result", result.id, self._result_statement(scan, result, later=False)
            )
        audit.append(
            s,
            "result",
            actor,
            scan.id,
            {
                "result_id": result.id,
                "model": {
                    "name": result.model_name,
                    "version": result.model_version,
                    "sha256": result.model_sha256,
                },
                "verdict": result.verdict,
                "risk": result.risk,
                "findings": len(result.body.get("findings", [])),
                "result_sha256": sha256_hex(canonical(result.body)),
                **_signed(sig),
            },
        )

    def sign_unsigned(self, scan_id: str, actor: str) -> int:
        """Sign the scan's results and reviews that the current key has not signed (stored
        before the service signed, or under another key); returns how many."""
        if self.signer is None:
            return 0
        key = self.signer.key_sha256
        made = 0
        with self.session() as s:
            scan = s.get(ScanRecord, scan_id)
            if scan is None:
                return 0
            for subject, model in (("result", ResultRecord), ("review", Review)):
                signed = select(Signature.subject_id).where(
                    Signature.subject == subject, Signature.key_sha256 == key
                )
                rows = s.scalars(
                    select(model)
                    .where(model.scan_id == scan_id, model.id.not_in(signed))
                    .order_by(model.id)
                ).all()
                for row in rows:
                    if subject == "result":
                        statement = self._result_statement(scan, row, later=True)
                    else:
                        statement = self._review_statement(row, later=True)
                    sig = self._sign(s, subject, row.id, statement)
                    audit.append(
                        s,
                        f"{subject}.signed",
                        actor,
                        scan_id,
                        {f"{subject}_id": row.id, **_signed(sig)},
                    )
                    made += 1
        return made

    def signatures(self, subject: str, ids: list[int], key_sha256: str) -> dict[int, Signature]:
        """The newest signature by ``key_sha256`` of each of ``ids``."""
        if not ids:
            return {}
        with self.session() as s:
            rows = s.scalars(
                select(Signature)
                .where(
                    Signature.subject == subject,
                    Signature.subject_id.in_(ids),
                    Signature.key_sha256 == key_sha256,
                )
                .order_by(Signature.id)
            ).all()
        return {r.subject_id: r for r in rows}

    def audit_event(
        self, kind: str, actor: str, subject: str | None = None, data: dict[str, Any] | None = None
    ) -> AuditEntry:
        """Log an event that changes no other table (a failed login, an export)."""
        with self.session() as s:
            return audit.append(s, kind, actor, subject, data)

    def audit_entries(self, subject: str) -> list[AuditEntry]:
        """The audit entries about ``subject`` (a scan id, a user name), oldest first."""
        with self.session() as s:
            q = select(AuditEntry).where(AuditEntry.subject == subject)
            return list(s.scalars(q.order_by(AuditEntry.seq)))

    def audit_head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest audit entry."""
        with self.session() as s:
            row = s.execute(
                select(AuditHead.seq, AuditHead.entry_hash).where(AuditHead.id == audit.HEAD_ID)
            ).one_or_none()
        return None if row is None else (int(row.seq), str(row.entry_hash))

    def get_scan(
        self, scan_id: str, station_id: int | None
    ) -> tuple[ScanRecord, ResultRecord | None] | None:
        """The scan and its newest result; ``station_id`` None = any station (admin)."""
        with self.session() as s:
            q = select(ScanRecord).where(ScanRecord.id == scan_id)
            if station_id is not None:
                q = q.where(ScanRecord.station_id == station_id)
            scan = s.scalars(q).first()
            return None if scan is None else (scan, self._latest(s, scan.id))

    def results(self, scan_id: str) -> list[ResultRecord]:
        with self.session() as s:
            q = select(ResultRecord).where(ResultRecord.scan_id == scan_id)
            return list(s.scalars(q.order_by(ResultRecord.id)))

    def result_for(self, scan_id: str, model_version: str) -> ResultRecord | None:
        with self.session() as s:
            q = select(ResultRecord).where(
                ResultRecord.scan_id == scan_id, ResultRecord.model_version == model_version
            )
            return s.scalars(q).first()

    @staticmethod
    def _latest(s: Session, scan_id: str) -> ResultRecord | None:
        q = select(ResultRecord).where(ResultRecord.scan_id == scan_id)
        return s.scalars(q.order_by(ResultRecord.id.desc()).limit(1)).first()

    def list_scans(
        self,
        *,
        station_id: int | None,
        station_name: str | None = None,
        verdict: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        """Newest first, with each scan's newest result; filters combine with AND."""
        newest = (
            select(ResultRecord.scan_id, func.max(ResultRecord.id).label("rid"))
            .group_by(ResultRecord.scan_id)
            .subquery()
        )
        q = (
            select(ScanRecord, ResultRecord)
            .join(newest, newest.c.scan_id == ScanRecord.id, isouter=True)
            .join(ResultRecord, ResultRecord.id == newest.c.rid, isouter=True)
        )
        if station_id is not None:
            q = q.where(ScanRecord.station_id == station_id)
        if station_name is not None:
            q = q.join(Station, Station.id == ScanRecord.station_id).where(
                Station.name == station_name
            )
        if verdict is not None:
            q = q.where(ResultRecord.verdict == verdict)
        if since is not None:
            q = q.where(ScanRecord.received_at >= since)
        if until is not None:
            q = q.where(ScanRecord.received_at < until)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.execute(
                q.order_by(ScanRecord.received_at.desc(), ScanRecord.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return Page(items=[(r[0], r[1]) for r in rows], total=int(total))

    def recent_scans(self, n: int) -> list[ScanRecord]:
        with self.session() as s:
            q = select(ScanRecord).order_by(ScanRecord.received_at.desc()).limit(n)
            return list(s.scalars(q))

    # ----------------------------------------------------------------- models

    def add_activation(
        self, *, source: str, path: str, info: dict[str, str], checks: dict[str, Any]
    ) -> None:
        with self.session() as s:
            row = ModelActivation(
                source=source,
                path=path,
                name=info["name"],
                version=info["version"],
                sha256=info["sha256"],
                checks=checks,
            )
            s.add(row)
            s.flush()
            audit.append(
                s,
                "model.activated",
                "admin" if source == "admin" else "service",
                info["version"],
                {
                    "activation_id": row.id,
                    "source": source,
                    "path": path,
                    "name": info["name"],
                    "sha256": info["sha256"],
                },
            )

    def latest_activation(self, source: str | None = None) -> ModelActivation | None:
        with self.session() as s:
            q = select(ModelActivation)
            if source is not None:
                q = q.where(ModelActivation.source == source)
            return s.scalars(q.order_by(ModelActivation.id.desc()).limit(1)).first()

    # ----------------------------------------------------------------- users

    def add_user(self, name: str, role: str, password_hash: str, actor: str = "cli") -> User:
        try:
            with self.session() as s:
                user = User(name=name, role=role, password_hash=password_hash, active=True)
                s.add(user)
                s.flush()
                audit.append(s, "user.created", actor, name, {"user_id": user.id, "role": role})
                return user
        except IntegrityError:
            raise DuplicateName(f"a user named {name!r} exists already") from None

    def users(self) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.name)))

    def user_by_name(self, name: str) -> User | None:
        with self.session() as s:
            return s.scalars(select(User).where(User.name == name)).first()

    def update_user(
        self,
        name: str,
        *,
        role: str | None = None,
        password_hash: str | None = None,
        active: bool | None = None,
        keep_sessions: bool = False,
        actor: str = "service",
    ) -> User | None:
        """Change a user; a new password or deactivation revokes every token of theirs
        (``keep_sessions``: not for a mere re-hash of the same password)."""
        with self.session() as s:
            user = s.scalars(select(User).where(User.name == name)).first()
            if user is None:
                return None
            change: dict[str, Any] = {"user_id": user.id}
            if role is not None and role != user.role:
                change["role"] = {"from": user.role, "to": role}
            if active is not None and active != user.active:
                change["active"] = active
            if password_hash is not None:
                change["password"] = "rehashed" if keep_sessions else "changed"
            if len(change) > 1:
                audit.append(s, "user.changed", actor, name, change)
            if role is not None:
                user.role = role
            if password_hash is not None:
                user.password_hash = password_hash
            if active is not None:
                user.active = active
            if (password_hash is not None and not keep_sessions) or active is False:
                s.execute(
                    update(UserToken)
                    .where(UserToken.user_id == user.id, UserToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
            return user

    def add_token(self, user_id: int, token_hash: str, expires_at: datetime) -> None:
        """Store a login; expired tokens are dropped on the way (they can never work again)."""
        now = utcnow()
        with self.session() as s:
            s.execute(delete(UserToken).where(UserToken.expires_at < now))
            s.add(UserToken(user_id=user_id, token_hash=token_hash, expires_at=expires_at))
            user = s.get(User, user_id)
            name = user.name if user is not None else f"#{user_id}"
            audit.append(
                s,
                "user.login",
                f"user:{name}",
                name,
                {"user_id": user_id, "expires_at": expires_at.isoformat()},
            )

    def user_by_token_hash(self, token_hash: str) -> User | None:
        """The active user of an unexpired, unrevoked token."""
        with self.session() as s:
            q = (
                select(User)
                .join(UserToken, UserToken.user_id == User.id)
                .where(
                    UserToken.token_hash == token_hash,
                    UserToken.revoked_at.is_(None),
                    UserToken.expires_at > utcnow(),
                    User.active.is_(True),
                )
            )
            return s.scalars(q).first()

    def revoke_token(self, token_hash: str) -> None:
        with self.session() as s:
            done = s.execute(
                update(UserToken)
                .where(UserToken.token_hash == token_hash, UserToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
                .returning(UserToken.user_id)
            ).first()
            if done is not None:
                user = s.get(User, done.user_id)
                name = user.name if user is not None else f"#{done.user_id}"
                audit.append(s, "user.logout", f"user:{name}", name, {"user_id": done.user_id})

    # ----------------------------------------------------------------- reviews

    def _review_statement(self, review: Review, *, later: bool) -> dict[str, Any]:
        from inference.service.evidence import review_dict, review_statement

        assert self.signer is not None
        return review_statement(
            review_dict(review), key_sha256=self.signer.key_sha256, signed_later=later
        )

    def add_review(self, review: Review) -> Review:
        """Store, sign and log a review (one transaction)."""
        from inference.service.evidence import review_dict

        with self.session() as s:
            s.add(review)
            s.flush()
            s.refresh(review, ["user"])
            sig = None
            if self.signer is not None:
                sig = self._sign(
                    s, "review", review.id, self._review_statement(review, later=False)
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
                    **_signed(sig),
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
            latest = s.scalars(
                select(Review).where(Review.scan_id == scan_id).order_by(Review.id.desc()).limit(1)
            ).first()
            reopened = s.scalars(
                select(Reopening)
                .where(Reopening.scan_id == scan_id)
                .order_by(Reopening.id.desc())
                .limit(1)
            ).first()
        if latest is None:
            return ReviewState("pending", None, reopened)
        if reopened is not None and reopened.created_at > latest.created_at:
            return ReviewState("reopened", latest, reopened)
        return ReviewState("reviewed", latest, reopened)

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


def _signed(sig: Signature | None) -> dict[str, Any]:
    """What an audit entry says about a signature: its row, key and statement's SHA-256."""
    if sig is None:
        return {"signature_id": None}
    return {
        "signature_id": sig.id,
        "key_sha256": sig.key_sha256,
        "statement_sha256": sha256_hex(sig.statement.encode("utf-8")),
    }
