"""Records and signatures: the hash-chained audit log (append-only in the database, checked
by `cargoscan audit verify`), the service's signing key, signed results and reviews, and
evidence packages checked offline by `cargoscan verify`. SQLite always; PostgreSQL too when
CARGOSCAN_TEST_POSTGRES_URL is set (a fresh schema per test)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import stat
import threading
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from cargoscan.cli import main
from inference.service import evidence
from inference.service.app import open_records
from inference.service.audit import APPEND_ONLY_TABLES, verify_chain
from inference.service.auth import hash_key, hash_password, new_key
from inference.service.db import (
    AuditEntry,
    ResultRecord,
    Review,
    ScanRecord,
    Station,
    User,
    make_engine,
    migrate,
)
from inference.service.records import Records
from inference.service.settings import Settings
from inference.service.signing import Signer, canonical, sha256_hex
from inference.service.storage import BlobStore
from tests.inference.service import test_service_storage
from tests.inference.service.service_helpers import ADMIN, running, scan_pngs

API = "/api/v1"
PASSWORD = "correct horse battery"
postgres_url = test_service_storage.postgres_url  # the same fresh-schema fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and (when configured) on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return request.getfixturevalue("postgres_url")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def kinds(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(AuditEntry.kind).order_by(AuditEntry.seq)))


# --------------------------------------------------------------------------- the chain


def test_a_realistic_sequence_leaves_a_chain_that_verifies(
    make_settings: Callable[..., Settings],
    models: dict[str, Path],
    database_url: str,
    capsys: pytest.CaptureFixture[str],
):
    settings = make_settings(database_url=database_url)
    db = ["--database-url", database_url, "--data-dir", str(settings.data_dir)]
    code, key, _ = cli(capsys, "station", "add", "gate-1", *db)  # key creation, by the CLI
    assert code == 0
    station = bearer(key.strip())
    records = open_records(settings)
    records.add_user("olga", "officer", hash_password(PASSWORD))
    records.add_user("sue", "supervisor", hash_password(PASSWORD))
    records.engine.dispose()
    files = scan_pngs(seed=3)
    with running(settings) as client:
        wrong = {"username": "olga", "password": "not her password"}
        assert client.post(f"{API}/auth/login", json=wrong).status_code == 401
        olga = client.post(f"{API}/auth/login", json={"username": "olga", "password": PASSWORD})
        sue = client.post(f"{API}/auth/login", json={"username": "sue", "password": PASSWORD})
        client.cookies.clear()
        olga, sue = bearer(olga.json()["token"]), bearer(sue.json()["token"])
        posted = client.post(f"{API}/scans", files=files, headers=station)
        assert posted.status_code == 201, posted.text
        sid = posted.json()["scan_id"]
        decided = [{"finding_id": f["id"], "decision": "accept"} for f in posted.json()["findings"]]
        review = {"findings": decided, "added": [], "verdict": "inspect", "comment": "look"}
        r = client.post(f"{API}/scans/{sid}/reviews", json=review, headers=olga)
        assert r.status_code == 201, r.text
        assert client.post(f"{API}/scans/{sid}/reopen", json={}, headers=sue).status_code == 200
        r = client.post(f"{API}/admin/stations", json={"name": "gate-2"}, headers=ADMIN)
        assert r.status_code == 201  # key creation, by the admin API
        r = client.post(f"{API}/admin/model", json={"path": str(models["clear"])}, headers=ADMIN)
        assert r.status_code == 200, r.text
        r = client.patch(f"{API}/admin/users/olga", json={"role": "supervisor"}, headers=ADMIN)
        assert r.status_code == 200
        assert client.get(f"{API}/scans/{sid}/evidence", headers=sue).status_code == 200
        assert client.post(f"{API}/auth/logout", headers=olga).status_code == 200

    code, out, err = cli(capsys, "audit", "verify", *db)
    assert code == 0, err
    assert out.startswith("audit log OK: ")
    assert (
        "records OK: 1 scans, 1 results, 1 reviews, 1 reopenings, 2 stations, 2 users, "
        "1 live sessions, 2 model activations, 2 signatures match their entries" in out
    )  # both DBs; olga logged out, sue did not
    assert "their bytes were not verified" not in out  # the service's key is in the data dir
    engine = make_engine(database_url)
    logged = kinds(engine)
    assert logged[0] == "audit.start"
    for kind in (
        "station.created",
        "user.created",
        "user.login_failed",
        "user.login",
        "scan.received",
        "result",
        "review",
        "review.reopened",
        "model.activated",
        "user.changed",
        "evidence.exported",
        "user.logout",
    ):
        assert kind in logged, kind
    assert logged.count("model.activated") == 2  # the configured model, then the roll-out
    assert logged.count("station.created") == 2
    with Session(engine) as s:
        entries = {e.kind: e for e in s.scalars(select(AuditEntry).order_by(AuditEntry.seq))}
    received = entries["scan.received"]
    assert received.subject == sid and received.actor == "station:gate-1"
    assert received.data["high_sha256"] == hashlib.sha256(files["high"][1]).hexdigest()
    assert received.data["low_sha256"] == hashlib.sha256(files["low"][1]).hexdigest()
    assert entries["result"].data["signature_id"] is not None
    assert entries["review"].actor == "user:olga" and entries["review"].data["verdict"] == "inspect"
    assert entries["station.created"].actor == "admin-key"
    assert entries["user.changed"].data["role"] == {"from": "officer", "to": "supervisor"}
    assert entries["user.login_failed"].subject == "olga"
    # the states access rests on, the secrets as their SHA-256 only
    station_row = entries["station.created"].data["row"]
    assert station_row["name"] == "gate-2" and len(station_row["key_hash_sha256"]) == 64
    with Session(engine) as s:
        log_text = json.dumps([e.data for e in s.scalars(select(AuditEntry))])
        secrets = [*s.scalars(select(Station.key_hash)), *s.scalars(select(User.password_hash))]
    assert len(secrets) == 4 and not [x for x in secrets if x in log_text]
    assert entries["user.changed"].data["row"]["role"] == "supervisor"
    assert len(entries["user.logout"].data["token_sha256"]) == 64
    engine.dispose()


def test_the_chain_starts_at_the_migration_and_counts_what_was_there(tmp_path: Path):
    from alembic import command
    from alembic.config import Config

    from inference.service.db import MIGRATIONS

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:  # a database of the previous release, with a station
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        conn.execute(
            text("INSERT INTO stations (name, key_hash, created_at) VALUES ('old', :h, :t)"),
            {"h": "0" * 64, "t": datetime.now(timezone.utc)},
        )
    migrate(engine)
    report = verify_chain(engine)
    assert report.ok and report.entries == 2
    with Session(engine) as s:
        first, sealed = s.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert first.kind == "audit.start" and first.data["rows_before"]["stations"] == 1
    # the station itself, which no entry speaks of, is sealed by migration 0006
    assert sealed.kind == "audit.sealed" and sealed.subject == "revision 0006"
    assert [f["name"] for f in sealed.data["stations"]] == ["old"]
    engine.dispose()


def test_the_database_refuses_to_update_or_delete_the_append_only_tables(database_url: str):
    engine = make_engine(database_url)
    migrate(engine)
    records = Records(engine, Signer.generate())
    user = records.add_user("olga", "officer", "x")
    station = records.add_station("gate-1", hash_key(new_key()))
    scan, result = _scan_and_result(station.id, "A-1")
    records.add_scan(scan, result)  # a result and its signature
    review = Review(
        scan_id=scan.id,
        result_id=result.id,
        user_id=user.id,
        user_role="officer",
        model_version=result.model_version,
        verdict="release",
        comment="",
        findings=[],
        added=[],
    )
    records.add_review(review)
    records.add_reopening(scan.id, user.id, "again")
    for table in APPEND_ONLY_TABLES:  # each has a row now: a trigger fires per row
        for sql in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}"):
            sql = sql.replace("id = id", "seq = seq") if table == "audit_log" else sql
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(sql))
    # the head only ever moves forward to the newest entry
    with pytest.raises(DBAPIError, match="audit_head"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_head SET seq = 1, entry_hash = :h"), {"h": "f" * 64})
    with pytest.raises(DBAPIError, match="audit_head"), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_head"))
    if engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_log"))
    assert verify_chain(engine).ok
    engine.dispose()


def _drop_guards(engine: Engine) -> None:
    """What someone who owns the database could do to get past the triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for name in ("audit_log_no_update", "audit_log_no_delete", "audit_head_forward"):
                conn.execute(text(f"DROP TRIGGER {name}"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
            conn.execute(text("DROP TRIGGER audit_head_forward ON audit_head"))


def _rehash(conn: Any, seq: int) -> None:
    """Rewrite entry ``seq``'s hash to fit its (edited) content: a careful forger."""
    from inference.service.audit import entry_hash

    e = Session(bind=conn).scalars(select(AuditEntry).where(AuditEntry.seq == seq)).one()
    digest = entry_hash(
        seq=e.seq,
        at=e.created_at,
        kind=e.kind,
        actor=e.actor,
        subject=e.subject,
        data=e.data,
        prev=e.prev_hash,
    )
    conn.execute(
        text("UPDATE audit_log SET entry_hash = :h WHERE seq = :s"), {"h": digest, "s": seq}
    )


TAMPERING = {
    # name: (SQL on entry 3 or its neighbours, the entry `audit verify` must name, words)
    "edited data": (
        ['UPDATE audit_log SET data = \'{"role": "admin"}\' WHERE seq = 3'],
        3,
        "changed",
    ),
    "edited actor": (["UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 3"], 3, "changed"),
    "data not JSON": (["UPDATE audit_log SET data = 'nonsense' WHERE seq = 3"], 3, "changed"),
    "edited and re-hashed": (
        ["UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 3", "REHASH 3"],
        3,
        "replaced",
    ),
    "removed": (["DELETE FROM audit_log WHERE seq = 3"], 3, "missing"),
    "tail cut off": (["DELETE FROM audit_log WHERE seq = 5"], 5, "removed"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_audit_verify_names_the_first_tampered_entry(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    _tamper_and_check(url, TAMPERING[case], capsys)


def test_audit_verify_names_the_tampered_entry_on_postgresql(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
):
    _tamper_and_check(postgres_url, TAMPERING["edited data"], capsys)
    _tamper_and_check(postgres_url, TAMPERING["edited and re-hashed"], capsys, fresh=False)


def _tamper_and_check(
    url: str,
    case: tuple[list[str], int, str],
    capsys: pytest.CaptureFixture[str],
    fresh: bool = True,
) -> None:
    statements, broken, words = case
    engine = make_engine(url)
    if fresh:
        migrate(engine)
        records = Records(engine)
        for name in ("a", "b", "c", "d"):  # entries 2-5 after the migration's first
            records.add_user(name, "officer", "x")
        assert cli(capsys, "audit", "verify", "--database-url", url)[0] == 0
        _drop_guards(engine)
    with engine.begin() as conn:
        for sql in statements:
            if sql.startswith("REHASH"):
                _rehash(conn, int(sql.split()[1]))
            else:
                conn.execute(text(sql))
    code, _, err = cli(capsys, "audit", "verify", "--database-url", url)
    assert code == 1
    assert f"BROKEN at entry #{broken}:" in err and words in err, err
    engine.dispose()


def test_concurrent_writers_keep_one_valid_chain(database_url: str):
    """Threads storing scans with results (signed) and logins at once: every append gets
    its own predecessor, nothing is lost."""
    engine = make_engine(database_url)
    migrate(engine)
    records = Records(engine, Signer.generate())
    station = records.add_station("gate-1", hash_key(new_key()))
    user = records.add_user("olga", "officer", "x")
    threads, per_thread = 6, 4
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(k: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                scan, result = _scan_and_result(station.id, f"{k}-{i}")
                assert records.add_scan(scan, result)[1]
                records.add_token(user.id, uuid.uuid4().hex * 2, datetime.now(timezone.utc))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    report = verify_chain(engine)
    # start, station, user, then per scan: received + result, and one login
    assert report.ok, report.problem
    assert report.entries == 3 + threads * per_thread * 3
    with engine.connect() as conn:
        signed = conn.execute(text("SELECT COUNT(*) FROM signatures")).scalar()
    assert signed == threads * per_thread
    engine.dispose()


def _scan_and_result(station_id: int, tag: str) -> tuple[ScanRecord, ResultRecord]:
    scan_id = str(uuid.uuid4())
    body = {
        "scan_id": scan_id,
        "model": {"name": "m", "version": "m@0123", "sha256": "1" * 64},
        "processing_ms": 5.0,
        "risk": 0.75,
        "verdict": "alarm",
        "findings": [
            {
                "id": 1,
                "category": "firearm",
                "score": 0.9,
                "box": [1.0, 2.0, 30.5, 40.0],
                "polygon": None,
                "source": "detector",
                "explanation": "test",
            }
        ],
        "cargo_region": None,
        "anomaly_map": None,
    }
    scan = ScanRecord(
        id=scan_id,
        station_id=station_id,
        station_scan_id=tag,
        received_at=datetime.now(timezone.utc),
        width=64,
        height=32,
        bit_depth=16,
        high_sha256=hashlib.sha256(tag.encode()).hexdigest(),
        high_bytes=len(tag),
        meta={},
    )
    result = ResultRecord(
        scan_id=scan_id,
        model_name="m",
        model_version="m@0123",
        model_sha256="1" * 64,
        verdict="alarm",
        risk=0.75,
        processing_ms=5.0,
        body=body,
    )
    return scan, result


# --------------------------------------------------------------------------- the key


def test_the_signing_key_is_made_once_private_and_never_logged(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
):
    settings = make_settings()
    path = settings.data_dir / "signing-key.pem"
    with caplog.at_level(logging.DEBUG), running(settings, wait_ready=False) as client:
        first = client.get(f"{API}/signing-key", headers=ADMIN).json()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Signer.from_pem(path.read_bytes()).key_sha256 == first["key_sha256"]
    assert "PRIVATE KEY" not in caplog.text and first["key_sha256"] in caplog.text
    with running(settings, wait_ready=False) as client:  # a restart keeps the identity
        again = client.get(f"{API}/signing-key", headers=ADMIN).json()
    assert again == first and again["public_key_pem"].startswith("-----BEGIN PUBLIC KEY")

    missing = make_settings(signing_key_path=settings.data_dir / "nope.pem")
    with (
        pytest.raises(Exception, match=r"signing key .*nope\.pem: no such file"),
        running(missing, wait_ready=False),
    ):
        pass


# --------------------------------------------------------------------------- evidence


@dataclass
class Package:
    data: bytes
    signer: Signer
    scan_id: str
    files: dict[str, Any]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Package:
    """One evidence package of a dual-energy scan with two reviews."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("evidence") / "data",
        model_path=models["alarm"],
        admin_key="admin-secret-for-tests",
        engine_threads=1,
        check_scans=2,
    )
    records = open_records(settings)
    key = new_key()
    records.add_station("gate-1", hash_key(key))
    records.add_user("olga", "officer", hash_password(PASSWORD))
    records.add_user("sue", "supervisor", hash_password(PASSWORD))
    records.engine.dispose()
    files = scan_pngs(seed=5)
    with running(settings) as client:
        token = {
            name: bearer(
                client.post(
                    f"{API}/auth/login", json={"username": name, "password": PASSWORD}
                ).json()["token"]
            )
            for name in ("olga", "sue")
        }
        client.cookies.clear()
        meta = {"metadata": json.dumps({"station_scan_id": "E-1", "container_ids": ["MSCU1"]})}
        r = client.post(f"{API}/scans", files=files, data=meta, headers=bearer(key))
        assert r.status_code == 201, r.text
        sid = r.json()["scan_id"]
        for who, verdict in (("olga", "release"), ("sue", "inspect")):
            decided = [{"finding_id": f["id"], "decision": "reject"} for f in r.json()["findings"]]
            body = {"findings": decided, "added": [], "verdict": verdict, "comment": f"é {who}"}
            got = client.post(f"{API}/scans/{sid}/reviews", json=body, headers=token[who])
            assert got.status_code == 201, got.text
        assert client.get(f"{API}/scans/{sid}/evidence", headers=token["olga"]).status_code == 403
        got = client.get(f"{API}/scans/{sid}/evidence", headers=bearer(key))
        assert got.status_code == 403  # a station's key: not for the officers' records
        got = client.get(f"{API}/scans/{sid}/evidence", headers=token["sue"])
        assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    signer = Signer.from_pem((settings.data_dir / "signing-key.pem").read_bytes())
    return Package(got.content, signer, sid, files)


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


MEMBERS = [
    "manifest.json",
    "manifest.sig",
    "public_key.pem",
    "README.txt",
    "scan.json",
    "scan/high.png",
    "scan/low.png",
    "result.json",
    "result.statement.json",
    "reviews.json",
    "reviews/1.statement.json",
    "reviews/2.statement.json",
    "signatures.json",
    "audit.json",
]


def test_the_evidence_package_holds_the_originals_and_verifies_offline(
    package: Package, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    members = _members(package.data)
    assert sorted(members) == sorted(MEMBERS)
    assert members["scan/high.png"] == package.files["high"][1]
    assert members["scan/low.png"] == package.files["low"][1]
    manifest = json.loads(members["manifest.json"])
    assert manifest["scan_id"] == package.scan_id
    assert manifest["key_sha256"] == package.signer.key_sha256
    statement = json.loads(members["result.statement.json"])
    assert statement["scan"]["high_sha256"] == sha256_hex(package.files["high"][1])
    assert statement["model"]["sha256"] and statement["preprocess_version"]
    assert statement["findings"] == json.loads(members["result.json"])["findings"]
    reviews = json.loads(members["reviews.json"])
    assert [r["verdict"] for r in reviews] == ["release", "inspect"]
    assert reviews[0]["comment"] == "é olga"
    audit = json.loads(members["audit.json"])["entries"]
    assert [e["kind"] for e in audit] == ["scan.received", "result", "review", "review"]

    path = tmp_path / "evidence.zip"
    path.write_bytes(package.data)
    code, out, err = cli(capsys, "verify", str(path))
    assert code == 0, err
    assert f"OK: evidence for scan {package.scan_id}" in out and package.signer.key_sha256 in out
    code, out, err = cli(capsys, "verify", str(path), "--key-sha256", package.signer.key_sha256)
    assert code == 0, err
    code, _, err = cli(capsys, "verify", str(path), "--key-sha256", "ab" * 32)
    assert code == 1 and "public_key.pem: the key's fingerprint is" in err


def _flip(data: bytes, at: int) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("member", MEMBERS)
def test_any_changed_byte_of_any_member_fails_naming_it(
    package: Package, member: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    members = _members(package.data)
    size = len(members[member])
    at = {"first": 0, "middle": size // 2, "last": size - 1}[where]
    members[member] = _flip(members[member], at)
    path = tmp_path / "changed.zip"
    path.write_bytes(evidence.zip_members(members))
    report = evidence.verify_package(path)
    assert not report.ok
    assert any(member in p for p in report.problems), report.problems
    code, _, err = cli(capsys, "verify", str(path))
    assert code == 1 and member in err


def test_a_damaged_zip_names_the_member(package: Package):
    members = _members(package.data)
    raw = package.data
    at = raw.index(members["scan/high.png"][100:140]) + 10  # inside the stored image
    report = evidence.verify_package(_flip(raw, at))
    assert not report.ok and report.problems[0].startswith("scan/high.png: damaged in the ZIP")
    assert not evidence.verify_package(b"not a zip").ok


def test_a_consistently_resigned_package_still_names_the_scan_hash(package: Package):
    """Someone with the key re-signs the manifest over other scan bytes but cannot make the
    stored signed result speak of them: the check says exactly that."""
    members = _members(package.data)
    members["scan/high.png"] = scan_pngs(seed=9)["high"][1]
    manifest = json.loads(members["manifest.json"])
    manifest["members"]["scan/high.png"] = {
        "sha256": sha256_hex(members["scan/high.png"]),
        "bytes": len(members["scan/high.png"]),
    }
    members["manifest.json"] = json.dumps(manifest).encode()
    members["manifest.sig"] = (package.signer.sign(members["manifest.json"]) + "\n").encode()
    report = evidence.verify_package(evidence.zip_members(members))
    assert report.problems == [
        f"scan/high.png: SHA-256 {sha256_hex(members['scan/high.png'])} is not the scan hash "
        f"in the signed result (result.statement.json says "
        f"{json.loads(members['result.statement.json'])['scan']['high_sha256']}): these are "
        "not the bytes that were analysed"
    ]


def test_a_package_made_with_another_key_fails_only_against_the_published_one(
    package: Package,
):
    other = Signer.generate()
    members = _members(package.data)
    members["public_key.pem"] = other.public_pem
    sigs = json.loads(members["signatures.json"])
    for s in sigs:
        s["key_sha256"] = other.key_sha256
        s["signature"] = other.sign(members[s["file"]])
    members["signatures.json"] = json.dumps(sigs).encode()
    manifest = json.loads(members["manifest.json"])
    manifest["key_sha256"] = other.key_sha256
    for name in ("public_key.pem", "signatures.json"):
        manifest["members"][name]["sha256"] = sha256_hex(members[name])
    members["manifest.json"] = json.dumps(manifest).encode()
    members["manifest.sig"] = (other.sign(members["manifest.json"]) + "\n").encode()
    forged = evidence.zip_members(members)
    assert evidence.verify_package(forged).ok  # self-consistent: only the key tells
    report = evidence.verify_package(forged, package.signer.key_sha256)
    assert [p.split(":")[0] for p in report.problems] == ["public_key.pem"]


def test_results_stored_before_signing_are_signed_at_export(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    migrate(engine)
    records = Records(engine)  # no key: as before this release
    station = records.add_station("gate-1", hash_key(new_key()))
    scan, result = _scan_and_result(station.id, "L-1")
    blobs = BlobStore(tmp_path / "blobs")
    scan.high_sha256 = blobs.put(b"\x89PNG not really")
    records.add_scan(scan, result)
    records.signer = Signer.generate()
    from inference.service.api import scan_summary

    summary = scan_summary(scan, "gate-1")  # what the API puts in scan.json
    data = evidence.export_package(records, blobs, scan, summary, "admin-key")
    report = evidence.verify_package(data, records.signer.key_sha256)
    assert report.ok, report.problems
    statement = json.loads(_members(data)["result.statement.json"])
    assert statement["signed_later"] is True
    assert kinds(engine)[-2:] == ["result.signed", "evidence.exported"]
    assert verify_chain(engine).ok
    engine.dispose()


def test_canonical_json_is_stable():
    assert canonical({"b": 1, "a": [1.5, "é", None]}) == '{"a":[1.5,"é",null],"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical({"x": float("nan")})
