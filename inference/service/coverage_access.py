"""What access and the serving model rest on, held against the audit log: the part of
``cargoscan audit verify`` after scans, results and reviews (``coverage.py``).

Why: someone who owns the database can give a station a key of their own (its key hash
swapped), un-revoke a station, raise an officer to admin, set a password hash they know,
slip in a session token or point the model activation (which every replica follows) at
another file, all without touching the chain, unless these rows are checked too:

- a station (name, key hash, revocation, the previous key and its grace period) against
  the newest state an entry recorded of it (``station.created``, ``station.key_rotated``,
  ``station.revoked`` carry the whole row since revision 0006) or the seal of 0006;
- a user (name, role, password hash, active) likewise (``user.created``, ``user.changed``);
- each live session token (not revoked, not expired: only those let anyone in) against
  the ``user.login`` entry that handed it out (or the seal), and against the logout,
  password change or deactivation that ended it;
- a model activation against its ``model.activated`` entry (or the seal).

Each problem names the row and the fields that differ (the secrets' values never: their
SHA-256 is what entries hold). A row with no entry and a logged row that is gone are
named too. Entries written before revision 0006 carry no state; the seal stands for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.service.db import AuditEntry, ModelActivation, Station, User, UserToken, utcnow
from inference.service.facts import (
    ACCESS_SEAL_SUBJECT,
    STATION_FIELDS,
    USER_FIELDS,
    activation_fact_of,
    fact_sha256,
    station_fact_of,
    token_fact_of,
    user_fact_of,
)

STATION_KINDS = ("station.created", "station.key_rotated", "station.revoked")
USER_KINDS = ("user.created", "user.changed")
SHOWN = {"name", "role", "active", "revoked_at", "previous_key_expires_at"}
"""Fields whose recorded and stored values a report shows (not secrets' digests)."""


def access_seal(s: Session) -> tuple[int, dict[str, Any]] | None:
    """(seq, data) of migration 0006's ``audit.sealed`` entry; None when it sealed nothing."""
    row = s.execute(
        select(AuditEntry.seq, AuditEntry.data)
        .where(AuditEntry.kind == "audit.sealed", AuditEntry.subject == ACCESS_SEAL_SUBJECT)
        .order_by(AuditEntry.seq)
        .limit(1)
    ).first()
    if row is None:
        return None
    return int(row.seq), row.data if isinstance(row.data, dict) else {}


def _by_kind(s: Session, kinds: tuple[str, ...]) -> list[tuple[int, str, str | None, dict]]:
    """(seq, kind, subject, data) of the entries of ``kinds``, oldest first."""
    q = (
        select(AuditEntry.seq, AuditEntry.kind, AuditEntry.subject, AuditEntry.data)
        .where(AuditEntry.kind.in_(kinds))
        .order_by(AuditEntry.seq)
    )
    return [
        (int(seq), kind, subject, data if isinstance(data, dict) else {})
        for seq, kind, subject, data in s.execute(q)
    ]


def verify_access(s: Session, add: Callable[[str], None], checked: dict[str, int]) -> None:
    """Check stations, users, live sessions and model activations (see the module);
    ``add`` takes each problem, ``checked`` the counts."""
    seal = access_seal(s)
    seal_seq, sealed = seal if seal is not None else (0, {})
    _mutable(
        s,
        add,
        checked,
        what="station",
        rows=s.scalars(select(Station).order_by(Station.id)).all(),
        fact_of=station_fact_of,
        fields=STATION_FIELDS,
        entries=_by_kind(s, STATION_KINDS),
        key="station_id",
        seal_seq=seal_seq,
        sealed=sealed.get("stations"),
    )
    _mutable(
        s,
        add,
        checked,
        what="user",
        rows=s.scalars(select(User).order_by(User.id)).all(),
        fact_of=user_fact_of,
        fields=USER_FIELDS,
        entries=_by_kind(s, USER_KINDS),
        key="user_id",
        seal_seq=seal_seq,
        sealed=sealed.get("users"),
    )
    _sessions(s, add, checked, seal_seq, sealed.get("user_tokens"))
    _activations(s, add, checked, seal_seq, sealed.get("model_activations"))


def _mutable(
    s: Session,
    add: Callable[[str], None],
    checked: dict[str, int],
    *,
    what: str,
    rows: Any,
    fact_of: Callable[[Any], dict[str, Any]],
    fields: Mapping[str, str],
    entries: list[tuple[int, str, str | None, dict]],
    key: str,
    seal_seq: int,
    sealed: Any,
) -> None:
    """Each row against the newest state recorded of it: in an entry's ``row`` or the seal."""
    recorded: dict[Any, tuple[int, dict[str, Any]]] = {}  # id -> (seq, fact)
    stateless: dict[Any, int] = {}  # id -> newest entry without a state (an older release)
    for fact in sealed if isinstance(sealed, list) else []:
        if isinstance(fact, dict):
            recorded[fact.get("id")] = (seal_seq, fact)
    for seq, _kind, _subject, data in entries:
        ident = data.get(key)
        if isinstance(data.get("row"), dict):
            if ident not in recorded or seq > recorded[ident][0]:
                recorded[ident] = (seq, data["row"])
        elif seq > seal_seq:
            stateless[ident] = seq
    n = 0
    for row in rows:
        n += 1
        have = fact_of(row)
        found = recorded.pop(row.id, None)
        if found is None:
            add(f"{what} {row.name!r} (id {row.id}) has no audit entry: added behind the log")
            continue
        seq, said = found
        differ = [k for k in fields if said.get(k) != have.get(k)]
        if not differ:
            continue
        shown = [
            f"{fields[k]} ({_show(said.get(k))} recorded, {_show(have.get(k))} stored)"
            if k in SHOWN
            else fields[k]
            for k in differ
        ]
        where = "the seal of revision 0006" if seq == seal_seq else "audit entry"
        later = stateless.get(row.id)
        note = (
            f" (entry #{later} changed it without recording its state: a replica of an "
            "older release?)"
            if later is not None and later > seq
            else ""
        )
        add(
            f"{what} {row.name!r} (id {row.id}) was changed behind the log: "
            f"{', '.join(shown)} differ from what {where} #{seq} recorded{note}"
        )
    for ident, (seq, said) in recorded.items():
        add(
            f"{what} {said.get('name')!r} (id {ident}, recorded in audit entry #{seq}) is "
            "missing from the database: it was deleted"
        )
    checked[f"{what}s"] = n


def _show(value: Any) -> str:
    return "none" if value is None else repr(value)


def _sessions(
    s: Session, add: Callable[[str], None], checked: dict[str, int], seal_seq: int, sealed: Any
) -> None:
    """Each live token against its login, and against what should have ended it."""
    logins: dict[str, tuple[int, dict[str, Any]]] = {}
    for fact in sealed if isinstance(sealed, list) else []:
        if isinstance(fact, dict):
            logins[str(fact.get("token_sha256"))] = (seal_seq, fact)
    ended: dict[str, int] = {}  # token digest -> the logout's seq
    cut: dict[Any, list[tuple[int, str]]] = {}  # user id -> (seq, why) of ends of all sessions
    for seq, kind, _subject, data in _by_kind(s, ("user.login", "user.logout", "user.changed")):
        digest = data.get("token_sha256")
        if kind == "user.login" and digest is not None:
            logins[str(digest)] = (seq, data)
        elif kind == "user.logout" and digest is not None:
            ended.setdefault(str(digest), seq)
        elif kind == "user.changed":
            if data.get("password") == "changed":
                cut.setdefault(data.get("user_id"), []).append((seq, "a password change"))
            elif data.get("active") is False:
                cut.setdefault(data.get("user_id"), []).append((seq, "a deactivation"))
    now = utcnow()
    names = {uid: name for uid, name in s.execute(select(User.id, User.name))}
    live = s.scalars(
        select(UserToken)
        .where(UserToken.revoked_at.is_(None), UserToken.expires_at > now)
        .order_by(UserToken.id)
    ).all()
    for token in live:
        have = token_fact_of(token)
        digest = str(have["token_sha256"])
        user = names.get(token.user_id, token.user_id)
        who = f"a live session token (id {token.id}) of user {user!r}"
        found = logins.get(digest)
        if found is None:
            add(f"{who} has no user.login entry: it was added behind the log")
            continue
        seq, said = found
        differ = []
        if said.get("user_id") != token.user_id:
            was = names.get(said.get("user_id"), said.get("user_id"))
            differ.append(f"user ({was!r} recorded, {user!r} stored)")
        if said.get("expires_at") != have["expires_at"]:
            differ.append(
                f"expiry ({said.get('expires_at')} recorded, {have['expires_at']} stored)"
            )
        if differ:
            add(
                f"{who} was changed behind the log: {', '.join(differ)} differ from what "
                f"audit entry #{seq} recorded at its login"
            )
        if digest in ended and ended[digest] > seq:
            add(f"{who} was ended by its logout (audit entry #{ended[digest]}) but is live again")
        for end, why in cut.get(token.user_id, []):
            if end > seq:
                add(
                    f"{who} (login in entry #{seq}) was ended by {why} (audit entry #{end}) "
                    "but is live again"
                )
                break
    checked["live sessions"] = len(live)


def _activations(
    s: Session, add: Callable[[str], None], checked: dict[str, int], seal_seq: int, sealed: Any
) -> None:
    """Each model activation against its ``model.activated`` entry (or the seal)."""
    logged: dict[Any, tuple[int, str | None, dict[str, Any]]] = {}
    for seq, _kind, subject, data in _by_kind(s, ("model.activated",)):
        logged.setdefault(data.get("activation_id"), (seq, subject, data))
    seal = sealed if isinstance(sealed, dict) else {}
    n = 0
    for (row,) in s.execute(select(ModelActivation).order_by(ModelActivation.id)):
        n += 1
        digest = fact_sha256(activation_fact_of(row))
        found = logged.pop(row.id, None)
        if found is None:
            said = seal.get(str(row.id))
            if said is None:
                add(
                    f"model activation {row.id} ({row.version}) has no audit entry: it was "
                    "added behind the log"
                )
            elif said != digest:
                add(
                    f"model activation {row.id} ({row.version}) was changed behind the log: "
                    f"it differs from what the seal of revision 0006 (#{seal_seq}) recorded"
                )
            continue
        seq, subject, d = found
        differ = [
            k
            for k, said_v, have in (
                ("version", subject, row.version),
                ("source", d.get("source"), row.source),
                ("path", d.get("path"), row.path),
                ("name", d.get("name"), row.name),
                ("sha256", d.get("sha256"), row.sha256),
            )
            if said_v != have
        ]
        recorded = d.get("row_sha256")
        if not differ and recorded is not None and recorded != digest:
            differ = ["its time or checks"]
        if differ:
            add(
                f"model activation {row.id} ({row.version}) was changed behind the log: "
                f"{', '.join(differ)} differ from what audit entry #{seq} recorded"
            )
    for ident, (seq, subject, _d) in logged.items():
        add(
            f"model activation {ident} ({subject}, audit entry #{seq}) is missing from the "
            "database: it was deleted"
        )
    checked["model activations"] = n
