"""`cargoscan simulate`: a scanner station that generates scans and posts them to the service.

It does what a station integrator's client should do, so it doubles as the reference
client: each scan goes out as a 16-bit image per energy channel (uncompressed TIFF by
default: the service reads it in a millisecond where a PNG costs ~40 ms of zlib; PNG on
request, for a slow link) plus a metadata JSON with a ``station_scan_id``; a 429 or 503 is
retried after the server's ``Retry-After``; a timeout, a refused connection or a 502/504 is
retried with exponential back-off and jitter; and every retry reuses the same
``station_scan_id``, so a scan the server stored before its answer got lost is answered 200
from storage instead of being stored twice.

Scans come from the physics-based generator (``training.synth``), deterministic per
(seed, index): running again with the same ``--seed`` re-sends byte-identical scans under the
same ids, which the service recognises. A generated scan's hidden threats (its truth) stay on
the station side and are only printed next to the service's verdict.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import queue
import random
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

import httpx
import numpy as np

from training.synth.scene import SynthConfig, SynthScan, generate_scan

DEFAULT_URL = "http://127.0.0.1:8000"
KEY_ENV = "CARGOSCAN_STATION_KEY"
SCANS = "/api/v1/scans"
# Fast zlib level, as the data set writer uses: noisy 16-bit data barely compresses further.
_PNG_LEVEL = 1
IMAGE_FORMATS = ("tiff", "png")
"""What a station may send; the first is the default: uncompressed 16-bit TIFF is what the
service decodes fastest (noisy 16-bit counts shrink by only ~20 % as PNG, for ~40 ms of
inflating per channel on the service's side)."""
_MEDIA = {"tiff": ("tif", "image/tiff"), "png": ("png", "image/png")}
# Answers that mean "not now, later": wait as the server says.
_THROTTLED = (429, 503)
# Answers of a proxy in front of the service that lost it for a moment: back off.
_GATEWAY = (502, 504)


class StationRejected(Exception):
    """The service refuses this station (401/403): retrying cannot help."""


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How long a station keeps trying one scan before it gives up on it."""

    max_attempts: int = 30
    backoff_s: float = 0.5  # first back-off after a timeout or connection error
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 300.0  # a Retry-After above this is clipped

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Exponential back-off with equal jitter: half the step fixed, half random, so
        stations that lost the service together do not come back together."""
        step = min(self.max_backoff_s, self.backoff_s * 2 ** max(0, failures - 1))
        return step / 2 + rng.uniform(0, step / 2)

    def after(self, retry_after: float, rng: random.Random) -> float:
        """At least what the server asked for, plus up to 10 % so waiters spread out."""
        wait = min(max(retry_after, 0.0), self.max_retry_after_s)
        return wait + rng.uniform(0, 0.1 * wait + 0.05)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --------------------------------------------------------------------------- scans


@dataclass
class Upload:
    """One scan as the station sends it (and, apart, what it really holds)."""

    station_scan_id: str
    high: bytes  # the encoded channel, in ``image_format``
    low: bytes
    metadata: dict[str, Any]
    width: int
    height: int
    truth: list[str] = field(default_factory=list)  # hidden threat categories (never sent)
    manifest_note: str | None = None  # how the declared manifest is wrong, if it is
    label: str = ""  # e.g. "40ft liquids"
    image_format: str = "tiff"  # one of IMAGE_FORMATS

    def form(self) -> tuple[dict[str, tuple[str, bytes, str]], dict[str, str]]:
        """The multipart files and fields of ``POST /api/v1/scans``."""
        meta = {**self.metadata, "station_scan_id": self.station_scan_id}
        ext, media = _MEDIA[self.image_format]
        files = {
            "high": (f"{self.station_scan_id}_high.{ext}", self.high, media),
            "low": (f"{self.station_scan_id}_low.{ext}", self.low, media),
        }
        return files, {"metadata": json.dumps(meta)}


def encode_channel(img: np.ndarray, image_format: str = IMAGE_FORMATS[0]) -> bytes:
    """One 16-bit channel as the station sends it: uncompressed TIFF or a fast-zlib PNG."""
    if image_format == "tiff":
        import io

        import tifffile

        buf = io.BytesIO()
        tifffile.imwrite(buf, img, photometric="minisblack", compression=None)
        return buf.getvalue()
    if image_format != "png":
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    import cv2

    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, _PNG_LEVEL])
    if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint16 array
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# ISO 6346 letter values: A=10 upwards, skipping the multiples of 11.
_ISO6346 = {
    ch: v
    for ch, v in zip(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ", (v for v in range(10, 39) if v % 11), strict=False
    )
}
_OWNERS = ("CSQ", "SIM", "DMO", "XRY", "TSC")  # fictional owner codes


