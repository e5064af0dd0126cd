"""Tampering with what access rests on (issue 29, the rows `audit verify` did not cover):
stations, users, session tokens, model activations and signature rows, edited in SQL by
someone who owns the database (triggers dropped where there are any). `cargoscan audit
verify` must name each edit: the row and the field. Real SQLite always, real PostgreSQL
when CARGOSCAN_TEST_POSTGRES_URL is set (those runs skip and say so otherwise); the
database is filled through the service's own repositories, the check is the real CLI."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from cargoscan.cli import main
from inference.service import audit
from inference.service.auth import hash_key, new_key, new_token
from inference.service.db import (
    AuditEntry,
    ModelActivation,
    Review,
    Signature,
    Station,
    User,
    UserToken,
    make_engine,
    migrate,
)
from inference.service.records import Records
from inference.service.signing import Signer
from tests.inference.service import test_service_storage
from tests.inference.service.test_audit_evidence import _scan_and_result

postgres_url = test_service_storage.postgres_url  # a fresh schema per test, dropped after


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'access.db'}"
    return request.getfixturevalue("postgres_url")


@dataclass
class World:
    """A database as the service leaves it: stations, users, sessions, a signed result
    and review, a model activation; ``argv`` runs `audit verify` on it with its key."""

    engine: Engine
    records: Records
    argv: list[str]
    tokens: dict[str, str]  # name -> the token's hash
    ids: dict[str, int]


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    engine = make_engine(database_url)
    migrate(engine)
    signer = Signer.generate()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "signing-key.pem").write_bytes(signer.private_pem())
    (data_dir / "signing-key.pem").chmod(0o600)
    records = Records(engine, signer)
    gate1 = records.add_station("gate-1", hash_key(new_key()))
    records.add_station("gate-2", hash_key(new_key()))
    records.rotate_station_key("gate-2", hash_key(new_key()), 3600)
    records.add_station("gate-3", hash_key(new_key()))
    records.revoke_station("gate-3")
    ids = {"gate-1": gate1.id}
    for name, role in (("olga", "officer"), ("sue", "supervisor"), ("adam", "admin")):
        ids[name] = records.add_user(name, role, f"$argon2id$fake${name}").id
    records.add_user("eve", "officer", "$argon2id$fake$eve")
    records.update_user("eve", active=False)
    tokens = {}
    for name in ("olga", "sue", "adam"):
        tokens[name] = hash_key(new_token())
        records.add_token(ids[name], tokens[name], datetime.now(timezone.utc) + timedelta(hours=8))
    records.revoke_token(tokens["sue"])  # sue logged out
    records.update_user("adam", password_hash="$argon2id$fake$adam2")  # ends adam's session
    ids["activation"] = records.add_activation(
        source="config",
        path="/srv/models/m.onnx",
        info={"name": "m", "version": "m@0123", "sha256": "1" * 64},
        checks={"warm_up_ms": 12.0},
    )
    scan, result = _scan_and_result(gate1.id, "T-1")
    records.add_scan(scan, result)
    review = Review(
        scan_id=scan.id,
        result_id=result.id,
        user_id=ids["olga"],
        user_role="officer",
        model_version=result.model_version,
        verdict="release",
        comment="",
        findings=[],
        added=[],
    )
    ids["review"] = records.add_review(review).id
    ids["result"] = result.id
    argv = ["audit", "verify", "--database-url", database_url, "--data-dir", str(data_dir)]
    yield World(engine, records, argv, tokens, ids)
    engine.dispose()


def verify(capsys: pytest.CaptureFixture[str], w: World) -> tuple[int, str, str]:
    code = main(w.argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def drop_triggers(engine: Engine, table: str) -> None:
    """Every trigger on ``table``: what someone who owns the database does first."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            q = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"
            for (name,) in conn.execute(text(q), {"t": table}).all():
                conn.execute(text(f'DROP TRIGGER "{name}"'))
        else:
            q = (
                "SELECT tgname FROM pg_trigger "
                "WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal"
            )
            for (name,) in conn.execute(text(q), {"t": table}).all():
                conn.execute(text(f'DROP TRIGGER "{name}" ON {table}'))


def change(engine: Engine, statement: Executable) -> None:
    with engine.begin() as conn:
        conn.execute(statement)


def entry_seq(engine: Engine, kind: str, subject: str) -> int:
    """The newest entry of ``kind`` about ``subject``."""
    with Session(engine) as s:
        return s.scalars(
            select(AuditEntry.seq)
            .where(AuditEntry.kind == kind, AuditEntry.subject == subject)
            .order_by(AuditEntry.seq.desc())
        ).first()


