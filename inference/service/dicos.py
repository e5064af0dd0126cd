"""A result as a DICOS Threat Detection Report (NEMA IIC 1), written with pydicom.

DICOS is how security screening equipment exchanges scans and detections; a TDR is the
"machine" (automatic threat recognition) report about one object of inspection. What we
write, with only the attributes pydicom's data dictionary knows:

- SOP Class: DICOS Threat Detection Report Storage (``1.2.840.10008.5.1.4.1.1.501.3``),
  Modality ``TDR``, TDR Type ``MACHINE``. UIDs are derived from the scan and result ids,
  so the same result always gives the same SOP Instance UID.
- Object of inspection: Patient ID (DICOS reuses it as the OOI ID) = the station's scan id
  (else ours), OOI Type ``CARGO``.
- The decision: Alarm Decision ``ALARM`` (our ``alarm`` or ``review``: both need an
  operator) or ``CLEAR``, Alarm Decision Time, Abort Flag ``SUCCESS``, Number of Total /
  Alarm Objects, Total Processing Time (ms), Threat Detection Algorithm and Version (the
  model's name and version).
- One Threat Sequence item per finding: Potential Threat Object ID = the finding id; an
  ATD Assessment Sequence item with Threat Category (our reading of the DICOS terms:
  ``PROHIBITED_ITEM`` for firearms, ``CONTRABAND`` for narcotics, cigarettes and currency,
  ``ANOMALY``, else ``OTHER``), Threat Category Description = our category exactly, ATD
  Assessment Flag ``THREAT``, ATD Assessment Probability = the score; a PTO Representation
  Sequence item whose Threat ROI Voxel Sequence item has Threat ROI Base (x0, y0, 0) and
  Threat ROI Extents (width, height, 1) in scan pixels, and the box's corners as Bounding
  Polygon (x, y, 0 triples).

DICOS stores those numbers as 32-bit floats (FL); what does not fit its attributes goes
in a private block (group 0x0099, creator ``CARGOSCAN 1``): our exact verdict and risk,
the scan id and the SHA-256 of its channels, the model's SHA-256 and the pre-processing
version, and per finding the exact box (FD), its source and explanation.

A result with a cargo section (docs/cargo.md) adds, after the findings, one Threat
Sequence item per manifest discrepancy: Threat Category ``OTHER``, description
``manifest:KIND``, probability = its score, its region as the ROI, and in the private
block source ``manifest``, the explanation, its index in the manifest check and, when an
officer's review of this result decided it, the decision (``confirm`` / ``reject``). The
whole cargo section, the risk's reasons and that review's decisions go in one private
element as JSON (UT), for a reader that wants the containers and the declared-vs-observed
figures.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import Any

from inference.service.cargo_review import discrepancies_of

PRIVATE_GROUP = 0x0099
PRIVATE_CREATOR = "CARGOSCAN 1"
THREAT_CATEGORIES = {
    "firearm": "PROHIBITED_ITEM",
    "narcotics": "CONTRABAND",
    "cigarettes": "CONTRABAND",
    "currency": "CONTRABAND",
    "anomaly": "ANOMALY",
}

# Private elements (offsets in the CARGOSCAN 1 block).
_VERDICT, _RISK, _SCAN_ID, _HIGH, _LOW, _MODEL_SHA, _PREPROCESS = 1, 2, 3, 4, 5, 6, 7
_BOX, _SOURCE, _EXPLANATION = 1, 2, 3
_CARGO = 8  # the cargo section, risk reasons and the review's decisions (JSON)
_INDEX, _DECISION = 4, 5  # of a manifest discrepancy's item


def _dt(value: datetime) -> str:
    """DICOM DT: YYYYMMDDHHMMSS.FFFFFF+ZZXX, in UTC."""
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S.%f+0000")


def tdr_dataset(
    scan: dict[str, Any],
    result: dict[str, Any],
    *,
    result_id: int,
    result_created_at: datetime,
    preprocess_version: str | None = None,
    review: dict[str, Any] | None = None,
) -> Any:  # pydicom.Dataset
    """The TDR of ``result`` (docs/design.md, "The result: what goes out") about ``scan``
    (``api.scan_summary``); ``review`` (``evidence.review_dict``): the latest review of
    this result, whose decisions on manifest discrepancies go with them."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        DICOSThreatDetectionReportStorage,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    scan_id = str(scan["id"])
    now = datetime.now(timezone.utc)
    model = result.get("model") or {}
    findings = list(result.get("findings") or [])
    cargo = result.get("cargo") if isinstance(result.get("cargo"), dict) else None
    discrepancies = discrepancies_of(result)
    decided = {d.get("index"): d.get("decision") for d in (review or {}).get("discrepancies") or []}

    ds = Dataset()
    ds.SOPClassUID = DICOSThreatDetectionReportStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["cargoscan-tdr", scan_id, str(result_id)])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["cargoscan-scan", scan_id])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["cargoscan-tdr", scan_id])
    ds.Modality = "TDR"
    ds.InstanceNumber = result_id
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S.%f")
    created = result_created_at.astimezone(timezone.utc)
    ds.ContentDate = created.strftime("%Y%m%d")
    ds.ContentTime = created.strftime("%H%M%S.%f")
    received = scan.get("received_at")
    if received:
        at = datetime.fromisoformat(received).astimezone(timezone.utc)
        ds.StudyDate = at.strftime("%Y%m%d")
        ds.StudyTime = at.strftime("%H%M%S.%f")
    ds.Manufacturer = "CargoScan"
    ds.ManufacturerModelName = str(model.get("name") or "")[:64]
    ds.SoftwareVersions = str(model.get("version") or "")[:64]
    ds.StationName = str(scan.get("station") or "")[:16]
    ds.PatientID = str(scan.get("station_scan_id") or scan_id)[:64]  # DICOS: the OOI ID
    ds.OOIType = "CARGO"
    ds.DICOSVersion = "V02A"

    ds.TDRType = "MACHINE"
    ds.ThreatDetectionAlgorithmAndVersion = [
        str(model.get("name") or "")[:64],
        str(model.get("version") or "")[:64],
    ]
    ds.AlarmDecision = "CLEAR" if result.get("verdict") == "clear" else "ALARM"
    ds.AlarmDecisionTime = _dt(created)
    ds.AbortFlag = "SUCCESS"
    objects = len(findings) + len(discrepancies)
    ds.NumberOfTotalObjects = objects
    ds.NumberOfAlarmObjects = objects  # findings under the review level are left out
    ds.TotalProcessingTime = float(result.get("processing_ms") or 0.0)

    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(_VERDICT, "LO", str(result.get("verdict")))
    block.add_new(_RISK, "FD", float(result.get("risk") or 0.0))
    block.add_new(_SCAN_ID, "LO", scan_id)
    block.add_new(_HIGH, "LO", str(scan.get("high_sha256") or ""))
    if scan.get("low_sha256"):
        block.add_new(_LOW, "LO", str(scan["low_sha256"]))
    block.add_new(_MODEL_SHA, "LO", str(model.get("sha256") or ""))
    if preprocess_version is not None:
        block.add_new(_PREPROCESS, "LO", str(preprocess_version))
    if cargo is not None:
        part = {
            "cargo": cargo,
            "risk_reasons": result.get("risk_reasons"),
            "review": None
            if review is None
            else {
                "review_id": review.get("id"),
                "officer": review.get("officer"),
                "created_at": review.get("created_at"),
                "verdict": review.get("verdict"),
                "discrepancies": [
                    {"index": d.get("index"), "kind": d.get("kind"), "decision": d.get("decision")}
                    for d in review.get("discrepancies") or []
                ],
            },
        }
        block.add_new(_CARGO, "UT", json.dumps(part, sort_keys=True, ensure_ascii=False))

    first = max((int(f["id"]) for f in findings), default=0) + 1
    ds.ThreatSequence = [_threat(f) for f in findings] + [
        _discrepancy(first + k, k, d, decided.get(k)) for k, d in enumerate(discrepancies)
    ]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _discrepancy(pto_id: int, index: int, d: dict[str, Any], decision: str | None) -> Any:
    """A manifest discrepancy as a potential threat object (see the module)."""
    item = _threat(
        {
            "id": pto_id,
            "category": f"manifest:{d.get('kind')}",
            "score": d.get("score"),
            "box": d["box"],
            "source": "manifest",
            "explanation": d.get("explanation"),
        },
        threat_category="OTHER",
    )
    block = item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    block.add_new(_INDEX, "UL", index)
    if decision is not None:
        block.add_new(_DECISION, "LO", str(decision))
    return item


