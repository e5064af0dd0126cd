"""Tampering with the stored records behind the audit log's back (issue 29 item 3), as the
attacker did: the database's triggers dropped, a scan record or a result edited in SQL.
`cargoscan audit verify` must name each edit, an evidence package exported afterwards must
fail `cargoscan verify`, a database of the previous release is sealed at its upgrade, and
an anchor finds a cut-off tail. Real service, real SQLite, the real CLI."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from cargoscan.cli import main
from inference.service import audit, evidence
from inference.service.db import (
    AuditEntry,
    AuditHead,
    ResultRecord,
    ScanRecord,
    make_engine,
    migrate,
)
from inference.service.settings import Settings
from tests.inference.service.service_helpers import ADMIN, add_station, running, scan_pngs

API = "/api/v1"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def drop_triggers(engine: Engine, *names: str) -> None:
    """What someone who owns the SQLite database does first."""
    with engine.begin() as conn:
        for name in names:
            conn.execute(text(f"DROP TRIGGER {name}"))


def row_of(scan: ScanRecord) -> dict[str, object]:
    """A scan's columns by column name (``metadata`` is the attribute ``meta``)."""
    return {p.columns[0].name: getattr(scan, p.key) for p in inspect(ScanRecord).column_attrs}


def sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


@pytest.fixture
def stored(make_settings: Callable[..., Settings]) -> tuple[Settings, dict[str, str]]:
    """A service that stored two scans (with results) from gate-1; its settings and the
    scans' ids by station scan id."""
    settings = make_settings()
    station = add_station(settings, "gate-1")
    ids = {}
    with running(settings) as client:
        for n, tag in enumerate(("S-1", "S-2")):
            meta = {"station_scan_id": tag, "vehicle_id": f"AB-{n}"}
            r = client.post(
                f"{API}/scans",
                files=scan_pngs(seed=n),
                data={"metadata": json.dumps(meta)},
                headers=station,
            )
            assert r.status_code == 201, r.text
            ids[tag] = r.json()["scan_id"]
    return settings, ids


def verify(capsys: pytest.CaptureFixture[str], settings: Settings, *more: str):
    return cli(capsys, "audit", "verify", "--data-dir", str(settings.data_dir), *more)


def test_an_edited_scan_record_fails_audit_verify(
    stored: tuple[Settings, dict[str, str]], capsys: pytest.CaptureFixture[str]
):
    settings, ids = stored
    code, out, _ = verify(capsys, settings)
    assert code == 0 and "records OK: 2 scans, 2 results, 0 reviews" in out
    engine = make_engine(settings.resolved_database_url())
    edit = "UPDATE scans SET station_scan_id = 'S-9' WHERE id = :id"
    with pytest.raises(DBAPIError, match="scans is append-only"):
        sql(engine, edit, id=ids["S-1"])  # the database refuses, until ...
    drop_triggers(engine, "scans_no_update")
    sql(engine, edit, id=ids["S-1"])
    sql(
        engine,
        "UPDATE scans SET metadata = json_set(metadata, '$.vehicle_id', 'XY-999') WHERE id = :id",
        id=ids["S-2"],
    )
    code, out, err = verify(capsys, settings)
    assert code == 1, out
    assert "audit log OK" not in out  # the chain holds; the records do not
    assert f"scan {ids['S-1']} was changed after it was stored: station_scan_id differ" in err
    assert (
        f"scan {ids['S-2']} was changed after it was stored: its station, times or metadata "
        "differ from what audit entry #" in err
    )
    engine.dispose()


def test_an_edited_result_fails_audit_verify(
    stored: tuple[Settings, dict[str, str]], capsys: pytest.CaptureFixture[str]
):
    settings, ids = stored
    engine = make_engine(settings.resolved_database_url())
    drop_triggers(engine, "results_no_update")
    sql(
        engine,
        "UPDATE results SET verdict = 'clear', body = json_set(body, '$.verdict', 'clear') "
        "WHERE scan_id = :id",
        id=ids["S-1"],
    )
    code, _, err = verify(capsys, settings)
    assert code == 1
    assert f"of scan {ids['S-1']} was changed after it was stored: verdict, result JSON" in err
    # the verdict column alone, the JSON left as it was
    sql(
        engine,
        "UPDATE results SET verdict = 'clear' WHERE scan_id = :id",
        id=ids["S-2"],
    )
    code, _, err = verify(capsys, settings)
    assert f"of scan {ids['S-2']} was changed after it was stored: verdict, verdict (column" in err
    engine.dispose()


