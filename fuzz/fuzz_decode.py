"""Fuzz the decoding and pre-processing of scans: hostile bytes must give ScanError, fast,
in bounded memory; never another exception, a hang or a crash.

One entry point, :func:`test_one_input`, run by one of two drivers:

- **atheris** (libFuzzer, coverage-guided over the Python code of ``inference.scan``,
  ``inference.preprocess``, tifffile and PIL's plugins) when it is installed;
- otherwise a **random-mutation** driver of our own: byte flips, interesting integers,
  chunk insertions, deletions and splices of the seeds, PNG CRCs repaired half of the time
  so mutations get past the first CRC check. It keeps an input as a new seed when it ends
  in an error message not seen before (a cheap stand-in for coverage). The inputs run in a
  worker process watched by this one, so a segfault or a hang in a C decoder is caught and
  the input that caused it saved.

Inputs: raw image bytes (one channel, then :func:`inference.preprocess.preprocess`);
``CSPAIR`` + 4-byte length + high + low (both channels: sizes and depths must agree); or
JSON (station metadata). Pixel limit 1 Mpx during fuzzing, so each input runs in
milliseconds; the checks that refuse larger files are the same code.

Whatever fails (an exception other than ScanError, over TIME_LIMIT_S, over MEMORY_LIMIT_MB
of peak memory, a crash, a hang) is written to ``--artifacts`` and, when small, copied
into ``tests/fuzz_corpus/`` where ``tests/inference/test_fuzz_corpus.py`` replays it as an
ordinary test until it is fixed.

    .venv/bin/python fuzz/fuzz_decode.py --seconds 60 [--driver auto|atheris|random]
    make fuzz FUZZ_SECONDS=60
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import mmap
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "tests" / "fuzz_corpus"
WORK = ROOT / "runs" / "fuzz"
FUZZ_MAX_PIXELS = 1 << 20
TIME_LIMIT_S = 2.0
"""Soft limit per input (a 1 Mpx image decodes and pre-processes in ~0.1 s)."""
HANG_S = 30.0
"""Hard limit: a worker silent this long is killed and its input saved as a hang."""
MEMORY_LIMIT_MB = 1024
"""Peak resident memory of the fuzzing process; a 1 Mpx input needs about 60 MB."""
MAX_LEN = 64 * 1024
KEEP_BYTES = 64 * 1024
"""Failing inputs up to this size are copied into tests/fuzz_corpus/ (small files only)."""
PAIR_MAGIC = b"CSPAIR"

_scan: Any = None  # inference.scan and inference.preprocess, imported by load_targets()
_pre: Any = None


class SlowInput(Exception):
    """An input took longer than the time limit."""


class MemoryHog(Exception):
    """An input raised the peak memory over the limit."""


def load_targets(instrument: bool = False) -> None:
    """Import the code under test (under atheris' instrumentation when asked)."""
    global _scan, _pre
    if _scan is not None:
        return
    # tifffile logs every oddity of a corrupt file; thousands a second drown the report.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    if instrument:
        import atheris

        with atheris.instrument_imports():
            import PIL.JpegImagePlugin
            import PIL.PngImagePlugin  # noqa: F401
            import tifffile  # noqa: F401

            import inference.preprocess as pre
            import inference.scan as scan
    else:
        import inference.preprocess as pre
        import inference.scan as scan
    _scan, _pre = scan, pre


def peak_rss_mb() -> float:
    """VmHWM of this process (Linux); 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def reset_peak_rss() -> bool:
    """Start VmHWM over (Linux >= 4.0), so one input's peak can be measured."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_one(data: bytes, max_pixels: int = FUZZ_MAX_PIXELS) -> str:
    """Decode (and pre-process) one input as the service would: ``"ok"`` or
    ``"rejected: <message>"``. Any exception other than ScanError escapes: a bug."""
    load_targets()
    try:
        if data.startswith(PAIR_MAGIC):
            rest = data[len(PAIR_MAGIC) :]
            (n,) = struct.unpack("<I", rest[:4].ljust(4, b"\0"))
            high, low = rest[4 : 4 + n], rest[4 + n :]
            scan = _scan.decode_scan(high, low or None, max_pixels=max_pixels)
        elif data[:1] in (b"{", b"["):
            _scan.ScanMetadata.from_dict(data)
            return "ok"
        else:
            image = _scan.decode_image(data, max_pixels=max_pixels)
            scan = _scan.Scan(high=image)
        _pre.preprocess(scan)
        return "ok"
    except _scan.ScanError as exc:
        return f"rejected: {exc}"


def check_one(
    data: bytes,
    *,
    time_limit_s: float = TIME_LIMIT_S,
    memory_limit_mb: float = MEMORY_LIMIT_MB,
    max_pixels: int = FUZZ_MAX_PIXELS,
) -> str:
    """:func:`run_one` plus the limits: raises SlowInput or MemoryHog past them."""
    start = time.perf_counter()
    outcome = run_one(data, max_pixels)
    took = time.perf_counter() - start
    if took > time_limit_s:
        raise SlowInput(f"{took:.2f} s > {time_limit_s} s ({outcome[:80]})")
    peak = peak_rss_mb()
    if peak > memory_limit_mb:
        raise MemoryHog(f"peak RSS {peak:.0f} MB > {memory_limit_mb} MB ({outcome[:80]})")
    return outcome


def test_one_input(data: bytes) -> None:
    """The fuzz target (atheris calls it; so does the random driver)."""
    check_one(data)


# --------------------------------------------------------------------------- seeds


def seed_inputs() -> dict[str, bytes]:
    """Valid seeds, the small hand-made hostile cases, a pair, metadata and the corpus."""
    from fuzz.cases import hostile_cases, valid_seeds

    seeds = dict(valid_seeds())
    seeds.update({k: v for k, v in hostile_cases().items() if 0 < len(v) <= 8192})
    png = seeds["seed_png16.png"]
    seeds["pair_png16"] = PAIR_MAGIC + struct.pack("<I", len(png)) + png + png
    seeds["metadata.json"] = json.dumps(
        {
            "station_scan_id": "A-1",
            "scan_time": "2024-05-01T12:30:00Z",
            "scanner": {"kind": "portal", "high_mv": 6, "low_mv": 4},
            "manifest": [{"hs_code": "0901.21", "description": "coffee", "declared_weight_kg": 1}],
        }
    ).encode()
    if CORPUS.is_dir():
        for path in sorted(CORPUS.iterdir()):
            if path.is_file() and path.suffix != ".md":
                seeds[path.name] = path.read_bytes()
    return seeds


# --------------------------------------------------------------------------- mutations

_INTERESTING = [0, 1, 2, 7, 8, 15, 16, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
                0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]  # fmt: skip
_TOKENS = [b"IHDR", b"IDAT", b"IEND", b"PLTE", b"tRNS", b"\xff\xd8", b"\xff\xc0", b"\xff\xc2",
           b"\xff\xc4", b"\xff\xda", b"\xff\xd9", b"\xff\xdb", b"II*\x00", b"MM\x00*"]  # fmt: skip


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """1-8 random edits of ``data``; then, half of the time, PNG CRCs made right again."""
    from fuzz.cases import fix_png_crcs

    buf = bytearray(data or b"\0")
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf)) if buf else 0
        if op == 0:  # flip a bit
            if buf:
                buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:  # a random byte
            if buf:
                buf[pos] = rng.randrange(256)
        elif op == 2:  # an interesting integer, 1, 2 or 4 bytes, either endianness
            size = rng.choice((1, 2, 4))
            value = rng.choice(_INTERESTING) & ((1 << (8 * size)) - 1)
            buf[pos : pos + size] = value.to_bytes(size, rng.choice(("big", "little")))
        elif op == 3:  # delete a run
            del buf[pos : pos + rng.randint(1, 64)]
        elif op == 4:  # duplicate a run
            run = buf[pos : pos + rng.randint(1, 256)]
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = run
        elif op == 5:  # truncate
            del buf[rng.randrange(len(buf) + 1) :]
        elif op == 6:  # insert a format token
            buf[pos:pos] = rng.choice(_TOKENS)
        elif op == 7 and others:  # splice with another input
            other = rng.choice(others)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 8 and buf:  # add or subtract a little from a byte
            buf[pos] = (buf[pos] + rng.randint(-16, 16)) % 256
        if len(buf) > MAX_LEN:
            del buf[MAX_LEN:]
    out = bytes(buf)
    return fix_png_crcs(out) if rng.random() < 0.5 else out


