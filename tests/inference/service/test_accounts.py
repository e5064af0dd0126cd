"""Accounts and who may reach what, through HTTP (in-process ASGI client): login by token
and by cookie with CSRF, stored hashes only, the role-and-object table, and the admin's
management of users and stations."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from cargoscan.cli import main
from inference.service.app import open_records
from inference.service.auth import CSRF_COOKIE, SESSION_COOKIE
from inference.service.db import make_engine
from inference.service.settings import Settings
from tests.inference.service.accounts import (
    API,
    PASSWORD,
    World,
    bearer,
    login,
    post_scan,
    review_body,
)
from tests.inference.service.service_helpers import (
    ADMIN,
    ADMIN_KEY,
    running,
    scan_pngs,
)

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
