"""Reviews through HTTP (in-process ASGI client): reviews that only append, who sees
whose, bad bodies, re-opening, the queue, the review export, and the same on PostgreSQL
when CARGOSCAN_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cargoscan.cli import main
from inference.service.settings import Settings
from tests.inference.service import test_service_storage
from tests.inference.service.accounts import (
    API,
    PASSWORD,
    World,
    add_user,
    bearer,
    findings,
    login,
    post_scan,
    review_body,
)
from tests.inference.service.service_helpers import (
    add_station,
    running,
    scan_pngs,
)

postgres_url = test_service_storage.postgres_url  # the same fresh-schema fixture


# --------------------------------------------------------------------------- reviews


def test_an_officer_sees_only_their_own_reviews_and_supervisors_see_all(world: World):
    c, who = world.client, world.who
    sid = post_scan(c, who["gate-2"], seed=4)
    first = c.post(
        f"{API}/scans/{sid}/reviews", json=review_body(c, who["olga"], sid), headers=who["olga"]
    )
    assert first.status_code == 201, first.text
    # another officer can neither read olga's review nor overrule it
    theirs = c.get(f"{API}/scans/{sid}/reviews", headers=who["omar"]).json()
    assert theirs["items"] == [] and theirs["review_status"] == "reviewed"
    r = c.post(
        f"{API}/scans/{sid}/reviews", json=review_body(c, who["omar"], sid), headers=who["omar"]
    )
    assert r.status_code == 409 and "re-open" in r.json()["detail"]
    # olga may correct herself: appended, not replaced
    again = c.post(
        f"{API}/scans/{sid}/reviews",
        json=review_body(c, who["olga"], sid, verdict="inspect", comment="second look"),
        headers=who["olga"],
    )
    assert again.status_code == 201
    mine = c.get(f"{API}/scans/{sid}/reviews", headers=who["olga"]).json()["items"]
    assert [x["verdict"] for x in mine] == ["release", "inspect"]
    for boss in ("sue", "ada", "admin-key"):
        seen = c.get(f"{API}/scans/{sid}/reviews", headers=who[boss]).json()["items"]
        assert [x["id"] for x in seen] == [first.json()["id"], again.json()["id"]]
    # a supervisor re-opens it; now omar may review, and the history keeps all three
    r = c.post(f"{API}/scans/{sid}/reopen", json={"reason": "look at the roof"}, headers=who["sue"])
    assert r.status_code == 200 and r.json()["review_status"] == "reopened"
    assert r.json()["by"] == "sue" and r.json()["reason"] == "look at the roof"
    assert c.get(f"{API}/scans/{sid}", headers=who["omar"]).json()["review_status"] == "reopened"
    r = c.post(f"{API}/scans/{sid}/reopen", headers=who["sue"])
    assert r.status_code == 409  # already re-opened
    third = c.post(
        f"{API}/scans/{sid}/reviews", json=review_body(c, who["omar"], sid), headers=who["omar"]
    )
    assert third.status_code == 201
    history = c.get(f"{API}/scans/{sid}/reviews", headers=who["sue"]).json()
    assert [x["officer"] for x in history["items"]] == ["olga", "olga", "omar"]
    assert history["review_status"] == "reviewed"


# --------------------------------------------------------------------------- review content


def test_a_review_stores_decisions_added_boxes_verdict_officer_time_and_model(world: World):
    c, who = world.client, world.who
    # 192 x 768 px: room for several separate regions (overlapping findings merge)
    sid = post_scan(c, who["gate-1"], seed=5, size=(192, 768), manifest=[
        {"hs_code": "0901.21", "description": "coffee", "declared_weight_kg": 9000}
    ])  # fmt: skip
    scan = c.get(f"{API}/scans/{sid}", headers=who["olga"]).json()
    found = scan["findings"]
    assert len(found) >= 3, "the alarm model marks several regions"
    assert scan["review_status"] == "pending"
    cats = c.get(f"{API}/categories", headers=who["olga"]).json()["categories"]
    assert "narcotics" in cats and "anomaly" not in cats
    decided = [{"finding_id": f["id"], "decision": "reject"} for f in found]
    decided[0] = {"finding_id": found[0]["id"], "decision": "accept", "category": None}
    decided[1] = {"finding_id": found[1]["id"], "decision": "relabel", "category": "currency"}
    body = {
        "findings": decided,
        "added": [{"category": "narcotics", "box": [10, 20, 60.5, 70]}],
        "verdict": "inspect",
        "comment": "bricks behind the coffee\nsecond line",
    }
    before = datetime.now(timezone.utc)
    r = c.post(f"{API}/scans/{sid}/reviews", json=body, headers=who["olga"])
    assert r.status_code == 201, r.text
    rev = r.json()
    assert rev["officer"] == "olga" and rev["user_role"] == "officer" and rev["scan_id"] == sid
    assert rev["model_version"] == scan["model"]["version"]
    assert before <= datetime.fromisoformat(rev["created_at"]) <= datetime.now(timezone.utc)
    assert rev["verdict"] == "inspect" and rev["comment"] == body["comment"]
    by_id = {d["finding_id"]: d for d in rev["findings"]}
    assert by_id[found[0]["id"]]["category"] == found[0]["category"]
    assert by_id[found[1]["id"]]["category"] == "currency"
    assert by_id[found[1]["id"]]["original_category"] == found[1]["category"]
    assert (
        by_id[found[2]["id"]]["decision"] == "reject" and by_id[found[2]["id"]]["category"] is None
    )
    assert by_id[found[0]["id"]]["box"] == found[0]["box"]
    assert rev["added"] == [{"category": "narcotics", "box": [10.0, 20.0, 60.5, 70.0]}]
    # read back as stored, and the queue says it is reviewed
    stored = c.get(f"{API}/scans/{sid}/reviews", headers=who["sue"]).json()["items"]
    assert stored == [rev]
    q = c.get(f"{API}/queue", params={"status": "reviewed"}, headers=who["olga"]).json()
    item = next(i for i in q["items"] if i["id"] == sid)
    assert item["review_status"] == "reviewed" and item["review_verdict"] == "inspect"
    assert item["declared"] == "coffee 9000 kg"


def _bad_bodies(found: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    every = [{"finding_id": f["id"], "decision": "reject"} for f in found]
    ok = {"findings": every, "added": [], "verdict": "release", "comment": ""}

    def with_(**kw: Any) -> dict[str, Any]:
        return {**ok, **kw}

    first = found[0]["id"]
    rest = every[1:]
    return [
        ("unknown finding", with_(findings=[*every, {"finding_id": 999, "decision": "reject"}]),
         "no finding 999"),
        ("twice", with_(findings=[*every, every[0]]), "decided twice"),
        ("missing decision", with_(findings=rest), f"none for {first}"),
        ("bad decision", with_(findings=[{"finding_id": first, "decision": "maybe"}, *rest]),
         "decision"),
        ("relabel without category",
         with_(findings=[{"finding_id": first, "decision": "relabel"}, *rest]), "needs a category"),
        ("unknown category",
         with_(findings=[{"finding_id": first, "decision": "relabel", "category": "bananas"},
                         *rest]), "unknown category 'bananas'"),
        ("anomaly is no category",
         with_(findings=[{"finding_id": first, "decision": "relabel", "category": "anomaly"},
                         *rest]), "unknown category"),
        ("category on accept",
         with_(findings=[{"finding_id": first, "decision": "accept", "category": "person"
                          if found[0]["category"] != "person" else "firearm"}, *rest]),
         "relabel"),
        ("added unknown category", with_(added=[{"category": "bananas", "box": [0, 0, 5, 5]}]),
         "added[0]: unknown category"),
        ("box outside", with_(added=[{"category": "firearm", "box": [200, 10, 300, 20]}]),
         "added[0].box"),
        ("box negative", with_(added=[{"category": "firearm", "box": [-1, 0, 5, 5]}]),
         "added[0].box"),
        ("box inverted", with_(added=[{"category": "firearm", "box": [50, 10, 40, 20]}]),
         "added[0].box"),
        ("box of three", with_(added=[{"category": "firearm", "box": [1, 2, 3]}]), "box"),
        ("box not numbers", with_(added=[{"category": "firearm", "box": ["a", 2, 3, 4]}]), "box"),
        ("no verdict", {k: v for k, v in ok.items() if k != "verdict"}, "verdict"),
        ("bad verdict", with_(verdict="clear"), "verdict"),
        ("comment too long", with_(comment="x" * 4001), "comment"),
        ("NUL in comment", with_(comment="a\x00b"), "comment"),
        ("findings not a list", with_(findings="all fine"), "findings"),
        ("id not a number", with_(findings=[{"finding_id": "one", "decision": "reject"}]),
         "finding_id"),
    ]  # fmt: skip


def test_bad_reviews_get_a_422_that_says_what_is_wrong(world: World):
    c, who = world.client, world.who
    sid = post_scan(c, who["gate-1"], seed=6)  # 96 x 256 pixels
    found = findings(c, who["omar"], sid)
    for name, body, says in _bad_bodies(found):
        r = c.post(f"{API}/scans/{sid}/reviews", json=body, headers=who["omar"])
        assert r.status_code == 422, (name, r.text)
        assert says in r.json()["detail"], (name, r.json()["detail"])
    # NaN and infinity (Python's JSON reads them) are refused too
    raw = json.dumps(
        {"findings": [{"finding_id": f["id"], "decision": "reject"} for f in found],
         "added": [{"category": "firearm", "box": [float("nan"), 0, 5, 5]}],
         "verdict": "release"}
    )  # fmt: skip
    r = c.post(
        f"{API}/scans/{sid}/reviews",
        content=raw.encode(),
        headers={**who["omar"], "content-type": "application/json"},
    )
    assert r.status_code == 422
    r = c.post(
        f"{API}/scans/{sid}/reviews",
        content=b"{not json",
        headers={**who["omar"], "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert c.get(f"{API}/scans/{sid}/reviews", headers=who["sue"]).json()["items"] == []


# --------------------------------------------------------------------------- the queue


def test_the_queue_lists_by_risk_filters_and_polls(make_settings: Callable[..., Settings]):
    settings = make_settings()
    keys = {name: add_station(settings, name) for name in ("gate-1", "gate-2")}
    add_user(settings, "olga", "officer")
    with running(settings) as c:
        olga = bearer(login(c, "olga")["token"])
        ids = [post_scan(c, keys[f"gate-{1 + k % 2}"], seed=10 + k) for k in range(4)]
        q = c.get(f"{API}/queue", headers=olga).json()
        assert q["total"] == 4 and {i["id"] for i in q["items"]} == set(ids)
        order = [(-i["risk"], i["received_at"]) for i in q["items"]]
        risks = [i["risk"] for i in q["items"]]
        assert risks == sorted(risks, reverse=True), order
        item = q["items"][0]
        assert set(item) >= {
            "id", "risk", "verdict", "station", "received_at", "scan_time", "declared",
            "findings", "review_status", "width", "height",
        }  # fmt: skip
        assert item["review_status"] == "pending" and item["width"] == 256
        # review one: it leaves "pending" for "reviewed"
        done = ids[0]
        r = c.post(f"{API}/scans/{done}/reviews", json=review_body(c, olga, done), headers=olga)
        assert r.status_code == 201
        pending = c.get(f"{API}/queue", headers=olga).json()
        assert pending["total"] == 3 and done not in {i["id"] for i in pending["items"]}
        reviewed = c.get(f"{API}/queue", params={"status": "reviewed"}, headers=olga).json()
        assert [i["id"] for i in reviewed["items"]] == [done]
        assert c.get(f"{API}/queue", params={"status": "all"}, headers=olga).json()["total"] == 4
        # filters: station, verdict, since (inclusive), paging
        g2 = c.get(f"{API}/queue", params={"station": "gate-2", "status": "all"}, headers=olga)
        assert {i["station"] for i in g2.json()["items"]} == {"gate-2"}
        assert g2.json()["total"] == 2
        alarms = c.get(f"{API}/queue", params={"verdict": "alarm", "status": "all"}, headers=olga)
        assert alarms.json()["total"] == 4
        newest = max(i["received_at"] for i in pending["items"])
        polled = c.get(f"{API}/queue", params={"since": newest, "status": "all"}, headers=olga)
        assert [i["received_at"] for i in polled.json()["items"]] == [newest]
        for edge in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00"):  # no overflow
            r = c.get(f"{API}/queue", params={"since": edge, "status": "all"}, headers=olga)
            assert r.status_code == 200 and r.json()["total"] == (0 if edge[0] == "9" else 4)
        page = c.get(f"{API}/queue", params={"limit": 2, "offset": 2}, headers=olga).json()
        assert page["total"] == 3 and len(page["items"]) == 1
        for bad in (
            {"status": "done"},
            {"limit": 0},
            {"limit": 201},
            {"since": "yesterday"},
            {"station": "a\x00"},
            {"verdict": "maybe"},
            {"offset": -1},
        ):
            r = c.get(f"{API}/queue", params=bad, headers=olga)
            assert r.status_code == 422 and r.json()["detail"], bad


# --------------------------------------------------------------------------- export


def test_reviews_export_writes_the_synth_layout_with_the_officers_truth(
    make_settings: Callable[..., Settings], models: dict[str, Path], tmp_path: Path
):
    from training.data import CocoScans

    settings = make_settings()
    key = add_station(settings, "gate-1")
    for name, role in (("olga", "officer"), ("sue", "supervisor")):
        add_user(settings, name, role)
    with running(settings) as c:
        olga = bearer(login(c, "olga")["token"])
        sue = bearer(login(c, "sue")["token"])
        sids = [
            post_scan(c, key, seed=20 + k, size=(192, 768), station_scan_id=f"E-{k}")
            for k in range(6)
        ]

        def review(sid: str, body: dict[str, Any], who: dict[str, str] = olga) -> None:
            r = c.post(f"{API}/scans/{sid}/reviews", json=body, headers=who)
            assert r.status_code == 201, r.text

        # 0: one finding accepted, one relabelled -> two boxes
        body = review_body(c, olga, sids[0], verdict="inspect")
        found = findings(c, olga, sids[0])
        body["findings"][0]["decision"] = "accept"
        body["findings"][1] = {
            "finding_id": found[1]["id"],
            "decision": "relabel",
            "category": "cigarettes",
        }
        review(sids[0], body)
        # 1: everything rejected, released -> clean
        review(sids[1], review_body(c, olga, sids[1]))
        # 2: a missed threat drawn, first review released it: the later review wins
        review(sids[2], review_body(c, olga, sids[2]))
        review(
            sids[2],
            review_body(
                c, olga, sids[2], verdict="inspect",
                added=[{"category": "person", "box": [30, 10, 90, 60]}],
            ),
        )  # fmt: skip
        # 3: sent to inspection with nothing marked -> left out
        review(sids[3], review_body(c, olga, sids[3], verdict="inspect"))
        # 4: reviewed, then re-opened -> left out
        review(sids[4], review_body(c, olga, sids[4]))
        assert c.post(f"{API}/scans/{sids[4]}/reopen", headers=sue).status_code == 200
        # 5: never reviewed -> not exported
    out = tmp_path / "export"
    args = ["reviews", "export", "--out", str(out), "--data-dir", str(settings.data_dir)]
    assert main(args) == 0
    coco = json.loads((out / "annotations.json").read_text())
    cats = [cat["name"] for cat in coco["categories"]]
    assert cats == json.loads(models["alarm"].with_suffix(".json").read_text())["categories"]
    by_scan = {im["scan_id"]: im for im in coco["images"]}
    assert set(by_scan) == {sids[0], sids[1], sids[2]}
    anns: dict[int, list[tuple[str, list[float]]]] = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append((cats[a["category_id"] - 1], a["bbox"]))

    def xywh(box: list[float]) -> list[float]:
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]

    assert sorted(anns[by_scan[sids[0]]["id"]]) == sorted(
        [(found[0]["category"], xywh(found[0]["box"])), ("cigarettes", xywh(found[1]["box"]))]
    )
    assert by_scan[sids[1]]["clean"] and by_scan[sids[1]]["id"] not in anns
    assert anns[by_scan[sids[2]]["id"]] == [("person", [30.0, 10.0, 60.0, 50.0])]
    assert by_scan[sids[2]]["review_verdict"] == "inspect"
    # the original bytes, unchanged, named like synth's
    im = by_scan[sids[1]]
    assert im["file_name"] == f"images/{im['id']:06d}_high.png"
    assert (out / im["file_name"]).read_bytes() == scan_pngs(h=192, w=768, seed=21)["high"][1]
    assert (out / im["low_file_name"]).read_bytes() == scan_pngs(h=192, w=768, seed=21)["low"][1]
    # training reads it as it is, with the model's category list
    data = CocoScans(out, cats)
    assert len(data) == 3 and sorted(len(data[k].labels) for k in range(3)) == [0, 1, 2]
    # --since leaves out scans reviewed before it; a bad date is refused
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert main([*args, "--since", later]) == 0
    assert json.loads((out / "annotations.json").read_text())["images"] == []
    assert main([*args, "--since", "last week"]) == 2
    # the categories come from a card: the given model's, or one that is missing
    assert main([*args, "--model", str(models["clear"])]) == 0
    assert main([*args, "--model", str(tmp_path / "absent.onnx")]) == 2


# --------------------------------------------------------------------------- PostgreSQL


def test_users_and_reviews_on_postgresql(
    make_settings: Callable[..., Settings], postgres_url: str, tmp_path: Path
):
    settings = make_settings(database_url=postgres_url)
    key = add_station(settings, "gate-1")
    add_user(settings, "olga", "officer")
    add_user(settings, "sue", "supervisor")
    with running(settings) as c:
        olga = bearer(login(c, "olga")["token"])
        sue = bearer(login(c, "sue")["token"])
        sids = [post_scan(c, key, seed=30 + k) for k in range(2)]
        body = review_body(c, olga, sids[0], added=[{"category": "firearm", "box": [1, 2, 30, 40]}])
        r = c.post(f"{API}/scans/{sids[0]}/reviews", json=body, headers=olga)
        assert r.status_code == 201, r.text
        assert c.post(f"{API}/scans/{sids[0]}/reopen", headers=sue).status_code == 200
        q = c.get(f"{API}/queue", headers=olga).json()
        assert {i["id"]: i["review_status"] for i in q["items"]} == {
            sids[0]: "reopened",
            sids[1]: "pending",
        }
        r = c.post(f"{API}/scans/{sids[0]}/reviews", json=body, headers=sue)
        assert r.status_code == 201
        assert (
            c.get(f"{API}/queue", params={"status": "reviewed"}, headers=olga).json()["total"] == 1
        )
        bad = {**body, "comment": "a\x00"}
        assert c.post(f"{API}/scans/{sids[1]}/reviews", json=bad, headers=olga).status_code == 422
        r = c.post(f"{API}/auth/login", json={"username": "a\x00", "password": PASSWORD})
        assert r.status_code == 401
    out = tmp_path / "export"
    args = ["reviews", "export", "--out", str(out), "--database-url", postgres_url]
    assert main([*args, "--data-dir", str(settings.data_dir)]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert [im["scan_id"] for im in coco["images"]] == [sids[0]]


def test_two_officers_saving_at_the_same_moment_cannot_both_close_a_scan(world: World):
    # The route checks "reviewed by another officer?" before storing; the storage checks
    # again after taking the audit head's lock, in the review's own transaction, so two
    # officers saving the same scan at once (threads, or two replicas) store one review.
    import threading

    from inference.service.db import Review
    from inference.service.records.reviews import ScanClosed

    records = world.client.app.state.service.records
    officers = [records.user_by_name(n) for n in ("olga", "omar")]
    for seed in range(30, 36):
        sid = post_scan(world.client, world.who["gate-1"], seed=seed)
        (result,) = records.results(sid)
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def save(
            officer: Any,
            sid: str = sid,
            result: Any = result,
            barrier: threading.Barrier = barrier,
            outcomes: dict[str, str] = outcomes,
        ) -> None:
            review = Review(
                scan_id=sid,
                result_id=result.id,
                user_id=officer.id,
                user_role="officer",
                model_version=result.model_version,
                verdict="release",
                comment="",
                findings=[],
                added=[],
            )
            barrier.wait()
            try:
                records.add_review(review, unless_closed_by_another=True)
                outcomes[officer.name] = "stored"
            except ScanClosed as exc:
                outcomes[officer.name] = str(exc)

        threads = [threading.Thread(target=save, args=(o,)) for o in officers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes.values())[-1] == "stored", outcomes
        assert sum(v == "stored" for v in outcomes.values()) == 1, outcomes
        assert len(records.reviews(sid)) == 1
        (refused,) = [v for v in outcomes.values() if v != "stored"]
        assert "re-open" in refused
    # A supervisor's review is not refused: it may overrule (after a re-opening or not).
    sue = records.user_by_name("sue")
    review = Review(
        scan_id=sid, result_id=result.id, user_id=sue.id, user_role="supervisor",
        model_version=result.model_version, verdict="inspect", comment="", findings=[], added=[],
    )  # fmt: skip
    records.add_review(review)
    assert len(records.reviews(sid)) == 2