def _threat(finding: dict[str, Any], threat_category: str | None = None) -> Any:
    from pydicom.dataset import Dataset

    x0, y0, x1, y1 = (float(v) for v in finding["box"])
    category = str(finding.get("category") or "")
    assessment = Dataset()
    assessment.ThreatCategory = threat_category or THREAT_CATEGORIES.get(category, "OTHER")
    assessment.ThreatCategoryDescription = category
    assessment.ATDAbilityAssessment = "NO_INTERFERENCE"
    assessment.ATDAssessmentFlag = "THREAT"
    assessment.ATDAssessmentProbability = float(finding.get("score") or 0.0)

    voxels = Dataset()
    voxels.ThreatROIBase = [x0, y0, 0.0]
    voxels.ThreatROIExtents = [x1 - x0, y1 - y0, 1.0]
    voxels.BoundingPolygon = [x0, y0, 0.0, x1, y0, 0.0, x1, y1, 0.0, x0, y1, 0.0]
    representation = Dataset()
    representation.ThreatROIVoxelSequence = [voxels]

    item = Dataset()
    item.PotentialThreatObjectID = int(finding["id"])
    item.ATDAssessmentSequence = [assessment]
    item.PTORepresentationSequence = [representation]
    block = item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(_BOX, "FD", [x0, y0, x1, y1])
    block.add_new(_SOURCE, "LO", str(finding.get("source") or ""))
    block.add_new(_EXPLANATION, "UT", str(finding.get("explanation") or ""))
    return item