def _signature(outcome: str) -> str:
    """An outcome with its numbers and quoted bytes blurred: 'new behaviour' for the driver."""
    return re.sub(r"b'[^']*'|\d[\d,.]*", "#", outcome)[:160]


# --------------------------------------------------------------------------- random driver


def _save(artifacts: Path, kind: str, data: bytes, why: str) -> Path:
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"{kind}-{hashlib.sha256(data).hexdigest()[:16]}"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(why + "\n")
    return path


def worker(args: argparse.Namespace) -> int:
    """Mutate and run inputs until the deadline; the current input is kept in a shared
    file, so the supervisor can save it if this process dies or hangs."""
    load_targets()
    rng = random.Random(args.seed)
    pool = list(seed_inputs().values())
    seen: set[str] = set()
    current = Path(args.current)
    fd = os.open(current, os.O_RDWR)
    mem = mmap.mmap(fd, 8 + MAX_LEN + 16)
    tried = found = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        data = mutate(rng.choice(pool), rng, pool) if pool else rng.randbytes(64)
        mem[8 : 8 + 4] = struct.pack("<I", len(data))
        mem[12 : 12 + len(data)] = data
        mem[0:8] = struct.pack("<d", time.monotonic())  # heartbeat: started this input
        tried += 1
        try:
            outcome = check_one(data)
        except (SlowInput, MemoryHog) as exc:
            found += 1
            kind = "slow" if isinstance(exc, SlowInput) else "oom"
            print(f"{kind}: {exc} -> {_save(Path(args.artifacts), kind, data, str(exc))}")
            if isinstance(exc, MemoryHog):
                break  # the peak cannot come down: start a fresh worker
            continue
        except Exception as exc:  # a bug: anything but ScanError
            found += 1
            why = f"{type(exc).__name__}: {exc}"
            print(f"crash: {why[:200]} -> {_save(Path(args.artifacts), 'crash', data, why)}")
            continue
        sig = _signature(outcome)
        if sig not in seen:
            seen.add(sig)
            pool.append(data)
    mem[0:8] = struct.pack("<d", 0.0)
    print(json.dumps({"tried": tried, "found": found, "behaviours": len(seen)}))
    return 0


