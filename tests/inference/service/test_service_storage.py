"""Storage: content-addressed files, the SQLite settings, migrations that match the models,
and the same service on PostgreSQL (when CARGOSCAN_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from inference.service import storage
from inference.service.db import Base, make_engine, migrate, normalise_url
from inference.service.settings import Settings
from inference.service.storage import BlobStore
from tests.inference.service.service_helpers import ADMIN, add_station, running, scan_pngs

API = "/api/v1"


def test_blobs_are_named_by_their_sha256_and_written_once(tmp_path: Path):
    store = BlobStore(tmp_path / "blobs")
    data = b"\x89PNG fake scan bytes"
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    path = store.path(digest)
    assert path == tmp_path / "blobs" / digest[:2] / digest and path.read_bytes() == data
    mtime = path.stat().st_mtime_ns
    assert store.put(data) == digest and path.stat().st_mtime_ns == mtime  # not rewritten
    assert store.get(digest) == data and store.exists(digest)
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind
    with pytest.raises(ValueError, match="SHA-256"):
        store.path("../../etc/passwd")


def test_large_blobs_go_through_o_direct_whole_at_any_length(tmp_path: Path):
    """A channel's bytes are written from an aligned buffer with O_DIRECT; lengths that are
    not a multiple of the block, and a smaller blob after a larger one (the thread's buffer
    is reused, its tail must not leak into the file), come back byte for byte."""
    store = BlobStore(tmp_path / "blobs")
    rng = np.random.default_rng(5)
    sizes = [storage.DIRECT_MIN_BYTES + 4096 * 300 + 1, storage.DIRECT_MIN_BYTES, 4_500_017]
    for size in sizes:
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        tmp = tmp_path / f"probe{size}"
        wrote_direct = storage.write_direct(tmp, data)
        if not wrote_direct:
            pytest.skip(f"{tmp_path} refuses O_DIRECT: the buffered write serves it")
        assert tmp.read_bytes() == data
        digest = store.put(data)
        assert store.get(digest) == data and store.path(digest).stat().st_size == size
    small = b"x" * 1000  # under DIRECT_MIN_BYTES: the plain write
    assert not storage.write_direct(tmp_path / "small", small)
    assert not (tmp_path / "small").exists()
    assert store.get(store.put(small)) == small
    assert not list((tmp_path / "blobs").rglob(".*.tmp"))


def test_sqlite_runs_with_wal_foreign_keys_and_full_sync(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()


def test_migrations_create_exactly_the_models_schema(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    migrate(engine)  # idempotent: a second start changes nothing
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert compare_metadata(ctx, Base.metadata) == []
        assert ctx.get_current_revision() == "0007"
    engine.dispose()


def test_postgres_urls_get_the_psycopg3_driver():
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL server, dropped afterwards."""
    url = os.environ.get("CARGOSCAN_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("CARGOSCAN_TEST_POSTGRES_URL is not set (e.g. postgresql://postgres@host/test)")
    schema = f"cargoscan_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_the_service_on_postgresql(make_settings: Callable[..., Settings], postgres_url: str):
    settings = make_settings(database_url=postgres_url)
    key = add_station(settings, "gate-1")
    meta = {"metadata": json.dumps({"station_scan_id": "P-1", "scan_time": "2024-05-01T12:00Z"})}
    with running(settings) as client:
        first = client.post(f"{API}/scans", files=scan_pngs(), data=meta, headers=key)
        assert first.status_code == 201, first.text
        again = client.post(f"{API}/scans", files=scan_pngs(), data=meta, headers=key)
        assert again.status_code == 200 and again.json() == first.json()
        listing = client.get(f"{API}/scans", params={"verdict": "alarm"}, headers=ADMIN).json()
        assert [i["scan_id"] for i in listing["items"]] == [first.json()["scan_id"]]
        assert listing["items"][0]["scan_time"].startswith("2024-05-01T12:00:00")
        # values PostgreSQL refuses (NUL) or would not fit a column: 4xx, never 500
        for path in ("%00", "x" * 100):
            assert client.get(f"{API}/scans/{path}", headers=key).status_code == 404
        nul = json.dumps({"station_scan_id": "a\x00"})
        r = client.post(f"{API}/scans", files=scan_pngs(), data={"metadata": nul}, headers=key)
        assert r.status_code == 422
        long_id = json.dumps({"station_scan_id": "x" * 201})
        r = client.post(f"{API}/scans", files=scan_pngs(), data={"metadata": long_id}, headers=key)
        assert r.status_code == 422
        bad = client.get(f"{API}/scans", params={"station": "a\x00"}, headers=ADMIN)
        assert bad.status_code == 422
    with running(settings) as client:  # restart on the same database
        got = client.get(f"{API}/scans/{first.json()['scan_id']}", headers=key)
        assert got.status_code == 200 and got.json() == first.json()
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.get_current_revision() == "0007"
        assert compare_metadata(ctx, Base.metadata) == []
    engine.dispose()


def _tiff(png: bytes) -> bytes:
    """The same 16-bit pixels as an uncompressed TIFF (what the station client sends)."""
    import io

    import cv2
    import numpy as np
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED))
    return buf.getvalue()


