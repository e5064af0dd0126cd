"""Service benchmark: full-size dual-energy scans over loopback to a real `cargoscan serve`.

What a scanner integrator asks: how long from POST to verdict, how much of that is the
model, how many scans a second one machine takes, what happens when several stations post
at once (429s with Retry-After, never a 5xx), and how much memory the server needs.

The server is a real `cargoscan serve` process on a free port with a temporary data
directory and its default settings (one inference thread, ONNX Runtime with 2 threads, a
queue of 8), serving `models/cargoscan-default.onnx` when it exists, else an untrained
CargoNet of the default configuration exported with its card (speed only; the printout
says which). A few full-size scans (about 3000x800, 16-bit, both energies) are generated
once and posted again and again under fresh station scan ids, so every post is analysed
and stored. The stations are the simulator's client (`station.client.post_scan`): they
honour Retry-After and back off like a real station.

Figures, side by side with their peer, the engine alone in-process on the same scans:
  end-to-end p50 / p95 (client clock), the server's processing_ms (decode, store, analyse),
  the ratio end-to-end p50 / engine p50 (the service's overhead: aim <= 1.5x),
  then 2, 4, 8 stations at once: scans/s, 429s, 5xx (must be 0), peak RSS (VmHWM).

    .venv/bin/python bench/service.py [--count 8] [--stations 1 2 4 8] [--scans 3]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from inference import DEFAULT_MODEL
from station.client import PostOutcome, RetryPolicy, Upload, post_scan, station_client
from station.server import ServerProcess, free_port, serving
from training.synth.scene import SynthConfig

ROOT = Path(__file__).resolve().parents[1]


def untrained_model(root: Path) -> Path:
    """An untrained CargoNet (default configuration) exported with its card, for speed only."""
    import torch

    from training.export import export
    from training.model import CargoNet, ModelConfig

    torch.manual_seed(0)
    net = CargoNet(ModelConfig())
    ckpt = root / "untrained.pt"
    torch.save({"model": net.state_dict(), "model_config": net.config.to_dict()}, ckpt)
    export(ckpt, root / "untrained.onnx")
    return root / "untrained.onnx"


def full_size_uploads(count: int, seed: int, cfg: SynthConfig, min_width: int) -> list[Upload]:
    """The first ``count`` generated scans at least ``min_width`` long (40 ft and 2x20 ft
    loads: about 3000x800 at 5 mm), so the figures are for the scans a portal sends."""
    from station.client import make_upload

    out: list[Upload] = []
    for i in range(count * 20):
        up = make_upload(i, seed, cfg, prefix="bench")
        if up.width >= min_width:
            out.append(up)
            if len(out) == count:
                break
    if not out:
        raise SystemExit(f"no generated scan is {min_width} px long: lower --min-width")
    return out


@dataclass
class InProcess:
    """Per scan, median milliseconds of the engine alone (pre-processing, network, decoding
    of the outputs) and of decoding the two images, measured in this process."""

    engine_ms: list[float]
    decode_ms: list[float]


def in_process(model: Path, uploads: list[Upload], threads: int, runs: int) -> InProcess:
    from inference.engine import Engine
    from inference.scan import decode_scan

    engine = Engine.load(model, threads=threads)
    engine.analyze(decode_scan(uploads[0].high, uploads[0].low))  # warm-up
    eng, dec = [], []
    for up in uploads:
        e, d = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            scan = decode_scan(up.high, up.low)
            t1 = time.perf_counter()
            engine.analyze(scan)
            e.append((time.perf_counter() - t1) * 1000.0)
            d.append((t1 - t0) * 1000.0)
        eng.append(statistics.median(e))
        dec.append(statistics.median(d))
    return InProcess(eng, dec)


@dataclass
class Server:
    """A `cargoscan serve` child process and the station keys made for it."""

    process: ServerProcess
    keys: list[str]

    @property
    def url(self) -> str:
        return self.process.url

    def peak_rss_mb(self) -> float | None:
        """VmHWM: the highest resident memory since start or the last reset."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return None

    def reset_peak(self) -> bool:
        """Start VmHWM over (Linux >= 4.0), so each phase reports its own peak."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False


@contextmanager
def bench_server(
    model: Path, data: Path, stations: int, env_extra: dict[str, str]
) -> Iterator[Server]:
    """A ready server on ``data`` with ``stations`` new station keys, on a free port, with
    only these settings (none of the caller's CARGOSCAN_*); stopped (SIGTERM) on exit, its
    exit status then in ``server.process.returncode``."""
    from inference.service.app import open_records
    from inference.service.auth import hash_key, new_key
    from inference.service.settings import Settings

    db = f"sqlite:///{data / 'cargoscan.db'}"
    records = open_records(Settings(data_dir=data, database_url=db))
    keys = []
    try:
        for i in range(stations):
            keys.append(new_key())
            records.add_station(f"bench-{i + 1}", hash_key(keys[-1]))
    finally:
        records.engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOSCAN_")}
    env.update(
        CARGOSCAN_DATA_DIR=str(data),
        CARGOSCAN_DATABASE_URL=db,
        CARGOSCAN_MODEL_PATH=str(model),
        PYTHONPATH=str(ROOT),
        **env_extra,
    )
    port = free_port()
    with serving(port, log=data / "serve.log", env=env, cwd=ROOT, ready_timeout_s=180) as process:
        yield Server(process, keys)


@dataclass
class Phase:
    stations: int
    outcomes: list[PostOutcome] = field(default_factory=list)
    scan_of: list[int] = field(default_factory=list)  # which upload each outcome posted
    seconds: float = 0.0
    peak_rss_mb: float | None = None

    @property
    def ok(self) -> list[PostOutcome]:
        return [o for o in self.outcomes if o.ok]

    def count(self, pred: Callable[[int], bool]) -> int:
        """HTTP answers (every attempt's, retried ones included) that satisfy ``pred``."""
        return sum(1 for o in self.outcomes for s in o.answers if pred(s))


def run_phase(server: Server, uploads: list[Upload], stations: int, per_station: int) -> Phase:
    """``stations`` threads, each its own station and connection, posting back to back."""
    phase = Phase(stations)
    lock = threading.Lock()
    policy = RetryPolicy(max_attempts=60)

    def station(k: int) -> None:
        with station_client(server.url, server.keys[k], timeout_s=600) as client:
            for j in range(per_station):
                which = (k + j) % len(uploads)
                up = replace(uploads[which], station_scan_id=f"bench-{stations}-{k}-{j}")
                outcome = post_scan(client, up, policy)
                with lock:
                    phase.outcomes.append(outcome)
                    phase.scan_of.append(which)

    server.reset_peak()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(stations) as pool:
        list(pool.map(station, range(stations)))
    phase.seconds = time.perf_counter() - t0
    phase.peak_rss_mb = server.peak_rss_mb()
    return phase


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=8, help="scans per phase (default 8)")
    ap.add_argument(
        "--stations", type=int, nargs="+", default=[1, 2, 4, 8], help="stations at once"
    )
    ap.add_argument("--scans", type=int, default=3, help="distinct generated scans (default 3)")
    ap.add_argument("--pitch", type=float, default=5.0, help="mm; 5 gives about 3000x800")
    ap.add_argument("--min-width", type=int, default=2400, help="px; skip shorter scans")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--engine-runs", type=int, default=5, help="in-process engine runs")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--workers", type=int, default=None, help="server inference threads")
    ap.add_argument("--engine-threads", type=int, default=None, help="ONNX Runtime threads")
    ap.add_argument("--queue-size", type=int, default=None, help="server queue")
    args = ap.parse_args()
    if args.count < 1 or args.scans < 1 or args.engine_runs < 1 or min(args.stations) < 1:
        ap.error("--count, --scans, --engine-runs and --stations must be at least 1")

    import warnings

    warnings.filterwarnings("ignore")
    from inference.service.settings import Settings

    defaults = {k: f.default for k, f in Settings.model_fields.items()}
    env_extra = {}
    for name, value in (
        ("WORKERS", args.workers),
        ("ENGINE_THREADS", args.engine_threads),
        ("QUEUE_SIZE", args.queue_size),
    ):
        if value is not None:
            env_extra[f"CARGOSCAN_{name}"] = str(value)
    workers = args.workers or defaults["workers"]
    threads = args.engine_threads or defaults["engine_threads"]
    queue = args.queue_size if args.queue_size is not None else defaults["queue_size"]

    with tempfile.TemporaryDirectory(prefix="cargoscan-bench-") as tmp:
        tmpdir = Path(tmp)
        if args.model.is_file():
            model, which = args.model, args.model.name
        else:
            model = untrained_model(tmpdir)
            which = "untrained CargoNet (no default model shipped yet)"
        t0 = time.perf_counter()
        cfg = SynthConfig(pitch_mm=args.pitch)
        uploads = full_size_uploads(args.scans, args.seed, cfg, args.min_width)
        mb = statistics.mean(len(u.high) + len(u.low) for u in uploads) / 1e6
        sizes = ", ".join(f"{u.width}x{u.height}" for u in uploads)
        print(f"model: {which}")
        print(
            f"scans: {len(uploads)} kept, made in {time.perf_counter() - t0:.0f} s ({sizes}; "
            f"two 16-bit {uploads[0].image_format.upper()}s, {mb:.1f} MB a post)"
        )
        print(
            f"server: {workers} inference thread(s), ONNX Runtime {threads} threads, "
            f"queue {queue}; {os.cpu_count()} CPU cores\n"
        )

        alone = in_process(model, uploads, threads, args.engine_runs)

        data = tmpdir / "data"
        data.mkdir()
        phases = []
        with bench_server(model, data, max(args.stations), env_extra) as server:
            for n in args.stations:
                per_station = max(1, math.ceil(args.count / n))
                phases.append(run_phase(server, uploads, n, per_station))
        code = server.process.returncode

    print(
        f"{'stations':>8} {'scans':>6} {'ok':>4} {'scans/s':>8} {'p50 s':>7} {'p95 s':>7} "
        f"{'server ms p50':>14} {'429s':>5} {'5xx':>4} {'peak RSS MB':>12}"
    )
    for ph in phases:
        lat = [o.seconds for o in ph.ok]
        proc = [o.body["processing_ms"] for o in ph.ok if o.body]
        rss = f"{ph.peak_rss_mb:.0f}" if ph.peak_rss_mb is not None else "-"
        print(
            f"{ph.stations:>8} {len(ph.outcomes):>6} {len(ph.ok):>4} "
            f"{len(ph.ok) / ph.seconds:>8.2f} {_pct(lat, 50):>7.2f} {_pct(lat, 95):>7.2f} "
            f"{_pct(proc, 50):>14.0f} {ph.count(lambda s: s == 429):>5} "
            f"{ph.count(lambda s: s >= 500):>4} {rss:>12}"
        )
    eng = [alone.engine_ms[w] for w in phases[0].scan_of] or alone.engine_ms
    print(
        f"in-process, same scans: engine alone p50 {statistics.median(alone.engine_ms):.0f} ms, "
        f"{uploads[0].image_format.upper()} decoding p50 "
        f"{statistics.median(alone.decode_ms):.0f} ms ({args.engine_runs} runs)"
    )

    first = phases[0]
    pairs = [(o, w) for o, w in zip(first.outcomes, first.scan_of, strict=True) if o.ok]
    if pairs:
        e2e = statistics.median(o.seconds * 1000.0 for o, _ in pairs)
        proc = statistics.median(o.body["processing_ms"] for o, _ in pairs if o.body)
        ratio = statistics.median(o.seconds * 1000.0 / alone.engine_ms[w] for o, w in pairs)
        print(
            f"\n{first.stations} station(s) at a time: end-to-end p50 {e2e:.0f} ms, of which the "
            f"server's processing_ms (decode, store, analyse) {proc:.0f} ms = {proc / e2e:.0%}; "
            f"the engine alone on the same scans {statistics.median(eng):.0f} ms"
        )
        print(f"end-to-end / engine alone, median over the scans: {ratio:.2f}x (aim <= 1.5x)")
    best = max(phases, key=lambda ph: len(ph.ok) / ph.seconds)
    print(f"best throughput {len(best.ok) / best.seconds:.2f} scans/s at {best.stations} stations")
    bad = sum(ph.count(lambda s: s >= 500) for ph in phases)
    failed = sum(len(ph.outcomes) - len(ph.ok) for ph in phases)
    print(f"server exit status {code}; 5xx answers {bad}; scans not delivered {failed}")
    return 1 if bad or failed or code != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
