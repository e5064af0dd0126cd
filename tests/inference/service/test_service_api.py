"""The scanner API through HTTP (in-process ASGI client): results, retries, isolation,
listing, views, every error answer, metrics and the Open Inference Protocol."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inference.service.settings import Settings
from tests.inference.service.service_helpers import ADMIN, add_station, png16, running, scan_pngs

API = "/api/v1"


def _meta(**kw: Any) -> dict[str, str]:
    return {"metadata": json.dumps(kw)}


def _post(client: TestClient, key: dict[str, str], seed: int = 0, **meta: Any) -> Any:
    return client.post(f"{API}/scans", files=scan_pngs(seed=seed), data=_meta(**meta), headers=key)


@pytest.fixture
def app(make_settings: Callable[..., Settings]) -> Any:
    settings = make_settings()
    keys = {name: add_station(settings, name) for name in ("gate-1", "gate-2")}
    with running(settings) as client:
        yield client, keys


def test_a_scan_gets_the_design_result_and_can_be_read_back(app: Any):
    client, keys = app
    meta = {
        "station_scan_id": "G1-0001",
        "scan_time": "2024-05-01T12:30:00Z",
        "scanner": {"kind": "portal", "high_mv": 6, "low_mv": 4},
        "pixel_pitch_mm": 5,
        "container_ids": ["MSCU1234565"],
        "manifest": [{"hs_code": "0901.21", "description": "coffee", "declared_weight_kg": 9000}],
    }
    r = _post(client, keys["gate-1"], **meta)
    assert r.status_code == 201, r.text
    res = r.json()
    assert set(res) >= {
        "scan_id",
        "model",
        "processing_ms",
        "risk",
        "verdict",
        "findings",
        "cargo_region",
        "anomaly_map",
    }
    assert r.headers["location"] == f"{API}/scans/{res['scan_id']}"
    assert res["verdict"] == "alarm" and 0.5 <= res["risk"] <= 1.0  # the "alarm" card
    assert res["model"]["version"].startswith("alarm@")
    assert res["findings"] and all(f["source"] == "detector" for f in res["findings"])
    for f in res["findings"]:
        x0, y0, x1, y1 = f["box"]
        assert 0 <= x0 <= x1 <= 256 and 0 <= y0 <= y1 <= 96  # original pixels
    scan = res["scan"]
    assert scan["station"] == "gate-1" and scan["channels"] == ["high", "low"]
    assert (scan["width"], scan["height"], scan["bit_depth"]) == (256, 96, 16)
    assert scan["metadata"]["manifest"][0]["hs_code"] == "0901.21"
    assert scan["scan_time"].startswith("2024-05-01T12:30:00")

    got = client.get(f"{API}/scans/{res['scan_id']}", headers=keys["gate-1"])
    assert got.status_code == 200
    assert {k: v for k, v in got.json().items() if k != "scan"} == {
        k: v for k, v in res.items() if k != "scan"
    }
    history = client.get(f"{API}/scans/{res['scan_id']}/results", headers=keys["gate-1"]).json()
    assert [h["model"]["version"] for h in history["results"]] == [res["model"]["version"]]


@pytest.mark.parametrize("view", ["grey", "inverse", "material", "window", "edge"])
def test_views_are_full_resolution_pngs(app: Any, view: str):
    client, keys = app
    sid = _post(client, keys["gate-1"]).json()["scan_id"]
    r = client.get(f"{API}/scans/{sid}/image", params={"view": view}, headers=keys["gate-1"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (256, 96) and img.mode == "RGB"


def test_window_view_takes_level_and_width(app: Any):
    client, keys = app
    sid = _post(client, keys["gate-1"]).json()["scan_id"]
    url = f"{API}/scans/{sid}/image"
    ok = client.get(url, params={"view": "window", "level": 1, "width": 2}, headers=keys["gate-1"])
    assert ok.status_code == 200
    half = client.get(url, params={"view": "window", "level": 1}, headers=keys["gate-1"])
    assert half.status_code == 422 and "level and width" in half.json()["detail"]


def test_anomaly_map_covers_the_scan_in_stride_cells(app: Any):
    client, keys = app
    res = _post(client, keys["gate-1"]).json()
    r = client.get(res["anomaly_map"], headers=keys["gate-1"])
    assert r.status_code == 200 and r.headers["x-model-version"] == res["model"]["version"]
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.shape == (96 // 4, 256 // 4) and img.dtype == np.uint8
    assert img.max() < 128  # this model's anomaly head sits near 0.01


def test_a_retry_with_the_same_station_scan_id_stores_nothing_new(app: Any):
    client, keys = app
    first = _post(client, keys["gate-1"], station_scan_id="R-1")
    again = _post(client, keys["gate-1"], station_scan_id="R-1")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    listing = client.get(f"{API}/scans", headers=keys["gate-1"]).json()
    assert listing["total"] == 1
    # the same id from another station is another scan
    other = _post(client, keys["gate-2"], station_scan_id="R-1")
    assert other.status_code == 201 and other.json()["scan_id"] != first.json()["scan_id"]
    # other bytes under a used id: a station bug, said so
    clash = _post(client, keys["gate-1"], seed=5, station_scan_id="R-1")
    assert clash.status_code == 409 and "other image bytes" in clash.json()["detail"]
    assert client.get(f"{API}/scans", headers=keys["gate-1"]).json()["total"] == 1


def test_a_station_sees_only_its_own_scans(app: Any):
    client, keys = app
    mine = _post(client, keys["gate-1"]).json()
    _post(client, keys["gate-2"])
    sid = mine["scan_id"]
    for path in ("", "/results", "/image", "/anomaly-map"):
        r = client.get(f"{API}/scans/{sid}{path}", headers=keys["gate-2"])
        assert r.status_code == 404, path
        assert sid in r.json()["detail"]
    listing = client.get(f"{API}/scans", headers=keys["gate-2"]).json()
    assert listing["total"] == 1 and listing["items"][0]["station"] == "gate-2"
    assert (
        client.get(f"{API}/scans", params={"station": "gate-1"}, headers=keys["gate-2"]).json()[
            "items"
        ]
        == []
    )
    # the admin sees every station and can filter by one
    everything = client.get(f"{API}/scans", headers=ADMIN).json()
    assert sorted(i["station"] for i in everything["items"]) == ["gate-1", "gate-2"]
    only = client.get(f"{API}/scans", params={"station": "gate-1"}, headers=ADMIN).json()
    assert [i["scan_id"] for i in only["items"]] == [sid]
    assert client.get(f"{API}/scans/{sid}", headers=ADMIN).json()["scan"]["station"] == "gate-1"


def test_listing_pages_and_filters(make_settings: Callable[..., Settings], models: Any):
    settings = make_settings(model_path=models["clear"])
    key = add_station(settings, "gate-1")
    with running(settings) as client:
        ids = [_post(client, key, seed=k).json()["scan_id"] for k in range(3)]
        page = client.get(f"{API}/scans", params={"limit": 2}, headers=key).json()
        assert page["total"] == 3 and [i["scan_id"] for i in page["items"]] == ids[::-1][:2]
        assert all(i["verdict"] == "clear" for i in page["items"])
        rest = client.get(page["next"], headers=key).json()
        assert [i["scan_id"] for i in rest["items"]] == ids[:1] and rest["next"] is None
        assert (
            client.get(f"{API}/scans", params={"verdict": "alarm"}, headers=key).json()["total"]
            == 0
        )
        assert (
            client.get(f"{API}/scans", params={"verdict": "clear"}, headers=key).json()["total"]
            == 3
        )
        now = datetime.now(timezone.utc)
        later = {"since": (now + timedelta(minutes=1)).isoformat()}
        assert client.get(f"{API}/scans", params=later, headers=key).json()["total"] == 0
        window = {
            "since": (now - timedelta(minutes=5)).isoformat(),
            "until": (now + timedelta(minutes=1)).isoformat(),
        }
        assert client.get(f"{API}/scans", params=window, headers=key).json()["total"] == 3
        bad = client.get(f"{API}/scans", params={"verdict": "maybe"}, headers=key)
        assert bad.status_code == 422 and "verdict" in bad.json()["detail"]


def _files(**over: Any) -> dict[str, Any]:
    files = scan_pngs()
    files.update(over)
    return {k: v for k, v in files.items() if v is not None}


_SMALL = png16(np.full((96, 128), 30000, np.uint16))


@pytest.mark.parametrize(
    ("case", "files", "data", "status", "says"),
    [
        ("no high", {"high": None}, {}, 422, "high"),
        ("not an image", {"high": ("h.png", b"hello world" * 10, "image/png")}, {}, 422, "high"),
        ("empty high", {"high": ("h.png", b"", "image/png")}, {}, 422, "empty"),
        ("truncated", {"high": ("h.png", scan_pngs()["high"][1][:300], "image/png")}, {}, 422, ""),
        ("sizes differ", {"low": ("l.png", _SMALL, "image/png")}, {}, 422, "differ in size"),
        ("metadata not JSON", {}, {"metadata": "{nope"}, 422, "not valid JSON"),
        ("metadata field", {}, {"metadata": '{"pixel_pitch_mm": -1}'}, 422, "pixel_pitch_mm"),
        ("manifest", {}, {"metadata": '{"manifest": [{"hs_code": 901}]}'}, 422, "hs_code"),
        ("metadata array", {}, {"metadata": "[1, 2]"}, 422, "JSON object"),
        ("long scan id", {}, {"metadata": json.dumps({"station_scan_id": "x" * 201})}, 422, "200"),
        ("NUL scan id", {}, {"metadata": '{"station_scan_id": "a\\u0000b"}'}, 422, "control"),
        ("high as text", {"high": None}, {"high": "abc"}, 422, "high"),
        ("metadata as file", {"metadata": ("m.json", b"{}", "application/json")}, {}, 422, "meta"),
    ],
)
def test_bad_uploads_get_a_4xx_that_says_what_is_wrong(
    app: Any, case: str, files: dict[str, Any], data: dict[str, str], status: int, says: str
):
    client, keys = app
    r = client.post(f"{API}/scans", files=_files(**files), data=data, headers=keys["gate-1"])
    assert r.status_code == status, (case, r.text)
    assert says in r.json()["detail"], case
    assert client.get(f"{API}/scans", headers=keys["gate-1"]).json()["total"] == 0


def test_a_json_body_instead_of_multipart_is_a_422(app: Any):
    client, keys = app
    r = client.post(f"{API}/scans", json={"high": "x"}, headers=keys["gate-1"])
    assert r.status_code in (400, 422) and "high" in r.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "status", "says"),
    [
        ({}, 401, "missing API key"),
        ({"Authorization": "Bearer cs_not-a-key"}, 401, "unknown API key"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401, "Bearer"),
        ({"Authorization": "Bearer "}, 401, "Bearer"),
        (ADMIN, 403, "admin key cannot post"),
    ],
)
def test_keys_are_required(app: Any, headers: dict[str, str], status: int, says: str):
    client, _ = app
    r = client.post(f"{API}/scans", files=scan_pngs(), headers=headers)
    assert r.status_code == status and says in r.json()["detail"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert client.get(f"{API}/scans", headers=headers).status_code == 401


def test_unknown_scans_and_views(app: Any):
    client, keys = app
    for sid in ("nope", "%00", "a" * 3000, "00000000-0000-0000-0000-000000000000"):
        assert client.get(f"{API}/scans/{sid}", headers=keys["gate-1"]).status_code == 404
    bad = client.get(f"{API}/scans", params={"station": "a\x00"}, headers=ADMIN)
    assert bad.status_code == 422 and "station" in bad.json()["detail"]
    sid = _post(client, keys["gate-1"]).json()["scan_id"]
    r = client.get(f"{API}/scans/{sid}/image", params={"view": "xray"}, headers=keys["gate-1"])
    assert r.status_code == 422 and "view" in r.json()["detail"]
    r = client.get(
        f"{API}/scans/{sid}/anomaly-map", params={"model_version": "x@1"}, headers=keys["gate-1"]
    )
    assert r.status_code == 404


def test_limits_body_and_pixels(make_settings: Callable[..., Settings]):
    settings = make_settings(max_body_bytes=20_000, max_pixels=10_000)
    key = add_station(settings, "gate-1")
    with running(settings) as client:
        big = client.post(f"{API}/scans", files=scan_pngs(h=200, w=400), headers=key)
        assert big.status_code == 413 and "limit" in big.json()["detail"]
        # small file, many pixels (flat content compresses): caught from the header
        flat = png16(np.full((200, 400), 60000, np.uint16))
        assert len(flat) < 20_000
        r = client.post(f"{API}/scans", files={"high": ("h.png", flat, "image/png")}, headers=key)
        assert r.status_code == 413 and "too many pixels" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it streams
            yield b"x" * 15_000
            yield b"x" * 15_000

        r = client.post(
            f"{API}/scans",
            content=chunks(),
            headers={**key, "Content-Type": "multipart/form-data; boundary=zz"},
        )
        assert r.status_code == 413


def test_metrics_count_requests_by_route_and_findings(app: Any):
    client, keys = app
    sid = _post(client, keys["gate-1"]).json()["scan_id"]
    client.get(f"{API}/scans/{sid}", headers=keys["gate-1"])
    client.get(f"{API}/scans/{sid}", headers=keys["gate-2"])
    text = client.get("/metrics").text
    assert 'route="/api/v1/scans",status="201"' in text
    assert 'route="/api/v1/scans/{scan_id}",status="200"' in text
    assert 'route="/api/v1/scans/{scan_id}",status="404"' in text
    assert sid not in text  # templates, not raw paths
    assert "cargoscan_http_request_duration_seconds_bucket" in text
    assert "cargoscan_queue_depth 0.0" in text
    assert 'cargoscan_verdicts_total{verdict="alarm"} 1.0' in text
    assert 'cargoscan_findings_total{category="' in text
    assert 'cargoscan_model_info{name="alarm"' in text and "cargoscan_ready 1.0" in text


def test_a_full_queue_answers_429_with_retry_after(make_settings: Callable[..., Settings]):
    import threading

    settings = make_settings(workers=1, queue_size=0, retry_after_s=3)
    key = add_station(settings, "gate-1")
    with running(settings) as client:
        pool = client.app.state.service.pool
        release = threading.Event()
        busy = pool.submit(release.wait, 30)  # the one thread is taken
        try:
            r = _post(client, key)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 3
            assert "queue is full" in r.json()["detail"]
            assert "cargoscan_queue_rejections_total 1.0" in client.get("/metrics").text
            assert "cargoscan_queue_depth 1.0" in client.get("/metrics").text
        finally:
            release.set()
            busy.result(timeout=30)
        assert _post(client, key).status_code == 201


# --------------------------------------------------------------------------- OIP


def test_open_inference_protocol(app: Any):
    client, keys = app
    key = keys["gate-1"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "cargoscan"
    meta = client.get("/v2/models/alarm", headers=key).json()
    assert meta["name"] == "alarm" and meta["versions"][0].startswith("alarm@")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2, -1, -1]}]
    assert [o["name"] for o in meta["outputs"]] == ["heat", "box", "anomaly"]
    assert client.get("/v2/models/alarm/ready").json()["ready"] is True
    assert client.get("/v2/models/alarm", headers={}).status_code == 401

    x = np.random.default_rng(0).random((1, 2, 32, 64), dtype=np.float32)
    req = {
        "id": "r1",
        "inputs": [
            {
                "name": "input",
                "shape": [1, 2, 32, 64],
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "anomaly"}],
    }
    r = client.post("/v2/models/alarm/infer", json=req, headers=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "r1" and body["model_name"] == "alarm"
    (out,) = body["outputs"]
    assert out["name"] == "anomaly" and out["shape"] == [1, 1, 8, 16] and out["datatype"] == "FP32"
    session = client.app.state.service.models.current.engine.session
    want = session.run(["anomaly"], {"input": x})[0]
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(1, 1, 8, 16), want, atol=1e-6)
    versioned = f"/v2/models/alarm/versions/{meta['versions'][0]}"
    assert client.get(versioned, headers=key).json() == meta
    assert client.post(f"{versioned}/infer", json=req, headers=key).status_code == 200
    other = client.post("/v2/models/alarm/versions/alarm@0/infer", json=req, headers=key)
    assert other.status_code == 404 and "no version" in other.json()["error"]


def _oip(**inp: Any) -> dict[str, Any]:
    spec = {"name": "input", "shape": [1, 2, 32, 32], "datatype": "FP32", "data": [0.0] * 2048}
    spec.update(inp)
    return {"inputs": [spec]}


_OIP_ERRORS = [
    (_oip(name="x"), 400, "named 'input'"),
    (_oip(datatype="INT8"), 400, "FP32"),
    (_oip(shape=[1, 3, 32, 32]), 400, "[N, 2, H, W]"),
    (_oip(shape=[1, 2, 30, 32], data=[0.0] * 1920), 400, "multiples of 32"),
    (_oip(data=[0.0] * 10), 400, "needs 2048"),
    (_oip(data=["a"] * 2048), 400, "numbers"),
    (_oip(data=[float("nan")] * 2048), 400, "NaN"),
    (_oip(shape=[1, 2, 8192, 8192], data=[0.0]), 413, "exceeds"),
    ({"inputs": []}, 400, "exactly one"),
    ({**_oip(), "outputs": [{"name": "logits"}]}, 400, "unknown output"),
    ([1, 2], 400, "JSON object"),
]


def test_oip_rejects_bad_tensors_with_an_error(app: Any):
    client, keys = app
    key = keys["gate-1"]
    for body, status, says in _OIP_ERRORS:
        raw = json.dumps(body).encode()  # NaN goes out as the non-standard token NaN
        r = client.post("/v2/models/alarm/infer", content=raw, headers=key)
        assert r.status_code == status and says in r.json()["error"], (says, r.text)
    r = client.post("/v2/models/other/infer", json=_oip(), headers=key)
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    r = client.post("/v2/models/alarm/infer", content=b"{not json", headers=key)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