def test_tiff_and_png_uploads_are_stored_whole_with_their_anomaly_map(
    make_settings: Callable[..., Settings],
):
    """The blobs are written beside the analysis, but all are on disk, named by their
    SHA-256, when the answer comes; TIFF and PNG of the same pixels get the same result
    and byte-identical anomaly maps (the map's name is in the result's row)."""
    settings = make_settings()
    key = add_station(settings, "gate-t")
    pngs = scan_pngs(seed=3)
    tiffs = {k: (f"{k}.tif", _tiff(v[1]), "image/tiff") for k, v in pngs.items()}
    blobs = BlobStore(settings.data_dir / "blobs")
    bodies = []
    with running(settings) as client:
        for n, files in enumerate((pngs, tiffs)):
            meta = {"metadata": json.dumps({"station_scan_id": f"T-{n}"})}
            r = client.post(f"{API}/scans", files=files, data=meta, headers=key)
            assert r.status_code == 201, r.text
            body = r.json()
            bodies.append(body)
            for _, data, _ in files.values():
                digest = hashlib.sha256(data).hexdigest()
                assert blobs.exists(digest) and blobs.get(digest) == data
            amap = client.get(body["anomaly_map"], headers=key)
            assert amap.status_code == 200 and amap.content.startswith(b"\x89PNG")
            assert blobs.get(hashlib.sha256(amap.content).hexdigest()) == amap.content
        maps = [client.get(b["anomaly_map"], headers=key).content for b in bodies]
    assert maps[0] == maps[1]
    for field in ("verdict", "risk", "findings"):
        assert bodies[0][field] == bodies[1][field]
    assert not list((settings.data_dir / "blobs").glob("*/.*.tmp"))  # no write left behind


def test_the_channels_are_on_disk_before_the_network_runs(
    make_settings: Callable[..., Settings],
):
    """The channels are hashed and written during the pre-processing and waited for before
    the network starts (its two threads stall together when a write takes one of their
    cores); the anomaly map is written beside the decoding of the network's outputs; all
    three are on disk when the answer comes."""
    from inference.scan import ScanMetadata
    from inference.service.core import Service

    service = Service(make_settings())
    service.open()
    try:
        service.load_startup_model()
        engine = service.models.current.engine
        station = service.records.add_station("gate-w", "x" * 64).id
        files = scan_pngs(seed=4)
        high, low = files["high"][1], files["low"][1]
        on_disk_at_run: list[list[bool]] = []
        network = engine.run

        def run(model_input):  # the real network, noting what was stored when it began
            on_disk_at_run.append(
                [service.blobs.exists(hashlib.sha256(b).hexdigest()) for b in (high, low)]
            )
            return network(model_input)

        engine.run = run
        meta = ScanMetadata.from_dict({"station_scan_id": "W-1"})
        done = service.analyze_upload(station, high, low, meta)
        record = service.records.get_scan(done.scan.id, station)
    finally:
        service.close()
    assert on_disk_at_run == [[True, True]]
    assert record is not None and record[1] is not None
    assert service.blobs.get(record[1].anomaly_sha256).startswith(b"\x89PNG")
