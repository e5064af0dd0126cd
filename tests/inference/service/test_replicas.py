"""Several service replicas on one database and one data directory (issue 29 item 7).

Two real `cargoscan serve` processes on one PostgreSQL schema (fresh per test) and one
data directory, started at the same moment (both migrate at once), with stations posting
to both from several threads: every acknowledged scan is stored once, a station_scan_id
sent to both at once gives one scan (or a 409 when the metadata differs), the audit log
stays one chain that `cargoscan audit verify` accepts, both sign with the one key in the
data directory, and a roll-out made on one replica is followed by the other. The parts
that need no process (migrations, the key, following a roll-out) are checked in process,
on SQLite as well.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.migration import MigrationContext
from sqlalchemy import text

from inference.service.db import make_engine
from inference.service.settings import Settings
from inference.service.signing import load_or_create
from station.server import free_port
from tests.inference.service import test_service_storage
from tests.inference.service.service_helpers import (
    ADMIN,
    ADMIN_KEY,
    REPO,
    ServeProcess,
    add_station,
    running,
    scan_pngs,
)

postgres_url = test_service_storage.postgres_url  # the same fresh-schema fixture
API = "/api/v1"


# --------------------------------------------------------------------------- in process


_MIGRATE = """
import sys, time
from inference.service.db import make_engine, migrate
engine = make_engine(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start together
migrate(engine)
"""


def _migrate_at_once(url: str, n: int) -> list[str]:
    """``migrate`` in ``n`` processes released at the same moment (as replicas that start
    together); the output of those that failed."""
    start = time.time() + 4.0  # after every interpreter has imported SQLAlchemy
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE, url, str(start)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(n)
    ]
    failed = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            out = f"hung: {out}"
        if proc.returncode != 0:
            failed.append(out[-2000:])
    return failed


def _revision_and_chain(url: str) -> tuple[str | None, list[tuple[int, str]]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rev = MigrationContext.configure(conn).get_current_revision()
            entries = conn.execute(text("SELECT seq, kind FROM audit_log ORDER BY seq")).all()
    finally:
        engine.dispose()
    return rev, [(int(seq), str(kind)) for seq, kind in entries]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_replicas_starting_together_migrate_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
):
    """Four start-ups (processes) at the same moment on an empty database: none fails,
    and the schema is made once (one audit chain start, not four)."""
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'replicas.db'}"
    failed = _migrate_at_once(url, 4)
    assert failed == [], failed[0]
    rev, entries = _revision_and_chain(url)
    assert rev == "0007"
    assert [kind for _, kind in entries].count("audit.start") == 1
    assert [seq for seq, _ in entries] == list(range(1, len(entries) + 1))


def test_replicas_starting_together_share_one_signing_key(tmp_path: Path):
    """The first start makes the key in the data directory; another start at the same
    moment must read that key whole, never an empty file or a second key."""
    path = tmp_path / "data" / "signing-key.pem"
    barrier = threading.Barrier(8)
    got: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            barrier.wait()
            got.append(load_or_create(path, create=True).key_sha256)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(got) == 8 and len(set(got)) == 1
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["signing-key.pem"]  # no temp left


def test_a_replica_follows_a_rollout_made_on_another(
    make_settings: Callable[..., Settings], models: dict[str, Path]
):
    """Two services on one database: a roll-out through one is served by the other after
    its own load, warm-up and check; one it cannot load (the model folder not shared) is
    named in /readyz and the model it serves stays."""
    settings = make_settings(model_sync_s=0)  # followed by hand here, not on a timer
    with running(settings) as a, running(settings) as b:
        service_b = b.app.state.service
        assert b.get("/readyz").json()["model"]["name"] == "alarm"
        r = a.post(f"{API}/admin/model", json={"path": str(models["clear"])}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert b.get("/readyz").json()["model"]["name"] == "alarm"  # not yet looked
        assert service_b.follow_rollouts_once() is True
        assert b.get("/readyz").json()["model"]["name"] == "clear"
        assert service_b.follow_rollouts_once() is False  # nothing new
        assert a.app.state.service.follow_rollouts_once() is False  # its own roll-out

        # a roll-out of a file this replica does not have
        missing = settings.data_dir / "elsewhere" / "model.onnx"
        info = dict(b.get("/readyz").json()["model"], version="9.9")
        service_b.records.add_activation(source="admin", path=str(missing), info=info, checks={})
        assert service_b.follow_rollouts_once() is False
        ready = b.get("/readyz").json()
        assert ready["status"] == "ready" and ready["model"]["name"] == "clear"
        assert "9.9" in ready["follow_error"] and str(missing) in ready["follow_error"]
        model = b.get(f"{API}/admin/model", headers=ADMIN).json()
        assert model["follow_error"] == ready["follow_error"]
        assert service_b.follow_rollouts_once() is False  # not retried until the next one


# --------------------------------------------------------------------------- two processes


def _post(url: str, key: dict[str, str], ssid: str, seed: int, meta: dict[str, Any]) -> Any:
    """A station's post: retried on 429/503 after Retry-After, as the station client does."""
    body = {"metadata": json.dumps({"station_scan_id": ssid, **meta})}
    for _ in range(30):
        r = httpx.post(
            f"{url}{API}/scans", files=scan_pngs(seed=seed), data=body, headers=key, timeout=120
        )
        if r.status_code not in (429, 503):
            return r
        time.sleep(float(r.headers.get("Retry-After", "1")))
    return r


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` on threads of their own, released together; their results in order."""
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return out


@pytest.mark.slow
def test_two_replicas_on_one_postgresql_and_one_data_dir(
    postgres_url: str, tmp_path: Path, models: dict[str, Path], serve_process: ServeProcess
):
    data = tmp_path / "data"
    ports = [free_port()]
    while (port := free_port()) == ports[0]:
        pass
    ports.append(port)

    def env_for(port: int) -> dict[str, str]:
        return {
            **os.environ,
            "CARGOSCAN_DATA_DIR": str(data),
            "CARGOSCAN_DATABASE_URL": postgres_url,
            "CARGOSCAN_MODEL_PATH": str(models["alarm"]),
            "CARGOSCAN_ADMIN_KEY": ADMIN_KEY,
            "CARGOSCAN_PORT": str(port),
            "CARGOSCAN_ENGINE_THREADS": "1",
            "CARGOSCAN_QUEUE_SIZE": "32",
            "CARGOSCAN_STATION_RATE_PER_MIN": "0",
            "CARGOSCAN_CHECK_SCANS": "1",
            "CARGOSCAN_MODEL_SYNC_S": "1",
            "PYTHONPATH": str(REPO),
        }

    # Both start at once on an empty schema and an empty data directory: both migrate,
    # both look for the signing key.
    with ThreadPoolExecutor(2) as pool:
        servers = list(
            pool.map(
                lambda p: serve_process(
                    p, env_for(p), log=tmp_path / f"serve-{p}.log", ready_timeout_s=180
                ),
                ports,
            )
        )
    urls = [s.url for s in servers]
    settings = Settings(data_dir=data, database_url=postgres_url)
    gates = [add_station(settings, "gate-1"), add_station(settings, "gate-2")]

    # Unique scans spread over both replicas, the same station_scan_id sent to both at
    # once (a retry the load balancer sent twice), and the same id with other metadata.
    jobs: list[tuple[str, Callable[[], list[Any]]]] = []
    for i in range(16):
        url, key = urls[i % 2], gates[i % 2]
        jobs.append(("unique", lambda u=url, k=key, i=i: [_post(u, k, f"U-{i}", i, {})]))
    for j in range(6):
        key = gates[j % 2]
        calls = [lambda u=u, k=key, j=j: _post(u, k, f"D-{j}", 100 + j, {}) for u in urls]
        jobs.append(("duplicate", lambda c=calls: _at_once(c)))
    for j in range(2):
        calls = [
            lambda u=u, n=n, j=j: _post(u, gates[0], f"C-{j}", 200 + j, {"vehicle_id": f"V{n}"})
            for n, u in enumerate(urls)
        ]
        jobs.append(("conflict", lambda c=calls: _at_once(c)))
    random.Random(7).shuffle(jobs)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda job: (job[0], job[1]()), jobs))

    acknowledged: dict[str, dict[str, Any]] = {}
    for kind, responses in answers:
        statuses = sorted(r.status_code for r in responses)
        if kind == "unique":
            assert statuses == [201], responses[0].text
        elif kind == "duplicate":
            assert statuses == [200, 201], [r.text for r in responses]
            first, second = (r.json() for r in responses)
            assert first == second  # one scan, one result, whichever replica answered
        else:
            assert statuses == [201, 409], [r.text for r in responses]
            refused = next(r for r in responses if r.status_code == 409)
            assert "vehicle_id" in refused.json()["detail"]
        for r in responses:
            if r.status_code in (200, 201):
                acknowledged[r.json()["scan_id"]] = r.json()
    assert len(acknowledged) == 16 + 6 + 2

    # Every acknowledged scan is stored exactly once, and each replica serves it.
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, station_scan_id FROM scans")).all()
            received = conn.execute(
                text("SELECT count(*) FROM audit_log WHERE kind = 'scan.received'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert sorted(r.id for r in rows) == sorted(acknowledged)
    assert max(Counter(r.station_scan_id for r in rows).values()) == 1
    assert received == len(rows)
    for sid, body in acknowledged.items():
        for url in urls:
            got = httpx.get(f"{url}{API}/scans/{sid}", headers=ADMIN, timeout=30)
            assert got.status_code == 200 and got.json()["verdict"] == body["verdict"]
    assert not list((data / "blobs").glob("*/.*.tmp"))

    # One signing key for both: the one in the shared data directory.
    keys = {httpx.get(f"{u}{API}/signing-key", headers=ADMIN).json()["key_sha256"] for u in urls}
    assert keys == {load_or_create(data / "signing-key.pem", create=False).key_sha256}

    # A roll-out through one replica is served by the other within a few seconds.
    r = httpx.post(
        f"{urls[0]}{API}/admin/model",
        json={"path": str(models["clear"])},
        headers=ADMIN,
        timeout=120,
    )
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while httpx.get(f"{urls[1]}/readyz").json()["model"]["name"] != "clear":
        assert time.monotonic() < deadline, httpx.get(f"{urls[1]}/readyz").json()
        time.sleep(0.2)
    late = _post(urls[1], gates[1], "L-1", 300, {})
    assert late.status_code == 201 and late.json()["verdict"] == "clear"

    # One unbroken audit chain over everything both wrote.
    verify = subprocess.run(
        [sys.executable, "-m", "cargoscan", "audit", "verify"],
        cwd=REPO,
        env=env_for(ports[0]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit log OK" in verify.stdout
    for server in servers:
        assert server.stop(timeout_s=60) == 0, server.log_tail()