def tdr_bytes(ds: Any) -> bytes:
    """The DICOM Part 10 file (preamble, DICM, file meta, explicit VR little endian)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def read_tdr(data: bytes) -> dict[str, Any]:
    """The findings of a TDR file (ours or another vendor's, from the DICOS attributes;
    the exact box and verdict from our private block when it is there), and ours' manifest
    discrepancies and cargo section apart from them."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        block = None

    def private(blk: Any, offset: int) -> Any:
        if blk is None or blk.get_tag(offset) not in blk.dataset:
            return None
        return blk[offset].value

    findings, discrepancies = [], []
    for item in ds.get("ThreatSequence", []):
        assessment = item.ATDAssessmentSequence[0]
        voxels = item.PTORepresentationSequence[0].ThreatROIVoxelSequence[0]
        base, extents = list(voxels.ThreatROIBase), list(voxels.ThreatROIExtents)
        box = [base[0], base[1], base[0] + extents[0], base[1] + extents[1]]
        try:
            item_block = item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        except KeyError:
            item_block = None
        exact = private(item_block, _BOX)
        found = {
            "id": int(item.PotentialThreatObjectID),
            "category": str(assessment.ThreatCategoryDescription or ""),
            "threat_category": str(assessment.ThreatCategory),
            "score": float(assessment.ATDAssessmentProbability),
            "box": [float(v) for v in exact] if exact is not None else box,
            "dicos_box": [float(v) for v in box],
            "source": private(item_block, _SOURCE),
        }
        if found["source"] == "manifest":
            index = private(item_block, _INDEX)
            found["index"] = int(index) if index is not None else None
            found["kind"] = found["category"].removeprefix("manifest:")
            found["explanation"] = private(item_block, _EXPLANATION)
            found["decision"] = private(item_block, _DECISION)
            discrepancies.append(found)
        else:
            findings.append(found)
    cargo = private(block, _CARGO)
    return {
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "alarm_decision": str(ds.AlarmDecision),
        "verdict": private(block, _VERDICT),
        "risk": private(block, _RISK),
        "scan_id": private(block, _SCAN_ID),
        "algorithm": [str(v) for v in ds.ThreatDetectionAlgorithmAndVersion],
        "findings": findings,
        "discrepancies": discrepancies,
        "cargo": json.loads(cargo) if cargo else None,
    }
