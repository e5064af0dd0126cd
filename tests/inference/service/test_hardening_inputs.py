"""Hostile input the hardening tests of issue 29 found: a tiny PNG the model would pad to
64 Mpx, a PNG past libpng's width limit, a retry that changes the metadata, the SQLite
file's mode, and /metrics behind a key. All through the real service in-process."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cargoscan.cli import main
from fuzz.cases import png_raw
from inference.scan import ModelShape, ScanError, decode_image
from inference.service.db import make_engine
from inference.service.settings import Settings
from tests.inference.service.service_helpers import ADMIN, add_station, running, scan_pngs

API = "/api/v1"


def constant_png(width: int, height: int, depth: int = 16) -> bytes:
    """A valid greyscale PNG of one value: a few KB whatever its size (a decompression
    bomb's shape), built row by row so the test never holds the raw pixels."""
    row = b"\x00" + b"\xee" * (width * depth // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return png_raw(width, height, depth=depth, idat=idat)


def post(client, headers, high: bytes, metadata: dict | None = None):  # -> httpx.Response
    data = {"metadata": json.dumps(metadata)} if metadata is not None else None
    files = {"high": ("high.png", high, "image/png")}
    return client.post(f"{API}/scans", files=files, data=data, headers=headers)


# --------------------------------------------------------------------------- item 1


def test_a_scan_the_model_would_pad_past_its_limit_is_refused_from_the_header(
    make_settings: Callable[..., Settings],
):
    """999,000x40 px passes the 40 Mpx limit but the model would get 999,008x64 = 64 Mpx
    (20 s, 4 GB): refused with 413 from the header, naming width, ratio and padding."""
    settings = make_settings()
    station = add_station(settings, "gate-1")
    bomb = constant_png(999_000, 40)
    assert len(bomb) < 200_000
    with running(settings) as client:
        r = post(client, station, bomb, {"station_scan_id": "bomb-1"})
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert detail.startswith("high: a 999000x40 px image cannot be analysed")
        assert "999,000 px wide, over the limit of 30,000 px a side" in detail
        assert "24,975:1 long side to short, over 25:1" in detail
        assert "padded to 999,008x64 = 63,936,512 px for the model" in detail
        # within the side limit but too elongated: a shape problem (422), not size
        r = post(client, station, constant_png(20_000, 16), {"station_scan_id": "thin"})
        assert r.status_code == 422, r.text
        assert "1,250:1 long side to short, over 25:1" in r.json()["detail"]
        # nothing was stored; an ordinary scan still goes through
        assert client.get(f"{API}/scans", headers=ADMIN).json()["total"] == 0
        ok = client.post(f"{API}/scans", files=scan_pngs(), headers=station)
        assert ok.status_code == 201, ok.text


def oip_infer(client, headers, shape: list[int], data: list[float] | None = None):  # -> Response
    """A /v2 inference of an FP32 tensor of ``shape`` (zeros unless ``data``)."""
    n = int(np.prod(shape))
    spec = {"name": "input", "shape": shape, "datatype": "FP32", "data": data or [0.0] * n}
    return client.post("/v2/models/alarm/infer", json={"inputs": [spec]}, headers=headers)


def test_the_open_inference_protocol_takes_the_scans_shape_limits(
    make_settings: Callable[..., Settings],
):
    """/v2 gets a tensor, not an image, but the model's time and memory follow the same
    H x W: the upload's side, aspect-ratio and padded-pixel limits apply before the
    tensor's values are read (a shape's header is enough: these bodies hold one value)."""
    settings = make_settings(max_model_pixels=500_000, max_scan_side=4_000)
    station = add_station(settings, "gate-1")
    with running(settings) as client:
        # too long a side (and too many padded pixels): 413 naming both and the shape
        r = oip_infer(client, station, [1, 2, 192, 4096], [0.0])
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error.startswith("input shape [1, 2, 192, 4096]: input: a 4096x192 px image")
        assert "4,096 px wide, over the limit of 4,000 px a side" in error
        assert "= 786,432 px for the model, over its limit of 500,000" in error
        # within the sides but over the padded pixels
        r = oip_infer(client, station, [1, 2, 640, 800], [0.0])
        assert r.status_code == 413 and "over its limit of 500,000" in r.json()["error"]
        # too elongated: a shape problem (422), not size
        r = oip_infer(client, station, [1, 2, 32, 1024], [0.0])
        assert r.status_code == 422, r.text
        assert "32:1 long side to short, over 25:1" in r.json()["error"]
        assert "input shape [1, 2, 32, 1024]" in r.json()["error"]
        # at the limits the model runs
        r = oip_infer(client, station, [1, 2, 32, 800])
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"][0] == 1


def test_the_padded_limit_follows_the_settings(make_settings: Callable[..., Settings]):
    settings = make_settings(max_pixels=100_000, max_aspect_ratio=100.0)
    shape = settings.model_shape()
    assert shape.max_padded_pixels == 110_000
    assert shape.padded(40, 2000) == (64, 2016)
    # 2000x40 = 80,000 px is under MAX_PIXELS, but padded to 2016x64 = 129,024 it is not
    station = add_station(settings, "gate-1")
    with running(settings) as client:
        r = post(client, station, constant_png(2000, 40))
        assert r.status_code == 413, r.text
        assert "padded to 2,016x64 = 129,024 px for the model" in r.json()["detail"]
        r = post(client, station, constant_png(1600, 60))  # 1600x64 = 102,400: fine
        assert r.status_code == 201, r.text


# --------------------------------------------------------------------------- item 6: PNG


def test_a_png_wider_than_libpng_takes_is_refused_for_that_reason(
    make_settings: Callable[..., Settings],
):
    wide = constant_png(1_000_001, 16, depth=8)
    try:
        decode_image(wide)
    except ScanError as exc:
        message = str(exc)
    else:
        raise AssertionError("a PNG libpng cannot read was accepted")
    assert "truncated" not in message and "corrupt" not in message
    assert "PNG is 1,000,001x16 px; PNGs of more than 1,000,000 px a side" in message
    # at libpng's limit it decodes (the model's own limits are the service's business)
    assert decode_image(constant_png(1_000_000, 16, depth=8)).shape == (16, 1_000_000)
    # the service refuses it with 413 (too large), never as a corrupt file
    settings = make_settings(max_scan_side=2_000_000, max_aspect_ratio=1e9)
    assert settings.model_shape() == ModelShape(44_000_000, 2_000_000, 1e9)
    station = add_station(settings, "gate-1")
    with running(settings) as client:
        r = post(client, station, wide)
        assert r.status_code == 413, r.text
        assert "1,000,000 px a side are not accepted" in r.json()["detail"]


def test_database_file_is_private(make_settings: Callable[..., Settings], tmp_path: Path):
    settings = make_settings(data_dir=tmp_path / "fresh")
    with running(settings, wait_ready=False):
        pass
    db = tmp_path / "fresh" / "cargoscan.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for extra in (db.with_name("cargoscan.db-wal"), db.with_name("cargoscan.db-shm")):
        if extra.exists():
            assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


def test_an_existing_database_file_is_made_private(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
):
    """A database an earlier release left 0644 (with its -wal and -shm files) is made 0600
    by the next start of the service or the CLI, which say so; one owned by someone else
    is left to its owner, with a warning."""
    settings = make_settings(data_dir=tmp_path / "old")
    settings.data_dir.mkdir()
    db = settings.data_dir / "cargoscan.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="cargoscan.service")
    with running(settings, wait_ready=False):
        pass
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert f"database file {db} was mode 644, readable beyond its owner: made it 0600" in (
        caplog.text
    )
    # the CLI, with the -wal and -shm files there (a connection holds them open)
    db.chmod(0o644)
    holder = sqlite3.connect(db)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE IF NOT EXISTS held (x)")
    holder.commit()
    wal, shm = db.with_name("cargoscan.db-wal"), db.with_name("cargoscan.db-shm")
    try:
        for f in (db, wal, shm):
            f.chmod(0o644)
        caplog.clear()
        assert main(["user", "list", "--data-dir", str(settings.data_dir)]) == 0
        capsys.readouterr()
        for f in (db, wal, shm):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
            assert f"database file {f} was mode 644" in caplog.text
    finally:
        holder.close()
    if os.geteuid() != 0:
        return  # giving a file to another user takes root
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    other.chmod(0o644)
    os.chown(other, 65534, 65534)
    caplog.clear()
    make_engine(f"sqlite:///{other}").dispose()
    assert stat.S_IMODE(other.stat().st_mode) == 0o644
    assert f"database file {other} is mode 644 and owned by uid 65534, not by this user" in (
        caplog.text
    )


def test_metrics_can_be_put_behind_a_key(make_settings: Callable[..., Settings]):
    with running(make_settings(), wait_ready=False) as client:
        assert client.get("/metrics").status_code == 200  # open by default
    settings = make_settings(metrics_key="scrape-secret")
    assert "scrape-secret" not in repr(settings)
    with running(settings, wait_ready=False) as client:
        r = client.get("/metrics")
        assert r.status_code == 401
        assert "metrics key" in r.json()["detail"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert r.status_code == 200 and "cargoscan_" in r.text
        assert client.get("/metrics", headers=ADMIN).status_code == 200
        assert client.get("/healthz").status_code == 200  # health checks stay open


# --------------------------------------------------------------------------- item 5


def test_a_retry_with_other_metadata_is_a_409_naming_the_fields(
    make_settings: Callable[..., Settings],
):
    settings = make_settings()
    station = add_station(settings, "gate-1")
    files = scan_pngs(seed=3)
    first_meta = {"station_scan_id": "R-7", "vehicle_id": "AB-123", "operator": "kim"}

    def send(meta: dict) -> object:
        return client.post(
            f"{API}/scans", files=files, data={"metadata": json.dumps(meta)}, headers=station
        )

    with running(settings) as client:
        first = send(first_meta)
        assert first.status_code == 201, first.text
        assert send(first_meta).status_code == 200  # a true retry
        r = send({**first_meta, "vehicle_id": "XY-999", "operator": None})
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert "'R-7'" in detail and "(operator, vehicle_id differ" in detail
        assert "other metadata" in detail
        # the stored record is untouched, nothing new stored
        stored = client.get(f"{API}/scans/{first.json()['scan_id']}", headers=station).json()
        assert stored["scan"]["metadata"]["vehicle_id"] == "AB-123"
        assert client.get(f"{API}/scans", headers=ADMIN).json()["total"] == 1

        # the same when the two uploads race past the first look-up (the store's
        # unique constraint decides): the service's own upload path, called directly
        from inference.scan import ScanMetadata
        from inference.service.auth import hash_key
        from inference.service.core import ScanConflict

        service = client.app.state.service
        key = station["Authorization"].split()[1]
        sid = service.records.station_by_key_hash(hash_key(key)).id
        high, low = files["high"][1], files["low"][1]
        same = service.analyze_upload(sid, high, low, ScanMetadata.from_dict(first_meta))
        assert not same.created and same.scan.id == first.json()["scan_id"]
        other = ScanMetadata.from_dict({**first_meta, "vehicle_id": "XY-999"})
        try:
            service.analyze_upload(sid, high, low, other)
        except ScanConflict as exc:
            assert "(vehicle_id differ" in str(exc)
        else:
            raise AssertionError("a racing upload with other metadata was taken as a retry")
        assert client.get(f"{API}/scans", headers=ADMIN).json()["total"] == 1