def iso6346_check_digit(code: str) -> int:
    """The check digit of a container number's first ten characters (e.g. CSQU305438 -> 3)."""
    total = sum(
        (_ISO6346[ch] if ch.isalpha() else int(ch)) * 2**i for i, ch in enumerate(code[:10])
    )
    return total % 11 % 10


def _container_ids(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        head = f"{_OWNERS[int(rng.integers(len(_OWNERS)))]}U{int(rng.integers(1_000_000)):06d}"
        out.append(f"{head}{iso6346_check_digit(head)}")
    return out


def scan_metadata(
    scan: SynthScan, index: int, seed: int, cfg: SynthConfig, scan_time: datetime
) -> dict[str, Any]:
    """What a portal's software would send with the scan (no station_scan_id: see Upload)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 6346]))
    vehicle = scan.info["vehicle"]
    plate = f"SIM-{int(rng.integers(10_000)):04d}"
    manifest = [
        {k: v for k, v in line.items() if k != "container"}  # the box index is ours, not theirs
        for line in scan.info["declared_manifest"]
    ]
    return {
        "scan_time": scan_time.isoformat(timespec="seconds"),
        "scanner": {"kind": "portal", "high_mv": cfg.high_mv, "low_mv": cfg.low_mv},
        "pixel_pitch_mm": cfg.pitch_mm,
        "vehicle_id": plate,
        "container_ids": _container_ids(rng, len(vehicle["reefer"])),
        "manifest": manifest,
        # Enough to regenerate the scan and its labels later (e.g. to grade officer reviews).
        "simulated": {"generator": "cargoscan simulate", "seed": seed, "index": index},
    }


SIM_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def simulated_scan_time(index: int, seed: int) -> datetime:
    """When scan ``index`` of ``seed`` was "taken": a property of the scan like its pixels,
    so that running a seed again resends the same scans (a retry the service answers from
    storage) rather than the same pixels with a new time, which it refuses (409)."""
    return SIM_EPOCH + timedelta(minutes=seed % 1_000_000, seconds=30 * index)


def make_upload(
    index: int,
    seed: int,
    cfg: SynthConfig,
    prefix: str = "sim",
    image_format: str = IMAGE_FORMATS[0],
    scan_time: datetime | None = None,
) -> Upload:
    """Generate scan ``index`` of ``seed`` and encode it as the station sends it, taken at
    ``scan_time`` (default: the seed's fixed time, so that the same seed resends the same
    scans)."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    scan = generate_scan(index, seed, cfg)
    h, w = scan.high.shape
    vehicle = scan.info["vehicle"]
    return Upload(
        station_scan_id=f"{prefix}-{seed}-{index:06d}",
        high=encode_channel(scan.high, image_format),
        low=encode_channel(scan.low, image_format),
        metadata=scan_metadata(
            scan, index, seed, cfg, scan_time or simulated_scan_time(index, seed)
        ),
        width=int(w),
        height=int(h),
        truth=sorted({t.category for t in scan.threats}),
        manifest_note=scan.info.get("manifest_discrepancy"),
        label=f"{vehicle['arrangement']} {'+'.join(scan.info['load'])}",
        image_format=image_format,
    )


class _Prefetch:
    """Makes the next upload on a thread while the current one is being posted
    (generation is ~1 s of CPU; posting mostly waits on the service).

    `close()` stops it and waits for the scan being generated: a thread left inside
    OpenCV or NumPy while the interpreter exits can abort the process ("terminate
    called without an active exception"), so Ctrl-C waits about a second, no more.
    """

    def __init__(self, make: Callable[[int], Upload], indices: Iterator[int]) -> None:
        self._queue: queue.Queue[tuple[Upload | None, BaseException | None]] = queue.Queue(1)
        self._make = make
        self._indices = indices
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulate-generate", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[Upload | None, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        for i in self._indices:
            if self._stop.is_set():
                return
            try:
                item: tuple[Upload | None, BaseException | None] = (self._make(i), None)
            except BaseException as exc:  # handed to the consumer, which raises it
                self._put((None, exc))
                return
            if not self._put(item):
                return
        self._put((None, None))

    def close(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def __iter__(self) -> Iterator[Upload]:
        while True:
            upload, error = self._queue.get()
            if error is not None:
                raise error
            if upload is None:
                return
            yield upload


# --------------------------------------------------------------------------- posting


@dataclass
class PostOutcome:
    """How one scan's delivery went."""

    status: int | None  # the final HTTP status; None if the service never answered
    body: dict[str, Any] | None
    attempts: int
    throttled: int  # 429 / 503 answers
    errors: list[str]  # timeouts, connection errors, gateway errors that were retried
    seconds: float  # first send to final answer, waits included (the station's view)
    last_seconds: float  # the last attempt's round trip alone
    answers: list[int] = field(default_factory=list)  # every attempt's HTTP status

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)

    @property
    def detail(self) -> str:
        if self.body and isinstance(self.body.get("detail"), str):
            return self.body["detail"]
        return self.errors[-1] if self.errors else f"HTTP {self.status}"


def _json(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def post_scan(
    client: httpx.Client,
    upload: Upload,
    policy: RetryPolicy | None = None,
    *,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PostOutcome:
    """POST one scan until it is answered for good or the attempts run out.

    ``client`` carries the base URL and the station's Authorization header. Raises
    :class:`StationRejected` on 401/403.
    """
    policy = policy or RetryPolicy()
    rng = rng or random.Random()
    files, data = upload.form()
    start = time.perf_counter()
    throttled, errors, failures, answers = 0, [], 0, []
    status: int | None = None
    body: dict[str, Any] | None = None
    last = 0.0
    resp: httpx.Response | None = None
    for attempt in range(1, policy.max_attempts + 1):
        t0 = time.perf_counter()
        why = ""
        try:
            resp = client.post(SCANS, files=files, data=data)
        except httpx.TimeoutException as exc:
            resp, why = None, f"timeout ({type(exc).__name__})"
        except httpx.TransportError as exc:
            resp, why = None, f"{type(exc).__name__}: {exc}"
        last = time.perf_counter() - t0
        if resp is not None:
            status, body = resp.status_code, _json(resp)
            answers.append(status)
            if status in (401, 403):
                detail = (body or {}).get("detail", resp.reason_phrase)
                raise StationRejected(f"{status}: {detail}")
            if status not in _THROTTLED and status not in _GATEWAY:
                return PostOutcome(
                    status, body, attempt, throttled, errors, _since(start), last, answers
                )
        throttle = resp is not None and resp.status_code in _THROTTLED
        if throttle:
            throttled += 1
        else:
            failures += 1
            errors.append(why if resp is None else f"HTTP {resp.status_code}")
        if attempt == policy.max_attempts:
            break
        if resp is not None and throttle:
            asked = parse_retry_after(resp.headers.get("retry-after"))
            sleep(policy.after(asked if asked is not None else 1.0, rng))
        else:
            sleep(policy.backoff(failures, rng))
    if resp is None:
        status, body = None, None  # the last attempt got no answer at all
    return PostOutcome(
        status, body, policy.max_attempts, throttled, errors, _since(start), last, answers
    )


def _since(start: float) -> float:
    return time.perf_counter() - start


def station_client(url: str, key: str, timeout_s: float = 120.0) -> httpx.Client:
    """An HTTP client for one station: base URL, its key, generous read timeout (a big scan
    on a busy service takes a while; a retry after a timeout costs the service twice)."""
    return httpx.Client(
        base_url=url.rstrip("/"),
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(timeout_s, connect=10.0),
    )


def wait_ready(
    client: httpx.Client,
    *,
    timeout_s: float | None = None,
    poll_s: float = 2.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Wait for ``/readyz`` to answer 200; say once why it does not yet (no model, down)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    said = None
    while True:
        try:
            resp = client.get("/readyz", timeout=10.0)
            if resp.status_code == 200:
                if said is not None:
                    say("the service is ready")
                return _json(resp) or {}
            why = (_json(resp) or {}).get("reason") or (_json(resp) or {}).get("status")
            why = f"not ready ({resp.status_code}): {why}"
        except httpx.TransportError as exc:
            why = f"cannot reach {client.base_url} ({type(exc).__name__})"
        if why != said:
            say(f"waiting for the service: {why}")
            said = why
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"the service was not ready in {timeout_s:g} s: {why}")
        time.sleep(poll_s)


# --------------------------------------------------------------------------- the station


@dataclass
class SimSummary:
    """What a simulator run did."""

    seed: int
    sent: int = 0
    created: int = 0  # analysed and stored now (201)
    stored_before: int = 0  # answered from storage (200: a repeated station_scan_id)
    failed: int = 0
    throttled: int = 0
    retries: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    interrupted: bool = False
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, outcome: PostOutcome) -> None:
        self.sent += 1
        self.throttled += outcome.throttled
        self.retries += outcome.attempts - 1
        if not outcome.ok:
            self.failed += 1
            return
        self.created += outcome.status == 201
        self.stored_before += outcome.status == 200
        self.latencies.append(outcome.seconds)
        if outcome.body and outcome.body.get("verdict"):
            self.verdicts[outcome.body["verdict"]] += 1

    def __str__(self) -> str:
        verdicts = ", ".join(f"{v} {self.verdicts[v]}" for v in ("alarm", "review", "clear"))
        p50 = f"{np.median(self.latencies):.2f} s" if self.latencies else "-"
        stopped = " (stopped by Ctrl-C)" if self.interrupted else ""
        return (
            f"{self.sent} scans in {self.seconds:.0f} s{stopped}: {self.created} analysed, "
            f"{self.stored_before} already stored, {self.failed} failed; {verdicts}; "
            f"{self.retries} retries ({self.throttled} after 429/503); "
            f"median time to answer {p50}; --seed {self.seed} repeats these scans"
        )


def describe(upload: Upload, outcome: PostOutcome) -> str:
    """One line per scan: the service's verdict next to what the scan really holds."""
    head = f"{upload.station_scan_id}  {upload.width}x{upload.height}  {upload.label:<22.22}"
    truth = ", ".join(upload.truth) or "clean"
    if upload.manifest_note:
        truth += f"; manifest {upload.manifest_note.replace('_', ' ')}"
    n = outcome.attempts - 1
    retried = f" after {n} {'retry' if n == 1 else 'retries'}" if n else ""
    if not outcome.ok:
        return f"{head}  FAILED{retried}: {outcome.detail}  [truth: {truth}]"
    body = outcome.body or {}
    findings = body.get("findings") or []
    listed = ", ".join(f"{f['category']} {f['score']:.2f}" for f in findings[:4])
    if len(findings) > 4:
        listed += f", +{len(findings) - 4}"
    again = " (stored before)" if outcome.status == 200 else ""
    return (
        f"{head}  {str(body.get('verdict', '?')).upper():<6} risk {body.get('risk', 0):.2f}  "
        f"{len(findings)} finding{'s' if len(findings) != 1 else ''}"
        f"{': ' + listed if listed else ''}  [truth: {truth}]  "
        f"{outcome.seconds:.1f} s{retried}{again}"
    )


def simulate(
    url: str,
    key: str,
    *,
    count: int = 0,
    rate_per_min: float = 0.0,
    seed: int | None = None,
    config: SynthConfig | None = None,
    policy: RetryPolicy | None = None,
    timeout_s: float = 120.0,
    ready_timeout_s: float | None = None,
    check_ready: bool = True,
    progress: bool = True,
    out: TextIO | None = None,
    image_format: str = IMAGE_FORMATS[0],
) -> SimSummary:
    """Generate and post ``count`` scans (0: until Ctrl-C) at most ``rate_per_min`` a minute
    (0: as fast as generation and the service allow). Ctrl-C ends the run with a summary."""
    from tqdm import tqdm

    out = out or sys.stdout
    cfg = config or SynthConfig()
    # A seed given is a run to repeat: its scans carry the seed's fixed times, so a rerun
    # is a retry the service answers from storage. A drawn seed (the demo) is live
    # traffic: its scans are taken now.
    live = seed is None
    seed = secrets.randbelow(1_000_000) if seed is None else seed
    summary = SimSummary(seed=seed)
    rng = random.Random(seed)
    interval = 60.0 / rate_per_min if rate_per_min > 0 else 0.0
    indices = iter(range(count)) if count > 0 else itertools.count()
    start = time.monotonic()
    bar = None
    prefetch: _Prefetch | None = None
    with station_client(url, key, timeout_s) as client:
        try:
            if check_ready:
                ready = wait_ready(
                    client, timeout_s=ready_timeout_s, say=lambda s: print(s, file=out)
                )
                model = (ready.get("model") or {}).get("version", "?")
                print(f"posting to {url} (model {model}); seed {seed}", file=out, flush=True)
            bar = tqdm(
                total=count or None,
                unit="scan",
                desc="simulate",
                disable=None if progress else True,  # None: only on a terminal
                file=out,
            )
            next_at = time.monotonic()
            prefetch = _Prefetch(
                lambda i: make_upload(
                    i,
                    seed,
                    cfg,
                    image_format=image_format,
                    scan_time=datetime.now(timezone.utc) if live else None,
                ),
                indices,
            )
            for upload in prefetch:
                wait = next_at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                next_at = max(next_at + interval, time.monotonic())
                outcome = post_scan(client, upload, policy, rng=rng)
                summary.add(outcome)
                bar.write(describe(upload, outcome), file=out)
                out.flush()  # a line per scan, also when piped into a log
                bar.set_postfix(
                    alarm=summary.verdicts["alarm"],
                    review=summary.verdicts["review"],
                    failed=summary.failed,
                    retries=summary.retries,
                    refresh=False,
                )
                bar.update()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            if prefetch is not None:
                prefetch.close()
            if bar is not None:
                bar.close()
            summary.seconds = time.monotonic() - start
    return summary
