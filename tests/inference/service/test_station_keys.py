"""Station keys revoked and rotated (issue 29 item 4): by the CLI on the service's database
and by the admin API, each logged in the audit log; a revoked key gets 401 at its next
request, a rotated one stays valid for the grace period given and no longer."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from cargoscan.cli import main
from inference.service.app import open_records
from inference.service.audit import verify_chain
from inference.service.settings import Settings
from tests.inference.service.accounts import add_user, bearer, login
from tests.inference.service.service_helpers import ADMIN, add_station, running, scan_pngs

API = "/api/v1"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def audit_kinds(settings: Settings, subject: str) -> list[str]:
    records = open_records(settings)
    try:
        assert verify_chain(records.engine).ok
        return [e.kind for e in records.audit_entries(subject)]
    finally:
        records.engine.dispose()


def test_station_revoke_and_rotate_on_the_command_line(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
):
    settings = make_settings()
    gate1 = add_station(settings, "gate-1")
    gate2 = add_station(settings, "gate-2")
    db = ("--data-dir", str(settings.data_dir))
    with running(settings) as client:
        posted = client.post(f"{API}/scans", files=scan_pngs(), headers=gate1)
        assert posted.status_code == 201
        scan_id = posted.json()["scan_id"]
        assert client.get(f"{API}/auth/me", headers=gate1).status_code == 200

        code, out, _ = cli(capsys, "station", "revoke", "gate-1", *db)
        assert code == 0 and "revoked" in out
        r = client.get(f"{API}/auth/me", headers=gate1)  # at once: no restart, no cache
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert client.post(f"{API}/scans", files=scan_pngs(), headers=gate1).status_code == 401
        assert client.get(f"{API}/scans/{scan_id}", headers=ADMIN).status_code == 200  # kept
        code, _, err = cli(capsys, "station", "revoke", "gate-1", *db)
        assert code == 2 and "was revoked at" in err
        assert cli(capsys, "station", "rotate", "gate-1", *db)[0] == 2
        code, _, err = cli(capsys, "station", "revoke", "nowhere", *db)
        assert code == 2 and "no station 'nowhere'" in err

        # rotate with a grace period: both keys work, the new one is printed alone
        code, out, err = cli(capsys, "station", "rotate", "gate-2", "--grace", "2", *db)
        assert code == 0 and "the old key is valid until" in err
        new2 = {"Authorization": f"Bearer {out.strip()}"}
        assert out.strip().startswith("cs_") and out.count("\n") == 1
        assert client.get(f"{API}/auth/me", headers=new2).json() == {
            "name": "gate-2",
            "role": "station",
        }
        assert client.get(f"{API}/auth/me", headers=gate2).status_code == 200
        time.sleep(2.2)
        assert client.get(f"{API}/auth/me", headers=gate2).status_code == 401
        assert client.get(f"{API}/auth/me", headers=new2).status_code == 200
        # without grace the current key is refused at once
        code, out, _ = cli(capsys, "station", "rotate", "gate-2", *db)
        assert code == 0
        assert client.get(f"{API}/auth/me", headers=new2).status_code == 401
        newer = {"Authorization": f"Bearer {out.strip()}"}
        assert (
            client.post(f"{API}/scans", files=scan_pngs(seed=2), headers=newer).status_code == 201
        )
        assert cli(capsys, "station", "rotate", "gate-2", "--grace", "-1", *db)[0] == 2
    code, out, _ = cli(capsys, "station", "list", *db)
    lines = dict(line.split("\t", 1) for line in out.splitlines())
    assert "revoked" in lines["gate-1"] and lines["gate-2"].endswith("active")
    assert audit_kinds(settings, "gate-1") == ["station.created", "station.revoked"]
    assert audit_kinds(settings, "gate-2") == ["station.created"] + ["station.key_rotated"] * 2


def test_station_revoke_and_rotate_by_the_admin_api(make_settings: Callable[..., Settings]):
    settings = make_settings()
    add_user(settings, "olga", "officer")
    add_user(settings, "ada", "admin")
    with running(settings) as client:
        made = client.post(f"{API}/admin/stations", json={"name": "gate-9"}, headers=ADMIN)
        assert made.status_code == 201
        old = {"Authorization": f"Bearer {made.json()['key']}"}
        officer = bearer(login(client, "olga")["token"])
        ada = bearer(login(client, "ada")["token"])
        rotate = f"{API}/admin/stations/gate-9/rotate"
        assert client.post(rotate, json={"grace_s": 60}, headers=officer).status_code == 403
        assert client.post(rotate, json={"grace_s": 60}, headers=old).status_code == 403
        bad = client.post(rotate, json={"grace_s": -5}, headers=ADMIN)
        assert bad.status_code == 422 and "grace_s" in bad.json()["detail"]
        r = client.post(rotate, json={"grace_s": 3600}, headers=ada)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["name"] == "gate-9" and body["key"].startswith("cs_")
        assert body["old_key_valid_until"] is not None and body["revoked_at"] is None
        new = {"Authorization": f"Bearer {body['key']}"}
        assert client.get(f"{API}/auth/me", headers=old).status_code == 200  # in its grace
        assert client.get(f"{API}/auth/me", headers=new).status_code == 200
        listed = client.get(f"{API}/admin/stations", headers=ADMIN).json()["items"]
        assert listed == [{k: v for k, v in body.items() if k != "key"}]
        assert "key" not in str(listed).replace("old_key_valid_until", "")

        unknown = client.post(f"{API}/admin/stations/nowhere/revoke", headers=ADMIN)
        assert unknown.status_code == 404
        r = client.post(f"{API}/admin/stations/gate-9/revoke", headers=ADMIN)
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        assert r.json()["old_key_valid_until"] is None  # the grace ends with the revocation
        for key in (old, new):
            assert client.get(f"{API}/auth/me", headers=key).status_code == 401
        again = client.post(f"{API}/admin/stations/gate-9/revoke", headers=ADMIN)
        assert again.status_code == 409 and "was revoked at" in again.json()["detail"]
        assert client.post(rotate, json={}, headers=ADMIN).status_code == 409
    records = open_records(settings)
    try:
        entries = records.audit_entries("gate-9")
    finally:
        records.engine.dispose()
    assert [(e.kind, e.actor) for e in entries] == [
        ("station.created", "admin-key"),
        ("station.key_rotated", "user:ada"),
        ("station.revoked", "admin-key"),
    ]
    assert entries[1].data["grace_s"] == 3600 and "key" not in entries[1].data
