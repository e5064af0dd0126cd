"""`cargoscan simulate` against a real HTTP server (the app under uvicorn on a loopback
port, in a thread): scans are posted and stored, a 429 is waited out and retried, a service
that is down at first is reached with back-off, and a repeated station_scan_id is answered
200 without a second copy. Small scans (25 mm pitch) keep it fast."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from cargoscan.cli import main
from inference.scan import ScanMetadata, decode_scan
from inference.service.app import Service, create_app
from inference.service.settings import Settings
from station.client import (
    RetryPolicy,
    SimSummary,
    iso6346_check_digit,
    make_upload,
    parse_retry_after,
    post_scan,
    simulate,
    station_client,
)
from tests.inference.service.service_helpers import add_station
from training.synth.scene import SynthConfig

SMALL = SynthConfig(pitch_mm=25.0)  # 160 px high, ~550 px long
REPO = Path(__file__).resolve().parents[2]


def _bound(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextmanager
def serving(settings: Settings, port: int = 0) -> Iterator[tuple[str, Service]]:
    """The real app under uvicorn on a loopback port, until the block ends; ready on entry."""
    app = create_app(settings)
    sock = _bound(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and thread.is_alive(), "server not ready"
            time.sleep(0.05)
        yield url, app.state.service
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@pytest.fixture
def settings(tmp_path: Path, models: dict[str, Path]) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", model_path=models["alarm"], engine_threads=1, check_scans=0
    )


def _listed(url: str, key: dict[str, str]) -> dict[str, Any]:
    resp = httpx.get(f"{url}/api/v1/scans", headers=key, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _run(url: str, key: dict[str, str], **kw: Any) -> tuple[SimSummary, str]:
    out = io.StringIO()
    token = key["Authorization"].split()[1]
    kw = {"seed": 5, "config": SMALL, "progress": False, **kw}
    return simulate(url, token, out=out, **kw), out.getvalue()


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize(
    ("head", "digit"), [("CSQU305438", 3), ("MSCU123456", 6), ("SIMU000000", 2)]
)
def test_container_numbers_carry_the_iso6346_check_digit(head: str, digit: int):
    assert iso6346_check_digit(head) == digit


@pytest.mark.parametrize(
    ("header", "seconds"), [("3", 3.0), ("0", 0.0), ("", None), (None, None), ("soon", None)]
)
def test_retry_after_seconds(header: str | None, seconds: float | None):
    assert parse_retry_after(header) == seconds


def test_retry_after_http_date():
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    got = parse_retry_after(format_datetime(when, usegmt=True))
    assert got is not None and 27 <= got <= 31


def test_backoff_grows_with_jitter_and_is_capped():
    import random

    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=4.0)
    rng = random.Random(0)
    for failures, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        waits = [policy.backoff(failures, rng) for _ in range(50)]
        assert all(step / 2 <= w <= step for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert policy.after(2.0, rng) >= 2.0  # never earlier than the server asked


def test_an_upload_is_16_bit_tiff_with_metadata_the_service_accepts():
    up = make_upload(0, 1, SMALL)
    assert up.image_format == "tiff" and up.high[:4] == b"II*\x00" and up.low[:4] == b"II*\x00"
    scan = decode_scan(up.high, up.low)  # never squashed to 8 bits
    assert scan.bit_depth == 16 and scan.shape == (up.height, up.width)
    png = make_upload(0, 1, SMALL, image_format="png")  # still possible, the same pixels
    assert png.high.startswith(b"\x89PNG") and png.high[24] == 16  # IHDR bit depth
    assert png.form()[0]["high"][2] == "image/png"
    again = decode_scan(png.high, png.low)
    assert np.array_equal(again.high, scan.high) and np.array_equal(again.low, scan.low)
    files, data = up.form()
    assert set(files) == {"high", "low"} and files["low"][2] == "image/tiff"
    meta = ScanMetadata.from_dict(data["metadata"])  # raises on anything the service refuses
    assert meta.station_scan_id == up.station_scan_id == "sim-1-000000"
    assert meta.pixel_pitch_mm == 25.0 and meta.scanner.high_mv == 6.0
    assert meta.scan_time is not None and meta.scan_time.tzinfo is not None
    assert meta.container_ids and all(
        re.fullmatch(r"[A-Z]{3}U\d{7}", c) and iso6346_check_digit(c) == int(c[-1])
        for c in meta.container_ids
    )
    assert len(meta.manifest) == len(json.loads(data["metadata"])["manifest"])
    again = make_upload(0, 1, SMALL)  # deterministic: a re-run re-sends the same bytes
    assert (again.high, again.low) == (up.high, up.low)


def test_a_scan_that_cannot_be_delivered_fails_after_its_attempts():
    with _bound() as probe:  # a port where nothing listens
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=3, backoff_s=0.01)
    with station_client(url, "cs_key") as client:
        got = post_scan(client, make_upload(0, 1, SMALL), policy, sleep=waits.append)
    assert not got.ok and got.status is None and got.attempts == 3
    assert len(got.errors) == 3 and "ConnectError" in got.detail
    assert len(waits) == 2  # no wait after the last attempt


# --------------------------------------------------------------------------- against a server


def test_scans_are_posted_and_stored_and_a_rerun_stores_nothing_twice(settings: Settings):
    key = add_station(settings, "sim-gate")
    with serving(settings) as (url, _service):
        first, lines = _run(url, key, count=3)
        assert (first.sent, first.created, first.stored_before, first.failed) == (3, 3, 0, 0)
        listed = _listed(url, key)
        assert listed["total"] == 3
        assert {i["station_scan_id"] for i in listed["items"]} == {
            f"sim-5-{i:06d}" for i in range(3)
        }
        assert all(i["verdict"] == "alarm" for i in listed["items"])  # the "alarm" model
        assert lines.count("ALARM") == 3 and "truth:" in lines

        # The same seed again: the same ids and bytes, answered 200 from storage.
        again, lines = _run(url, key, count=3)
        assert (again.created, again.stored_before, again.failed) == (0, 3, 0)
        assert lines.count("(stored before)") == 3
        assert _listed(url, key)["total"] == 3


def test_a_429_is_waited_out_and_retried_under_the_same_id(settings: Settings):
    settings = settings.model_copy(update={"workers": 1, "queue_size": 0})
    key = add_station(settings, "busy-gate")
    with serving(settings) as (url, service):
        release = threading.Event()
        service.pool.submit(release.wait, 60)  # the one inference thread is busy: a full queue
        result: dict[str, Any] = {}
        poster = threading.Thread(target=lambda: result.update(r=_run(url, key, count=1)))
        poster.start()
        deadline = time.monotonic() + 60
        while not re.search(
            r"^cargoscan_queue_rejections_total [1-9]",
            httpx.get(f"{url}/metrics", timeout=5).text,
            re.M,
        ):
            assert time.monotonic() < deadline and poster.is_alive(), "never answered 429"
            time.sleep(0.05)
        release.set()
        poster.join(timeout=120)
        summary, lines = result["r"]
        assert summary.throttled >= 1 and summary.retries >= 1
        assert (summary.created, summary.failed) == (1, 0)
        assert re.search(r"after \d+ retr", lines)
        assert _listed(url, key)["total"] == 1


def test_a_service_that_is_down_at_first_is_reached_with_back_off(settings: Settings):
    key = add_station(settings, "patient-gate")
    with _bound() as probe:
        port = probe.getsockname()[1]
    result: dict[str, Any] = {}
    refusals = threading.Semaphore(0)

    class CountingPolicy(RetryPolicy):
        """The real back-off, counted, so the service comes up only after refusals
        (a fixed sleep raced the scan generation on a slow CPU)."""

        def backoff(self, failures: int, rng: random.Random) -> float:
            refusals.release()
            return super().backoff(failures, rng)

    policy = CountingPolicy(backoff_s=0.2, max_backoff_s=1.0, max_attempts=200)
    poster = threading.Thread(
        target=lambda: result.update(
            r=_run(f"http://127.0.0.1:{port}", key, count=1, check_ready=False, policy=policy)
        )
    )
    poster.start()
    for _ in range(2):
        assert refusals.acquire(timeout=120), "the station never tried the absent service"
    with serving(settings, port=port) as (url, _service):
        poster.join(timeout=120)
        summary, _ = result["r"]
        assert (summary.created, summary.failed) == (1, 0)
        assert summary.retries >= 2
        assert _listed(url, key)["total"] == 1


def test_the_cli_posts_and_refuses_a_bad_key(settings: Settings, capsys: pytest.CaptureFixture):
    key = add_station(settings, "cli-gate")["Authorization"].split()[1]
    with serving(settings) as (url, _service):
        args = ["simulate", "--url", url, "--count", "1", "--pitch", "25", "--seed", "9"]
        assert main([*args, "--key", key, "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "sim-9-000000" in out and "1 analysed" in out and "--seed 9" in out
        assert main([*args, "--key", "cs_not-a-key", "--no-progress"]) == 2
        assert "refuses this station: 401" in capsys.readouterr().err


# --------------------------------------------------------------------------- the demo


def _demo(args: list[str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOSCAN_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "cargoscan", "demo", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], pattern: str, seen: list[str]) -> None:
    """Collect the demo's output lines until one matches (a reader thread: no hang)."""
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if re.search(pattern, line):
                found.set()

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout=120), "".join(seen)


