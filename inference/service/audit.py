"""The audit log: every event that matters to an auditor, append-only and hash-chained.

Each entry (``db.AuditEntry``) has a position ``seq`` (1, 2, 3, ... with no gaps), what
happened (``kind``), who did it (``actor``), what it was about (``subject``: a scan id, a
user or station name, a model version) and details (``data``), and the SHA-256 of all of
that together with the previous entry's hash. Changing an entry, removing one or putting
one in between breaks the chain at that point, which :func:`verify_chain` (``cargoscan
audit verify``) finds and names. The database refuses UPDATE and DELETE on the table
(triggers of migration 0003), so breaking it takes dropping a trigger first: a deliberate
act by someone who owns the database, which the chain then shows.

Appends are serialised, across threads and replicas alike: every append first locks the
single ``audit_head`` row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite any write
takes the database's one write lock, and the head is read only after one), so two
entries never share a predecessor; the unique ``prev_hash`` makes the database refuse it
even if that ever went wrong (``test_replicas.py``: two processes writing at once). An append
runs in the same transaction as the change it records, so the log and the data cannot
disagree after a crash.

Events (``kind``): ``audit.start`` (the chain starts at migration 0003; rows stored before
it are counted in its data, not logged one by one), ``audit.sealed`` (migration 0004: a
digest of the rows stored before entries carried record hashes), ``scan.received`` (with
the SHA-256 of each channel's bytes and of the whole record, ``facts.py``), ``result``
(its verdict, the SHA-256 of its JSON, of the whole row and of its signed statement),
``result.signed`` (a signature made later, for a result stored before the service
signed), ``review`` (the officer's verdict, the SHA-256 of the review and of
its signed statement), ``review.reopened``, ``model.activated``, ``user.login``,
``user.login_failed``, ``user.logout``, ``user.created``, ``user.changed``,
``station.created`` (a new station key; never the key), ``station.key_rotated``,
``station.revoked``, ``evidence.exported``, ``audit.anchored`` and
``audit.anchor_checked`` (an anchor taken or checked, ``anchor.py``). Since revision 0006
station and user entries carry the row's whole new state (``row``, secrets as their
SHA-256), logins and logouts the token's, and a second ``audit.sealed`` (subject ``revision
0006``) holds the state of what was stored before. The rows these entries speak of are
held against them by ``coverage.py`` and ``coverage_access.py`` (``cargoscan audit
verify``); anchors (``anchor.py``) catch a cut-off tail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, Text, cast, select
from sqlalchemy.orm import Session

from inference.service.db import AuditEntry, AuditHead, utcnow
from inference.service.signing import canonical, sha256_hex

GENESIS_PREV = "0" * 64
"""The ``prev_hash`` of the first entry."""
HEAD_ID = 1
APPEND_ONLY_TABLES = ("audit_log", "signatures", "results", "reviews", "reopenings", "scans")
"""Tables whose rows the database refuses to update or delete (migrations 0003, 0004)."""


def timestamp(at: datetime) -> str:
    """The hashed form of a time: UTC, microseconds (what both databases keep)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(
    *,
    seq: int,
    at: datetime,
    kind: str,
    actor: str,
    subject: str | None,
    data: dict[str, Any],
    prev: str,
) -> str:
    """SHA-256 (hex) of the canonical JSON of an entry's content and its predecessor."""
    return sha256_hex(
        canonical(
            {
                "seq": seq,
                "at": timestamp(at),
                "kind": kind,
                "actor": actor,
                "subject": subject,
                "data": data,
                "prev": prev,
            }
        )
    )


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    """An entry as JSON (what evidence packages carry; :func:`entry_hash` recomputes it)."""
    return {
        "seq": entry.seq,
        "at": timestamp(entry.created_at),
        "kind": entry.kind,
        "actor": entry.actor,
        "subject": entry.subject,
        "data": entry.data,
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
    }


