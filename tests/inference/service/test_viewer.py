"""The viewer's server side through the in-process client: the page and its assets, the
Deep Zoom tiles (geometry, pixels equal to the rendered view, the cache, who may read
them, bad input) and the viewer settings."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference.render import VIEWS, render
from inference.scan import decode_scan
from inference.service import viewer
from inference.service.auth import hash_password
from inference.service.settings import Settings
from tests.inference.service.service_helpers import ADMIN, add_station, running, scan_pngs

W, H = 1100, 300  # three tiles across at the top level, one row


@pytest.fixture
def served(make_settings: Callable[..., Settings]) -> Iterator[dict[str, Any]]:
    settings = make_settings()
    key = add_station(settings, "gate-1")
    other = add_station(settings, "gate-2")
    with running(settings) as client:
        files = scan_pngs(h=H, w=W, seed=1)
        r = client.post("/api/v1/scans", files=files, headers=key)
        assert r.status_code == 201, r.text
        yield {
            "client": client,
            "id": r.json()["scan_id"],
            "key": key,
            "other": other,
            "files": files,
        }


def _png(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _stitch(client: TestClient, base: str, level: int, w: int, h: int) -> np.ndarray:
    """The level's picture put back together from its tiles (overlap dropped)."""
    cols, rows = math.ceil(w / viewer.TILE_SIZE), math.ceil(h / viewer.TILE_SIZE)
    out: np.ndarray | None = None
    for row in range(rows):
        for col in range(cols):
            r = client.get(f"{base}_files/{level}/{col}_{row}.png", headers=ADMIN)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png"
            tile = _png(r.content)
            x0, y0, x1, y1 = viewer.tile_bounds(w, h, col, row)
            assert tile.shape[:2] == (y1 - y0, x1 - x0)
            if out is None:
                out = np.zeros((h, w, *tile.shape[2:]), np.uint8)
            out[y0:y1, x0:x1] = tile
    assert out is not None
    return out


def test_dzi_geometry_matches_openseadragon():
    assert viewer.max_level(3000, 800) == 12
    assert viewer.level_size(3000, 800, 12) == (3000, 800)
    assert viewer.level_size(3000, 800, 11) == (1500, 400)
    assert viewer.level_size(3001, 801, 11) == (1501, 401)  # rounded up
    assert viewer.level_size(3000, 800, 0) == (1, 1)
    assert viewer.tile_bounds(1100, 300, 0, 0) == (0, 0, 513, 300)
    assert viewer.tile_bounds(1100, 300, 1, 0) == (511, 0, 1025, 300)
    assert viewer.tile_bounds(1100, 300, 2, 0) == (1023, 0, 1100, 300)
    with pytest.raises(IndexError):
        viewer.tile_bounds(1100, 300, 3, 0)
    xml = viewer.dzi_xml(W, H)
    assert 'TileSize="512"' in xml and 'Overlap="1"' in xml and 'Format="png"' in xml
    assert f'<Size Width="{W}" Height="{H}"/>' in xml


