"""One running service (``Service``): settings, database, blob store, inference pool and
the serving model, and the work behind the endpoints that is not HTTP: choosing the
start-up model, rolling out a new one, analysing and storing an upload.

The routers (``api``, ``oip``, ``reviews``, ``users``, ``viewer``) and the app factory
(``app.py``) import this module; it imports none of them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter

from inference.result import anomaly_png, build_result
from inference.scan import Scan, ScanError, ScanMetadata, decode_scan
from inference.service.db import ResultRecord, ScanRecord, make_engine, migrate
from inference.service.limits import HashingGate, LoginLimiter, TokenBuckets
from inference.service.metrics import Metrics
from inference.service.pool import InferencePool
from inference.service.records import Records
from inference.service.rollout import LiveModel, ModelSlot, RolloutBusy, RolloutError
from inference.service.settings import Settings
from inference.service.storage import BlobStore

log = logging.getLogger("cargoscan.service")

API = "/api/v1"


def open_records(settings: Settings) -> Records:
    """The database of ``settings``, migrated to the newest revision (also for the CLI)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    return Records(engine)


@dataclass
class Outcome:
    """What one analysed upload produced (or found already stored)."""

    scan: ScanRecord
    result: dict[str, Any]
    created: bool


class Service:
    """One running service: settings, database, blob store, pool and the serving model."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.models = ModelSlot()
        self.draining = False
        # Replicas on one database follow each other's roll-outs (follow_rollouts_once):
        # the newest model activation this process has acted on, and why the last one it
        # tried to follow failed (None: serving what the database says).
        self.seen_activation = 0
        self.follow_error: str | None = None
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.started = time.time()
        self.records: Records = None  # type: ignore[assignment]  # set by open()
        self.blobs: BlobStore = None  # type: ignore[assignment]
        self.pool: InferencePool = None  # type: ignore[assignment]
        self.writer: ThreadPoolExecutor = None  # type: ignore[assignment]  # set by open()
        # Per-caller limits (limits.py): in memory, so they start empty at a restart.
        self.station_buckets = TokenBuckets(settings.station_rate_per_min, settings.station_burst)
        self.login_limits = LoginLimiter(
            settings.login_max_failures,
            settings.login_window_s,
            settings.login_max_failures_per_address,
        )
        self.rate_limited = Counter(
            "cargoscan_rate_limited",
            "requests answered 429 by a per-caller limit (not the queue)",
            ["kind"],
            registry=self.metrics.registry,
        )
        hashes = Counter(
            "cargoscan_password_hashes",
            "password hashes computed for logins (Argon2)",
            registry=self.metrics.registry,
        )
        # Argon2 in threads of its own (limits.py): a login flood cannot take the threads
        # and memory that stations' requests use.
        self.password_hashing = HashingGate(
            settings.login_hash_threads, settings.login_hash_queue, on_run=hashes.inc
        )

    # ----------------------------------------------------------------- life cycle

    def open(self) -> None:
        """Database and files (fast); the model comes after, in the background."""
        self.records = open_records(self.settings)
        self.blobs = BlobStore(self.settings.data_dir / "blobs")
        removed = sweep_partial_files(self.blobs.root, PARTIAL_FILE_AGE_S)
        if removed:
            log.info("removed %d half-written file(s) left by an earlier run", removed)
        self.pool = InferencePool(
            self.settings.workers,
            self.settings.queue_size,
            min_retry_after=self.settings.retry_after_s,
            on_depth=self.metrics.queue_depth.set,
        )
        # Blob writes (hash, write, fsync: I/O waits) of each upload run beside its
        # analysis: up to three files (high, low, anomaly map) per inference thread.
        self.writer = ThreadPoolExecutor(
            max_workers=3 * max(1, self.settings.workers), thread_name_prefix="cargoscan-blob"
        )

    def close(self) -> None:
        self.draining = True
        self.metrics.ready.set(0)
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=60)  # a model load in progress ends first
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.writer is not None:
            self.writer.shutdown(wait=True)
        self.password_hashing.shutdown()
        if self.records is not None:
            self.records.engine.dispose()

    @property
    def ready(self) -> bool:
        return self.models.current is not None and not self.draining

    def load_startup_model(self) -> None:
        """The start-up model (:meth:`_load_startup_model`), then the thread that follows
        the roll-outs other replicas make."""
        try:
            self._load_startup_model()
        finally:
            self._start_following()

    def _load_startup_model(self) -> None:
        """The model that served last (a roll-out survives a restart, with the site's
        operating point it had) unless the configured model path or operating point
        changed since they were last used: the newest decision wins."""
        cfg = self.settings.model_path
        cfg_path = str(cfg.resolve()) if cfg is not None else None
        cfg_op = self.settings.operating_point
        cfg_op_path = str(cfg_op.resolve()) if cfg_op is not None else None
        last = self.records.latest_activation()
        last_cfg = self.records.latest_activation("config")
        self.seen_activation = last.id if last is not None else 0
        op_of = operating_point_of
        candidates: list[tuple[str, str, str | None]] = []
        config = (cfg_path, "config", cfg_op_path) if cfg_path else None
        if config and (
            last_cfg is None or last_cfg.path != cfg_path or op_of(last_cfg) != cfg_op_path
        ):
            candidates.append(config)
        if last is not None:
            candidates.append((last.path, last.source, op_of(last)))
        if config and config not in candidates:
            candidates.append(config)
        if not candidates:
            self.models.status = "no model configured: set CARGOSCAN_MODEL_PATH or roll one out"
            return
        errors = []
        for path, source, op in candidates:
            self.models.status = f"loading {path}"
            try:
                model, checks = self.models.activate(
                    Path(path), self.settings.engine_threads, [],
                    Path(op) if op is not None else None,
                )  # fmt: skip
            except RolloutError as exc:
                errors.append(f"{path}: {exc}")
                log.warning("start-up model %s not usable: %s", path, exc)
                continue
            if (
                last is None
                or last.path != path
                or last.sha256 != model.info["sha256"]
                or op_of(last) != op
            ):
                self.seen_activation = self.records.add_activation(
                    source=source, path=path, info=model.info, checks=checks
                )
            self._went_live(model)
            return
        self.models.status = "no usable model: " + "; ".join(errors)

    def _went_live(self, model: LiveModel) -> None:
        self.metrics.set_model(model.info)
        self.metrics.ready.set(0 if self.draining else 1)
        log.info("serving model %s from %s", model.version, model.path)

    def activate(self, path: Path, operating_point: Path | None = None) -> dict[str, Any]:
        """Admin roll-out (runs on a worker thread): raises RolloutError, RolloutBusy."""
        scans = self.check_scans(self.settings.check_scans)
        previous = self.models.current
        try:
            model, checks = self.models.activate(
                path, self.settings.engine_threads, scans, operating_point
            )
        except RolloutError:
            self.metrics.rollouts.labels("failed").inc()
            raise
        self.seen_activation = self.records.add_activation(
            source="admin", path=str(path), info=model.info, checks=checks
        )
        self.follow_error = None
        self.metrics.rollouts.labels("succeeded").inc()
        self._went_live(model)
        return {
            "model": model.info,
            "previous": previous.info if previous else None,
            "path": str(path),
            **checks,
        }

    def follow_rollouts_once(self) -> bool:
        """Serve the model another replica rolled out (the newest activation in the shared
        database), after the same load, warm-up and check steps; True when it swapped.

        Why: ``cargoscan model activate`` reaches one replica through the load balancer;
        without this the others would go on serving the old model until restarted. A
        model that does not load here (a path missing on this machine) is reported in
        ``follow_error`` and the log, and the serving model stays; it is not retried until
        the next roll-out."""
        latest = self.records.latest_activation()
        seen = self.seen_activation
        if latest is None or latest.id <= seen:
            return False
        self.seen_activation = latest.id
        op = operating_point_of(latest)
        current = self.models.current
        if current is not None and (
            str(current.path),
            current.info["sha256"],
            str(current.operating_point) if current.operating_point is not None else None,
        ) == (latest.path, latest.sha256, op):
            return False  # this replica's own roll-out, or the same model again
        try:
            model, _checks = self.models.activate(
                Path(latest.path),
                self.settings.engine_threads,
                self.check_scans(self.settings.check_scans),
                Path(op) if op is not None else None,
            )
        except RolloutBusy:  # an admin roll-out on this replica right now: look again later
            self.seen_activation = seen
            return False
        except RolloutError as exc:
            self.metrics.rollouts.labels("failed").inc()
            self.follow_error = (
                f"cannot follow the roll-out of {latest.version} from {latest.path} "
                f"(activation {latest.id}): {exc}"
            )
            log.warning("%s; still serving %s", self.follow_error, current and current.version)
            return False
        if model.info["sha256"] != latest.sha256:
            log.warning(
                "%s here has SHA-256 %s, not %s as where it was rolled out: is the model "
                "folder shared?", latest.path, model.info["sha256"], latest.sha256,
            )  # fmt: skip
        self.follow_error = None
        self.metrics.rollouts.labels("followed").inc()
        self._went_live(model)
        return True

    def _start_following(self) -> None:
        """Every ``model_sync_s`` seconds (0: never), :meth:`follow_rollouts_once`."""
        interval = self.settings.model_sync_s
        if interval <= 0 or self._follower is not None or self._stop.is_set():
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.follow_rollouts_once()
                except Exception as exc:  # the database away for a moment: next time
                    log.warning("checking for roll-outs by other replicas failed: %s", exc)

        self._follower = threading.Thread(target=loop, name="cargoscan-follow", daemon=True)
        self._follower.start()

    def check_scans(self, n: int) -> list[tuple[str, Scan]]:
        """The newest stored scans, decoded, for checking a new model on real input."""
        out = []
        for rec in self.records.recent_scans(n):
            try:
                out.append((rec.id, self.load_scan(rec)))
            except (OSError, ScanError) as exc:
                log.warning("check scan %s unreadable: %s", rec.id, exc)
        return out

    # ----------------------------------------------------------------- scans

    def load_scan(self, rec: ScanRecord) -> Scan:
        high = self.blobs.get(rec.high_sha256)
        low = self.blobs.get(rec.low_sha256) if rec.low_sha256 else None
        return decode_scan(high, low, max_pixels=self.settings.max_pixels)

    def analyze_upload(
        self,
        station_id: int,
        high: bytes,
        low: bytes | None,
        meta: ScanMetadata,
    ) -> Outcome:
        """Decode, store the bytes, analyse, store scan + result (a pool thread)."""
        model = self.models.current
        if model is None:
            raise ServiceUnavailable("no model is loaded yet")
        start = time.perf_counter()
        scan = decode_scan(
            high, low, meta, max_pixels=self.settings.max_pixels, shape=self.settings.model_shape()
        )
        # The channels' bytes are hashed and stored (durably: fsync) during the
        # pre-processing, and waited for before the network starts: the network's two
        # threads stall together when a write takes one of their cores. The anomaly map
        # is encoded and stored while the network's outputs are decoded. All are on disk
        # before the scan's record is written, and processing_ms includes them.
        puts = [self.writer.submit(self.blobs.put, high)]
        if low is not None:
            puts.append(self.writer.submit(self.blobs.put, low))
        channels = list(puts)

        def store_anomaly_map(cells: np.ndarray) -> None:
            puts.append(self.writer.submit(lambda: self.blobs.put(anomaly_png(cells))))

        try:
            analysis = model.engine.analyze(
                scan,
                cargo=self.settings.cargo_analysis,
                before_model=lambda: wait(channels),
                after_model=store_anomaly_map,
            )
        finally:
            wait(puts)  # no write outlives the request, even when the analysis failed
        high_sha, low_sha, anomaly_sha = _stored(puts, low is not None)
        scan_id = str(uuid.uuid4())
        took_ms = (time.perf_counter() - start) * 1000.0
        result = build_result(
            model.engine,
            analysis,
            scan_id,
            took_ms,
            anomaly_map_url=f"{API}/scans/{scan_id}/anomaly-map",
        )
        h, w = scan.shape
        rec = ScanRecord(
            id=scan_id,
            station_id=station_id,
            station_scan_id=meta.station_scan_id,
            received_at=datetime.now(timezone.utc),
            scan_time=meta.scan_time,
            width=w,
            height=h,
            bit_depth=int(scan.bit_depth),
            high_sha256=high_sha,
            high_bytes=len(high),
            low_sha256=low_sha,
            low_bytes=len(low) if low is not None else None,
            meta=meta.to_dict(),
        )
        stored, created = self.records.add_scan(rec, result_record(result, anomaly_sha))
        self.metrics.inference.observe(took_ms / 1000.0)
        if not created:  # a concurrent retry stored it first: the same scan, or a conflict
            conflict = retry_conflict(stored, high_sha, low_sha, rec.meta)
            if conflict is not None:
                raise ScanConflict(conflict)
            found = self.records.get_scan(stored.id, station_id)
            body = found[1].body if found and found[1] else result
            return Outcome(stored, body, False)
        self.metrics.count_result(result)
        return Outcome(rec, result, True)


def operating_point_of(activation: Any) -> str | None:
    """The site operating point an activation was made with (None: the card's own)."""
    value = (activation.checks or {}).get("operating_point") if activation else None
    return value if isinstance(value, str) else None


def _stored(puts: list[Future[str]], has_low: bool) -> tuple[str, str | None, str]:
    """The SHA-256s of the high, low (None without) and anomaly-map blobs (raises a write's
    error)."""
    shas = [f.result() for f in puts]
    return shas[0], shas[1] if has_low else None, shas[-1]


PARTIAL_FILE_AGE_S = 600
"""A temporary blob file this old is a leftover of a killed process: no write takes that
long. Younger ones may be another process's write in progress (a shared store), so they
are left; nothing reads them either way (blobs are only opened by their SHA-256 name)."""


def sweep_partial_files(root: Path, older_than_s: float) -> int:
    """Delete ``.*.tmp`` files (``BlobStore.put``'s half-written files) older than
    ``older_than_s`` under ``root``; returns how many went."""
    cutoff = time.time() - older_than_s
    removed = 0
    for path in root.glob("*/.*.tmp"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


class ServiceUnavailable(Exception):
    """The service cannot take work now (no model, draining): 503 with Retry-After."""


class ScanConflict(Exception):
    """A ``station_scan_id`` used before for other bytes or other metadata: 409."""


def retry_conflict(
    stored: ScanRecord, high_sha: str, low_sha: str | None, meta: dict[str, Any]
) -> str | None:
    """Why an upload under a stored scan's ``station_scan_id`` is not a retry of it (None
    when it is). Why refuse different metadata: answering 200 would tell the station that
    its vehicle id or manifest was taken while the old one stays on record."""
    sid = stored.station_scan_id
    if (stored.high_sha256, stored.low_sha256) != (high_sha, low_sha):
        return (
            f"station_scan_id {sid!r} was already used for a scan with other image bytes; "
            "use a new station_scan_id for a new scan"
        )
    old = stored.meta or {}
    differ = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
    if differ:
        return (
            f"station_scan_id {sid!r} was already used for these image bytes with other "
            f"metadata ({', '.join(differ)} differ from what was stored); a retry must send "
            "the same metadata, a new scan a new station_scan_id"
        )
    return None


def result_record(result: dict[str, Any], anomaly_sha: str | None) -> ResultRecord:
    """The database row of a result built by ``build_result`` (its body kept whole)."""
    model = result["model"]
    return ResultRecord(
        scan_id=result["scan_id"],
        model_name=model["name"],
        model_version=model["version"],
        model_sha256=model["sha256"],
        verdict=result["verdict"],
        risk=float(result["risk"]),
        processing_ms=float(result["processing_ms"]),
        anomaly_sha256=anomaly_sha,
        body=result,
    )


def service_version() -> str:
    """The installed cargoscan package's version ("0" when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cargoscan")
    except PackageNotFoundError:
        return "0"