def json_entry_ok(item: dict[str, Any]) -> bool:
    """Whether an :func:`entry_json` dict's hash matches its content."""
    at = datetime.strptime(item["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return item["entry_hash"] == entry_hash(
        seq=item["seq"],
        at=at,
        kind=item["kind"],
        actor=item["actor"],
        subject=item["subject"],
        data=item["data"],
        prev=item["prev_hash"],
    )


def actor_of(who: Any) -> str:
    """``station:NAME``, ``user:NAME`` or ``admin-key`` for an ``auth.Principal``."""
    if getattr(who, "station_id", None) is not None:
        return f"station:{who.name}"
    if getattr(who, "user_id", None) is not None:
        return f"user:{who.name}"
    return "admin-key"


def lock_head(s: Session) -> Any:
    """Lock the chain's head row for the rest of the session's transaction and return it
    (seq, entry_hash), or None before migration 0003. Every writer that appends takes it,
    so a check made after taking it sees every write committed before (reviews: "has
    another officer closed this scan?" cannot race)."""
    head = AuditHead.__table__
    if s.get_bind().dialect.name == "sqlite":
        # Take SQLite's write lock before reading the head: a read first would see a head
        # another connection may move before this transaction gets to write.
        s.execute(head.update().where(head.c.id == HEAD_ID).values(seq=head.c.seq))
    return s.execute(
        select(head.c.seq, head.c.entry_hash).where(head.c.id == HEAD_ID).with_for_update()
    ).one_or_none()


def append(
    s: Session,
    kind: str,
    actor: str,
    subject: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry in the session's transaction (it commits or rolls back with it)."""
    row = lock_head(s)
    if row is None:
        raise RuntimeError("the audit log has no head row: migrate the database (0003)")
    seq, prev = int(row.seq) + 1, str(row.entry_hash)
    at = utcnow()
    actor = actor[:200]  # the column's size: what is hashed is what is stored
    subject = subject[:200] if subject is not None else None
    payload = dict(data or {})
    entry = AuditEntry(
        seq=seq,
        created_at=at,
        kind=kind,
        actor=actor,
        subject=subject,
        data=payload,
        prev_hash=prev,
        entry_hash=entry_hash(
            seq=seq, at=at, kind=kind, actor=actor, subject=subject, data=payload, prev=prev
        ),
    )
    s.add(entry)
    s.flush()
    head = AuditHead.__table__
    s.execute(
        head.update().where(head.c.id == HEAD_ID).values(seq=seq, entry_hash=entry.entry_hash)
    )
    return entry


# --------------------------------------------------------------------------- checking


@dataclass
class ChainReport:
    """What :func:`verify_chain` found: ``broken_seq`` and ``problem`` name the first
    entry that does not check out (None when the whole chain does)."""

    entries: int
    head_seq: int | None
    head_hash: str | None
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class _Row:
    seq: int
    created_at: datetime
    kind: str
    actor: str
    subject: str | None
    data_text: str
    prev_hash: str
    entry_hash: str

    def describe(self) -> str:
        return f"entry #{self.seq} ({self.kind}, {timestamp(self.created_at)})"


def _rows(s: Session, after: int, upto: int, batch: int) -> list[_Row]:
    # ``data`` as the stored text: an entry edited into something that is not JSON is a
    # broken entry to name, not an exception.
    t = AuditEntry.__table__
    q = (
        select(
            t.c.seq,
            t.c.created_at,
            t.c.kind,
            t.c.actor,
            t.c.subject,
            cast(t.c.data, Text),
            t.c.prev_hash,
            t.c.entry_hash,
        )
        .where(t.c.seq > after, t.c.seq <= upto)
        .order_by(t.c.seq)
        .limit(batch)
    )
    return [_Row(*r) for r in s.execute(q).all()]


def verify_chain(engine: Engine, batch: int = 2000) -> ChainReport:
    """Re-hash every entry in order and check each link; stops at the first break.

    Checks the log up to the head read at the start: entries appended while it runs are
    for the next check."""
    checked = 0
    last: _Row | None = None
    with Session(engine) as s, s.begin():
        stored_head = s.execute(
            select(AuditHead.seq, AuditHead.entry_hash).where(AuditHead.id == HEAD_ID)
        ).one_or_none()
        if stored_head is None:
            return ChainReport(0, None, None, problem="the audit head row is missing")
        upto = max(int(stored_head.seq), 0)
        after = 0
        while True:
            try:
                rows = _rows(s, after, upto, batch)
            except ValueError as exc:  # e.g. a time edited into something that is not one
                where = after + 1
                problem = f"an entry after #{after} cannot be read ({exc}): it was edited"
                return ChainReport(checked, None, None, broken_seq=where, problem=problem)
            if not rows:
                break
            for row in rows:
                problem, where = _check(row, last)
                if problem is not None:
                    return ChainReport(checked, None, None, broken_seq=where, problem=problem)
                last = row
                checked += 1
            after = rows[-1].seq
    if last is None:
        return ChainReport(0, None, None, broken_seq=1, problem="the audit log is empty")
    report = ChainReport(checked, last.seq, last.entry_hash)
    if (stored_head.seq, stored_head.entry_hash) != (last.seq, last.entry_hash):
        report.broken_seq = last.seq + 1
        report.problem = (
            f"the log ends at entry #{last.seq} but its head says #{stored_head.seq} "
            f"({stored_head.entry_hash[:16]}...): entries after #{last.seq} were removed"
            if stored_head.seq > last.seq
            else f"the head (#{stored_head.seq}) does not match the last entry #{last.seq}"
        )
    return report


def _check(row: _Row, last: _Row | None) -> tuple[str | None, int | None]:
    """(what is wrong, which entry), or (None, None)."""
    expected_seq = 1 if last is None else last.seq + 1
    if row.seq != expected_seq:
        return (
            f"entry #{expected_seq} is missing: the log goes from "
            f"#{last.seq if last else 0} to #{row.seq} (removed)",
            expected_seq,
        )
    try:
        data = json.loads(row.data_text)
        recomputed = entry_hash(
            seq=row.seq,
            at=row.created_at,
            kind=row.kind,
            actor=row.actor,
            subject=row.subject,
            data=data,
            prev=row.prev_hash,
        )
    except ValueError:  # not JSON, or NaN: nothing the service writes
        recomputed = "(its data is not JSON)"
    if recomputed != row.entry_hash:
        return (
            f"{row.describe()} was changed after it was written: its content hashes to "
            f"{recomputed[:16]}..., not to its stored hash {row.entry_hash[:16]}...",
            row.seq,
        )
    expected_prev = GENESIS_PREV if last is None else last.entry_hash
    if row.prev_hash != expected_prev:
        if last is None:
            return (f"{row.describe()} does not start the chain", row.seq)
        return (
            f"{last.describe()} was replaced: entry #{row.seq} was chained to an entry "
            f"with hash {row.prev_hash[:16]}..., but #{last.seq} now hashes to "
            f"{last.entry_hash[:16]}...",
            last.seq,
        )
    return None, None