def test_the_untouched_database_verifies(world: World, capsys: pytest.CaptureFixture[str]):
    code, out, err = verify(capsys, world)
    assert code == 0, err
    assert "3 stations, 4 users, 1 live sessions, 1 model activations, 2 signatures" in out
    assert "not verified" not in out  # the key was there: every signature's bytes checked


def test_edited_stations_are_named(world: World, capsys: pytest.CaptureFixture[str]):
    """Stations have no triggers (keys rotate): an edit needs no more than an UPDATE."""
    e = world.engine
    mine = hash_key("cs_the-attackers-own-key")
    change(e, update(Station).where(Station.name == "gate-1").values(key_hash=mine))
    assert world.records.station_by_key_hash(mine).name == "gate-1"  # the edit lets them in
    change(e, update(Station).where(Station.name == "gate-3").values(revoked_at=None))
    later = datetime.now(timezone.utc) + timedelta(days=300)
    change(e, update(Station).where(Station.name == "gate-2").values(previous_key_expires_at=later))
    change(
        e,
        insert(Station).values(
            name="rogue", key_hash=hash_key("cs_rogue"), created_at=datetime.now(timezone.utc)
        ),
    )
    code, _, err = verify(capsys, world)
    assert code == 1
    created = entry_seq(e, "station.created", "gate-1")
    assert (
        f"station 'gate-1' (id {world.ids['gate-1']}) was changed behind the log: key hash "
        f"differ from what audit entry #{created} recorded" in err
    )
    revoked = entry_seq(e, "station.revoked", "gate-3")
    assert "station 'gate-3'" in err and "revocation (" in err and ", none stored)" in err
    assert f"differ from what audit entry #{revoked} recorded" in err
    rotated = entry_seq(e, "station.key_rotated", "gate-2")
    assert "station 'gate-2'" in err
    assert "previous key's grace period ('" in err and f"'{later.isoformat()}' stored)" in err
    assert f"audit entry #{rotated} recorded" in err
    assert "station 'rogue'" in err and "has no audit entry: added behind the log" in err


def test_edited_users_and_sessions_are_named(world: World, capsys: pytest.CaptureFixture[str]):
    e, ids, tokens = world.engine, world.ids, world.tokens
    change(e, update(User).where(User.name == "olga").values(role="admin"))
    change(e, update(User).where(User.name == "sue").values(password_hash="$argon2id$mine"))
    change(e, update(User).where(User.name == "eve").values(active=True))
    # sessions: sue's ended by her logout, adam's by his password change, both live again;
    # one slipped in for adam; olga's moved to adam
    change(
        e, update(UserToken).where(UserToken.token_hash == tokens["sue"]).values(revoked_at=None)
    )
    change(
        e, update(UserToken).where(UserToken.token_hash == tokens["adam"]).values(revoked_at=None)
    )
    forged = hash_key("csu_forged")
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    change(e, insert(UserToken).values(user_id=ids["adam"], token_hash=forged, expires_at=until))
    assert world.records.user_by_token_hash(forged).name == "adam"  # the edit lets them in
    change(
        e,
        update(UserToken).where(UserToken.token_hash == tokens["olga"]).values(user_id=ids["adam"]),
    )
    code, _, err = verify(capsys, world)
    assert code == 1
    assert (
        f"user 'olga' (id {ids['olga']}) was changed behind the log: role ('officer' recorded, "
        f"'admin' stored) differ from what audit entry #{entry_seq(e, 'user.created', 'olga')}"
        in err
    )
    assert f"user 'sue' (id {ids['sue']}) was changed behind the log: password hash differ" in err
    assert "user 'eve'" in err and "active (False recorded, True stored)" in err
    assert f"differ from what audit entry #{entry_seq(e, 'user.changed', 'eve')} recorded" in err
    logout = entry_seq(e, "user.logout", "sue")
    assert f"of user 'sue' was ended by its logout (audit entry #{logout}) but is live again" in err
    changed = entry_seq(e, "user.changed", "adam")
    assert f"was ended by a password change (audit entry #{changed}) but is live again" in err
    assert "of user 'adam' has no user.login entry: it was added behind the log" in err
    assert "of user 'adam' was changed behind the log: user ('olga' recorded, 'adam' stored)" in err
    # nothing about the rows left alone
    assert "'gate-1'" not in err and "model activation" not in err and "signature" not in err


