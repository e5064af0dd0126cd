"""Model roll-out (success and every failing step), readiness, restarts on the same data
directory, and the `cargoscan station` command."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cargoscan.cli import main
from inference.service.settings import Settings
from tests.inference.service.service_helpers import ADMIN, add_station, running, scan_pngs

API = "/api/v1"


def _post(client: Any, key: dict[str, str], seed: int = 0, **meta: Any) -> Any:
    data = {"metadata": json.dumps(meta)} if meta else {}
    return client.post(f"{API}/scans", files=scan_pngs(seed=seed), data=data, headers=key)


def _version(client: Any) -> str:
    return client.get("/readyz").json()["model"]["version"]


def test_rollout_swaps_the_model_and_results_say_which_made_them(
    make_settings: Callable[..., Settings], models: dict[str, Path]
):
    settings = make_settings()
    key = add_station(settings, "gate-1")
    with running(settings) as client:
        before = _post(client, key).json()
        assert before["verdict"] == "alarm" and before["model"]["version"].startswith("alarm@")
        r = client.post(f"{API}/admin/model", json={"path": str(models["clear"])}, headers=ADMIN)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["version"].startswith("clear@")
        assert body["previous"]["version"] == before["model"]["version"]
        assert [c["scan_id"] for c in body["checked"]] == [before["scan_id"]]  # a stored scan
        assert body["warmup_ms"] > 0
        assert _version(client) == body["model"]["version"]
        after = _post(client, key, seed=1).json()
        assert after["verdict"] == "clear" and after["model"] == body["model"]
        # the first scan keeps the result the first model gave it
        old = client.get(f"{API}/scans/{before['scan_id']}", headers=key).json()
        assert old["model"] == before["model"] and old["verdict"] == "alarm"
        state = client.get(f"{API}/admin/model", headers=ADMIN).json()
        assert state["model"] == body["model"] and state["last_activation"]["source"] == "admin"
        text = client.get("/metrics").text
        assert 'cargoscan_model_rollouts_total{outcome="succeeded"} 1.0' in text
        assert 'cargoscan_model_info{name="clear"' in text and 'name="alarm"' not in text


@pytest.mark.parametrize(
    ("which", "status", "says"),
    [
        ("missing", 422, "no model file"),
        ("badsha", 422, "load: "),
        ("nan", 422, "check: "),
        ("notonnx", 422, "load: "),
    ],
)
def test_a_failed_rollout_keeps_the_old_model_serving(
    make_settings: Callable[..., Settings],
    models: dict[str, Path],
    tmp_path: Path,
    which: str,
    status: int,
    says: str,
):
    settings = make_settings()
    key = add_station(settings, "gate-1")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    junk.with_suffix(".json").write_text(json.loads(json.dumps("{}")))
    paths = {"missing": tmp_path / "nope.onnx", "notonnx": junk, **models}
    with running(settings) as client:
        _post(client, key)
        serving = _version(client)
        r = client.post(f"{API}/admin/model", json={"path": str(paths[which])}, headers=ADMIN)
        assert r.status_code == status and says in r.json()["detail"], r.text
        if which != "missing":
            assert f"still serving {serving}" in r.json()["detail"]
        assert _version(client) == serving
        assert _post(client, key, seed=2).json()["model"]["version"] == serving


def test_only_the_admin_may_roll_out(
    make_settings: Callable[..., Settings], models: dict[str, Path]
):
    settings = make_settings()
    key = add_station(settings, "gate-1")
    body = {"path": str(models["clear"])}
    with running(settings) as client:
        assert client.post(f"{API}/admin/model", json=body, headers=key).status_code == 403
        assert client.post(f"{API}/admin/model", json=body).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post(f"{API}/admin/model", json=body, headers=wrong).status_code == 401
        assert client.post(f"{API}/admin/model", json={}, headers=ADMIN).status_code == 422
    off = make_settings(admin_key=None, data_dir=settings.data_dir)
    with running(off) as client:
        r = client.post(f"{API}/admin/model", json=body, headers=ADMIN)
        assert r.status_code == 403 and "CARGOSCAN_ADMIN_KEY" in r.json()["detail"]


def test_not_ready_without_a_model(make_settings: Callable[..., Settings], tmp_path: Path):
    settings = make_settings(model_path=tmp_path / "absent.onnx")
    key = add_station(settings, "gate-1")
    with running(settings, wait_ready=False) as client:
        deadline = time.monotonic() + 60
        while not (r := client.get("/readyz")).json()["reason"].startswith("no usable model"):
            assert time.monotonic() < deadline, r.json()  # the (failing) load is still going
            time.sleep(0.05)
        assert r.status_code == 503 and "absent.json" in r.json()["reason"]
        assert client.get("/healthz").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200
        r = _post(client, key)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert "cargoscan_ready 0.0" in client.get("/metrics").text


def test_a_restart_keeps_every_scan_result_and_the_rolled_out_model(
    make_settings: Callable[..., Settings], models: dict[str, Path]
):
    settings = make_settings()
    key = add_station(settings, "gate-1")
    with running(settings) as client:
        first = _post(client, key, station_scan_id="S-1").json()
        client.post(f"{API}/admin/model", json={"path": str(models["clear"])}, headers=ADMIN)
        second = _post(client, key, seed=1, station_scan_id="S-2").json()
        image = client.get(f"{API}/scans/{first['scan_id']}/image", headers=key).content
    with running(settings) as client:  # same data directory, new process state
        assert _version(client) == second["model"]["version"]  # the roll-out survived
        for res in (first, second):
            got = client.get(f"{API}/scans/{res['scan_id']}", headers=key).json()
            assert got == res
            amap = client.get(res["anomaly_map"], headers=key)
            assert amap.status_code == 200
        assert client.get(f"{API}/scans/{first['scan_id']}/image", headers=key).content == image
        # a retry after the restart is still recognised
        again = _post(client, key, station_scan_id="S-1")
        assert again.status_code == 200 and again.json() == first
        assert client.get(f"{API}/scans", headers=key).json()["total"] == 2
    # an operator who points the configuration at another model wins over the old roll-out
    moved = make_settings(model_path=models["alarm"].with_name("base.onnx"))
    with running(moved) as client:
        assert _version(client).startswith("base@")


def test_station_add_prints_a_working_key(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
):
    settings = make_settings()
    args = ["--data-dir", str(settings.data_dir)]
    assert main(["station", "add", "gate-9", *args]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("cs_") and len(key) > 40
    assert main(["station", "add", "gate-9", *args]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["station", "list", *args]) == 0
    assert capsys.readouterr().out.startswith("gate-9\t")
    db = (settings.data_dir / "cargoscan.db").read_bytes()
    assert key.encode() not in db  # only its hash is stored
    with running(settings) as client:
        r = _post(client, {"Authorization": f"Bearer {key}"})
        assert r.status_code == 201 and r.json()["scan"]["station"] == "gate-9"


def test_draining_refuses_new_scans_but_still_answers_reads(
    make_settings: Callable[..., Settings],
):
    settings = make_settings()
    key = add_station(settings, "gate-1")
    with running(settings) as client:
        first = _post(client, key, station_scan_id="D-1").json()
        sid = first["scan_id"]
        # what the SIGTERM hook of `cargoscan serve` does before uvicorn stops listening
        client.app.state.service.draining = True
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "draining"
        r = _post(client, key, seed=1)
        assert r.status_code == 503 and "shutting down" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
        assert client.get(f"{API}/scans/{sid}", headers=key).status_code == 200
        retry = _post(client, key, station_scan_id="D-1")  # needs no model: still answered
        assert retry.status_code == 200 and retry.json() == first


def _site_file(model: Path, tmp_path: Path, threshold: float, site: str = "gate 1") -> Path:
    """A site's operating point for `model` setting every category's threshold."""
    card = json.loads(model.with_suffix(".json").read_text())
    op = {
        "kind": "cargoscan-operating-point",
        "site": site,
        "model_sha256": card["onnx"]["sha256"],
        "thresholds": dict.fromkeys(card["categories"], threshold),
        "review_thresholds": dict.fromkeys(card["categories"], threshold),
    }
    path = tmp_path / f"site-{threshold}.json"
    path.write_text(json.dumps(op))
    return path


def test_a_site_operating_point_rolls_out_and_survives_a_restart(
    make_settings: Callable[..., Settings], models: dict[str, Path], tmp_path: Path
):
    # The "alarm" model alarms on every scan at its card's thresholds (0.01); the site's
    # operating point (0.99) clears them, and results name the site.
    settings = make_settings()
    key = add_station(settings, "gate-1")
    strict = _site_file(models["alarm"], tmp_path, 0.99)
    with running(settings) as client:
        assert _post(client, key).json()["verdict"] == "alarm"
        body = {"path": str(models["alarm"]), "operating_point": str(strict)}
        r = client.post(f"{API}/admin/model", json=body, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["model"]["operating_point"] == "gate 1"
        after = _post(client, key, seed=1).json()
        assert after["verdict"] == "clear" and after["model"]["operating_point"] == "gate 1"
        state = client.get(f"{API}/admin/model", headers=ADMIN).json()
        assert state["operating_point"] == str(strict.resolve())
        # One made for another model is refused; the site's stays.
        other = _site_file(models["alarm"], tmp_path, 0.5)
        doc = json.loads(other.read_text())
        doc["model_sha256"] = "0" * 64
        other.write_text(json.dumps(doc))
        r = client.post(
            f"{API}/admin/model",
            json={"path": str(models["alarm"]), "operating_point": str(other)},
            headers=ADMIN,
        )
        assert r.status_code == 422 and "commission the site again" in r.json()["detail"]
        missing = {"path": str(models["alarm"]), "operating_point": str(tmp_path / "no.json")}
        r = client.post(f"{API}/admin/model", json=missing, headers=ADMIN)
        assert r.status_code == 422 and "no operating-point file" in r.json()["detail"]
        assert _post(client, key, seed=2).json()["model"]["operating_point"] == "gate 1"
    with running(settings) as client:  # a restart keeps the site's operating point
        assert _post(client, key, seed=3).json()["model"].get("operating_point") == "gate 1"


def test_serve_takes_an_operating_point_from_its_settings(
    make_settings: Callable[..., Settings], models: dict[str, Path], tmp_path: Path
):
    strict = _site_file(models["alarm"], tmp_path, 0.99, site="north")
    settings = make_settings(operating_point=strict)
    key = add_station(settings, "gate-1")
    with running(settings) as client:
        res = _post(client, key).json()
        assert res["verdict"] == "clear" and res["model"]["operating_point"] == "north"
