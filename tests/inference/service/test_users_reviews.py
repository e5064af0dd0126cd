"""Accounts, roles and reviews through HTTP (in-process ASGI client): login by token and by
cookie with CSRF, who may reach what (a table), reviews that only append, re-opening, the
queue, the admin's management of users and stations, the review export, and the same on
PostgreSQL when CARGOSCAN_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from cargoscan.cli import main
from inference.service.app import open_records
from inference.service.auth import CSRF_COOKIE, SESSION_COOKIE, hash_password
from inference.service.db import make_engine
from inference.service.settings import Settings
from tests.inference.service import test_service_storage
from tests.inference.service.service_helpers import (
    ADMIN,
    ADMIN_KEY,
    add_station,
    running,
    scan_pngs,
)

API = "/api/v1"
PASSWORD = "correct horse battery"
USERS = {"olga": "officer", "omar": "officer", "sue": "supervisor", "ada": "admin"}
postgres_url = test_service_storage.postgres_url  # the same fresh-schema fixture


def add_user(settings: Settings, name: str, role: str, password: str = PASSWORD) -> None:
    records = open_records(settings)
    try:
        records.add_user(name, role, hash_password(password))
    finally:
        records.engine.dispose()


def login(client: TestClient, name: str, password: str = PASSWORD) -> dict[str, Any]:
    """Log in through the API; the client's cookie jar is left empty (bearer use)."""
    r = client.post(f"{API}/auth/login", json={"username": name, "password": password})
    client.cookies.clear()
    assert r.status_code == 200, r.text
    return r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_scan(
    client: TestClient,
    key: dict[str, str],
    seed: int = 0,
    size: tuple[int, int] = (96, 256),
    **meta: Any,
) -> str:
    files = scan_pngs(h=size[0], w=size[1], seed=seed)
    r = client.post(f"{API}/scans", files=files, data={"metadata": json.dumps(meta)}, headers=key)
    assert r.status_code == 201, r.text
    return r.json()["scan_id"]


def findings(client: TestClient, who: dict[str, str], sid: str) -> list[dict[str, Any]]:
    r = client.get(f"{API}/scans/{sid}", headers=who)
    assert r.status_code == 200, r.text
    return r.json()["findings"]


def review_body(
    client: TestClient,
    who: dict[str, str],
    sid: str,
    decision: str = "reject",
    verdict: str = "release",
    **extra: Any,
) -> dict[str, Any]:
    """A review deciding every finding the same way."""
    decided = [{"finding_id": f["id"], "decision": decision} for f in findings(client, who, sid)]
    return {"findings": decided, "added": [], "verdict": verdict, "comment": "", **extra}