def test_rows_added_or_deleted_behind_the_log_are_named(
    stored: tuple[Settings, dict[str, str]], capsys: pytest.CaptureFixture[str]
):
    settings, ids = stored
    engine = make_engine(settings.resolved_database_url())
    with Session(engine) as s:
        scan = s.scalars(select(ScanRecord).where(ScanRecord.id == ids["S-1"])).one()
        columns = row_of(scan)
    forged = {**columns, "id": "00000000-0000-4000-8000-000000000000", "station_scan_id": "F"}
    with engine.begin() as conn:
        conn.execute(insert(ScanRecord.__table__).values(**forged))
    drop_triggers(engine, "scans_no_delete", "results_no_delete")
    # as the attacker would: foreign keys off (SQLite's are per connection), whatever
    # other tables point at the scan
    path = engine.url.database
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("DELETE FROM results WHERE scan_id = ?", (ids["S-2"],))
        conn.execute("DELETE FROM scans WHERE id = ?", (ids["S-2"],))
        conn.commit()
    finally:
        conn.close()
    code, _, err = verify(capsys, settings)
    assert code == 1
    assert f"scan {forged['id']} has no audit entry: it was added behind the log" in err
    assert f"scan {ids['S-2']} (received in audit entry #" in err and "was deleted" in err
    assert f"of scan {ids['S-2']} (audit entry #" in err
    engine.dispose()


