"""The database: SQLAlchemy 2 models, the engine factory and the migrations runner.

SQLite by default (one machine, nothing to install), PostgreSQL by URL; the same models
and the same Alembic migrations serve both. Why the SQLite pragmas:

- ``journal_mode=WAL``: readers (the officers' queue) never block the writer (stations).
- ``foreign_keys=ON``: SQLite ignores foreign keys unless told, per connection.
- ``synchronous=FULL``: a result the station was told about (201) survives a power cut;
  WAL's default NORMAL may lose the last transactions.

Results are append-only: one row per (scan, model version), never updated; a newer model
adds a row and the newest row is the scan's current result. Reviews and re-openings are
append-only as well: a scan's review status is whichever of them came last. Since
revision 0003 the database itself refuses UPDATE and DELETE on results, reviews,
re-openings, signatures and the audit log, since 0004 on scans as well (triggers; see
``audit.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

MIGRATIONS = Path(__file__).with_name("migrations")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """A stored time as ISO 8601 for answers and signed statements (None stays None)."""
    return value.isoformat() if value is not None else None


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite stores no zone).

    Naive values are taken as UTC; values are stored as naive UTC on SQLite, so string
    comparison in SQL orders them correctly.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
        try:
            value = value.astimezone(timezone.utc)
        except OverflowError:  # e.g. 9999-12-31T23:00-05:00 (a query bound): the nearest end
            end = datetime.max if value.year > 1 else datetime.min
            value = end.replace(tzinfo=timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Station(Base):
    """A scanner station; only the SHA-256 of its API key is stored.

    A rotated key stays valid until ``previous_key_expires_at`` (the grace period the
    operator gave, so the station can be given its new key without a gap); a revoked
    station's keys are refused at once (``revoked_at``), its scans stay."""

    __tablename__ = "stations"
    __table_args__ = (Index("ix_stations_previous_key_hash", "previous_key_hash", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    previous_key_hash: Mapped[str | None] = mapped_column(String(64))
    previous_key_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ScanRecord(Base):
    """One posted scan: where its bytes are (by SHA-256) and what the station said."""

    __tablename__ = "scans"
    __table_args__ = (
        UniqueConstraint("station_id", "station_scan_id", name="uq_scans_station_scan_id"),
        Index("ix_scans_station_received", "station_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"))
    station_scan_id: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    scan_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bit_depth: Mapped[int] = mapped_column(Integer)
    high_sha256: Mapped[str] = mapped_column(String(64))
    high_bytes: Mapped[int] = mapped_column(Integer)
    low_sha256: Mapped[str | None] = mapped_column(String(64))
    low_bytes: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)

    station: Mapped[Station] = relationship(lazy="joined")


class ScanIdentifier(Base):
    """A container ISO id or the vehicle id of a scan, normalised (``records.identifiers``):
    the index that finds a container's or vehicle's earlier scans, which the metadata JSON
    column cannot be indexed for on both SQLite and PostgreSQL. Derived from the scan's
    metadata when it is stored (revision 0005 filled it for the scans before)."""

    __tablename__ = "scan_identifiers"
    __table_args__ = (
        UniqueConstraint("scan_id", "kind", "value", name="uq_scan_identifiers"),
        Index("ix_scan_identifiers_kind_value", "kind", "value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"))
    kind: Mapped[str] = mapped_column(String(10))  # "container" | "vehicle"
    value: Mapped[str] = mapped_column(String(100))


class ResultRecord(Base):
    """One model's result for one scan, as answered to the station. Never updated."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("scan_id", "model_version", name="uq_results_scan_model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(200))
    model_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    verdict: Mapped[str] = mapped_column(String(10), index=True)
    risk: Mapped[float] = mapped_column(Float)
    processing_ms: Mapped[float] = mapped_column(Float)
    anomaly_sha256: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class ModelActivation(Base):
    """A model that went live (at start or by roll-out): the audit trail of roll-outs,
    and what a restarted service loads again."""

    __tablename__ = "model_activations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    source: Mapped[str] = mapped_column(String(20))  # "config" | "admin"
    path: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    checks: Mapped[dict[str, Any]] = mapped_column(JSON)


class User(Base):
    """An officer, supervisor or admin; only an Argon2 hash of the password is stored."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # "officer" | "supervisor" | "admin"
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UserToken(Base):
    """A login: the SHA-256 of its bearer token (also the session cookie) and its expiry."""

    __tablename__ = "user_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Review(Base):
    """One officer's review of one result of a scan. Never updated: a later review of the
    same scan is a new row, the history stays."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"), index=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    user_role: Mapped[str] = mapped_column(String(20))  # the role when the review was made
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    model_version: Mapped[str] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(10))  # "release" | "inspect"
    comment: Mapped[str] = mapped_column(Text)
    # Per finding of the result: finding_id, decision, category, original_category, box,
    # score, source (a snapshot, so the review reads alone); boxes the officer drew.
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    added: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # Per manifest discrepancy of the result (revision 0007): index, decision (confirm |
    # reject) and a snapshot of it (``cargo_review``); NULL when the result had none.
    discrepancies: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)

    user: Mapped[User] = relationship(lazy="joined")


class Reopening(Base):
    """A supervisor sent a reviewed scan back to the queue. Never updated."""

    __tablename__ = "reopenings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reason: Mapped[str] = mapped_column(Text)


class AuditEntry(Base):
    """One event of the audit log (``audit.py``): append-only (database triggers refuse
    UPDATE and DELETE), each entry's hash covering its content and the previous entry's
    hash, so that a changed, removed or inserted entry breaks the chain from there on.

    ``seq`` is the position (1, 2, 3, ... with no gaps, given under the head's lock);
    ``prev_hash`` is unique, so two entries can never share a predecessor even if a writer
    skipped the lock."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(40), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The newest audit entry (one row, id 1): the row every append locks, so appends are
    serialised on PostgreSQL and SQLite alike; also lets a check see a cut-off tail."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[str] = mapped_column(String(64))


class Signature(Base):
    """The service key's Ed25519 signature of one statement about a result or a review.

    ``statement`` holds the exact bytes that were signed (canonical JSON), so a check
    never depends on serialising again. Append-only (triggers)."""

    __tablename__ = "signatures"
    __table_args__ = (Index("ix_signatures_subject", "subject", "subject_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    subject: Mapped[str] = mapped_column(String(20))  # "result" | "review"
    subject_id: Mapped[int] = mapped_column(Integer)
    key_sha256: Mapped[str] = mapped_column(String(64))
    statement: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(100))  # base64 of 64 bytes


def normalise_url(url: str) -> str:
    """``postgresql://`` -> the psycopg 3 driver (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _create_private(url: str) -> None:
    """Make a new SQLite file mode 0600 before SQLite does (0644 by the umask): it holds
    password and token hashes. SQLite gives its -wal and -shm files the database file's
    mode. An existing file (one an earlier release made 0644) is tightened to 0600, with
    its -wal and -shm files, when the running user owns it (:func:`_tighten`)."""
    import os

    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _tighten(name)
        return
    except OSError:  # a folder that does not exist: SQLite says so when it connects
        return
    os.close(fd)


def _tighten(name: str) -> None:
    """Mode 0600 for an existing database file and its -wal and -shm files that others can
    read or write, when the running user owns them (logged); a file someone else owns is
    left as it is, with a warning (changing it is its owner's call)."""
    import logging
    import os
    import stat

    log = logging.getLogger("cargoscan.service")
    getuid = getattr(os, "geteuid", None)
    if getuid is None:  # not POSIX: no such modes
        return
    for path in (name, f"{name}-wal", f"{name}-shm"):
        try:
            st = os.stat(path)
        except OSError:  # no -wal or -shm file (yet)
            continue
        mode = stat.S_IMODE(st.st_mode)
        if not mode & 0o077:
            continue
        if st.st_uid != getuid():
            log.warning(
                "database file %s is mode %o and owned by uid %d, not by this user: "
                "chmod 600 it (it holds password and token hashes)",
                path,
                mode,
                st.st_uid,
            )
            continue
        try:
            os.chmod(path, 0o600)
        except OSError as exc:
            log.warning("database file %s is mode %o: chmod 600 failed: %s", path, mode, exc)
            continue
        log.warning(
            "database file %s was mode %o, readable beyond its owner: made it 0600 (it "
            "holds password and token hashes)",
            path,
            mode,
        )


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and synchronous=FULL, and its
    database file is made private (0600: new, or existing and the running user's)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        _create_private(url)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


MIGRATION_LOCK_ID = 0x436172676F5363  # "CargoSc": PostgreSQL's advisory lock of migrate()
"""Every replica migrates at start: the lock makes the second wait and then find the schema
at the newest revision, instead of both creating the same tables (one would fail)."""


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision (at every start).

    Serialised across processes (replicas starting together, the CLI beside a server): on
    PostgreSQL by an advisory lock taken in the migration's own transaction (DDL is
    transactional there, so the lock is released exactly when the new schema is
    committed); on SQLite, whose DDL takes no lock up front, by a file lock beside the
    database file."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _sqlite_file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive ``flock`` on ``DATABASE.migrate-lock`` while a SQLite database migrates
    (nothing to lock for another database, an in-memory one or where flock is missing)."""
    name = engine.url.database if engine.dialect.name == "sqlite" else None
    try:
        import fcntl
    except ImportError:  # not POSIX
        name = None
    if not name or name == ":memory:" or name.startswith("file:"):
        yield
        return
    import os

    try:
        fd = os.open(f"{name}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # a read-only folder: SQLite will say what is wrong when it connects
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
