"""Hardening of the service, in-process: per-station rate limits, limited login attempts,
security headers (a CSP that fits the page), hostile uploads that get 4xx and never a 500,
secrets that never reach the log, the admin key from a file, half-written files swept.

The crash test (kill -9 while stations post) is in test_hardening_crash.py; the decoders'
hostile cases at the decoding level in tests/inference/test_fuzz_corpus.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fuzz.cases import hostile_cases
from inference.service.auth import hash_password
from inference.service.core import sweep_partial_files
from inference.service.headers import page_csp
from inference.service.limits import LoginLimiter, TokenBuckets
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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _add_user(settings: Settings, name: str, role: str = "officer") -> None:
    from inference.service.app import open_records

    records = open_records(settings)
    try:
        records.add_user(name, role, hash_password(PASSWORD))
    finally:
        records.engine.dispose()


# --------------------------------------------------------------------------- limits alone


def test_token_bucket_gives_a_burst_then_the_rate():
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_min=60, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("a")
    assert wait == pytest.approx(1.0)  # one token a second
    assert buckets.take("b") == 0.0  # each key its own bucket
    clock.now += 1.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 60
    assert [buckets.take("a") for _ in range(3)] == [0.0] * 3  # refilled to the burst only
    assert buckets.take("a") > 0
    assert TokenBuckets(0, 1).take("x") == 0.0  # rate 0: off


def test_token_bucket_table_stays_bounded():
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_min=60, burst=2, max_keys=100, clock=clock)
    for i in range(1000):
        buckets.take(f"made-up-{i}")
        clock.now += 0.01
    assert len(buckets) <= 101
    # a key that is limited right now is not forgotten while its bucket is empty
    buckets.take("busy")
    buckets.take("busy")
    assert buckets.take("busy") > 0


def test_login_limiter_counts_per_name_and_address_and_forgets_after_the_window():
    clock = FakeClock()
    lim = LoginLimiter(5, 900, 8, clock=clock)
    for _ in range(5):
        assert lim.retry_after("olga", "10.0.0.1") is None
        lim.failed("olga", "10.0.0.1")
    wait = lim.retry_after("OLGA", "10.0.0.1")  # case-folded
    assert wait == 900
    assert lim.retry_after("olga", "10.0.0.2") is None  # another address
    assert lim.retry_after("omar", "10.0.0.1") is None  # another name
    clock.now += 600
    assert lim.retry_after("olga", "10.0.0.1") == 300
    clock.now += 301
    assert lim.retry_after("olga", "10.0.0.1") is None
    # spraying: many names from one address lock the address
    for i in range(8):
        lim.failed(f"user{i}", "10.0.0.9")
    assert lim.retry_after("someone-else", "10.0.0.9") is not None
    # a success clears the pair (not the address count)
    lim2 = LoginLimiter(3, 900, 100, clock=clock)
    lim2.failed("sue", "a")
    lim2.failed("sue", "a")
    lim2.succeeded("sue", "a")
    lim2.failed("sue", "a")
    lim2.failed("sue", "a")
    assert lim2.retry_after("sue", "a") is None


# --------------------------------------------------------------------------- over HTTP


def test_each_station_is_rate_limited_on_its_own(make_settings: Callable[..., Settings]):
    settings = make_settings(station_rate_per_min=60, station_burst=3)
    gate1 = add_station(settings, "gate-1")
    gate2 = add_station(settings, "gate-2")
    with running(settings, wait_ready=False) as client:
        assert [client.get(f"{API}/auth/me", headers=gate1).status_code for _ in range(3)] == [
            200
        ] * 3
        r = client.get(f"{API}/auth/me", headers=gate1)
        assert r.status_code == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 2
        assert "rate" in r.json()["detail"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"  # headers on a 429 too
        # an upload is refused before it is read: the same answer for a scan
        r = client.post(f"{API}/scans", files=scan_pngs(), headers=gate1)
        assert r.status_code == 429
        assert client.get(f"{API}/auth/me", headers=gate2).status_code == 200
        assert all(client.get(f"{API}/auth/me", headers=ADMIN).status_code == 200 for _ in range(6))
        metrics = client.get("/metrics").text
        assert 'cargoscan_rate_limited_total{kind="station"} 2.0' in metrics


def test_login_attempts_are_limited(make_settings: Callable[..., Settings]):
    settings = make_settings(login_max_failures=5)
    _add_user(settings, "olga")
    _add_user(settings, "omar")
    login = f"{API}/auth/login"
    with running(settings, wait_ready=False) as client:
        for _ in range(5):
            r = client.post(login, json={"username": "olga", "password": "wrong password"})
            assert r.status_code == 401
        # the right password is refused too while the name is locked (no guessing oracle)
        r = client.post(login, json={"username": "olga", "password": PASSWORD})
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) > 800
        assert "too many failed logins" in r.json()["detail"]
        r = client.post(login, json={"username": "omar", "password": PASSWORD})
        assert r.status_code == 200
        assert 'cargoscan_rate_limited_total{kind="login"} 1.0' in client.get("/metrics").text


def test_a_login_flood_runs_no_more_password_hashes_than_the_limit(
    make_settings: Callable[..., Settings],
):
    """40 concurrent logins with made-up names from one address, a limit of 10: each
    attempt is counted before its password is checked, so 10 hashes run (not one per
    login that got past the check before the others were counted), at most 2 at once,
    and a station's request is answered meanwhile. A good login is not counted."""
    from concurrent.futures import ThreadPoolExecutor

    settings = make_settings(
        login_max_failures_per_address=10, login_hash_threads=2, login_hash_queue=64
    )
    _add_user(settings, "olga")
    station = add_station(settings, "gate-1")
    login = f"{API}/auth/login"
    with running(settings, wait_ready=False) as client:
        service = client.app.state.service
        # one good login first: refunded, so it leaves the address its 10 failures
        ok = client.post(login, json={"username": "olga", "password": PASSWORD})
        assert ok.status_code == 200, ok.text
        client.cookies.clear()
        assert service.password_hashing.runs == 1

        def attempt(i: int) -> int:
            body = {"username": f"spray-{i}", "password": f"guess {i}"}
            return client.post(login, json=body).status_code

        with ThreadPoolExecutor(40) as pool:
            futures = [pool.submit(attempt, i) for i in range(40)]
            me = client.get(f"{API}/auth/me", headers=station)
            statuses = sorted(f.result() for f in futures)
        assert me.status_code == 200
        assert statuses == [401] * 10 + [429] * 30, statuses
        assert service.password_hashing.runs == 1 + 10
        assert service.password_hashing.peak <= 2
        metrics = client.get("/metrics").text
        assert "cargoscan_password_hashes_total 11.0" in metrics
        assert 'cargoscan_rate_limited_total{kind="login"} 30.0' in metrics
        # the address is locked now, for every name, before any hash
        r = client.post(login, json={"username": "olga", "password": PASSWORD})
        assert r.status_code == 429 and service.password_hashing.runs == 11