def random_driver(args: argparse.Namespace) -> dict[str, int]:
    """Run workers until the time is up; a worker that dies or hangs leaves its input."""
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    current = artifacts.parent / "current.bin"
    totals = {"tried": 0, "found": 0, "crashes": 0, "hangs": 0, "workers": 0}
    deadline = time.monotonic() + args.seconds
    seed = args.seed
    while (left := deadline - time.monotonic()) > 1:
        current.write_bytes(b"\0" * (8 + MAX_LEN + 16))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--current",
               str(current), "--seconds", f"{left:.1f}", "--seed", str(seed),
               "--artifacts", str(artifacts)]  # fmt: skip
        # The C decoders' own complaints (libpng, libtiff) go to a log, not the report.
        with (artifacts.parent / "worker.log").open("a") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
        totals["workers"] += 1
        hung = False
        while proc.poll() is None:
            time.sleep(0.5)
            raw = current.read_bytes()
            (started,) = struct.unpack("<d", raw[:8])
            if started and time.monotonic() - started > HANG_S:
                proc.kill()
                hung = True
        out = proc.stdout.read() if proc.stdout else ""
        for line in out.splitlines():
            if line.startswith("{"):
                stats = json.loads(line)
                totals["tried"] += stats["tried"]
                totals["found"] += stats["found"]
            elif line.strip():
                print(line)
        if hung or proc.returncode != 0:
            raw = current.read_bytes()
            (n,) = struct.unpack("<I", raw[8:12])
            data = raw[12 : 12 + n]
            kind = "hang" if hung else "crash"
            why = f"worker {'hung' if hung else f'died with status {proc.returncode}'}"
            print(f"{kind}: {why} -> {_save(artifacts, kind, data, why)}")
            totals["hangs" if hung else "crashes"] += 1
            totals["found"] += 1
            totals["tried"] += 1  # the fatal input (the worker's own count died with it)
        seed += 1
    return totals


# --------------------------------------------------------------------------- atheris


