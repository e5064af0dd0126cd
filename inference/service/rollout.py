"""Model roll-out: load, warm up, check on real scans, then swap atomically.

A new model only goes live after it has (1) loaded with a card that matches its bytes and
this runtime's pre-processing, (2) run once on a synthetic scan (ONNX Runtime allocates
its memory on the first run, which would otherwise land on a station's request) and (3)
given sane output on a few scans the stations actually sent (finite scores in [0, 1],
boxes inside the scan, known categories, a result that builds). Any failure leaves the
serving model untouched. The swap is one reference assignment: a request that already
holds the old model finishes with it and its result says so.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from inference.engine import Engine, ModelError
from inference.result import model_info, scan_result
from inference.scan import Scan


class RolloutError(Exception):
    """A roll-out step failed; ``step`` names it (load, warm-up, check)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class RolloutBusy(Exception):
    """Another roll-out is in progress."""


@dataclass(frozen=True)
class LiveModel:
    """A model that passed the checks, with what results and metrics need."""

    engine: Engine
    path: Path
    info: dict[str, str]
    operating_point: Path | None = None  # a site's thresholds over the card's
    activated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def version(self) -> str:
        return self.info["version"]


def warmup_scan() -> Scan:
    """A small scan-like picture (air, a container, a dense block, photon noise)."""
    rng = np.random.default_rng(0)
    high = np.full((256, 768), 60000, np.float64)
    high[40:230, 60:700] = 30000
    high[100:160, 300:360] = 4000
    high = rng.poisson(high).clip(0, 65535).astype(np.uint16)
    return Scan.from_arrays(high, (high * 0.9).astype(np.uint16))


def load_model(path: Path, threads: int, operating_point: Path | None = None) -> LiveModel:
    """Step 1: load (refuses a card that does not match the bytes or the pre-processing,
    and a site's operating point made for another model)."""
    try:
        engine = Engine.load(path, threads=threads, operating_point=operating_point)
    except ModelError as exc:
        raise RolloutError("load", str(exc)) from None
    except Exception as exc:  # corrupt ONNX, unreadable file, bad card structure
        raise RolloutError("load", f"{path}: {type(exc).__name__}: {exc}") from None
    if not engine.categories:
        raise RolloutError("load", f"{path}: the card lists no categories")
    return LiveModel(
        engine=engine,
        path=Path(path),
        info=model_info(engine.card),
        operating_point=Path(operating_point) if operating_point is not None else None,
    )


def warm_up(model: LiveModel) -> float:
    """Step 2: one run on a synthetic scan; returns its milliseconds."""
    start = time.perf_counter()
    try:
        model.engine.analyze(warmup_scan())
    except Exception as exc:
        raise RolloutError("warm-up", f"{type(exc).__name__}: {exc}") from None
    return (time.perf_counter() - start) * 1000.0


def check(model: LiveModel, scans: list[tuple[str, Scan]]) -> list[dict[str, Any]]:
    """Step 3: the model's output on each scan must be usable; returns per-scan summaries."""
    if not scans:
        scans = [("warm-up", warmup_scan())]
    report = []
    for scan_id, scan in scans:
        try:
            analysis = model.engine.analyze(scan)
        except Exception as exc:
            raise RolloutError("check", f"scan {scan_id}: {type(exc).__name__}: {exc}") from None
        h, w = scan.shape
        amap = np.asarray(analysis.anomaly)
        if amap.ndim != 2 or not np.isfinite(amap).all() or amap.min() < 0 or amap.max() > 1:
            raise RolloutError("check", f"scan {scan_id}: anomaly map not probabilities in [0, 1]")
        for f in analysis.findings:
            if not (math.isfinite(f.score) and 0.0 <= f.score <= 1.0):
                raise RolloutError("check", f"scan {scan_id}: {f.category} score {f.score}")
            x0, y0, x1, y1 = f.box
            finite = all(math.isfinite(v) for v in f.box)
            if not (finite and 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h):
                raise RolloutError("check", f"scan {scan_id}: box {f.box} outside the scan")
        result = scan_result(model.engine, analysis, scan_id, 0.0)
        report.append(
            {"scan_id": scan_id, "verdict": result.verdict, "findings": len(result.findings)}
        )
    return report


class ModelSlot:
    """The serving model. Readers take ``slot.current`` (one atomic read) and keep using
    what they got; :meth:`activate` replaces it only after every step passed."""

    def __init__(self) -> None:
        self.current: LiveModel | None = None
        self.status = "no model loaded yet"
        self._lock = threading.Lock()

    def activate(
        self,
        path: Path,
        threads: int,
        scans: list[tuple[str, Scan]],
        operating_point: Path | None = None,
    ) -> tuple[LiveModel, dict[str, Any]]:
        """Load, warm up and check ``path`` (with a site's ``operating_point`` over its card);
        swap it in. Raises RolloutError / RolloutBusy."""
        if not self._lock.acquire(blocking=False):
            raise RolloutBusy("another model roll-out is in progress")
        try:
            model = load_model(path, threads, operating_point)
            warm_ms = warm_up(model)
            checked = check(model, scans)
            self.current = model  # the swap
            self.status = "ready"
            report: dict[str, Any] = {"warmup_ms": round(warm_ms, 1), "checked": checked}
            if operating_point is not None:
                report["operating_point"] = str(operating_point)
            return model, report
        finally:
            self._lock.release()