def test_an_evidence_package_of_an_edited_scan_fails_verify(
    stored: tuple[Settings, dict[str, str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    """The service signs the package it exports; the edited record goes out in scan.json
    under a good signature, and the package's own audit entry says otherwise."""
    settings, ids = stored
    engine = make_engine(settings.resolved_database_url())
    drop_triggers(engine, "scans_no_update")
    sql(
        engine,
        "UPDATE scans SET metadata = json_set(metadata, '$.vehicle_id', 'XY-999') WHERE id = :id",
        id=ids["S-1"],
    )
    engine.dispose()
    with running(settings) as client:
        r = client.get(f"{API}/scans/{ids['S-1']}/evidence", headers=ADMIN)
        assert r.status_code == 200
        clean = client.get(f"{API}/scans/{ids['S-2']}/evidence", headers=ADMIN)
    package = tmp_path / "edited.zip"
    package.write_bytes(r.content)
    code, _, err = cli(capsys, "verify", str(package))
    assert code == 1
    assert "scan.json: the record's hash (station, times or metadata) differ from the " in err
    assert "scan.received audit entry" in err
    report = evidence.verify_package(clean.content)
    assert report.ok, report.problems
    assert "scan.json matches the audit entry of its arrival" in report.checked
    assert "result.json matches the audit entry that stored it" in report.checked


def test_a_database_of_the_previous_release_is_sealed_at_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Scans and results stored by the previous release (entries without record hashes)
    are sealed by migration 0004: the old chain still verifies, and an edit of an old scan's
    metadata, which its old entry never covered, is found."""
    from alembic import command
    from alembic.config import Config

    from inference.service.db import MIGRATIONS
    from tests.inference.service.test_audit_evidence import _scan_and_result

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:  # revision 0003, written as that release did
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        conn.execute(
            text("INSERT INTO stations (name, key_hash, created_at) VALUES ('old', :h, :t)"),
            {"h": "0" * 64, "t": datetime.now(timezone.utc)},
        )
    scan, result = _scan_and_result(1, "OLD-1")
    scan.meta = {"station_scan_id": "OLD-1", "vehicle_id": "AB-1"}
    with Session(engine) as s, s.begin():
        s.execute(insert(ScanRecord.__table__).values(row_of(scan)))
        audit.append(s, "scan.received", "station:old", scan.id, {
            "station_scan_id": "OLD-1", "high_sha256": scan.high_sha256,
            "high_bytes": scan.high_bytes, "low_sha256": None, "low_bytes": None,
            "width": 64, "height": 32, "bit_depth": 16,
        })  # fmt: skip
        result.created_at = datetime.now(timezone.utc)
        s.add(result)
        s.flush()
        audit.append(s, "result", "service", scan.id, {
            "result_id": result.id, "verdict": "alarm", "risk": 0.75,
            "model": {"name": "m", "version": "m@0123", "sha256": "1" * 64},
            "result_sha256": audit.sha256_hex(audit.canonical(result.body)),
        })  # fmt: skip
    migrate(engine)
    with Session(engine) as s:
        sealed = s.scalars(
            select(AuditEntry).where(
                AuditEntry.kind == "audit.sealed", AuditEntry.subject.is_(None)
            )
        ).one()
    assert sealed.data["scans"]["count"] == 1 and sealed.data["results"]["count"] == 1
    assert sealed.data["reviews"]["count"] == 0
    code, out, err = cli(capsys, "audit", "verify", "--database-url", url)
    assert code == 0, err
    assert "records OK: 1 scans, 1 results" in out
    drop_triggers(engine, "scans_no_update")
    sql(
        engine,
        "UPDATE scans SET metadata = json_set(metadata, '$.vehicle_id', 'XY-9') WHERE id = :id",
        id=scan.id,
    )
    code, _, err = cli(capsys, "audit", "verify", "--database-url", url)
    assert code == 1
    assert (
        "the 1 scans stored before their entries held a record hash (sealed in audit entry "
        f"#{sealed.seq})" in err
    )
    # an edit the old entry covered is named as such
    sql(engine, "UPDATE scans SET width = 65 WHERE id = :id", id=scan.id)
    code, _, err = cli(capsys, "audit", "verify", "--database-url", url)
    assert f"scan {scan.id} was changed after it was stored: width differ" in err
    assert ResultRecord.__tablename__ == "results"
    engine.dispose()


def test_an_anchor_finds_a_cut_off_tail(
    stored: tuple[Settings, dict[str, str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    settings, _ = stored
    data_dir = str(settings.data_dir)
    anchor = tmp_path / "anchor.json"
    code, _, err = cli(capsys, "audit", "anchor", "--data-dir", data_dir, "--out", str(anchor))
    assert code == 0 and "anchored entry #" in err
    seq = json.loads(anchor.read_text())["statement"]["seq"]
    code, out, _ = verify(capsys, settings, "--anchor", str(anchor))
    assert code == 0 and f"anchor {anchor}: OK (entry #{seq}" in out
    # an edited anchor (pointing at a shorter log) does not verify
    forged = json.loads(anchor.read_text())
    forged["statement"]["seq"] = 1
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, _, err = verify(capsys, settings, "--anchor", str(tmp_path / "forged.json"))
    assert code == 1 and "its signature does not verify" in err
    # the attacker cuts the tail (the last scan's result entry and what follows) and sets
    # the head back: the chain alone verifies, the anchor does not
    engine = make_engine(settings.resolved_database_url())
    drop_triggers(engine, "audit_log_no_delete", "audit_head_forward")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= :s"), {"s": seq})
        prev = conn.execute(
            text("SELECT entry_hash FROM audit_log WHERE seq = :s"), {"s": seq - 1}
        ).scalar()
        conn.execute(
            text("UPDATE audit_head SET seq = :s, entry_hash = :h"), {"s": seq - 1, "h": prev}
        )
    assert audit.verify_chain(engine).ok
    code, _, err = verify(capsys, settings, "--anchor", str(anchor))
    assert code == 1
    assert f"anchor {anchor}: FAILED: the log has no entry #{seq}" in err
    engine.dispose()


def test_edited_deleted_or_forged_reopenings_are_named(
    stored: tuple[Settings, dict[str, str]], capsys: pytest.CaptureFixture[str]
):
    # A re-opening sends a reviewed scan back to the queue: a decision fact like a review.
    from inference.service.app import open_records

    settings, ids = stored
    records = open_records(settings)
    sue = records.add_user("sue", "supervisor", "not-a-real-hash")
    kept = records.add_reopening(ids["S-1"], sue.id, "look at the roof")
    edited = records.add_reopening(ids["S-1"], sue.id, "second opinion")
    gone = records.add_reopening(ids["S-2"], sue.id, "wrong verdict")
    records.engine.dispose()
    assert verify(capsys, settings)[0] == 0

    engine = make_engine(settings.resolved_database_url())
    triggers = [
        name
        for (name,) in engine.connect().execute(
            text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'reopenings'"
            )
        )
    ]
    drop_triggers(engine, *triggers)
    sql(engine, "UPDATE reopenings SET reason = 'nothing to see' WHERE id = :i", i=edited.id)
    sql(engine, "DELETE FROM reopenings WHERE id = :i", i=gone.id)
    sql(
        engine,
        "INSERT INTO reopenings (id, scan_id, user_id, created_at, reason) "
        "VALUES (99, :s, :u, :t, 'forged')",
        s=ids["S-2"],
        u=sue.id,
        t=datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" "),
    )
    code, _, err = verify(capsys, settings)
    assert code == 1
    assert f"re-opening {edited.id} of scan {ids['S-1']} was changed after it was stored" in err
    assert f"re-opening {gone.id} of scan {ids['S-2']} (audit entry #" in err
    assert f"re-opening 99 of scan {ids['S-2']} has no audit entry: it was added behind" in err
    assert f"re-opening {kept.id} " not in err
    engine.dispose()


def test_anchors_over_the_admin_api(
    stored: tuple[Settings, dict[str, str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    """POST /api/v1/admin/audit/anchor gives what `cargoscan audit anchor` writes (and logs
    it); .../anchor/verify checks one against the log, and finds a cut-off tail; admins
    only."""
    from tests.inference.service.accounts import add_user, bearer, login

    settings, _ = stored
    station = add_station(settings, "gate-9")
    add_user(settings, "olga", "officer")
    add_user(settings, "ada", "admin")
    anchor_url, check_url = f"{API}/admin/audit/anchor", f"{API}/admin/audit/anchor/verify"
    with running(settings) as client:
        officer = bearer(login(client, "olga")["token"])
        admin_account = bearer(login(client, "ada")["token"])
        client.cookies.clear()
        for url, body in ((anchor_url, None), (check_url, b"{}")):
            r = client.post(url, content=body)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            for who in (station, officer):
                r = client.post(url, content=body, headers=who)
                assert r.status_code == 403, r.text
                assert "needs the admin key or an admin" in r.json()["detail"]
        engine = make_engine(settings.resolved_database_url())
        with Session(engine) as s:
            head = s.execute(select(AuditHead.seq, AuditHead.entry_hash)).one()
        engine.dispose()
        r = client.post(anchor_url, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"] == (
            f'attachment; filename="cargoscan-anchor-{head.seq}.json"'
        )
        anchor = r.json()
        assert (anchor["statement"]["seq"], anchor["statement"]["entry_hash"]) == tuple(head)
        ok = client.post(check_url, content=r.content, headers=admin_account)
        assert ok.status_code == 200, ok.text
        assert ok.json()["ok"] and ok.json()["anchor"]["seq"] == head.seq
        assert ok.json()["chain"]["ok"] and ok.json()["chain"]["head_seq"] > head.seq
        # an anchor edited to point at a shorter log: the check runs and says no
        forged = json.loads(r.content)
        forged["statement"]["seq"] = 1
        bad = client.post(check_url, json=forged, headers=ADMIN)
        assert bad.status_code == 200 and not bad.json()["ok"]
        assert "its signature does not verify" in bad.json()["anchor"]["problem"]
        # no anchor at all: 422 naming why; too large: 413
        r = client.post(check_url, content=b"not json", headers=ADMIN)
        assert r.status_code == 422 and "not an audit anchor" in r.json()["detail"]
        r = client.post(check_url, json={"statement": {"format": "x"}}, headers=ADMIN)
        assert r.status_code == 422 and "not an audit anchor" in r.json()["detail"]
        r = client.post(check_url, content=b" " * 70_000, headers=ADMIN)
        assert r.status_code == 413 and "70,000 bytes" in r.json()["detail"]
    # the API's anchor is the CLI's: `audit verify --anchor` takes it
    path = tmp_path / "api-anchor.json"
    path.write_text(json.dumps(anchor))
    code, out, _ = verify(capsys, settings, "--anchor", str(path))
    assert code == 0 and f"anchor {path}: OK (entry #{head.seq}" in out
    engine = make_engine(settings.resolved_database_url())
    with Session(engine) as s:
        logged = {
            e.kind: e
            for e in s.scalars(select(AuditEntry).where(AuditEntry.kind.like("audit.anchor%")))
        }
    assert logged["audit.anchored"].actor == "admin-key"
    assert logged["audit.anchored"].data["seq"] == head.seq
    assert logged["audit.anchor_checked"].data["ok"] is False  # the last check: the forged one
    # the tail cut off: the chain alone verifies, the anchor does not
    drop_triggers(engine, "audit_log_no_delete", "audit_head_forward")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= :s"), {"s": head.seq})
        prev = conn.execute(
            text("SELECT entry_hash FROM audit_log WHERE seq = :s"), {"s": head.seq - 1}
        ).scalar()
        conn.execute(
            text("UPDATE audit_head SET seq = :s, entry_hash = :h"),
            {"s": head.seq - 1, "h": prev},
        )
    engine.dispose()
    with running(settings) as client:
        r = client.post(check_url, json=anchor, headers=ADMIN)
    assert r.status_code == 200 and not r.json()["ok"] and r.json()["chain"]["ok"]
    assert f"the log has no entry #{head.seq}" in r.json()["anchor"]["problem"]
