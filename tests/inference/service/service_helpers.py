"""Helpers of the service tests: real ONNX models with chosen cards, real PNG scans,
apps on a temporary data directory, station keys. A real `cargoscan serve` process is the
``serve_process`` fixture (conftest.py) on `station.server`."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference.service.app import create_app, open_records
from inference.service.auth import hash_key, new_key
from inference.service.settings import Settings
from station.server import ServerProcess

# The `serve_process` fixture (conftest.py): serve_process(port, env, log=..., ready_timeout_s=...)
ServeProcess = Callable[..., ServerProcess]

ADMIN_KEY = "admin-secret-for-tests"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; no tool may download a browser
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _export(root: Path, name: str, heat_bias: float, anomaly_bias: float | None = None) -> Path:
    torch = pytest.importorskip("torch")  # only to build the models
    from training.export import export
    from training.model import CargoNet, ModelConfig

    torch.manual_seed(0)
    net = CargoNet(ModelConfig())
    with torch.no_grad():
        net.heat.out.bias.fill_(heat_bias)
        # Box sides of about 30 px (exp(2) strides): findings the size of a threat at the
        # default pitch, not specks the result builder drops.
        net.box.out.bias.fill_(2.0)
        if anomaly_bias is not None:
            net.anomaly.out.bias.fill_(anomaly_bias)
    ckpt = root / f"{name}.pt"
    torch.save({"model": net.state_dict(), "model_config": net.config.to_dict()}, ckpt)
    export(ckpt, root / f"{name}.onnx")
    return root / f"{name}.onnx"


def _variant(src: Path, name: str, thresholds: float | None) -> Path:
    """The same ONNX bytes under another name with its own thresholds."""
    dst = src.with_name(f"{name}.onnx")
    shutil.copy(src, dst)
    card = json.loads(src.with_suffix(".json").read_text())
    card["name"] = name
    card["onnx"]["file"] = dst.name
    card["thresholds"] = (
        None if thresholds is None else dict.fromkeys(card["categories"], thresholds)
    )
    dst.with_suffix(".json").write_text(json.dumps(card))
    return dst


def png16(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def scan_pngs(h: int = 96, w: int = 256, seed: int = 0, low: bool = True) -> dict[str, Any]:
    """A small dual-energy scan: air, a container, a dense block; 16-bit PNG bytes."""
    rng = np.random.default_rng(seed)
    high = np.full((h, w), 60000.0)
    high[h // 6 : h - 8, w // 10 : w - w // 10] = 30000
    high[h // 3 : h // 2, w // 3 : w // 2] = 5000 + 100 * seed
    high = rng.poisson(high).clip(0, 65535).astype(np.uint16)
    files: dict[str, Any] = {"high": ("high.png", png16(high), "image/png")}
    if low:
        lo = (high.astype(np.float64) * 0.85).astype(np.uint16)
        files["low"] = ("low.png", png16(lo), "image/png")
    return files


@contextmanager
def running(settings: Settings, *, wait_ready: bool = True) -> Iterator[TestClient]:
    """An app on ``settings`` through the in-process ASGI client, lifespan included."""
    with TestClient(create_app(settings)) as client:
        if wait_ready:
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, client.get("/readyz").json()
                time.sleep(0.05)
        yield client


def add_station(settings: Settings, name: str) -> dict[str, str]:
    """A new station in the settings' database; returns its Authorization header."""
    records = open_records(settings)
    key = new_key()
    try:
        records.add_station(name, hash_key(key))
    finally:
        records.engine.dispose()
    return {"Authorization": f"Bearer {key}"}


def build_models(root: Path) -> dict[str, Path]:
    """alarm: every scan alarms (thresholds far below the raised heat peaks); clear: no
    scan can reach half its threshold; nan: loads and runs, but its anomaly map is NaN;
    badsha: a card that does not match the bytes."""
    base = _export(root, "base", heat_bias=-2.0)
    nan = _export(root, "nan", heat_bias=-2.0, anomaly_bias=float("nan"))
    out = {
        "alarm": _variant(base, "alarm", 0.01),
        "clear": _variant(base, "clear", 3.0),
        "nan": nan,
    }
    badsha = _variant(base, "badsha", 0.5)
    card = json.loads(badsha.with_suffix(".json").read_text())
    card["onnx"]["sha256"] = "0" * 64
    badsha.with_suffix(".json").write_text(json.dumps(card))
    out["badsha"] = badsha
    return out


REPO = Path(__file__).resolve().parents[3]


def store_scan(
    records: Any,
    blobs: Any,
    *,
    station: Any,
    high: np.ndarray,
    low: np.ndarray | None,
    meta: dict[str, Any],
    received_at: Any,
    model: dict[str, Any],
    risk: float,
    verdict: str,
    findings: list[dict[str, Any]],
    anomaly: np.ndarray | None = None,
    processing_ms: float = 500.0,
    extra: dict[str, Any] | None = None,
) -> str:
    """A scan stored as the service stores one, with a hand-made result: the viewer's
    browser tests put findings where they expect them instead of where a model would.
    ``meta`` is the station's metadata (with ``station_scan_id`` and ``scan_time``);
    ``extra``: more of the result (a ``cargo`` section and its ``risk_reasons``)."""
    import math
    import uuid

    from inference.result import anomaly_png
    from inference.scan import ScanMetadata
    from inference.service.core import API, result_record
    from inference.service.db import ScanRecord

    h, w = high.shape
    high_png = png16(high)
    low_png = png16(low) if low is not None else None
    scan_id = str(uuid.uuid4())
    metadata = ScanMetadata.from_dict(meta)
    result = {
        "scan_id": scan_id,
        "model": model,
        "processing_ms": processing_ms,
        "risk": risk,
        "verdict": verdict,
        "findings": [{"id": i, **f} for i, f in enumerate(findings, start=1)],
        "cargo_region": None,
        "anomaly_map": f"{API}/scans/{scan_id}/anomaly-map",
        **(extra or {}),
    }
    rec = ScanRecord(
        id=scan_id,
        station_id=station.id,
        station_scan_id=metadata.station_scan_id,
        received_at=received_at,
        scan_time=metadata.scan_time,
        width=w,
        height=h,
        bit_depth=16,
        high_sha256=blobs.put(high_png),
        high_bytes=len(high_png),
        low_sha256=blobs.put(low_png) if low_png else None,
        low_bytes=len(low_png) if low_png else None,
        meta=metadata.to_dict(),
    )
    cells = anomaly if anomaly is not None else np.zeros((math.ceil(h / 4), math.ceil(w / 4)))
    return records.add_scan(rec, result_record(result, blobs.put(anomaly_png(cells))))[0].id


def serve_env(data: Path, model: Path, port: int) -> dict[str, str]:
    """The environment of a `cargoscan serve` the browser tests start on ``data``: one
    engine thread, SQLite in the data folder, no admin key (officers log in)."""
    import os

    env = {
        **os.environ,
        "CARGOSCAN_DATA_DIR": str(data),
        "CARGOSCAN_MODEL_PATH": str(model),
        "CARGOSCAN_PORT": str(port),
        "CARGOSCAN_ENGINE_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("CARGOSCAN_DATABASE_URL", None)
    env.pop("CARGOSCAN_ADMIN_KEY", None)
    return env
