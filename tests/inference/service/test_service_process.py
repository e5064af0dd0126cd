"""`cargoscan serve` as a real uvicorn process: ready, a scan, a roll-out through
`cargoscan model activate`, SIGTERM while a scan is in flight (it still completes), a
clean exit, and a restart on the same data directory that still has everything."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference.service.settings import Settings
from station.server import free_port
from tests.inference.service.service_helpers import (
    ADMIN_KEY,
    REPO,
    ServeProcess,
    add_station,
    scan_pngs,
)


def _queue_depth(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return float(re.search(r"^cargoscan_queue_depth (\S+)$", text, re.M).group(1))


@pytest.mark.slow
def test_serve_drains_on_sigterm_and_restarts_with_its_data(
    tmp_path: Path, models: dict[str, Path], serve_process: ServeProcess
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    env = {
        **os.environ,
        "CARGOSCAN_DATA_DIR": str(data),
        "CARGOSCAN_MODEL_PATH": str(models["alarm"]),
        "CARGOSCAN_ADMIN_KEY": ADMIN_KEY,
        "CARGOSCAN_PORT": str(port),
        "CARGOSCAN_ENGINE_THREADS": "1",
        "CARGOSCAN_DRAIN_TIMEOUT_S": "60",
        "PYTHONPATH": str(REPO),
    }
    env.pop("CARGOSCAN_DATABASE_URL", None)
    key = add_station(Settings(data_dir=data, database_url=None), "gate-1")
    log = tmp_path / "serve.log"

    server = serve_process(port, env, log=log, ready_timeout_s=90)
    meta = {"metadata": json.dumps({"station_scan_id": "U-1"})}
    first = httpx.post(f"{url}/api/v1/scans", files=scan_pngs(), data=meta, headers=key)
    assert first.status_code == 201, first.text

    # roll out through the CLI, which talks to the admin endpoint
    cli = subprocess.run(
        [sys.executable, "-m", "cargoscan", "model", "activate", str(models["clear"])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert "serving clear@" in cli.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "cargoscan", "model", "activate", str(models["nan"])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "still serving clear@" in bad.stderr

    # a big scan in flight when SIGTERM arrives still gets its answer
    answer: dict[str, Any] = {}

    def post_big() -> None:
        files = scan_pngs(h=1024, w=4096, seed=3)
        answer["r"] = httpx.post(f"{url}/api/v1/scans", files=files, headers=key, timeout=120)

    poster = threading.Thread(target=post_big)
    poster.start()
    deadline = time.monotonic() + 60
    while _queue_depth(url) < 1:
        assert time.monotonic() < deadline and poster.is_alive(), "the scan never queued"
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    poster.join(timeout=120)
    assert answer["r"].status_code == 201, answer["r"].text
    assert answer["r"].json()["verdict"] == "clear"
    assert server.proc.wait(timeout=60) == 0, log.read_text()

    server = serve_process(port, env, log=log, ready_timeout_s=90)
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["model"]["name"] == "clear"  # the roll-out outlived the restart
    for res in (first.json(), answer["r"].json()):
        got = httpx.get(f"{url}/api/v1/scans/{res['scan_id']}", headers=key)
        assert got.status_code == 200 and got.json() == res
    assert server.stop(timeout_s=60) == 0, log.read_text()