@dataclass
class World:
    client: TestClient
    settings: Settings
    who: dict[str, dict[str, str]]  # caller -> headers
    scans: dict[str, str]  # t1 (gate-1), t2 (gate-2): scans the table alone uses


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[World]:
    """One running service for the module: two stations, four users, two scans."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("users") / "data",
        model_path=models["alarm"],
        admin_key=ADMIN_KEY,
        engine_threads=1,
        check_scans=2,
    )
    who = {name: add_station(settings, name) for name in ("gate-1", "gate-2")}
    for name, role in USERS.items():
        add_user(settings, name, role)
    with running(settings) as client:
        for name in USERS:
            who[name] = bearer(login(client, name)["token"])
        who["admin-key"] = ADMIN
        who["nobody"] = {}
        scans = {
            "t1": post_scan(client, who["gate-1"], seed=1),
            "t2": post_scan(client, who["gate-2"], seed=2),
        }
        yield World(client, settings, who, scans)


# --------------------------------------------------------------------------- login


def test_login_gives_a_bearer_token_and_session_cookies(world: World):
    c = world.client
    r = c.post(f"{API}/auth/login", json={"username": "olga", "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["user"] == {"name": "olga", "role": "officer"}
    cookies = r.headers.get_list("set-cookie")
    session = next(h for h in cookies if h.startswith(f"{SESSION_COOKIE}="))
    csrf = next(h for h in cookies if h.startswith(f"{CSRF_COOKIE}="))
    assert "HttpOnly" in session and "samesite=strict" in session.lower()
    assert "Path=/" in session and "Max-Age=43200" in session
    assert "HttpOnly" not in csrf and "samesite=strict" in csrf.lower()
    c.cookies.clear()
    token = body["token"]
    assert c.get(f"{API}/auth/me", headers=bearer(token)).json() == {
        "name": "olga",
        "role": "officer",
    }
    # logout revokes the token
    assert c.post(f"{API}/auth/logout", headers=bearer(token)).status_code == 200
    assert c.get(f"{API}/auth/me", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("olga", "wrong password"),
        ("nobody-here", PASSWORD),
        ("OLGA", PASSWORD),
        ("olga\x00", PASSWORD),
    ],
)
def test_a_wrong_name_or_password_is_401_and_says_the_same(
    world: World, username: str, password: str
):
    r = world.client.post(f"{API}/auth/login", json={"username": username, "password": password})
    assert r.status_code == 401 and r.json()["detail"] == "wrong user name or password"
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "body",
    [{}, {"username": "olga"}, {"username": 3, "password": []}, {"username": "", "password": "x"}],
)
def test_a_malformed_login_is_422(world: World, body: dict[str, Any]):
    r = world.client.post(f"{API}/auth/login", json=body)
    assert r.status_code == 422 and r.json()["detail"]
    r = world.client.post(
        f"{API}/auth/login", content=b"not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_me_names_stations_and_the_admin_key(world: World):
    c = world.client
    assert c.get(f"{API}/auth/me", headers=world.who["gate-1"]).json() == {
        "name": "gate-1",
        "role": "station",
    }
    assert c.get(f"{API}/auth/me", headers=ADMIN).json() == {"name": "admin", "role": "admin"}
    r = c.get(f"{API}/auth/me")
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]


def test_only_a_hash_of_tokens_and_an_argon2_password_hash_are_stored(world: World):
    token = login(world.client, "omar")["token"]
    engine = make_engine(world.settings.resolved_database_url())
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT t.token_hash, t.created_at, t.expires_at, u.password_hash "
                    "FROM user_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = :h"
                ),
                {"h": hashlib.sha256(token.encode()).hexdigest()},
            ).one()
            stored = [
                v for r in conn.execute(text("SELECT token_hash FROM user_tokens")) for v in r
            ]
        assert token not in stored
        assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
        made = datetime.fromisoformat(str(row.created_at))
        expires = datetime.fromisoformat(str(row.expires_at))
        assert timedelta(hours=11, minutes=59) < expires - made <= timedelta(hours=12, seconds=1)
        # an expired token no longer works
        assert world.client.get(f"{API}/queue", headers=bearer(token)).status_code == 200
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE user_tokens SET expires_at = :t WHERE token_hash = :h"),
                {
                    "t": datetime(2000, 1, 1),
                    "h": hashlib.sha256(token.encode()).hexdigest(),
                },
            )
        r = world.client.get(f"{API}/queue", headers=bearer(token))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    finally:
        engine.dispose()


def test_a_hash_with_old_parameters_is_renewed_at_login_and_sessions_stay(world: World):
    from argon2 import PasswordHasher

    records = open_records(world.settings)
    try:
        weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
        records.add_user("wes", "officer", weak)
        first = bearer(login(world.client, "wes")["token"])
        renewed = records.user_by_name("wes")
        assert renewed is not None and renewed.password_hash != weak
        assert renewed.password_hash.startswith("$argon2id$v=19$m=65536")
        assert world.client.get(f"{API}/auth/me", headers=first).status_code == 200
        assert login(world.client, "wes")["user"]["name"] == "wes"
        again = records.user_by_name("wes")  # no second renewal
        assert again is not None and again.password_hash == renewed.password_hash
    finally:
        records.engine.dispose()


# --------------------------------------------------------------------------- cookies and CSRF


def test_the_page_session_cookie_works_and_needs_csrf_to_change_anything(world: World):
    page = TestClient(world.client.app)  # a browser of its own: its own cookie jar
    r = page.post(f"{API}/auth/login", json={"username": "sue", "password": PASSWORD})
    assert r.status_code == 200
    csrf, session = page.cookies[CSRF_COOKIE], page.cookies[SESSION_COOKIE]
    assert page.get(f"{API}/auth/me").json() == {"name": "sue", "role": "supervisor"}
    assert page.get(f"{API}/queue", params={"status": "all"}).status_code == 200
    sid = post_scan(world.client, world.who["gate-1"], seed=3)
    assert page.get(f"{API}/scans/{sid}/image").status_code == 200
    body = review_body(page, {}, sid, verdict="inspect", comment="by cookie")
    # a cookie POST without the header (what a cross-site form would send): 403
    no_header = page.post(f"{API}/scans/{sid}/reviews", json=body)
    assert no_header.status_code == 403 and "X-CSRF-Token" in no_header.json()["detail"]
    wrong = page.post(f"{API}/scans/{sid}/reviews", json=body, headers={"X-CSRF-Token": "x" * 64})
    assert wrong.status_code == 403
    assert page.get(f"{API}/scans/{sid}/reviews").json()["items"] == []
    ok = page.post(f"{API}/scans/{sid}/reviews", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201, ok.text
    assert ok.json()["officer"] == "sue" and ok.json()["comment"] == "by cookie"
    # the CSRF value of one session does not fit another
    other = TestClient(world.client.app)
    other.post(f"{API}/auth/login", json={"username": "ada", "password": PASSWORD})
    r = other.post(f"{API}/scans/{sid}/reopen", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    # logout needs the header too, then the cookie is dead
    assert page.post(f"{API}/auth/logout").status_code == 403
    r = page.post(f"{API}/auth/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert SESSION_COOKIE not in page.cookies
    page.cookies.set(SESSION_COOKIE, session)  # the revoked session, sent again
    r = page.get(f"{API}/auth/me")
    assert r.status_code == 401 and "log in again" in r.json()["detail"]


def test_a_station_key_in_a_cookie_is_no_session(world: World):
    page = TestClient(world.client.app)
    key = world.who["gate-1"]["Authorization"].split()[1]
    page.cookies.set(SESSION_COOKIE, key)
    assert page.get(f"{API}/scans").status_code == 401
    page.cookies.set(SESSION_COOKIE, ADMIN_KEY)
    assert page.get(f"{API}/admin/users").status_code == 401


# --------------------------------------------------------------------------- who may reach what

T1, T2, NONE = "{t1}", "{t2}", "00000000-0000-4000-8000-000000000000"
ROLE_TABLE = [
    # (caller, method, path, json body, status). Bodies of allowed writes are invalid on
    # purpose (422) or the scan is in the wrong state (409): the table changes nothing.
    ("nobody", "GET", "/queue", None, 401),
    ("gate-1", "GET", "/queue", None, 403),
    ("olga", "GET", "/queue", None, 200),
    ("admin-key", "GET", "/queue", None, 200),
    ("gate-1", "GET", "/categories", None, 403),
    ("olga", "GET", "/categories", None, 200),
    # stations: their own scans only, never the officers' endpoints
    ("gate-1", "GET", f"/scans/{T1}", None, 200),
    ("gate-2", "GET", f"/scans/{T1}", None, 404),
    ("gate-2", "GET", f"/scans/{T1}/image", None, 404),
    ("gate-2", "GET", f"/scans/{T1}/results", None, 404),
    ("gate-1", "GET", f"/scans/{T1}/reviews", None, 403),
    ("gate-2", "GET", f"/scans/{T1}/reviews", None, 403),
    ("gate-1", "POST", f"/scans/{T1}/reviews", {}, 403),
    ("gate-1", "POST", f"/scans/{T1}/reopen", None, 403),
    ("gate-1", "GET", "/admin/users", None, 403),
    ("gate-1", "GET", "/admin/stations", None, 403),
    ("gate-1", "POST", "/admin/stations", {}, 403),
    # users read every station's scans, but post none
    ("olga", "GET", f"/scans/{T1}", None, 200),
    ("olga", "GET", f"/scans/{T2}", None, 200),
    ("olga", "GET", f"/scans/{T2}/results", None, 200),
    ("olga", "GET", f"/scans/{NONE}", None, 404),
    ("olga", "GET", f"/scans/{NONE}/reviews", None, 404),
    ("olga", "POST", f"/scans/{NONE}/reviews", {"verdict": "release"}, 404),
    ("olga", "GET", f"/scans/{T1}/reviews", None, 200),
    ("olga", "POST", f"/scans/{T1}/reviews", {}, 422),
    ("sue", "POST", f"/scans/{T1}/reviews", {}, 422),
    ("admin-key", "POST", f"/scans/{T1}/reviews", {}, 403),  # a review is a person's
    ("nobody", "POST", f"/scans/{T1}/reviews", {}, 401),
    # re-opening: supervisors and admins (T1 is pending: 409 once allowed)
    ("olga", "POST", f"/scans/{T1}/reopen", None, 403),
    ("sue", "POST", f"/scans/{T1}/reopen", None, 409),
    ("ada", "POST", f"/scans/{T2}/reopen", None, 409),
    ("admin-key", "POST", f"/scans/{T1}/reopen", None, 403),
    ("sue", "POST", f"/scans/{NONE}/reopen", None, 404),
    # the admin API: admins' accounts and the admin key
    ("olga", "GET", "/admin/users", None, 403),
    ("sue", "GET", "/admin/users", None, 403),
    ("ada", "GET", "/admin/users", None, 200),
    ("admin-key", "GET", "/admin/users", None, 200),
    ("olga", "POST", "/admin/users", {}, 403),
    ("sue", "POST", "/admin/users", {}, 403),
    ("ada", "POST", "/admin/users", {}, 422),
    ("sue", "PATCH", "/admin/users/olga", {"role": "admin"}, 403),
    ("olga", "PATCH", "/admin/users/olga", {"role": "admin"}, 403),
    ("ada", "PATCH", "/admin/users/nobody-here", {"role": "admin"}, 404),
    ("olga", "GET", "/admin/stations", None, 403),
    ("ada", "GET", "/admin/stations", None, 200),
    ("sue", "POST", "/admin/stations", {}, 403),
    ("admin-key", "POST", "/admin/stations", {}, 422),
    ("olga", "GET", "/admin/model", None, 403),
    ("gate-1", "GET", "/admin/model", None, 403),
    ("ada", "GET", "/admin/model", None, 200),
    ("olga", "POST", "/admin/model", {}, 403),
    ("ada", "POST", "/admin/model", {}, 422),
]


@pytest.mark.parametrize(("caller", "method", "path", "body", "status"), ROLE_TABLE)
def test_every_endpoint_checks_the_role_and_the_object(
    world: World, caller: str, method: str, path: str, body: Any, status: int
):
    url = API + path.format(**world.scans)
    kw: dict[str, Any] = {"headers": world.who[caller]}
    if body is not None:
        kw["json"] = body
    r = world.client.request(method, url, **kw)
    assert r.status_code == status, (caller, method, path, r.text)
    assert r.json()  # every answer is JSON with something in it


def test_users_may_not_post_scans(world: World):
    for caller in ("olga", "ada"):
        r = world.client.post(f"{API}/scans", files=scan_pngs(), headers=world.who[caller])
        assert r.status_code == 403 and "station" in r.json()["detail"]


def test_an_officer_sees_only_their_own_reviews_and_supervisors_see_all(world: World):
    c, who = world.client, world.who
    sid = post_scan(c, who["gate-2"], seed=4)
    first = c.post(
        f"{API}/scans/{sid}/reviews", json=review_body(c, who["olga"], sid), headers=who["olga"]
    )
    assert first.status_code == 201, first.text
    # another officer can neither read olga's review nor overrule it
    theirs = c.get(f"{API}/scans/{sid}/reviews", headers=who["omar"]).json()
    assert theirs["items"] == [] and theirs["review_status"] == "reviewed"
    r = c.post(
        f"{API}/scans/{sid}/reviews", json=review_body(c, who["omar"], sid), headers=who["omar"]
    )
    assert r.status_code == 409 and "re-open" in r.json()["detail"]
    # olga may correct herself: appended, not replaced
    again = c.post(
        f"{API}/scans/{sid}/reviews",
        json=review_body(c, who["olga"], sid, verdict="inspect", comment="second look"),
        headers=who["olga"],
    )
    assert again.status_code == 201
    mine = c.get(f"{API}/scans/{sid}/reviews", headers=who["olga"]).json()["items"]
    assert [x["verdict"] for x in mine] == ["release", "inspect"]
    for boss in ("sue", "ada", "admin-key"):
        seen = c.get(f"{API}/scans/{sid}/reviews", headers=who[boss]).json()["items"]
        assert [x["id"] for x in seen] == [first.json()["id"], again.json()["id"]]
    # a supervisor re-opens it; now omar may review, and the history keeps all three
    r = c.post(f"{API}/scans/{sid}/reopen", json={"reason": "look at the roof"}, headers=who["sue"])
    assert r.status_code == 200 and r.json()["review_status"] == "reopened"
    assert r.json()["by"] == "sue" and r.json()["reason"] == "look at the roof"
    assert c.get(f"{API}/scans/{sid}", headers=who["omar"]).json()["review_status"] == "reopened"
    r = c.post(f"{API}/scans/{sid}/reopen", headers=who["sue"])
    assert r.status_code == 409  # already re-opened
    third = c.post(
        f"{API}/scans/{sid}/reviews", json=review_body(c, who["omar"], sid), headers=who["omar"]
    )
    assert third.status_code == 201
    history = c.get(f"{API}/scans/{sid}/reviews", headers=who["sue"]).json()
    assert [x["officer"] for x in history["items"]] == ["olga", "olga", "omar"]
    assert history["review_status"] == "reviewed"


# --------------------------------------------------------------------------- review content


def test_a_review_stores_decisions_added_boxes_verdict_officer_time_and_model(world: World):
    c, who = world.client, world.who
    # 192 x 768 px: room for several separate regions (overlapping findings merge)
    sid = post_scan(c, who["gate-1"], seed=5, size=(192, 768), manifest=[
        {"hs_code": "0901.21", "description": "coffee", "declared_weight_kg": 9000}
    ])  # fmt: skip
    scan = c.get(f"{API}/scans/{sid}", headers=who["olga"]).json()
    found = scan["findings"]
    assert len(found) >= 3, "the alarm model marks several regions"
    assert scan["review_status"] == "pending"
    cats = c.get(f"{API}/categories", headers=who["olga"]).json()["categories"]
    assert "narcotics" in cats and "anomaly" not in cats
    decided = [{"finding_id": f["id"], "decision": "reject"} for f in found]
    decided[0] = {"finding_id": found[0]["id"], "decision": "accept", "category": None}
    decided[1] = {"finding_id": found[1]["id"], "decision": "relabel", "category": "currency"}
    body = {
        "findings": decided,
        "added": [{"category": "narcotics", "box": [10, 20, 60.5, 70]}],
        "verdict": "inspect",
        "comment": "bricks behind the coffee\nsecond line",
    }
    before = datetime.now(timezone.utc)
    r = c.post(f"{API}/scans/{sid}/reviews", json=body, headers=who["olga"])
    assert r.status_code == 201, r.text
    rev = r.json()
    assert rev["officer"] == "olga" and rev["user_role"] == "officer" and rev["scan_id"] == sid
    assert rev["model_version"] == scan["model"]["version"]
    assert before <= datetime.fromisoformat(rev["created_at"]) <= datetime.now(timezone.utc)
    assert rev["verdict"] == "inspect" and rev["comment"] == body["comment"]
    by_id = {d["finding_id"]: d for d in rev["findings"]}
    assert by_id[found[0]["id"]]["category"] == found[0]["category"]
    assert by_id[found[1]["id"]]["category"] == "currency"
    assert by_id[found[1]["id"]]["original_category"] == found[1]["category"]
    assert (
        by_id[found[2]["id"]]["decision"] == "reject" and by_id[found[2]["id"]]["category"] is None
    )
    assert by_id[found[0]["id"]]["box"] == found[0]["box"]
    assert rev["added"] == [{"category": "narcotics", "box": [10.0, 20.0, 60.5, 70.0]}]
    # read back as stored, and the queue says it is reviewed
    stored = c.get(f"{API}/scans/{sid}/reviews", headers=who["sue"]).json()["items"]
    assert stored == [rev]
    q = c.get(f"{API}/queue", params={"status": "reviewed"}, headers=who["olga"]).json()
    item = next(i for i in q["items"] if i["id"] == sid)
    assert item["review_status"] == "reviewed" and item["review_verdict"] == "inspect"
    assert item["declared"] == "coffee 9000 kg"


def _bad_bodies(found: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    every = [{"finding_id": f["id"], "decision": "reject"} for f in found]
    ok = {"findings": every, "added": [], "verdict": "release", "comment": ""}

    def with_(**kw: Any) -> dict[str, Any]:
        return {**ok, **kw}

    first = found[0]["id"]
    rest = every[1:]
    return [
        ("unknown finding", with_(findings=[*every, {"finding_id": 999, "decision": "reject"}]),
         "no finding 999"),
        ("twice", with_(findings=[*every, every[0]]), "decided twice"),
        ("missing decision", with_(findings=rest), f"none for {first}"),
        ("bad decision", with_(findings=[{"finding_id": first, "decision": "maybe"}, *rest]),
         "decision"),
        ("relabel without category",
         with_(findings=[{"finding_id": first, "decision": "relabel"}, *rest]), "needs a category"),
        ("unknown category",
         with_(findings=[{"finding_id": first, "decision": "relabel", "category": "bananas"},
                         *rest]), "unknown category 'bananas'"),
        ("anomaly is no category",
         with_(findings=[{"finding_id": first, "decision": "relabel", "category": "anomaly"},
                         *rest]), "unknown category"),
        ("category on accept",
         with_(findings=[{"finding_id": first, "decision": "accept", "category": "person"
                          if found[0]["category"] != "person" else "firearm"}, *rest]),
         "relabel"),
        ("added unknown category", with_(added=[{"category": "bananas", "box": [0, 0, 5, 5]}]),
         "added[0]: unknown category"),
        ("box outside", with_(added=[{"category": "firearm", "box": [200, 10, 300, 20]}]),
         "added[0].box"),
        ("box negative", with_(added=[{"category": "firearm", "box": [-1, 0, 5, 5]}]),
         "added[0].box"),
        ("box inverted", with_(added=[{"category": "firearm", "box": [50, 10, 40, 20]}]),
         "added[0].box"),
        ("box of three", with_(added=[{"category": "firearm", "box": [1, 2, 3]}]), "box"),
        ("box not numbers", with_(added=[{"category": "firearm", "box": ["a", 2, 3, 4]}]), "box"),
        ("no verdict", {k: v for k, v in ok.items() if k != "verdict"}, "verdict"),
        ("bad verdict", with_(verdict="clear"), "verdict"),
        ("comment too long", with_(comment="x" * 4001), "comment"),
        ("NUL in comment", with_(comment="a\x00b"), "comment"),
        ("findings not a list", with_(findings="all fine"), "findings"),
        ("id not a number", with_(findings=[{"finding_id": "one", "decision": "reject"}]),
         "finding_id"),
    ]  # fmt: skip


def test_bad_reviews_get_a_422_that_says_what_is_wrong(world: World):
    c, who = world.client, world.who
    sid = post_scan(c, who["gate-1"], seed=6)  # 96 x 256 pixels
    found = findings(c, who["omar"], sid)
    for name, body, says in _bad_bodies(found):
        r = c.post(f"{API}/scans/{sid}/reviews", json=body, headers=who["omar"])
        assert r.status_code == 422, (name, r.text)
        assert says in r.json()["detail"], (name, r.json()["detail"])
    # NaN and infinity (Python's JSON reads them) are refused too
    raw = json.dumps(
        {"findings": [{"finding_id": f["id"], "decision": "reject"} for f in found],
         "added": [{"category": "firearm", "box": [float("nan"), 0, 5, 5]}],
         "verdict": "release"}
    )  # fmt: skip
    r = c.post(
        f"{API}/scans/{sid}/reviews",
        content=raw.encode(),
        headers={**who["omar"], "content-type": "application/json"},
    )
    assert r.status_code == 422
    r = c.post(
        f"{API}/scans/{sid}/reviews",
        content=b"{not json",
        headers={**who["omar"], "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert c.get(f"{API}/scans/{sid}/reviews", headers=who["sue"]).json()["items"] == []


# --------------------------------------------------------------------------- the queue


def test_the_queue_lists_by_risk_filters_and_polls(make_settings: Callable[..., Settings]):
    settings = make_settings()
    keys = {name: add_station(settings, name) for name in ("gate-1", "gate-2")}
    add_user(settings, "olga", "officer")
    with running(settings) as c:
        olga = bearer(login(c, "olga")["token"])
        ids = [post_scan(c, keys[f"gate-{1 + k % 2}"], seed=10 + k) for k in range(4)]
        q = c.get(f"{API}/queue", headers=olga).json()
        assert q["total"] == 4 and {i["id"] for i in q["items"]} == set(ids)
        order = [(-i["risk"], i["received_at"]) for i in q["items"]]
        risks = [i["risk"] for i in q["items"]]
        assert risks == sorted(risks, reverse=True), order
        item = q["items"][0]
        assert set(item) >= {
            "id", "risk", "verdict", "station", "received_at", "scan_time", "declared",
            "findings", "review_status", "width", "height",
        }  # fmt: skip
        assert item["review_status"] == "pending" and item["width"] == 256
        # review one: it leaves "pending" for "reviewed"
        done = ids[0]
        r = c.post(f"{API}/scans/{done}/reviews", json=review_body(c, olga, done), headers=olga)
        assert r.status_code == 201
        pending = c.get(f"{API}/queue", headers=olga).json()
        assert pending["total"] == 3 and done not in {i["id"] for i in pending["items"]}
        reviewed = c.get(f"{API}/queue", params={"status": "reviewed"}, headers=olga).json()
        assert [i["id"] for i in reviewed["items"]] == [done]
        assert c.get(f"{API}/queue", params={"status": "all"}, headers=olga).json()["total"] == 4
        # filters: station, verdict, since (inclusive), paging
        g2 = c.get(f"{API}/queue", params={"station": "gate-2", "status": "all"}, headers=olga)
        assert {i["station"] for i in g2.json()["items"]} == {"gate-2"}
        assert g2.json()["total"] == 2
        alarms = c.get(f"{API}/queue", params={"verdict": "alarm", "status": "all"}, headers=olga)
        assert alarms.json()["total"] == 4
        newest = max(i["received_at"] for i in pending["items"])
        polled = c.get(f"{API}/queue", params={"since": newest, "status": "all"}, headers=olga)
        assert [i["received_at"] for i in polled.json()["items"]] == [newest]
        for edge in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00"):  # no overflow
            r = c.get(f"{API}/queue", params={"since": edge, "status": "all"}, headers=olga)
            assert r.status_code == 200 and r.json()["total"] == (0 if edge[0] == "9" else 4)
        page = c.get(f"{API}/queue", params={"limit": 2, "offset": 2}, headers=olga).json()
        assert page["total"] == 3 and len(page["items"]) == 1
        for bad in (
            {"status": "done"},
            {"limit": 0},
            {"limit": 201},
            {"since": "yesterday"},
            {"station": "a\x00"},
            {"verdict": "maybe"},
            {"offset": -1},
        ):
            r = c.get(f"{API}/queue", params=bad, headers=olga)
            assert r.status_code == 422 and r.json()["detail"], bad


# --------------------------------------------------------------------------- the admin


def test_admins_manage_users_and_stations(world: World):
    c, ada = world.client, world.who["ada"]
    r = c.post(
        f"{API}/admin/users",
        json={"name": "nina", "role": "officer", "password": "a long passphrase"},
        headers=ada,
    )
    assert r.status_code == 201 and r.json()["name"] == "nina" and r.json()["active"] is True
    assert "password" not in json.dumps(r.json())
    listed = c.get(f"{API}/admin/users", headers=ADMIN).json()["items"]
    assert {"name": "nina", "role": "officer"}.items() <= listed[
        [u["name"] for u in listed].index("nina")
    ].items()
    assert all("hash" not in json.dumps(u) for u in listed)
    for body, status in [
        ({"name": "nina", "role": "officer", "password": "another passphrase"}, 409),
        ({"name": "bad name", "role": "officer", "password": "a long passphrase"}, 422),
        ({"name": "x" * 101, "role": "officer", "password": "a long passphrase"}, 422),
        ({"name": "neo", "role": "officer", "password": "short"}, 422),
        ({"name": "neo", "role": "king", "password": "a long passphrase"}, 422),
    ]:
        assert c.post(f"{API}/admin/users", json=body, headers=ada).status_code == status, body
    nina = bearer(login(c, "nina", "a long passphrase")["token"])
    assert c.get(f"{API}/admin/users", headers=nina).status_code == 403
    r = c.patch(f"{API}/admin/users/nina", json={"role": "supervisor"}, headers=ada)
    assert r.status_code == 200 and r.json()["role"] == "supervisor"
    assert c.get(f"{API}/auth/me", headers=nina).json()["role"] == "supervisor"  # at once
    # deactivating ends her sessions and her logins
    assert (
        c.patch(f"{API}/admin/users/nina", json={"active": False}, headers=ada).status_code == 200
    )
    assert c.get(f"{API}/auth/me", headers=nina).status_code == 401
    r = c.post(f"{API}/auth/login", json={"username": "nina", "password": "a long passphrase"})
    assert r.status_code == 401
    # an admin cannot lock themself out
    r = c.patch(f"{API}/admin/users/ada", json={"role": "officer"}, headers=ada)
    assert r.status_code == 409
    # a new password works and ends the old sessions
    c.patch(f"{API}/admin/users/nina", json={"active": True}, headers=ada)
    old = bearer(login(c, "nina", "a long passphrase")["token"])
    r = c.patch(f"{API}/admin/users/nina", json={"password": "a new passphrase"}, headers=ADMIN)
    assert r.status_code == 200
    assert c.get(f"{API}/auth/me", headers=old).status_code == 401
    assert login(c, "nina", "a new passphrase")["user"]["role"] == "supervisor"
    # stations: the key is shown once and works
    r = c.post(f"{API}/admin/stations", json={"name": "rail-7"}, headers=ada)
    assert r.status_code == 201 and r.json()["key"].startswith("cs_")
    key = bearer(r.json()["key"])
    assert c.get(f"{API}/auth/me", headers=key).json() == {"name": "rail-7", "role": "station"}
    assert c.post(f"{API}/admin/stations", json={"name": "rail-7"}, headers=ada).status_code == 409
    assert c.post(f"{API}/admin/stations", json={"name": "a\x00"}, headers=ada).status_code == 422
    names = [s["name"] for s in c.get(f"{API}/admin/stations", headers=ada).json()["items"]]
    assert "rail-7" in names and "gate-1" in names
    assert all("key" not in s for s in c.get(f"{API}/admin/stations", headers=ada).json()["items"])


def test_cli_user_add_reads_the_password_from_stdin(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    settings = make_settings()
    args = ["--data-dir", str(settings.data_dir)]

    def add(name: str, role: str, password: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        return main(["user", "add", name, "--role", role, "--password-stdin", *args])

    assert add("kim", "supervisor", "kims passphrase") == 0
    assert add("kim", "officer", "other passphrase") == 2
    assert "exists already" in capsys.readouterr().err
    assert add("lee", "officer", "short") == 2
    assert "8-1024 characters" in capsys.readouterr().err
    assert add("bad name", "officer", "a long passphrase") == 2
    with pytest.raises(SystemExit):  # argparse refuses an unknown role
        add("lee", "king", "a long passphrase")
    capsys.readouterr()
    assert main(["user", "list", *args]) == 0
    assert capsys.readouterr().out.startswith("kim\tsupervisor\tactive\t")
    db = (settings.data_dir / "cargoscan.db").read_bytes()
    assert b"kims passphrase" not in db
    with running(settings) as c:
        assert login(c, "kim", "kims passphrase")["user"] == {"name": "kim", "role": "supervisor"}
        r = c.post(f"{API}/auth/login", json={"username": "kim", "password": "kims passphrase\n"})
        assert r.status_code == 401  # the newline was not part of it


# --------------------------------------------------------------------------- export


def test_reviews_export_writes_the_synth_layout_with_the_officers_truth(
    make_settings: Callable[..., Settings], models: dict[str, Path], tmp_path: Path
):
    from training.data import CocoScans

    settings = make_settings()
    key = add_station(settings, "gate-1")
    for name, role in (("olga", "officer"), ("sue", "supervisor")):
        add_user(settings, name, role)
    with running(settings) as c:
        olga = bearer(login(c, "olga")["token"])
        sue = bearer(login(c, "sue")["token"])
        sids = [
            post_scan(c, key, seed=20 + k, size=(192, 768), station_scan_id=f"E-{k}")
            for k in range(6)
        ]

        def review(sid: str, body: dict[str, Any], who: dict[str, str] = olga) -> None:
            r = c.post(f"{API}/scans/{sid}/reviews", json=body, headers=who)
            assert r.status_code == 201, r.text

        # 0: one finding accepted, one relabelled -> two boxes
        body = review_body(c, olga, sids[0], verdict="inspect")
        found = findings(c, olga, sids[0])
        body["findings"][0]["decision"] = "accept"
        body["findings"][1] = {
            "finding_id": found[1]["id"],
            "decision": "relabel",
            "category": "cigarettes",
        }
        review(sids[0], body)
        # 1: everything rejected, released -> clean
        review(sids[1], review_body(c, olga, sids[1]))
        # 2: a missed threat drawn, first review released it: the later review wins
        review(sids[2], review_body(c, olga, sids[2]))
        review(
            sids[2],
            review_body(
                c, olga, sids[2], verdict="inspect",
                added=[{"category": "person", "box": [30, 10, 90, 60]}],
            ),
        )  # fmt: skip
        # 3: sent to inspection with nothing marked -> left out
        review(sids[3], review_body(c, olga, sids[3], verdict="inspect"))
        # 4: reviewed, then re-opened -> left out
        review(sids[4], review_body(c, olga, sids[4]))
        assert c.post(f"{API}/scans/{sids[4]}/reopen", headers=sue).status_code == 200
        # 5: never reviewed -> not exported
    out = tmp_path / "export"
    args = ["reviews", "export", "--out", str(out), "--data-dir", str(settings.data_dir)]
    assert main(args) == 0
    coco = json.loads((out / "annotations.json").read_text())
    cats = [cat["name"] for cat in coco["categories"]]
    assert cats == json.loads(models["alarm"].with_suffix(".json").read_text())["categories"]
    by_scan = {im["scan_id"]: im for im in coco["images"]}
    assert set(by_scan) == {sids[0], sids[1], sids[2]}
    anns: dict[int, list[tuple[str, list[float]]]] = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append((cats[a["category_id"] - 1], a["bbox"]))

    def xywh(box: list[float]) -> list[float]:
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]

    assert sorted(anns[by_scan[sids[0]]["id"]]) == sorted(
        [(found[0]["category"], xywh(found[0]["box"])), ("cigarettes", xywh(found[1]["box"]))]
    )
    assert by_scan[sids[1]]["clean"] and by_scan[sids[1]]["id"] not in anns
    assert anns[by_scan[sids[2]]["id"]] == [("person", [30.0, 10.0, 60.0, 50.0])]
    assert by_scan[sids[2]]["review_verdict"] == "inspect"
    # the original bytes, unchanged, named like synth's
    im = by_scan[sids[1]]
    assert im["file_name"] == f"images/{im['id']:06d}_high.png"
    assert (out / im["file_name"]).read_bytes() == scan_pngs(h=192, w=768, seed=21)["high"][1]
    assert (out / im["low_file_name"]).read_bytes() == scan_pngs(h=192, w=768, seed=21)["low"][1]
    # training reads it as it is, with the model's category list
    data = CocoScans(out, cats)
    assert len(data) == 3 and sorted(len(data[k].labels) for k in range(3)) == [0, 1, 2]
    # --since leaves out scans reviewed before it; a bad date is refused
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert main([*args, "--since", later]) == 0
    assert json.loads((out / "annotations.json").read_text())["images"] == []
    assert main([*args, "--since", "last week"]) == 2
    # the categories come from a card: the given model's, or one that is missing
    assert main([*args, "--model", str(models["clear"])]) == 0
    assert main([*args, "--model", str(tmp_path / "absent.onnx")]) == 2


# --------------------------------------------------------------------------- PostgreSQL


def test_users_and_reviews_on_postgresql(
    make_settings: Callable[..., Settings], postgres_url: str, tmp_path: Path
):
    settings = make_settings(database_url=postgres_url)
    key = add_station(settings, "gate-1")
    add_user(settings, "olga", "officer")
    add_user(settings, "sue", "supervisor")
    with running(settings) as c:
        olga = bearer(login(c, "olga")["token"])
        sue = bearer(login(c, "sue")["token"])
        sids = [post_scan(c, key, seed=30 + k) for k in range(2)]
        body = review_body(c, olga, sids[0], added=[{"category": "firearm", "box": [1, 2, 30, 40]}])
        r = c.post(f"{API}/scans/{sids[0]}/reviews", json=body, headers=olga)
        assert r.status_code == 201, r.text
        assert c.post(f"{API}/scans/{sids[0]}/reopen", headers=sue).status_code == 200
        q = c.get(f"{API}/queue", headers=olga).json()
        assert {i["id"]: i["review_status"] for i in q["items"]} == {
            sids[0]: "reopened",
            sids[1]: "pending",
        }
        r = c.post(f"{API}/scans/{sids[0]}/reviews", json=body, headers=sue)
        assert r.status_code == 201
        assert (
            c.get(f"{API}/queue", params={"status": "reviewed"}, headers=olga).json()["total"] == 1
        )
        bad = {**body, "comment": "a\x00"}
        assert c.post(f"{API}/scans/{sids[1]}/reviews", json=bad, headers=olga).status_code == 422
        r = c.post(f"{API}/auth/login", json={"username": "a\x00", "password": PASSWORD})
        assert r.status_code == 401
    out = tmp_path / "export"
    args = ["reviews", "export", "--out", str(out), "--database-url", postgres_url]
    assert main([*args, "--data-dir", str(settings.data_dir)]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert [im["scan_id"] for im in coco["images"]] == [sids[0]]