def test_edited_signatures_and_activations_are_named(
    world: World, capsys: pytest.CaptureFixture[str]
):
    e, ids = world.engine, world.ids
    change(e, update(ModelActivation).values(path="/tmp/attackers.onnx"))
    with Session(e) as s:
        sigs = {x.subject: x for x in s.scalars(select(Signature))}
    with pytest.raises(DBAPIError, match="append-only"):
        change(e, update(Signature).values(signature="x"))  # refused, until ...
    drop_triggers(e, "signatures")
    # the result's signature replaced by the signature of another statement (valid base64,
    # the right length, made with some other key): only the service's key shows it
    other = Signer.generate().sign(b"something else")
    change(e, update(Signature).where(Signature.id == sigs["result"].id).values(signature=other))
    edited = sigs["review"].statement.replace('"release"', '"inspect"')
    assert edited != sigs["review"].statement
    change(e, update(Signature).where(Signature.id == sigs["review"].id).values(statement=edited))
    code, _, err = verify(capsys, world)
    assert code == 1
    assert (
        f"model activation {ids['activation']} (m@0123) was changed behind the log: path differ"
        in err
    )
    assert (
        f"signature {sigs['result'].id} of result {ids['result']} does not verify with the "
        "service's key over its statement: its bytes were changed" in err
    )
    assert (
        f"signature {sigs['review'].id} of review {ids['review']} was changed after it was "
        "stored: statement differ from what audit entry #" in err
    )
    change(e, delete(Signature).where(Signature.id == sigs["review"].id))
    code, _, err = verify(capsys, world)
    assert f"signature {sigs['review'].id} of review {ids['review']} (audit entry #" in err
    assert "is missing from the database: it was deleted" in err


def test_a_database_of_the_previous_release_is_sealed_for_access(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Stations, users, sessions and activations stored by the previous release (entries
    without their state, or none at all) are sealed by migration 0006: it verifies, an
    edit of any of them is named against the seal, and a change made after the upgrade is
    held against its own entry."""
    from alembic import command
    from alembic.config import Config

    from inference.service.db import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:  # revision 0005
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
    with Session(engine) as s, s.begin():  # what that release wrote
        s.execute(insert(Station).values(name="old", key_hash="a" * 64, created_at=now))
        sid = s.scalars(select(Station.id)).one()
        audit.append(s, "station.created", "cli", "old", {"station_id": sid})
        s.execute(
            insert(User).values(
                name="olga", role="officer", password_hash="$x", active=True, created_at=now
            )
        )
        uid = s.scalars(select(User.id)).one()
        audit.append(s, "user.created", "cli", "olga", {"user_id": uid, "role": "officer"})
        token = hash_key(new_token())
        until = now + timedelta(hours=8)
        s.execute(insert(UserToken).values(user_id=uid, token_hash=token, expires_at=until))
        audit.append(
            s, "user.login", "user:olga", "olga", {"user_id": uid, "expires_at": until.isoformat()}
        )
        # an activation from before the log began: no entry at all
        s.execute(
            insert(ModelActivation).values(
                source="config", path="/m.onnx", name="m", version="m@1", sha256="1" * 64,
                checks={}, created_at=now,
            )
        )  # fmt: skip
    migrate(engine)
    with Session(engine) as s:
        seal = s.scalars(select(AuditEntry).where(AuditEntry.subject == "revision 0006")).one()
    assert seal.kind == "audit.sealed"
    assert [f["name"] for f in seal.data["stations"]] == ["old"]
    assert seal.data["stations"][0]["key_hash_sha256"] == hashlib.sha256(b"a" * 64).hexdigest()
    assert [f["role"] for f in seal.data["users"]] == ["officer"]
    assert len(seal.data["user_tokens"]) == 1 and len(seal.data["model_activations"]) == 1
    argv = ["audit", "verify", "--database-url", url]
    code, out, err = main(argv), *capsys.readouterr()
    assert code == 0, err
    assert "1 stations, 1 users, 1 live sessions, 1 model activations" in out

    records = Records(engine)
    records.update_user("olga", role="supervisor")  # after the upgrade: its own entry
    change(engine, update(Station).values(key_hash="b" * 64))
    change(engine, update(UserToken).values(expires_at=until + timedelta(days=30)))
    change(engine, update(ModelActivation).values(sha256="2" * 64))
    code, _, err = main(argv), *capsys.readouterr()
    assert code == 1
    assert (
        f"station 'old' (id {sid}) was changed behind the log: key hash differ from what the "
        f"seal of revision 0006 #{seal.seq} recorded" in err
    )
    assert "of user 'olga' was changed behind the log: expiry (" in err
    assert (
        "model activation 1 (m@1) was changed behind the log: it differs from what the seal" in err
    )
    assert "user 'olga'" not in err.replace("of user 'olga'", "")  # her role change was logged
    change(engine, update(User).values(role="admin"))
    code, _, err = main(argv), *capsys.readouterr()
    changed = entry_seq(engine, "user.changed", "olga")
    assert (
        f"role ('supervisor' recorded, 'admin' stored) differ from what audit entry #{changed}"
        in err
    )
    engine.dispose()
