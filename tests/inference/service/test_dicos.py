"""Results as DICOS Threat Detection Reports: written with pydicom, read back with pydicom,
the findings (categories, scores, boxes) intact; and the same through the API."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timezone

import pydicom
import pytest
from pydicom.uid import DICOSThreatDetectionReportStorage

from inference.service.dicos import read_tdr, tdr_bytes, tdr_dataset
from inference.service.settings import Settings
from tests.inference.service.service_helpers import ADMIN, add_station, running, scan_pngs

API = "/api/v1"
SCAN = {
    "id": "6f1c2a4e-0000-4000-8000-000000000001",
    "station": "port-gate-3",
    "station_scan_id": "PG3-000123",
    "received_at": "2024-05-01T12:00:00.250000+00:00",
    "high_sha256": "a" * 64,
    "low_sha256": "b" * 64,
}
RESULT = {
    "scan_id": SCAN["id"],
    "model": {"name": "cargoscan-default", "version": "cargoscan-default@0123456789ab"},
    "processing_ms": 842.5,
    "risk": 0.8125,
    "verdict": "alarm",
    "findings": [
        {
            "id": 1,
            "category": "firearm",
            "score": 0.9312,
            "box": [1204.5, 310.2, 1288.0, 377.9],
            "polygon": None,
            "source": "detector",
            "explanation": "firearm score 0.93 above the alarm threshold 0.41",
        },
        {
            "id": 2,
            "category": "narcotics",
            "score": 0.3333,
            "box": [40.0, 12.5, 96.1, 70.0],
            "polygon": None,
            "source": "detector",
            "explanation": "for review",
        },
        {
            "id": 3,
            "category": "anomaly",
            "score": 0.61,
            "box": [2000.0, 0.0, 2064.0, 128.0],
            "polygon": None,
            "source": "anomaly",
            "explanation": "region unlike the cargo around it",
        },
    ],
    "cargo_region": None,
    "anomaly_map": None,
}


def test_a_tdr_written_with_pydicom_reads_back_with_its_findings():
    ds = tdr_dataset(
        SCAN,
        RESULT,
        result_id=7,
        result_created_at=datetime(2024, 5, 1, 12, 0, 1, tzinfo=timezone.utc),
        preprocess_version="2",
    )
    data = tdr_bytes(ds)
    assert data[128:132] == b"DICM"  # a DICOM Part 10 file

    back = pydicom.dcmread(io.BytesIO(data))  # plain pydicom, no help from our reader
    assert back.file_meta.MediaStorageSOPClassUID == DICOSThreatDetectionReportStorage
    assert back.SOPClassUID == DICOSThreatDetectionReportStorage
    assert back.Modality == "TDR" and back.TDRType == "MACHINE"
    assert back.AlarmDecision == "ALARM" and back.AbortFlag == "SUCCESS"
    assert back.PatientID == "PG3-000123" and back.OOIType == "CARGO"
    assert list(back.ThreatDetectionAlgorithmAndVersion) == [
        "cargoscan-default",
        "cargoscan-default@0123456789ab",
    ]
    assert back.NumberOfTotalObjects == 3 and len(back.ThreatSequence) == 3
    assert back.TotalProcessingTime == pytest.approx(842.5)
    for item, finding in zip(back.ThreatSequence, RESULT["findings"], strict=True):
        assert item.PotentialThreatObjectID == finding["id"]
        assessment = item.ATDAssessmentSequence[0]
        assert assessment.ThreatCategoryDescription == finding["category"]
        assert assessment.ATDAssessmentProbability == pytest.approx(finding["score"], abs=1e-6)
        voxels = item.PTORepresentationSequence[0].ThreatROIVoxelSequence[0]
        x0, y0, x1, y1 = finding["box"]
        assert list(voxels.ThreatROIBase) == pytest.approx([x0, y0, 0.0], abs=1e-3)
        assert list(voxels.ThreatROIExtents) == pytest.approx([x1 - x0, y1 - y0, 1.0], abs=1e-3)
        assert list(voxels.BoundingPolygon)[6:8] == pytest.approx([x1, y1], abs=1e-3)
    categories = [i.ATDAssessmentSequence[0].ThreatCategory for i in back.ThreatSequence]
    assert categories == ["PROHIBITED_ITEM", "CONTRABAND", "ANOMALY"]

    report = read_tdr(data)  # our reader: exact values from the private block
    assert report["verdict"] == "alarm" and report["risk"] == 0.8125
    assert report["scan_id"] == SCAN["id"]
    assert [f["box"] for f in report["findings"]] == [f["box"] for f in RESULT["findings"]]
    assert [f["category"] for f in report["findings"]] == ["firearm", "narcotics", "anomaly"]
    assert [f["source"] for f in report["findings"]] == ["detector", "detector", "anomaly"]
    # the same result, the same instance UID (a re-export is the same report)
    again = tdr_dataset(SCAN, RESULT, result_id=7, result_created_at=datetime.now(timezone.utc))
    assert again.SOPInstanceUID == ds.SOPInstanceUID


def test_a_clear_result_is_a_clear_tdr_without_threats():
    clear = {**RESULT, "verdict": "clear", "risk": 0.0, "findings": []}
    scan = {**SCAN, "station_scan_id": None, "low_sha256": None}
    data = tdr_bytes(
        tdr_dataset(scan, clear, result_id=1, result_created_at=datetime.now(timezone.utc))
    )
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.AlarmDecision == "CLEAR" and back.NumberOfTotalObjects == 0
    assert back.PatientID == SCAN["id"] and len(back.ThreatSequence) == 0
    assert read_tdr(data)["findings"] == []


def test_the_api_serves_a_scans_tdr(make_settings: Callable[..., Settings]):
    settings = make_settings()
    key = add_station(settings, "gate-1")
    other = add_station(settings, "gate-2")
    meta = {"metadata": json.dumps({"station_scan_id": "D-1"})}
    with running(settings) as client:
        posted = client.post(f"{API}/scans", files=scan_pngs(), data=meta, headers=key).json()
        sid = posted["scan_id"]
        r = client.get(f"{API}/scans/{sid}/dicos", headers=key)
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
        assert client.get(f"{API}/scans/{sid}/dicos", headers=other).status_code == 404
        by_admin = client.get(f"{API}/scans/{sid}/dicos", headers=ADMIN)
        assert by_admin.status_code == 200
        missing = client.get(
            f"{API}/scans/{sid}/dicos", params={"model_version": "nope"}, headers=ADMIN
        )
        assert missing.status_code == 404
    report = read_tdr(r.content)
    assert report["scan_id"] == sid and report["verdict"] == posted["verdict"]
    assert [(f["id"], f["category"], f["box"]) for f in report["findings"]] == [
        (f["id"], f["category"], f["box"]) for f in posted["findings"]
    ]
    assert [f["score"] for f in report["findings"]] == pytest.approx(
        [f["score"] for f in posted["findings"]], abs=1e-6
    )