def test_logins_past_the_hashing_queue_are_refused_at_once(
    make_settings: Callable[..., Settings],
):
    from concurrent.futures import ThreadPoolExecutor

    settings = make_settings(login_hash_threads=1, login_hash_queue=0)
    with running(settings, wait_ready=False) as client:
        service = client.app.state.service

        def attempt(i: int) -> tuple[int, str]:
            r = client.post(f"{API}/auth/login", json={"username": f"u{i}", "password": "x"})
            return r.status_code, r.json()["detail"]

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(attempt, range(12)))
        codes = [c for c, _ in results]
        assert set(codes) == {401, 429}, codes
        busy = [d for c, d in results if c == 429]
        assert all("too many logins at once" in d for d in busy)
        assert service.password_hashing.peak == 1
        assert service.password_hashing.runs == codes.count(401)


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_security_headers_and_a_csp_that_fits_the_page(make_settings: Callable[..., Settings]):
    settings = make_settings()
    station = add_station(settings, "gate-1")
    with running(settings, wait_ready=False) as client:
        page = client.get("/")
        assert page.status_code == 200
        csp = page.headers["Content-Security-Policy"]
        assert csp == page_csp()
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
        # the page's one inline handler, by its hash; no 'unsafe-inline' anywhere
        assert 'onsubmit="return false"' in page.text
        assert _sha("return false") in directives["script-src"]
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        # every script and style the page loads is from the service itself
        for src in ("/static/viewer.css", "/static/vendor/openseadragon/openseadragon.min.js"):
            assert src in page.text
            assert client.get(src).status_code == 200
        # OpenSeadragon's one injected <style>, by its hash
        assert len(directives["style-src"].split()) == 2
        for name, value in {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }.items():
            assert page.headers[name] == value
        assert "Strict-Transport-Security" not in page.headers  # plain http (localhost)
        api = client.get(f"{API}/auth/me", headers=station)
        assert api.headers["Cache-Control"] == "no-store"
        assert api.headers["X-Frame-Options"] == "DENY"
        denied = client.get(f"{API}/scans")
        assert denied.status_code == 401 and denied.headers["X-Content-Type-Options"] == "nosniff"
        docs = client.get("/docs")
        assert docs.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        # an offline network still gets a working /docs: every file from the service itself
        assert "cdn" not in docs.text and "http" not in docs.text.replace("http-equiv", "")
        for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            assert asset in docs.text
            served = client.get(asset)
            assert served.status_code == 200 and len(served.content) > 10_000
        assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN
        js = client.get("/static/js/app.js")
        assert js.headers["X-Content-Type-Options"] == "nosniff"
        assert js.headers["Cache-Control"] == "no-cache"  # the route's own caching is kept
        https = client.get("https://testserver/healthz")
        assert https.headers["Strict-Transport-Security"].startswith("max-age=")


