"""The manifest check in the risk, the reviews and everything a result goes into (issue 26
items 5 and 6; docs/cargo.md, "Risk and review").

Two services on real storage (SQLite, the blob store, the signing key, the audit log):

- one on the test model with hand-made cargo sections (``store_scan``), for what the API
  refuses, the bulk release, the export's columns, the DICOS report and the evidence
  package's cross-check, fast (the reviews also on PostgreSQL, where one is configured);
- one on the shipped model with cargo analysis on (``CARGOSCAN_CARGO_ANALYSIS``), taking a
  synthetic scan from the generator twice: with its true manifest and with the declared
  one that calls its loaded container empty (``cargo_helpers``). Slow (generation ~10 s).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference.contracts import CargoContainer, CargoReport, ManifestCheck, ManifestDiscrepancy
from inference.result import model_info, risk_from_ratio
from inference.risk import DISCREPANCY_WEIGHTS, combine
from inference.service import evidence
from inference.service.app import open_records
from inference.service.audit import verify_chain
from inference.service.auth import hash_key, hash_password, new_key
from inference.service.coverage import verify_records
from inference.service.dicos import read_tdr
from inference.service.export import card_categories, export_reviews
from inference.service.settings import Settings
from inference.service.signing import Signer, sha256_hex
from inference.service.storage import BlobStore
from tests.inference.service import test_service_storage
from tests.inference.service.accounts import PASSWORD, bearer
from tests.inference.service.cargo_helpers import SHIPPED_MODEL, contradicted_scan, files_of
from tests.inference.service.service_helpers import ADMIN_KEY, running, store_scan

API = "/api/v1"
W, H = 400, 160
postgres_url = test_service_storage.postgres_url  # a fresh schema (skipped without a server)


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _resigned(members: dict[str, bytes], signer: Signer, changed: dict[str, bytes]) -> bytes:
    """The package with ``changed`` members, its manifest re-signed by the service's own
    key (what someone holding the key could do): only the cross-checks can tell."""
    members = {**members, **changed}
    manifest = json.loads(members["manifest.json"])
    for name, data in changed.items():
        manifest["members"][name] = {"sha256": sha256_hex(data), "bytes": len(data)}
    members["manifest.json"] = json.dumps(manifest).encode()
    members["manifest.sig"] = (signer.sign(members["manifest.json"]) + "\n").encode()
    return evidence.zip_members(members)


# --------------------------------------------------------------------------- hand-made


def _cargo(kinds: list[tuple[str, float, int | None]]) -> dict[str, Any]:
    """A result's cargo section and risk reasons (inference.risk, the service's code) with
    two containers and the discrepancies ``kinds`` = (kind, score, container)."""
    containers = [
        CargoContainer(box=[10, 20, 190, 150], empty=False, score=0.97, mass_kg=9120.0,
                       fill=0.55, kind="organic, packaged", material="organic",
                       packing="packaged", tank=False, load_box=[20, 60, 180, 150]),
        CargoContainer(box=[205, 20, 390, 150], empty=False, score=0.9, mass_kg=2400.0,
                       fill=0.2, kind="metal, packaged", material="metal", packing="packaged",
                       tank=False, load_box=[300, 100, 360, 150]),
    ]  # fmt: skip
    check = ManifestCheck(
        status="discrepancies" if kinds else "consistent",
        discrepancies=[
            ManifestDiscrepancy(
                kind=kind,
                score=score,
                container=k,
                box=[300, 100, 360, 150] if k == 1 else [20, 60, 180, 150],
                explanation=f"container {k + 1}: {kind.replace('_', ' ')} (hand-made)",
            )
            for kind, score, k in kinds
        ],
    )
    level, alarm, review, reasons = combine(0.0, False, False, [], check)
    cargo = CargoReport(containers=containers, manifest_check=check, processing_ms=7.5)
    return {
        "risk": risk_from_ratio(level),
        "verdict": "alarm" if alarm else "review" if review else "clear",
        "extra": {
            "cargo": cargo.model_dump(),
            "risk_reasons": [r.model_dump() for r in reasons],
        },
    }


MANIFEST = [
    {"container": 0, "hs_code": "0901.11", "description": "coffee", "declared_weight_kg": 9000.0}
]  # container 1 declared empty


@dataclass
class Handmade:
    client: TestClient
    settings: Settings
    token: dict[str, dict[str, str]]
    store: Any  # (kinds, station_scan_id) -> scan id


def _storer(settings: Settings, card: dict[str, Any], station: Any) -> Any:
    """A function storing a scan with a hand-made cargo section: (kinds, station_scan_id)
    -> scan id (as the browser tests store theirs; the service may be running)."""
    rng = np.random.default_rng(3)
    high = rng.integers(20000, 60000, size=(H, W)).astype(np.uint16)

    def store(kinds: list[tuple[str, float, int | None]], station_scan_id: str) -> str:
        records = open_records(settings)
        try:
            made = _cargo(kinds)
            return store_scan(
                records,
                BlobStore(settings.data_dir / "blobs"),
                station=station,
                high=high,
                low=(high * 0.8).astype(np.uint16),
                meta={
                    "station_scan_id": station_scan_id,
                    "container_ids": ["MSCU1234565", "TGHU7654321"],
                    "manifest": MANIFEST,
                },
                received_at=datetime.now(timezone.utc),
                model=model_info(card),
                risk=made["risk"],
                verdict=made["verdict"],
                findings=[],
                extra=made["extra"],
            )
        finally:
            records.engine.dispose()

    return store


def _setup(settings: Settings, model: Path) -> Any:
    """A station and two users (olga, officer; sue, supervisor); returns the storer."""
    records = open_records(settings)
    try:
        station = records.add_station("gate-1", hash_key(new_key()))
        for name, role in (("olga", "officer"), ("sue", "supervisor")):
            records.add_user(name, role, hash_password(PASSWORD))
    finally:
        records.engine.dispose()
    return _storer(settings, json.loads(model.with_suffix(".json").read_text()), station)


def _tokens(client: TestClient) -> dict[str, dict[str, str]]:
    token = {}
    for name in ("olga", "sue"):
        r = client.post(f"{API}/auth/login", json={"username": name, "password": PASSWORD})
        token[name] = bearer(r.json()["token"])
    client.cookies.clear()
    return token


@pytest.fixture(scope="module")
def handmade(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]
) -> Iterator[Handmade]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("cargo-handmade") / "data",
        model_path=models["alarm"],
        admin_key=ADMIN_KEY,
        engine_threads=1,
        check_scans=0,
    )
    store = _setup(settings, models["alarm"])
    with running(settings) as client:
        yield Handmade(client, settings, _tokens(client), store)


TWO = [("declared_empty_but_loaded", 0.9, 1), ("weight_mismatch", 0.7, 0)]


def _review(decisions: list[tuple[int, str]], verdict: str = "inspect") -> dict[str, Any]:
    return {
        "findings": [],
        "discrepancies": [{"index": i, "decision": d} for i, d in decisions],
        "added": [],
        "verdict": verdict,
        "comment": "",
    }


def test_a_bad_discrepancy_decision_is_a_422_naming_it_and_stores_nothing(handmade: Handmade):
    c, olga = handmade.client, handmade.token["olga"]
    sid = handmade.store(TWO, "H-422")
    result = c.get(f"{API}/scans/{sid}", headers=olga).json()
    assert result["verdict"] == "alarm"  # 1.25 x 0.9 = 1.125: above 1
    assert [r["kind"] for r in result["risk_reasons"]] == [k for k, _, _ in TWO]
    cases = {
        "discrepancies[1]: no manifest discrepancy 7 in the scan's result (indices: 0, 1)": [
            (0, "confirm"),
            (7, "reject"),
        ],
        "discrepancies[1]: discrepancy 0 is decided twice": [(0, "confirm"), (0, "reject")],
        "discrepancies: every manifest discrepancy needs a decision (confirm or reject); "
        "none for 1": [(0, "confirm")],
    }
    for detail, decisions in cases.items():
        r = c.post(f"{API}/scans/{sid}/reviews", json=_review(decisions), headers=olga)
        assert r.status_code == 422 and r.json()["detail"] == detail, r.text
    bad = _review([(0, "confirm"), (1, "maybe")])
    r = c.post(f"{API}/scans/{sid}/reviews", json=bad, headers=olga)
    assert r.status_code == 422 and "decision" in r.text
    assert c.get(f"{API}/scans/{sid}/reviews", headers=olga).json()["items"] == []
    # a result without a cargo section has no discrepancy to decide
    plain = handmade.store([], "H-none")
    r = c.post(f"{API}/scans/{plain}/reviews", json=_review([(0, "confirm")]), headers=olga)
    assert r.status_code == 422 and r.json()["detail"].endswith("(indices: none)")


def test_decisions_are_stored_signed_logged_and_verified(handmade: Handmade):
    c, olga = handmade.client, handmade.token["olga"]
    sid = handmade.store(TWO, "H-ok")
    r = c.post(
        f"{API}/scans/{sid}/reviews",
        json=_review([(1, "reject"), (0, "confirm")]),
        headers=olga,
    )
    assert r.status_code == 201, r.text
    stored = r.json()["discrepancies"]
    assert [(d["index"], d["kind"], d["decision"]) for d in stored] == [
        (0, "declared_empty_but_loaded", "confirm"),
        (1, "weight_mismatch", "reject"),
    ]
    assert stored[0]["container"] == 1 and stored[0]["box"] == [300, 100, 360, 150]
    assert stored[0]["explanation"].startswith("container 2: declared empty but loaded")
    (back,) = c.get(f"{API}/scans/{sid}/reviews", headers=olga).json()["items"]
    assert back == r.json()
    records = handmade.client.app.state.service.records
    entry = [e for e in records.audit_entries(sid) if e.kind == "review"][-1]
    assert entry.data["discrepancies"] == [
        {"index": 0, "kind": "declared_empty_but_loaded", "decision": "confirm"},
        {"index": 1, "kind": "weight_mismatch", "decision": "reject"},
    ]
    assert verify_chain(records.engine).ok
    report = verify_records(records.engine)
    assert report.ok, report.problems


def test_bulk_release_leaves_a_clear_scan_with_a_discrepancy_for_review(handmade: Handmade):
    c, olga = handmade.client, handmade.token["olga"]
    weak = handmade.store([("weight_mismatch", 0.55, 0)], "H-weak")  # 0.8 x 0.55 = 0.44
    queued = c.get(f"{API}/queue", params={"status": "all"}, headers=olga).json()["items"]
    row = next(i for i in queued if i["id"] == weak)
    assert row["verdict"] == "clear" and row["discrepancies"] == 1 and row["findings"] == 0
    r = c.post(f"{API}/queue/release-clear", json={"scan_ids": [weak]}, headers=olga)
    assert r.status_code == 200, r.text
    assert r.json()["released"] == []
    assert r.json()["skipped"] == [
        {"id": weak, "reason": "its manifest check lists discrepancies: decide them"}
    ]


def test_the_export_dicos_and_evidence_carry_the_decisions(handmade: Handmade, tmp_path: Path):
    c, olga, sue = handmade.client, handmade.token["olga"], handmade.token["sue"]
    sid = handmade.store(TWO, "H-out")
    r = c.post(
        f"{API}/scans/{sid}/reviews",
        json=_review([(0, "reject"), (1, "reject")], verdict="release"),
        headers=olga,
    )
    assert r.status_code == 201, r.text
    review_id = r.json()["id"]
    service = handmade.client.app.state.service

    # the export: the COCO image (released, clean) and one CSV row per decision
    out = tmp_path / "export"
    summary = export_reviews(
        service.records, service.blobs, out, card_categories(handmade.settings.model_path)
    )
    doc = json.loads((out / "annotations.json").read_text())
    image = next(im for im in doc["images"] if im["scan_id"] == sid)
    (line,) = image["declared_manifest"]  # as stored: the station's words, normalised
    assert {k: line[k] for k in MANIFEST[0]} == MANIFEST[0]
    assert [d["decision"] for d in image["manifest_review"]] == ["reject", "reject"]
    rows = list(csv.DictReader(io.StringIO((out / "discrepancies.csv").read_text())))
    mine = [row for row in rows if row["scan_id"] == sid]
    assert [(row["index"], row["kind"], row["decision"]) for row in mine] == [
        ("0", "declared_empty_but_loaded", "reject"),
        ("1", "weight_mismatch", "reject"),
    ]
    assert mine[0]["review_id"] == str(review_id) and mine[0]["box"] == "300 100 360 150"
    assert summary.discrepancies.get("reject", 0) >= 2 and "discrepancies.csv" in str(summary)

    # DICOS: the discrepancies after the findings, with the review's decisions
    tdr = read_tdr(c.get(f"{API}/scans/{sid}/dicos", headers=sue).content)
    assert tdr["findings"] == []
    assert [(d["index"], d["kind"], d["decision"]) for d in tdr["discrepancies"]] == [
        (0, "declared_empty_but_loaded", "reject"),
        (1, "weight_mismatch", "reject"),
    ]
    assert tdr["discrepancies"][0]["box"] == [300.0, 100.0, 360.0, 150.0]
    assert tdr["discrepancies"][0]["threat_category"] == "OTHER"
    assert len(tdr["cargo"]["cargo"]["containers"]) == 2
    assert tdr["cargo"]["review"]["review_id"] == review_id
    assert tdr["cargo"]["risk_reasons"][0]["weight"] == DISCREPANCY_WEIGHTS[TWO[0][0]]

    # the evidence package: cargo.json agrees with result.json and reviews.json
    data = c.get(f"{API}/scans/{sid}/evidence", headers=sue).content
    report = evidence.verify_package(data)
    assert report.ok, report.problems
    assert "cargo.json matches result.json and reviews.json" in report.checked
    members = _members(data)
    part = json.loads(members["cargo.json"])
    assert part["cargo"] == json.loads(members["result.json"])["cargo"]
    assert part["reviews"][0]["discrepancies"][0] == {
        "index": 0,
        "kind": "declared_empty_but_loaded",
        "decision": "reject",
    }
    # a cargo.json that says "confirm" where the signed review says "reject" is named
    part["reviews"][0]["discrepancies"][0]["decision"] = "confirm"
    signer = Signer.from_pem((handmade.settings.data_dir / "signing-key.pem").read_bytes())
    forged = _resigned(members, signer, {"cargo.json": json.dumps(part).encode()})
    assert evidence.verify_package(forged).problems == [
        "cargo.json: reviews differ from result.json and reviews.json"
    ]


def test_decisions_on_postgresql(make_settings: Any, models: dict[str, Path], postgres_url: str):
    settings = make_settings(database_url=postgres_url, check_scans=0)
    store = _setup(settings, models["alarm"])
    with running(settings) as c:
        olga = _tokens(c)["olga"]
        sid = store(TWO, "PG-1")
        r = c.post(f"{API}/scans/{sid}/reviews", json=_review([(7, "confirm")]), headers=olga)
        assert r.status_code == 422 and r.json()["detail"].startswith("discrepancies[0]: no ")
        r = c.post(
            f"{API}/scans/{sid}/reviews",
            json=_review([(0, "confirm"), (1, "reject")]),
            headers=olga,
        )
        assert r.status_code == 201, r.text
        (back,) = c.get(f"{API}/scans/{sid}/reviews", headers=olga).json()["items"]
        assert [d["decision"] for d in back["discrepancies"]] == ["confirm", "reject"]
        engine = c.app.state.service.records.engine
        assert verify_chain(engine).ok
        report = verify_records(engine)
        assert report.ok, report.problems


# --------------------------------------------------------------------------- generated


@dataclass
class Posted:
    client: TestClient
    settings: Settings
    token: dict[str, dict[str, str]]
    consistent: dict[str, Any]  # the result with the true manifest
    contradicted: dict[str, Any]  # with the declared one (the box "empty")


@pytest.fixture(scope="module")
def posted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Posted]:
    scan = contradicted_scan()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("cargo-real") / "data",
        model_path=SHIPPED_MODEL,
        admin_key=ADMIN_KEY,
        engine_threads=1,
        check_scans=0,
        cargo_analysis=True,
    )
    records = open_records(settings)
    key = new_key()
    records.add_station("gate-7", hash_key(key))
    for name, role in (("olga", "officer"), ("sue", "supervisor")):
        records.add_user(name, role, hash_password(PASSWORD))
    records.engine.dispose()
    with running(settings) as client:
        got = {}
        for name, meta in (("true", scan.true), ("declared", scan.declared)):
            data = {"metadata": json.dumps({**meta, "station_scan_id": f"G7-{name}"})}
            r = client.post(f"{API}/scans", files=files_of(scan), data=data, headers=bearer(key))
            assert r.status_code == 201, r.text
            got[name] = r.json()
        token = {}
        for name in ("olga", "sue"):
            r = client.post(f"{API}/auth/login", json={"username": name, "password": PASSWORD})
            token[name] = bearer(r.json()["token"])
        client.cookies.clear()
        yield Posted(client, settings, token, got["true"], got["declared"])


@pytest.mark.slow
def test_a_loaded_box_declared_empty_raises_the_risk_with_the_reason_shown(posted: Posted):
    from inference.engine import Engine
    from inference.result import build_result
    from inference.scan import Scan, ScanMetadata, decode_scan

    ok, bad = posted.consistent, posted.contradicted
    truth = contradicted_scan().containers
    # with its true manifest: consistent, and the risk and verdict the findings give
    assert ok["cargo"]["manifest_check"] == {"status": "consistent", "discrepancies": []}
    assert all(r["source"] == "finding" for r in ok["risk_reasons"])
    engine = Engine.load(SHIPPED_MODEL, threads=1)
    pixels = decode_scan(contradicted_scan().high, contradicted_scan().low)
    scan = Scan(pixels.high, pixels.low, metadata=ScanMetadata.from_dict(contradicted_scan().true))
    off = build_result(engine, engine.analyze(scan), "x", 1.0)  # cargo analysis off
    assert "cargo" not in off and "risk_reasons" not in off
    assert (ok["risk"], ok["verdict"]) == (off["risk"], off["verdict"])
    assert off["verdict"] == "clear"
    # with the declared manifest: the box is "empty" yet holds a load
    (container,) = bad["cargo"]["containers"]
    assert not container["empty"] and container["mass_kg"] > 5000
    x0, y0, x1, y1 = truth[0]["box"]
    assert container["box"][0] < (x0 + x1) / 2 < container["box"][2]
    assert container["box"][1] < (y0 + y1) / 2 < container["box"][3]
    (d,) = bad["cargo"]["manifest_check"]["discrepancies"]
    assert d["kind"] == "declared_empty_but_loaded" and d["container"] == 0
    assert "declared empty" in d["explanation"] and "kg" in d["explanation"]
    reason = bad["risk_reasons"][0]
    assert reason["source"] == "manifest" and reason["ref"] == 0 and reason["decides"]
    assert reason["weight"] == DISCREPANCY_WEIGHTS["declared_empty_but_loaded"]
    assert reason["contribution"] == pytest.approx(reason["weight"] * d["score"], abs=1e-4)
    assert d["explanation"] in reason["explanation"]
    assert bad["risk"] == pytest.approx(risk_from_ratio(reason["weight"] * d["score"]))
    assert bad["risk"] > ok["risk"]
    assert bad["verdict"] == ("alarm" if reason["contribution"] > 1 else "review")
    # the queue puts it first, and says it has a discrepancy to decide
    queue = posted.client.get(f"{API}/queue", headers=posted.token["olga"]).json()["items"]
    assert queue[0]["id"] == bad["scan_id"] and queue[0]["discrepancies"] == 1


@pytest.mark.slow
def test_an_officer_confirms_it_and_it_goes_everywhere(posted: Posted, tmp_path: Path):
    c, olga, sue = posted.client, posted.token["olga"], posted.token["sue"]
    sid = posted.contradicted["scan_id"]
    body = {
        "findings": [
            {"finding_id": f["id"], "decision": "reject"} for f in posted.contradicted["findings"]
        ],
        "discrepancies": [{"index": 0, "decision": "confirm"}],
        "added": [],
        "verdict": "inspect",
        "comment": "declared empty: load behind the doors",
    }
    r = c.post(f"{API}/scans/{sid}/reviews", json=body, headers=olga)
    assert r.status_code == 201, r.text
    (decided,) = r.json()["discrepancies"]
    assert decided["decision"] == "confirm" and decided["kind"] == "declared_empty_but_loaded"
    service = c.app.state.service

    out = tmp_path / "export"
    summary = export_reviews(
        service.records, service.blobs, out, card_categories(posted.settings.model_path)
    )
    (row,) = csv.DictReader(io.StringIO((out / "discrepancies.csv").read_text()))
    assert (row["scan_id"], row["kind"], row["decision"], row["officer"]) == (
        sid,
        "declared_empty_but_loaded",
        "confirm",
        "olga",
    )
    assert row["review_verdict"] == "inspect" and row["station_scan_id"] == "G7-declared"
    assert summary.skipped == {"sent to inspection with no box": 1}  # no threat box to train on

    tdr = read_tdr(c.get(f"{API}/scans/{sid}/dicos", headers=sue).content)
    (item,) = tdr["discrepancies"]
    assert (item["kind"], item["decision"], item["index"]) == (
        "declared_empty_but_loaded",
        "confirm",
        0,
    )
    assert tdr["verdict"] == posted.contradicted["verdict"]
    assert tdr["risk"] == posted.contradicted["risk"]
    assert tdr["cargo"]["cargo"] == posted.contradicted["cargo"]

    data = c.get(f"{API}/scans/{sid}/evidence", headers=sue).content
    report = evidence.verify_package(data)
    assert report.ok, report.problems
    members = _members(data)
    part = json.loads(members["cargo.json"])
    assert part["cargo"]["manifest_check"]["discrepancies"][0]["kind"] == (
        "declared_empty_but_loaded"
    )
    assert part["reviews"][0]["discrepancies"] == [
        {"index": 0, "kind": "declared_empty_but_loaded", "decision": "confirm"}
    ]
    assert json.loads(members["reviews.json"])[0]["discrepancies"][0]["decision"] == "confirm"
    assert verify_chain(service.records.engine).ok
    coverage = verify_records(service.records.engine)
    assert coverage.ok, coverage.problems
