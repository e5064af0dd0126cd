"""Accounts and reviews in the tests: users with passwords, logins, scans posted by a
station, review bodies, and a running service with two stations and four users."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.service.app import open_records
from inference.service.auth import hash_password
from inference.service.settings import Settings
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


@contextmanager
def world_of(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[World]:
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