def atheris_child(argv: list[str]) -> None:
    """Run under libFuzzer (does not return: libFuzzer exits the process)."""
    import atheris

    from fuzz.cases import fix_png_crcs

    load_targets(instrument=True)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        out = atheris.Mutate(data, max_size)
        return fix_png_crcs(out) if seed % 2 else out

    atheris.Setup(argv, test_one_input, custom_mutator=mutator)
    atheris.Fuzz()


def atheris_driver(args: argparse.Namespace) -> dict[str, int]:
    """libFuzzer in a child process (it exits when done); its artifacts are collected."""
    seeds = WORK / "seeds"
    shutil.rmtree(seeds, ignore_errors=True)
    seeds.mkdir(parents=True)
    for name, data in seed_inputs().items():
        (seeds / re.sub(r"[^\w.-]", "_", name)).write_bytes(data)
    work = WORK / "corpus"
    work.mkdir(parents=True, exist_ok=True)
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--atheris-child",
           f"-max_total_time={int(args.seconds)}", f"-timeout={int(HANG_S)}",
           f"-rss_limit_mb={MEMORY_LIMIT_MB * 2}", f"-max_len={MAX_LEN}",
           f"-seed={args.seed}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
           str(work), str(seeds)]  # fmt: skip
    totals = {"tried": 0, "found": 0, "crashes": 0, "hangs": 0, "workers": 0}
    # libFuzzer stops at the first failure: start it again for the rest of the time.
    deadline = time.monotonic() + args.seconds
    while (left := deadline - time.monotonic()) > 2:
        cmd[3] = f"-max_total_time={int(left)}"
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        totals["workers"] += 1
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
        done = re.findall(r"Done (\d+) runs", proc.stderr)
        totals["tried"] += int((runs or done or ["0"])[-1])
        if proc.returncode != 0:
            totals["found"] += 1
            kind = "hangs" if "timeout" in proc.stderr.lower() else "crashes"
            totals[kind] += 1
            tail = [ln for ln in proc.stderr.splitlines() if "==" in ln or "Error" in ln]
            print("\n".join(tail[-6:]) or proc.stderr[-2000:])
            if "Traceback" not in proc.stderr and not list(artifacts.iterdir()):
                break  # failed to start at all: no point in retrying
    return totals


# --------------------------------------------------------------------------- main


def collect(artifacts: Path) -> list[Path]:
    """Copy small failing inputs into tests/fuzz_corpus/ (replayed by the test suite)."""
    kept = []
    if not artifacts.is_dir():
        return kept
    CORPUS.mkdir(parents=True, exist_ok=True)
    for path in sorted(artifacts.iterdir()):
        if path.suffix == ".txt" or not path.is_file() or path.stat().st_size > KEEP_BYTES:
            continue
        data = path.read_bytes()
        kind = path.name.split("-")[0]
        dst = CORPUS / f"found-{kind}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
        if not dst.exists():
            shutil.copyfile(path, dst)
            kept.append(dst)
    return kept


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--atheris-child":
        atheris_child([sys.argv[0], *argv[1:]])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--driver", choices=("auto", "atheris", "random"), default="auto")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--artifacts", default=str(WORK / "artifacts"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--current", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    # Old artifacts were collected by their run; start clean so this run reports its own.
    shutil.rmtree(args.artifacts, ignore_errors=True)

    driver = args.driver
    if driver == "auto":
        try:
            import atheris  # noqa: F401

            driver = "atheris"
        except ImportError:
            driver = "random"
    print(f"fuzzing decode + preprocess for {args.seconds:g} s with the {driver} driver "
          f"(seed {args.seed}; pixel limit {FUZZ_MAX_PIXELS:,}; {TIME_LIMIT_S} s and "
          f"{MEMORY_LIMIT_MB} MB per input)", flush=True)  # fmt: skip
    start = time.monotonic()
    totals = atheris_driver(args) if driver == "atheris" else random_driver(args)
    kept = collect(Path(args.artifacts))
    took = time.monotonic() - start
    print(
        f"{driver}: {totals['tried']:,} inputs in {took:.0f} s "
        f"({totals['tried'] / max(took, 1e-9):,.0f}/s); failures {totals['found']} "
        f"(crashes {totals['crashes']}, hangs {totals['hangs']}); "
        f"{len(kept)} new file(s) in {CORPUS.relative_to(ROOT)}/"
    )
    for path in kept:
        print(f"  {path.relative_to(ROOT)}")
    return 1 if totals["found"] else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    raise SystemExit(main())
