"""Earlier scans of the same container or vehicle (``GET /api/v1/scans/{id}/related``)
through HTTP on real SQLite (and PostgreSQL when CARGOSCAN_TEST_POSTGRES_URL is set): who
sees which, ids matched however they were written, newest first, review outcome for
users only, bad input a 4xx, and migration 0005 filling the index for scans stored
before it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import text

from inference.service.db import MIGRATIONS, make_engine
from inference.service.settings import Settings
from tests.inference.service import test_service_storage
from tests.inference.service.accounts import (
    API,
    World,
    add_user,
    bearer,
    login,
    post_scan,
    review_body,
)
from tests.inference.service.service_helpers import add_station, running

postgres_url = test_service_storage.postgres_url  # the same fresh-schema fixture


def _seed(c: TestClient, gate1: dict[str, str], gate2: dict[str, str]) -> dict[str, str]:
    """Four scans, oldest first: A and D share a container (written two ways), B and D
    another, A and B the vehicle; C shares nothing."""
    ids = {}
    ids["A"] = post_scan(c, gate1, seed=11, container_ids=["MSCU 123456-5"], vehicle_id="AB-123-CD")
    ids["B"] = post_scan(c, gate2, seed=12, container_ids=["TGHU7654321"], vehicle_id="ab 123 cd")
    ids["C"] = post_scan(c, gate1, seed=13, container_ids=["XXXU0000001"], vehicle_id="ZZ-9")
    ids["D"] = post_scan(
        c,
        gate1,
        seed=14,
        container_ids=["mscu1234565", "TGHU 765432 1"],
        vehicle_id="QQ-1",
        pixel_pitch_mm=2.5,
    )
    return ids


def _related(c: TestClient, who: dict[str, str], sid: str, **params: Any) -> dict[str, Any]:
    r = c.get(f"{API}/scans/{sid}/related", params=params, headers=who)
    assert r.status_code == 200, r.text
    return r.json()


def _check(c: TestClient, who: dict[str, dict[str, str]]) -> None:
    """The behaviour, on whichever database the client's service runs on."""
    ids = _seed(c, who["gate-1"], who["gate-2"])
    officer = who["olga"]
    got = _related(c, officer, ids["D"])
    assert got["identifiers"] == [
        {"kind": "container", "value": "MSCU1234565"},
        {"kind": "container", "value": "TGHU7654321"},
        {"kind": "vehicle", "value": "QQ1"},
    ]
    assert [i["scan_id"] for i in got["items"]] == [ids["B"], ids["A"]]  # newest first
    assert got["total"] == 2
    b, a = got["items"]
    assert b["matched"] == [{"kind": "container", "value": "TGHU7654321"}]
    assert a["matched"] == [{"kind": "container", "value": "MSCU1234565"}]
    assert b["station"] == "gate-2" and a["station"] == "gate-1"
    assert a["verdict"] in ("alarm", "review", "clear") and isinstance(a["risk"], float)
    assert a["review_status"] == "pending" and a["review_verdict"] is None
    assert a["url"] == f"{API}/scans/{ids['A']}"
    # B shares the vehicle with A, but came later: only earlier scans are listed
    assert [i["scan_id"] for i in _related(c, officer, ids["B"])["items"]] == [ids["A"]]
    assert _related(c, officer, ids["A"])["items"] == []
    assert _related(c, officer, ids["C"])["items"] == []
    # the review outcome shows once A is reviewed
    body = review_body(c, officer, ids["A"], verdict="inspect")
    assert c.post(f"{API}/scans/{ids['A']}/reviews", json=body, headers=officer).status_code == 201
    a = _related(c, officer, ids["D"])["items"][1]
    assert a["review_status"] == "reviewed" and a["review_verdict"] == "inspect"
    page = _related(c, officer, ids["D"], limit=1)
    assert [i["scan_id"] for i in page["items"]] == [ids["B"]] and page["total"] == 2
    # a station sees its own scans only, and no review outcome
    own = _related(c, who["gate-1"], ids["D"])
    assert [i["scan_id"] for i in own["items"]] == [ids["A"]] and own["total"] == 1
    assert own["items"][0]["review_status"] is None
    assert c.get(f"{API}/scans/{ids['D']}/related", headers=who["gate-2"]).status_code == 404


def test_earlier_scans_of_a_container_or_vehicle(world: World):
    _check(world.client, world.who)


def test_bad_input_gets_a_4xx(world: World):
    c, who = world.client, world.who
    sid = world.scans["t1"]
    for path, status in (
        ("not-a-uuid", 404),
        ("%00", 404),
        ("x" * 300, 404),
        ("00000000-0000-0000-0000-000000000000", 404),
    ):
        assert c.get(f"{API}/scans/{path}/related", headers=who["olga"]).status_code == status
    for limit in ("0", "101", "abc", "1e9", "-1"):
        r = c.get(f"{API}/scans/{sid}/related", params={"limit": limit}, headers=who["olga"])
        assert r.status_code == 422, (limit, r.text)
    assert c.get(f"{API}/scans/{sid}/related").status_code == 401
    # a scan with no container or vehicle id has no related scans
    assert _related(c, who["ada"], sid) == {
        "scan_id": sid,
        "identifiers": [],
        "items": [],
        "total": 0,
        "limit": 20,
    }


def test_the_migration_fills_the_index_for_earlier_scans(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
    meta = [
        '{"container_ids": ["MSCU 123456-5", "mscu1234565"], "vehicle_id": "AB-1"}',
        '{"container_ids": [], "vehicle_id": null}',
        '{"vehicle_id": 4711}',
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO stations (id, name, key_hash, created_at)"
                " VALUES (1, 'g', 'h', '2027-01-01 00:00:00')"
            )
        )
        for i, m in enumerate(meta):
            conn.execute(
                text(
                    "INSERT INTO scans (id, station_id, received_at, width, height, bit_depth,"
                    " high_sha256, high_bytes, metadata) VALUES"
                    " (:id, 1, '2027-01-01 00:00:0' || :i, 8, 8, 16, 'x', 1, :m)"
                ),
                {"id": f"s{i}", "i": i, "m": m},
            )
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT scan_id, kind, value FROM scan_identifiers ORDER BY id")
        ).all()
    assert [tuple(r) for r in rows] == [
        ("s0", "container", "MSCU1234565"),
        ("s0", "vehicle", "AB1"),
        ("s2", "vehicle", "4711"),
    ]
    engine.dispose()


def test_related_scans_on_postgresql(make_settings: Callable[..., Settings], postgres_url: str):
    settings = make_settings(database_url=postgres_url, station_rate_per_min=0)
    who = {name: add_station(settings, name) for name in ("gate-1", "gate-2")}
    add_user(settings, "olga", "officer")
    with running(settings) as client:
        who["olga"] = bearer(login(client, "olga")["token"])
        _check(client, who)