def test_page_and_assets_are_served(served: dict[str, Any]):
    client = served["client"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert "/static/vendor/openseadragon/openseadragon.min.js" in assets
    for path in [*assets, "/static/js/scan.js", "/static/js/queue.js", "/static/js/api.js"]:
        r = client.get(path)
        assert r.status_code == 200, path
    assert "javascript" in client.get("/static/js/app.js").headers["content-type"]
    assert client.get("/static/vendor/openseadragon/LICENSE.txt").status_code == 200
    assert client.get("/static/js/app.js").headers["cache-control"] == "no-cache"
    assert client.get("/static/../viewer.py").status_code == 404


def test_tiles_put_back_together_are_the_rendered_view(served: dict[str, Any]):
    client, sid, files = served["client"], served["id"], served["files"]
    scan = decode_scan(files["high"][1], files["low"][1])
    info = client.get(f"/api/v1/scans/{sid}/tiles", headers=ADMIN).json()
    assert info["width"] == W and info["height"] == H and info["has_low"] is True
    assert info["max_level"] == 11 and info["tile_size"] == 512 and info["overlap"] == 1
    assert set(info["views"]) == set(VIEWS)
    assert 0 < info["auto_window"]["width"] < 8

    base = f"/api/v1/scans/{sid}/tiles/material"
    dzi = client.get(f"{base}.dzi", headers=ADMIN)
    assert dzi.status_code == 200 and "xml" in dzi.headers["content-type"]
    assert f'Width="{W}"' in dzi.text
    top = _stitch(client, base, 11, W, H)
    assert np.array_equal(top, render(scan, "material"))

    # A grey view travels as one channel; a lower level is the INTER_AREA reduction.
    grey = render(scan, "grey")[:, :, 0]
    assert np.array_equal(_stitch(client, f"/api/v1/scans/{sid}/tiles/grey", 11, W, H), grey)
    half = _stitch(client, f"/api/v1/scans/{sid}/tiles/grey", 10, 550, 150)
    assert np.array_equal(half, cv2.resize(grey, (550, 150), interpolation=cv2.INTER_AREA))
    one = client.get(f"/api/v1/scans/{sid}/tiles/grey_files/0/0_0.png", headers=ADMIN)
    assert _png(one.content).shape == (1, 1)


def test_window_view_takes_level_and_width(served: dict[str, Any]):
    client, sid, files = served["client"], served["id"], served["files"]
    scan = decode_scan(files["high"][1], files["low"][1])
    base = f"/api/v1/scans/{sid}/tiles/window"
    r = client.get(f"{base}_files/11/0_0.png?level=1.5&width=0.5", headers=ADMIN)
    assert r.status_code == 200
    want = render(scan, "window", window=(1.5, 0.5))[:, :513, 0]
    assert np.array_equal(_png(r.content), want)
    auto = client.get(f"{base}_files/11/0_0.png", headers=ADMIN)
    assert np.array_equal(_png(auto.content), render(scan, "window")[:, :513, 0])
    assert client.get(f"{base}.dzi?level=1.5&width=0.5", headers=ADMIN).status_code == 200
    for bad in (
        "level=1.5",
        "width=0.5",
        "level=1&width=0",
        "level=nan&width=1",
        "level=x&width=1",
    ):
        r = client.get(f"{base}_files/11/0_0.png?{bad}", headers=ADMIN)
        assert r.status_code == 422, bad
        assert r.json()["detail"]


def test_each_view_is_rendered_once_and_cached(served: dict[str, Any]):
    client, sid = served["client"], served["id"]
    service = client.app.state.service  # type: ignore[attr-defined]
    base = f"/api/v1/scans/{sid}/tiles/edge_files"
    urls = [f"{base}/11/{c}_0.png" for c in range(3)] * 3
    answers: list[int] = []

    def get(url: str) -> None:
        answers.append(client.get(url, headers=ADMIN).status_code)

    threads = [threading.Thread(target=get, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * len(urls)
    cache = service.tile_cache
    builds = cache.builds
    assert builds == 2  # the decoded scan and the edge view, however many asked at once
    client.get(f"{base}/9/0_0.png", headers=ADMIN)
    assert cache.builds == builds and cache.hits > 0
    assert 0 < cache.nbytes <= cache.max_bytes


def test_render_cache_drops_the_least_recently_used():
    cache = viewer.RenderCache(max_bytes=100)
    for k in "abc":
        cache.get(k, lambda k=k: k, lambda _: 40)
    assert cache.nbytes == 80 and cache.builds == 3
    cache.get("b", lambda: "B", lambda _: 40)  # a hit: nothing built
    assert cache.builds == 3
    cache.get("huge", lambda: "h", lambda _: 1000)  # larger than the cache: not kept
    assert cache.nbytes == 80
    cache.get("a", lambda: "again", lambda _: 40)
    assert cache.builds == 5  # "a" had been dropped


def test_tiles_are_checked_like_the_scan(served: dict[str, Any]):
    client, sid = served["client"], served["id"]
    tile = f"/api/v1/scans/{sid}/tiles/grey_files/11/0_0.png"
    dzi = f"/api/v1/scans/{sid}/tiles/grey.dzi"
    info = f"/api/v1/scans/{sid}/tiles"
    for url in (tile, dzi, info):
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get(url, headers=served["other"]).status_code == 404  # not its scan
        assert client.get(url, headers=served["key"]).status_code == 200  # its own
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.get(tile.replace(sid, missing), headers=ADMIN).status_code == 404
    assert client.get(tile.replace(sid, "x"), headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("grey_files/12/0_0.png", 404),  # above the top level
        ("grey_files/11/3_0.png", 404),  # right of the last column
        ("grey_files/11/0_1.png", 404),  # below the last row
        ("grey_files/10/2_0.png", 404),
        ("grey_files/-1/0_0.png", 404),
        ("grey_files/11/a_0.png", 422),
        ("sepia_files/11/0_0.png", 422),
        ("sepia.dzi", 422),
    ],
)
def test_bad_tile_requests_get_a_clear_4xx(served: dict[str, Any], path: str, status: int):
    r = served["client"].get(f"/api/v1/scans/{served['id']}/tiles/{path}", headers=ADMIN)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_viewer_config_names_the_models_categories(served: dict[str, Any]):
    client = served["client"]
    assert client.get("/api/v1/viewer/config").status_code == 401
    config = client.get("/api/v1/viewer/config", headers=ADMIN).json()
    engine = client.app.state.service.models.current.engine  # type: ignore[attr-defined]
    assert config["categories"] == list(engine.categories)  # what a review may use
    assert set(config["colours"]) >= {*config["categories"], "anomaly"}
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in config["colours"].values())
    assert config["views"] == list(VIEWS)


def test_an_officer_reads_tiles_with_the_session_cookie(served: dict[str, Any]):
    client, sid = served["client"], served["id"]
    service = client.app.state.service  # type: ignore[attr-defined]
    service.records.add_user("olga", "officer", hash_password("a good password"))
    tile = f"/api/v1/scans/{sid}/tiles/inverse_files/11/1_0.png"
    login = client.post(
        "/api/v1/auth/login", json={"username": "olga", "password": "a good password"}
    )
    assert login.status_code == 200, login.text
    session = client.cookies.get("cargoscan_session")
    assert session
    assert client.get(tile).status_code == 200  # the cookie, no Authorization header
    assert client.get(f"/api/v1/scans/{sid}/tiles").status_code == 200
    csrf = {"X-CSRF-Token": client.cookies.get("cargoscan_csrf") or ""}
    assert client.post("/api/v1/auth/logout", headers=csrf).status_code == 200
    client.cookies.clear()
    assert client.get(tile).status_code == 401
    client.cookies.set("cargoscan_session", session)  # the old session: revoked
    assert client.get(tile).status_code == 401