@pytest.mark.slow
def test_the_demo_stops_cleanly_on_ctrl_c_and_reruns_on_its_data(
    tmp_path: Path, models: dict[str, Path]
):
    data = tmp_path / "demo"
    with _bound() as probe:
        port = probe.getsockname()[1]
    args = ["--data-dir", str(data), "--port", str(port), "--model", str(models["clear"])]
    args += ["--pitch", "25", "--rate", "0", "--seed", "4"]
    proc = _demo(args)
    seen: list[str] = []
    try:
        _read_until(proc, r"^sim-4-000000 ", seen)
        server = int(re.search(r"\(pid (\d+),", "".join(seen)).group(1))
        # The banner's officer account opens the viewer: the page, then a real log-in.
        viewer = re.search(r"officer viewer  (\S+)   user (\S+), password (\S+)", "".join(seen))
        assert viewer, "".join(seen)
        page, officer, password = viewer.groups()
        assert httpx.get(page, timeout=10).status_code == 200
        login = httpx.post(
            f"{page}api/v1/auth/login",
            json={"username": officer, "password": password},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        assert login.json()["user"] == {"name": "demo-officer", "role": "officer"}
        wrong = {"username": officer, "password": password + "x"}
        assert httpx.post(f"{page}api/v1/auth/login", json=wrong, timeout=10).status_code == 401
        proc.send_signal(signal.SIGINT)  # what the terminal's Ctrl-C sends the demo
        assert proc.wait(timeout=90) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(server, 0)  # no orphan server
    assert (data / "demo-keys.json").stat().st_mode & 0o777 == 0o600

    # Again on the same data: the same station and key; scan 0 of seed 4 is known already.
    again = _demo([*args, "--count", "1"])
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out
    assert "station         demo-station," in out and "(stored before)" in out
    assert f"user {officer}, password {password}" in out  # the same account, same password
    assert "service stopped (exit 0)" in out
