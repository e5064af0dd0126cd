"""Reviews back to training, end to end with the real pieces: stations post scans, an
officer reviews them through the API, `cargoscan reviews export` writes the COCO layout,
`cargoscan train` fine-tunes on it mixed with synthetic data (no conversion), `cargoscan
export` and `cargoscan evaluate` run on the export, and the service rolls the new model
out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cargoscan.cli import main
from inference.service.app import open_records
from inference.service.auth import hash_password
from inference.service.settings import Settings
from tests.inference.service.service_helpers import ADMIN, ADMIN_KEY, add_station, running
from tests.inference.service.service_helpers import scan_pngs as pngs
from training.data import CocoScans
from training.synth.dataset import write_dataset

API = "/api/v1"
TINY = ["--epochs", "1", "--steps", "2", "--batch", "2", "--crop", "128"]


@pytest.mark.slow
def test_post_review_export_train_evaluate_and_roll_out(tmp_path: Path, models: dict[str, Path]):
    settings = Settings(
        data_dir=tmp_path / "service",
        model_path=models["alarm"],
        admin_key=ADMIN_KEY,
        engine_threads=1,
        check_scans=1,
    )
    key = add_station(settings, "gate-1")
    records = open_records(settings)
    records.add_user("olga", "officer", hash_password("olgas passphrase"))
    records.engine.dispose()
    synth = tmp_path / "synth"
    write_dataset(synth, count=2, seed=5, workers=1, progress=False)

    with running(settings) as c:
        r = c.post(f"{API}/auth/login", json={"username": "olga", "password": "olgas passphrase"})
        olga = {"Authorization": f"Bearer {r.json()['token']}"}
        c.cookies.clear()
        sids = []
        for k in range(4):  # big enough for 128-pixel training crops
            r = c.post(f"{API}/scans", files=pngs(h=160, w=400, seed=k), headers=key)
            assert r.status_code == 201, r.text
            sids.append(r.json()["scan_id"])

        def review(sid: str, first: dict[str, Any] | None, **body: Any) -> None:
            found = c.get(f"{API}/scans/{sid}", headers=olga).json()["findings"]
            decided = [{"finding_id": f["id"], "decision": "reject"} for f in found]
            if first is not None:
                decided[0] = {"finding_id": found[0]["id"], **first}
            body = {"findings": decided, "added": [], "comment": "", **body}
            r = c.post(f"{API}/scans/{sid}/reviews", json=body, headers=olga)
            assert r.status_code == 201, r.text

        review(sids[0], {"decision": "accept"}, verdict="inspect")
        review(
            sids[1], None, verdict="inspect",
            added=[{"category": "narcotics", "box": [150, 40, 230, 90]}],
        )  # fmt: skip
        review(sids[2], None, verdict="release")  # nothing there: a clean scan
        review(sids[3], {"decision": "relabel", "category": "currency"}, verdict="inspect")

        data = tmp_path / "reviews"
        db = ["--data-dir", str(settings.data_dir)]
        assert main(["reviews", "export", "--out", str(data), *db]) == 0
        reviewed = CocoScans(data)
        assert len(reviewed) == 4 and sum(reviewed[k].clean for k in range(4)) == 1

        run = tmp_path / "run"
        train = ["train", "--data", str(data), "--data", str(synth), "--out", str(run), *TINY]
        # Fine-tuned from the model the service runs (its ONNX file and card).
        assert main([*train, "--init", str(models["alarm"])]) == 0
        summary = json.loads((run / "config.json").read_text())
        assert summary["data"] == [str(data), str(synth)]
        assert summary["init"] == str(models["alarm"])
        model = tmp_path / "models" / "reviewed.onnx"
        exported = ["export", "--checkpoint", str(run / "last.pt"), "--out", str(model)]
        assert main([*exported, "--val", str(data)]) == 0
        card = json.loads(model.with_suffix(".json").read_text())
        assert card["training"]["data"] == [str(data), str(synth)]
        assert card["training"]["data_summary"][0]["clean_scans"] == 1
        assert card["training"]["init"]["name"] == "alarm"  # where the fine-tune started

        out = tmp_path / "eval"
        assert main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(out),
                     "--no-pictures"]) == 0  # fmt: skip
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["clean_scans"] == 1 and metrics["threat_instances"] == 3

        # the service takes the fine-tuned model; a new scan is analysed by it
        r = c.post(f"{API}/admin/model", json={"path": str(model)}, headers=ADMIN)
        assert r.status_code == 200, r.text
        r = c.post(f"{API}/scans", files=pngs(h=160, w=400, seed=9), headers=key)
        assert r.status_code == 201 and r.json()["model"]["name"] == "reviewed"
