"""`cargoscan demo` (`make demo`): the service on localhost with a simulated scanner station.

One command shows the whole path: `cargoscan serve` as a child process on its own data
directory (``data/demo``), a demo station with its key, and `cargoscan simulate` posting
generated scans to it until Ctrl-C, which stops the simulator and then the service (SIGTERM:
it drains and exits; a second Ctrl-C kills it). The server runs in its own session, so the
terminal's Ctrl-C reaches only this process, which stops things in order; on Linux it is
also told to die with us, so even a killed demo leaves no server behind.

Re-running reuses the data directory and the demo station: its key is kept (0600) in
``DATA/demo-keys.json`` with the admin key of this demo, because the database only holds
key hashes. Without a model the service starts but ``/readyz`` says 503; the demo says so,
the simulator waits, and the model is rolled out as soon as its file appears.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from inference import DEFAULT_MODEL
from station.client import simulate
from station.server import ServerProcess, free_port, start_server
from training.synth.scene import SynthConfig

STATION = "demo-station"
OFFICER = "demo-officer"
KEYS_FILE = "demo-keys.json"
STOP_TIMEOUT_S = 45.0  # the service drains for up to 30 s by default


def _say(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text)  # keeps the simulator's progress bar intact
    sys.stdout.flush()


def demo_keys(data_dir: Path, database_url: str) -> dict[str, str]:
    """The admin key and the demo station's name and key: the saved ones when the station's
    key still opens the database, else a new station (a new name if the old one is taken,
    since a key cannot be recovered from its hash). Also an officer account for the viewer,
    whose password is kept beside them (set anew if the saved one no longer opens it)."""
    from inference.service.app import open_records
    from inference.service.auth import hash_key, hash_password, new_key, verify_password
    from inference.service.settings import Settings

    path = data_dir / KEYS_FILE
    try:
        saved: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        saved = {}
    records = open_records(Settings(data_dir=data_dir, database_url=database_url))
    try:
        key = str(saved.get("station_key") or "")
        station = records.station_by_key_hash(hash_key(key)) if key else None
        if station is not None:
            name = station.name
        else:
            taken = {s.name for s in records.stations()}
            names = itertools.chain([STATION], (f"{STATION}-{i}" for i in itertools.count(2)))
            name = next(n for n in names if n not in taken)
            key = new_key()
            records.add_station(name, hash_key(key))
        password = str(saved.get("officer_password") or "")
        officer = records.user_by_name(OFFICER)
        if officer is None or not verify_password(officer.password_hash, password):
            password = secrets.token_urlsafe(12)
            if officer is None:
                records.add_user(OFFICER, "officer", hash_password(password), actor="demo")
            else:
                records.update_user(OFFICER, password_hash=hash_password(password), actor="demo")
    finally:
        records.engine.dispose()
    keys = {
        "admin_key": str(saved.get("admin_key") or secrets.token_urlsafe(24)),
        "station": name,
        "station_key": key,
        "officer": OFFICER,
        "officer_password": password,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(keys, indent=1) + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return keys


def start_demo_server(
    *,
    data_dir: Path,
    database_url: str,
    port: int,
    model: Path,
    admin_key: str,
    log: Path,
) -> ServerProcess:
    """`cargoscan serve` on localhost, its output in ``log``; only the demo's own settings
    (a user's CARGOSCAN_* variables must not point the demo at another database). In its
    own session, so that the terminal's Ctrl-C reaches only the demo, which stops it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOSCAN_")}
    env["CARGOSCAN_ADMIN_KEY"] = admin_key
    args = ["--data-dir", str(data_dir), "--database-url", database_url, "--model", str(model)]
    return start_server(port, log=log, args=args, env=env, own_session=True)


def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        resp = httpx.get(f"{url}/readyz", timeout=5)
        return resp.status_code, resp.json()
    except (httpx.TransportError, ValueError):
        return 0, {}


class ModelWatcher(threading.Thread):
    """Rolls ``model`` out once its file appears while the service has no usable model
    (the default model may still be training when the demo starts)."""

    def __init__(self, url: str, admin_key: str, model: Path, poll_s: float = 5.0) -> None:
        super().__init__(name="demo-model-watcher", daemon=True)
        self.url, self.admin_key, self.model, self.poll_s = url, admin_key, model, poll_s
        self.stop = threading.Event()
        self._tried: tuple[float, float] | None = None

    def _signature(self) -> tuple[float, float] | None:
        try:
            card, onnx = self.model.with_suffix(".json").stat(), self.model.stat()
        except OSError:
            return None
        return (card.st_mtime, onnx.st_mtime)

    def run(self) -> None:
        while not self.stop.wait(self.poll_s):
            sig = self._signature()
            if sig is None or sig == self._tried:
                continue
            status, body = _readyz(self.url)
            if status != 503 or not str(body.get("reason", "")).startswith("no "):
                continue  # ready, loading or draining: nothing to do
            time.sleep(2.0)  # let the exporter finish writing the card
            self._tried = self._signature()
            _say(f"demo: {self.model} appeared; rolling it out")
            try:
                resp = httpx.post(
                    f"{self.url}/api/v1/admin/model",
                    json={"path": str(self.model)},
                    headers={"Authorization": f"Bearer {self.admin_key}"},
                    timeout=600,
                )
            except httpx.TransportError as exc:
                _say(f"demo: roll-out request failed: {exc}")
                continue
            if resp.status_code == 200:
                _say(f"demo: now serving {resp.json()['model']['version']}")
            else:
                _say(f"demo: roll-out refused ({resp.status_code}): {resp.text[:300]}")


def _banner(url: str, pid: int, keys: dict[str, str], data_dir: Path, log: Path) -> str:
    bearer = f"Authorization: Bearer {keys['admin_key']}"
    return "\n".join(
        [
            "",
            f"CargoScan demo: service at {url}  (pid {pid}, data {data_dir}, log {log})",
            f"  scanner API     {url}/api/v1/scans      (POST: station key; GET: lists scans)",
            f"  one scan        {url}/api/v1/scans/ID   .../ID/image?view=material  "
            ".../ID/anomaly-map",
            f"  API docs        {url}/docs",
            f"  health          {url}/healthz   {url}/readyz   {url}/metrics",
            f"  station         {keys['station']}, key {keys['station_key']}",
            f"  admin key       {keys['admin_key']}   (all kept in {data_dir / KEYS_FILE})",
            f"  try             curl -H '{bearer}' '{url}/api/v1/scans?limit=5'",
            f"  officer viewer  {url}/   user {keys['officer']}, "
            f"password {keys['officer_password']}",
            "Ctrl-C stops the simulator and the service.",
            "",
        ]
    )


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(
    *,
    data_dir: Path = Path("data/demo"),
    port: int = 8000,
    model: Path = DEFAULT_MODEL,
    rate_per_min: float = 12.0,
    count: int = 0,
    seed: int | None = None,
    pitch_mm: float = 5.0,
) -> int:
    """Service + station + simulator until Ctrl-C (or ``count`` scans); 0 when all went well."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    model = model.resolve()
    database_url = f"sqlite:///{data_dir / 'cargoscan.db'}"
    keys = demo_keys(data_dir, database_url)
    log = data_dir / "serve.log"
    server = start_demo_server(
        data_dir=data_dir,
        database_url=database_url,
        port=free_port(port),
        model=model,
        admin_key=keys["admin_key"],
        log=log,
    )
    url = server.url
    watcher = ModelWatcher(url, keys["admin_key"], model)
    failed = 0
    # Ctrl-C must stop the demo even where SIGINT came in ignored (started from a script in
    # the background), and `kill` or a closed terminal must stop it the same clean way.
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {sig: signal.signal(sig, _interrupt) for sig in stops}
    try:
        server.wait_ready(90, probe="/healthz", poll_s=0.2)
        print(_banner(url, server.pid, keys, data_dir, log), flush=True)
        for _ in range(100):  # the start-up model loads in the background: a few seconds
            status, body = _readyz(url)
            if status != 503 or not str(body.get("reason", "")).startswith("loading"):
                break
            time.sleep(0.2)
        if status != 200:
            reason = body.get("reason", body.get("status", "?"))
            print(
                f"The service is up but NOT READY (/readyz 503): {reason}\n"
                f"No usable model at {model} yet (the default model is trained separately; "
                "see README). The simulator waits; this demo rolls the model out as soon as "
                "its file appears, or roll one out yourself:\n"
                f"  CARGOSCAN_ADMIN_KEY={keys['admin_key']} cargoscan model activate "
                f"MODEL.onnx --url {url}\n",
                flush=True,
            )
        watcher.start()
        summary = simulate(
            url,
            keys["station_key"],
            count=count,
            rate_per_min=rate_per_min,
            seed=seed,
            config=SynthConfig(pitch_mm=pitch_mm),
        )
        print(summary, flush=True)
        failed = summary.failed
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"cargoscan demo: {exc}", file=sys.stderr)
        failed = 1
    finally:
        watcher.stop.set()
        print("stopping the service ...", flush=True)
        code = server.stop(STOP_TIMEOUT_S)
        print(f"service stopped (exit {code}); its log: {log}", flush=True)
        for sig, handler in before.items():
            signal.signal(sig, handler)
    return 1 if failed else 0