def test_hostile_uploads_get_clear_4xx_and_never_a_500(make_settings: Callable[..., Settings]):
    """Every hand-made hostile file as the high channel (and some as the low one next to a
    good high), and hostile metadata: 413 or 422 naming the problem, the service stays up."""
    settings = make_settings(station_rate_per_min=0)
    station = add_station(settings, "gate-1")
    good = scan_pngs(seed=1, low=False)["high"][1]
    statuses: dict[str, int] = {}
    with running(settings) as client:

        def post(files: dict[str, tuple[str, bytes, str]], metadata: str | None = None) -> int:
            data = {"metadata": metadata} if metadata is not None else None
            r = client.post(f"{API}/scans", files=files, data=data, headers=station)
            assert r.status_code < 500, r.text
            if r.status_code >= 400:
                assert r.json()["detail"], r.text
            return r.status_code

        for name, data in hostile_cases().items():
            if name.startswith("metadata_"):
                statuses[name] = post({"high": ("high.png", good, "image/png")}, data.decode())
                continue
            statuses[name] = post({"high": ("high.png", data, "image/png")})
            if len(data) < 100_000:
                files = {
                    "high": ("high.png", good, "image/png"),
                    "low": ("low.png", data, "image/png"),
                }
                statuses[f"low:{name}"] = post(files)
        for name, meta in {
            "meta_not_json": "{not json",
            "meta_array": "[1, 2]",
            "meta_huge_number": '{"pixel_pitch_mm": 1e999}',
            "meta_nul": '{"station_scan_id": "a\\u0000b"}',
            "meta_lone_surrogate": '{"vehicle_id": "\\ud800"}',
            "meta_long_id": json.dumps({"station_scan_id": "x" * 10_000}),
            "meta_wrong_types": '{"manifest": "coffee", "scanner": [], "scan_time": 5}',
        }.items():
            statuses[name] = post({"high": ("high.png", good, "image/png")}, meta)
        assert client.get("/readyz").status_code == 200
        ok = client.post(f"{API}/scans", files=scan_pngs(seed=2), headers=station)
        assert ok.status_code == 201, ok.text
    accepted = {k for k, v in statuses.items() if v < 300}
    # the cases that decode (see test_fuzz_corpus.DECODES); as a low channel they do not
    # match the high one's size, so they are refused there
    assert accepted <= {"png_palette", "jpeg_corrupt_scan", "meta_lone_surrogate"}, accepted
    assert {v for k, v in statuses.items() if k not in accepted} <= {413, 422}
    assert statuses["png_huge_declared"] == 413 and statuses["zip_posted_as_png"] == 422
    assert len(statuses) > 100


def test_secrets_never_reach_the_log(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
):
    settings = make_settings()
    key = add_station(settings, "gate-1")
    _add_user(settings, "olga")
    station_key = key["Authorization"].split()[1]
    caplog.set_level(logging.DEBUG)
    with running(settings) as client:
        assert client.post(f"{API}/scans", files=scan_pngs(), headers=key).status_code == 201
        r = client.post(f"{API}/auth/login", json={"username": "olga", "password": PASSWORD})
        token = r.json()["token"]
        client.post(f"{API}/auth/login", json={"username": "olga", "password": PASSWORD + "x"})
        client.get(f"{API}/scans", headers={"Authorization": f"Bearer {token}"})
        new = client.post(f"{API}/admin/stations", json={"name": "gate-2"}, headers=ADMIN)
        new_key = new.json()["key"]
        client.get(f"{API}/scans", headers={"Authorization": "Bearer cs_wrong-key"})
        client.post(f"{API}/admin/model", json={"path": "/nonexistent.onnx"}, headers=ADMIN)
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert len(caplog.records) > 0
    for secret in (station_key, ADMIN_KEY, PASSWORD, token, new_key):
        assert secret not in logged
    # and never in the settings' own text (what a start-up message would print)
    assert ADMIN_KEY not in repr(settings) and ADMIN_KEY not in str(settings)


def test_admin_key_from_a_file(tmp_path: Path, make_settings: Callable[..., Settings]):
    secret = tmp_path / "admin-key"
    secret.write_text("  from-a-file-key\n")
    settings = make_settings(admin_key=None, admin_key_file=secret)
    assert settings.admin_key is not None
    assert settings.admin_key.get_secret_value() == "from-a-file-key"
    with running(settings, wait_ready=False) as client:
        r = client.get(f"{API}/admin/stations", headers={"Authorization": "Bearer from-a-file-key"})
        assert r.status_code == 200
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        make_settings(admin_key_file=tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot read"):
        make_settings(admin_key_file=tmp_path / "missing")


def test_stale_half_written_files_are_swept_at_start(tmp_path: Path):
    root = tmp_path / "blobs"
    (root / "ab").mkdir(parents=True)
    stale = root / "ab" / f".{'ab' * 32}.0123.tmp"
    fresh = root / "ab" / f".{'ab' * 32}.4567.tmp"
    kept = root / "ab" / ("ab" * 32)
    for p in (stale, fresh, kept):
        p.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(kept, (old, old))
    assert sweep_partial_files(root, 600) == 1
    assert not stale.exists() and fresh.exists() and kept.exists()
