"""The officer's shift through HTTP (in-process ASGI client, the untrained ``clear`` test
model): CLEAR scans released in bulk, each an audited review; every Nth kept for review;
what the queue rows carry (top finding, thumbnail); bad requests answered 4xx."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from inference.service.db import AuditEntry, ResultRecord
from inference.service.settings import Settings
from inference.service.shift import BULK_COMMENT
from tests.inference.service.accounts import API, add_user, bearer, login, post_scan
from tests.inference.service.service_helpers import ADMIN, ADMIN_KEY, add_station, running

RELEASE = f"{API}/queue/release-clear"


@pytest.fixture(scope="module")
def shift(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[Any]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("shift") / "data",
        model_path=models["clear"],
        admin_key=ADMIN_KEY,
        engine_threads=1,
        check_scans=2,
    )
    gate = add_station(settings, "gate-1")
    add_user(settings, "olga", "officer")
    with running(settings) as client:
        yield client, gate, bearer(login(client, "olga")["token"])


def _alarm(client: Any, scan_id: str) -> None:
    """Give the scan a newer result that alarms (as a second model would)."""
    records = client.app.state.service.records
    _, result = records.get_scan(scan_id, None)
    body = {
        **result.body,
        "verdict": "alarm",
        "risk": 0.9,
        "model": {**result.body["model"], "version": "second-model"},
        "findings": [
            {"id": 1, "category": "firearm", "score": 0.9, "box": [1, 1, 20, 20]},
            {"id": 2, "category": "person", "score": 0.95, "box": [5, 5, 30, 30]},
        ],
    }
    assert records.add_result(
        ResultRecord(
            scan_id=scan_id,
            model_name=result.model_name,
            model_version="second-model",
            model_sha256=result.model_sha256,
            verdict="alarm",
            risk=0.9,
            processing_ms=1.0,
            anomaly_sha256=result.anomaly_sha256,
            body=body,
        )
    )


def test_clear_scans_are_released_in_bulk_with_every_third_kept(shift: Any):
    client, gate, olga = shift
    ids = [post_scan(client, gate, seed=40 + i) for i in range(6)]
    queue = client.get(f"{API}/queue", params={"verdict": "clear"}, headers=olga).json()
    assert {it["id"] for it in queue["items"]} >= set(ids)

    r = client.post(RELEASE, json={"scan_ids": ids, "sample_every": 3}, headers=olga)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["kept_for_review"] == [ids[2], ids[5]]  # the 3rd and the 6th
    assert out["released"] == [ids[0], ids[1], ids[3], ids[4]]
    assert out["skipped"] == []

    for sid in out["released"]:
        (review,) = client.get(f"{API}/scans/{sid}/reviews", headers=olga).json()["items"]
        assert review["verdict"] == "release" and review["officer"] == "olga"
        assert review["findings"] == [] and review["comment"] == BULK_COMMENT
    pending = client.get(f"{API}/queue", params={"limit": 200}, headers=olga).json()["items"]
    waiting = {it["id"] for it in pending}
    assert set(out["kept_for_review"]) <= waiting
    assert not set(out["released"]) & waiting
    reviewed = client.get(f"{API}/queue", params={"status": "reviewed"}, headers=olga).json()
    verdicts = {it["id"]: it["review_verdict"] for it in reviewed["items"]}
    assert all(verdicts[sid] == "release" for sid in out["released"])

    # Audited as single reviews are: one "review" entry per released scan, by olga.
    engine = client.app.state.service.records.engine
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditEntry.subject, AuditEntry.actor).where(AuditEntry.kind == "review")
        ).all()
    assert {s for s, a in rows if a == "user:olga"} >= set(out["released"])

    # Again: the released ones are skipped, the kept ones released (no sampling now).
    again = client.post(RELEASE, json={"scan_ids": ids}, headers=olga).json()
    assert sorted(again["released"]) == sorted(out["kept_for_review"])
    assert {s["id"] for s in again["skipped"]} == set(out["released"])
    assert {s["reason"] for s in again["skipped"]} == {"already reviewed"}


def test_a_scan_that_is_not_clear_stops_the_whole_release(shift: Any):
    client, gate, olga = shift
    clear, alarm = post_scan(client, gate, seed=60), post_scan(client, gate, seed=61)
    _alarm(client, alarm)
    r = client.post(RELEASE, json={"scan_ids": [clear, alarm]}, headers=olga)
    assert r.status_code == 422 and alarm in r.json()["detail"]
    assert "not CLEAR" in r.json()["detail"]
    assert client.get(f"{API}/scans/{clear}/reviews", headers=olga).json()["items"] == []
    # The queue row names the alarm's top finding (the highest score).
    rows = client.get(f"{API}/queue", params={"limit": 200}, headers=olga).json()["items"]
    row = next(it for it in rows if it["id"] == alarm)
    assert row["top_finding"] == {"category": "person", "score": 0.95}
    assert next(it for it in rows if it["id"] == clear)["top_finding"] is None


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"scan_ids": []}, 422, "at least 1"),
        ({"scan_ids": "abc"}, 422, "list"),
        ({}, 422, "Field required"),
        ({"scan_ids": ["x"], "sample_every": 1}, 422, "greater than or equal to 2"),
        ({"scan_ids": [str(uuid.UUID(int=7))]}, 404, "no scan"),
        ({"scan_ids": ["../../etc/passwd"]}, 404, "no scan"),
        ({"scan_ids": ["a"] * 501}, 422, "at most 500"),
    ],
)
def test_bad_bulk_requests_get_a_4xx_with_a_message(
    shift: Any, body: dict[str, Any], status: int, words: str
):
    client, _, olga = shift
    r = client.post(RELEASE, json=body, headers=olga)
    assert r.status_code == status, r.text
    assert words in str(r.json()["detail"])


def test_duplicates_nul_and_callers_without_an_account(shift: Any):
    client, gate, olga = shift
    sid = post_scan(client, gate, seed=70)
    r = client.post(RELEASE, json={"scan_ids": [sid, sid]}, headers=olga)
    assert r.status_code == 422 and "once" in r.json()["detail"]
    r = client.post(RELEASE, json={"scan_ids": [sid], "comment": "a\x00b"}, headers=olga)
    assert r.status_code == 422 and "NUL" in r.json()["detail"]
    for who in (ADMIN, gate, {}):  # the admin key and stations write no review
        assert client.post(RELEASE, json={"scan_ids": [sid]}, headers=who).status_code in (
            401,
            403,
        )
    assert client.get(f"{API}/scans/{sid}/reviews", headers=olga).json()["items"] == []


def test_the_thumbnail_is_a_small_grey_picture_of_the_scan(shift: Any):
    client, gate, olga = shift
    sid = post_scan(client, gate, seed=80, size=(120, 480))
    r = client.get(f"{API}/scans/{sid}/thumbnail.png", headers=olga)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.shape == (40, 160)  # 160 wide, the scan's proportions
    assert img.min() < 200 and img.max() > 240  # cargo darker than the air around it
    assert client.get(f"{API}/scans/{uuid.uuid4()}/thumbnail.png", headers=olga).status_code == 404
