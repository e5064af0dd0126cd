"""Load test: stations flood a real `cargoscan serve` past what it can take, on loopback,
for a bounded time; it must answer 429 (with Retry-After) rather than slow to a crawl or
run out of memory, and every scan it acknowledged must be stored.

Two phases, each on a fresh server with its default settings (one inference thread, a
queue of 8) serving the default model, or an untrained CargoNet of the default
configuration when none is shipped (speed is what counts here):

- ``limits``: the per-station token buckets on (their defaults, or --rate/--burst): a
  station in a retry loop is stopped at its own limit;
- ``queue``: station limits off, so only the bounded inference queue protects the service.

Each flooder posts back to back on its own connection and ignores Retry-After (the
hostile case; ``cargoscan simulate`` honours it). Meanwhile ``/healthz`` is probed every
0.25 s: its latency shows whether the event loop still answers. Afterwards every scan that
got a 2xx is read back by its station (GET, 200 with its verdict) and counted lost if not.

Figures per phase: offered and held load (requests/s, acknowledged scans/s), the share of
429s (by limit: station rate or queue), 5xx (must be 0), p50/p95 latency of acknowledged
scans and of 429s, p95 of the health probe, peak server memory (VmHWM), lost scans (must
be 0). Exit status 1 on any 5xx, lost scan or transport error.

    .venv/bin/python bench/load.py [--seconds 20] [--stations 4] [--per-station 4]
    make load LOAD_SECONDS=20
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.service import DEFAULT_MODEL, Server, bench_server, untrained_model  # noqa: E402


def scan_files(h: int, w: int, seed: int) -> dict[str, tuple[str, bytes, str]]:
    """A dual-energy scan-like pair of 16-bit PNGs (air, a container, a dense block)."""
    rng = np.random.default_rng(seed)
    high = np.full((h, w), 60000.0)
    high[h // 6 : h - 8, w // 10 : w - w // 10] = 30000
    high[h // 3 : h // 2, w // 3 : w // 2] = 5000 + 100 * (seed % 50)
    high = rng.poisson(high).clip(0, 65535).astype(np.uint16)
    low = (high.astype(np.float64) * 0.85).astype(np.uint16)
    out = {}
    for name, arr in (("high", high), ("low", low)):
        ok, buf = cv2.imencode(".png", arr)
        assert ok
        out[name] = (f"{name}.png", buf.tobytes(), "image/png")
    return out


@dataclass
class Answer:
    status: int
    seconds: float
    why: str = ""  # "rate" or "queue" for a 429
    scan_id: str | None = None
    station: int = 0


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    transport_errors: int = 0
    health_s: list[float] = field(default_factory=list)
    health_failures: int = 0
    peak_rss_mb: float | None = None
    lost: list[str] = field(default_factory=list)

    def count(self, pred: object) -> int:
        return sum(1 for a in self.answers if pred(a))  # type: ignore[operator]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def flood(
    server: Server,
    name: str,
    seconds: float,
    stations: int,
    per_station: int,
    payloads: list[dict[str, tuple[str, bytes, str]]],
    admin_key: str,
) -> Phase:
    """``stations`` x ``per_station`` flooders posting back to back for ``seconds``."""
    phase = Phase(name)
    lock = threading.Lock()
    stop = threading.Event()

    def flooder(k: int, j: int) -> None:
        key = server.keys[k]
        n = 0
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as client:
            while not stop.is_set():
                files = payloads[(k + j + n) % len(payloads)]
                meta = {"metadata": json.dumps({"station_scan_id": f"{name}-{k}-{j}-{n}"})}
                n += 1
                start = time.perf_counter()
                try:
                    r = client.post("/api/v1/scans", files=files, data=meta)
                except httpx.TransportError:
                    with lock:
                        phase.transport_errors += 1
                    continue
                took = time.perf_counter() - start
                answer = Answer(r.status_code, took, station=k)
                if r.status_code == 429:
                    answer.why = "rate" if "rate" in r.text else "queue"
                    assert r.headers.get("retry-after"), "a 429 without Retry-After"
                elif 200 <= r.status_code < 300:
                    answer.scan_id = r.json()["scan_id"]
                with lock:
                    phase.answers.append(answer)

    def prober() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    ok = False
                took = time.perf_counter() - start
                with lock:
                    phase.health_s.append(took)
                    phase.health_failures += 0 if ok else 1
                stop.wait(0.25)

    threads = [
        threading.Thread(target=flooder, args=(k, j), daemon=True)
        for k in range(stations)
        for j in range(per_station)
    ]
    threads.append(threading.Thread(target=prober, daemon=True))
    server.reset_peak()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=180)
    phase.seconds = time.perf_counter() - t0
    phase.peak_rss_mb = server.peak_rss_mb()

    # every acknowledged scan is stored: read back with the admin key (the stations'
    # buckets are empty after the flood, and the admin key is not limited)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60
    ) as client:
        for a in phase.answers:
            if a.scan_id is None:
                continue
            r = client.get(f"/api/v1/scans/{a.scan_id}")
            if r.status_code != 200 or r.json().get("verdict") is None:
                phase.lost.append(f"{a.scan_id} ({r.status_code})")
    return phase


def report(ph: Phase) -> str:
    total = len(ph.answers)
    ok = [a for a in ph.answers if 200 <= a.status < 300]
    limited = [a for a in ph.answers if a.status == 429]
    by = Counter(a.why for a in limited)
    other = Counter(a.status for a in ph.answers if a.status >= 300 and a.status != 429)
    share = len(limited) / total if total else 0.0
    lines = [
        f"phase {ph.name}: {ph.seconds:.0f} s, {total} answers "
        f"({total / ph.seconds:.1f} requests/s offered), {len(ok)} scans acknowledged "
        f"({len(ok) / ph.seconds:.2f}/s held)",
        f"  429: {len(limited)} = {share:.0%} of answers (station rate {by['rate']}, "
        f"queue {by['queue']}); 5xx: {sum(v for s, v in other.items() if s >= 500)}; "
        f"other: {dict(other) or 'none'}; transport errors: {ph.transport_errors}",
        f"  latency: acknowledged p50 {_pct([a.seconds for a in ok], 50):.2f} s, "
        f"p95 {_pct([a.seconds for a in ok], 95):.2f} s; 429 p95 "
        f"{_pct([a.seconds for a in limited], 95) * 1000:.0f} ms; /healthz p95 "
        f"{_pct(ph.health_s, 95) * 1000:.0f} ms over {len(ph.health_s)} probes "
        f"({ph.health_failures} failed)",
        "  peak server memory (VmHWM): "
        + (f"{ph.peak_rss_mb:.0f} MB" if ph.peak_rss_mb is not None else "n/a")
        + f"; acknowledged scans not found afterwards (lost): {len(ph.lost)}",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="flood time per phase")
    ap.add_argument("--stations", type=int, default=4)
    ap.add_argument("--per-station", type=int, default=4, help="connections per station")
    ap.add_argument("--size", type=int, nargs=2, default=(256, 1024), metavar=("H", "W"))
    ap.add_argument("--phases", nargs="+", default=["limits", "queue"], choices=["limits", "queue"])
    ap.add_argument("--rate", type=float, default=None, help="station requests a minute")
    ap.add_argument("--burst", type=int, default=None, help="station burst")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = ap.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    payloads = [scan_files(args.size[0], args.size[1], seed) for seed in range(4)]
    mb = statistics.mean(sum(len(f[1]) for f in p.values()) for p in payloads) / 1e6
    failed = False
    with tempfile.TemporaryDirectory(prefix="cargoscan-load-") as tmp:
        tmpdir = Path(tmp)
        if args.model.is_file():
            model, which = args.model, args.model.name
        else:
            model, which = untrained_model(tmpdir), "untrained CargoNet (no default model)"
        print(
            f"model: {which}; scans {args.size[1]}x{args.size[0]} dual-energy 16-bit "
            f"({mb:.1f} MB a post); {args.stations} stations x {args.per_station} connections, "
            "Retry-After ignored",
            flush=True,
        )
        for name in args.phases:
            admin_key = secrets.token_urlsafe(24)
            env = {"CARGOSCAN_ADMIN_KEY": admin_key}
            if name == "queue":
                env["CARGOSCAN_STATION_RATE_PER_MIN"] = "0"
            else:
                if args.rate is not None:
                    env["CARGOSCAN_STATION_RATE_PER_MIN"] = str(args.rate)
                if args.burst is not None:
                    env["CARGOSCAN_STATION_BURST"] = str(args.burst)
            data = tmpdir / name
            data.mkdir()
            with bench_server(model, data, args.stations, env) as server:
                phase = flood(
                    server, name, args.seconds, args.stations, args.per_station, payloads, admin_key
                )
            code = server.process.returncode
            print(report(phase), flush=True)
            fives = phase.count(lambda a: a.status >= 500)
            if fives or phase.lost or phase.transport_errors or code != 0:
                failed = True
                print(f"  FAILED (server exit status {code})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
