"""`cargoscan reviews export`: the officers' reviews as a training data set.

The layout is the one `cargoscan synth` writes (`inference.coco`), so `cargoscan train
--data DIR` reads it unchanged (`training.data.CocoScans`):

    annotations.json             COCO; images carry file_name / low_file_name
    images/NNNNNN_high.png       the bytes the station posted, unchanged (16-bit)
    images/NNNNNN_low.png        (single-energy scans have none)

NNNNNN and the COCO image id are the id of the exported review: the same review always
gives the same files and id, so the pre-processing cache training keeps in ``DIR/.cache``
(keyed by image id) stays right when the folder is exported again; a newer review of the
same scan gets a new id.

Ground truth is each scan's latest review: findings accepted or re-labelled (with the
officer's category) and the boxes officers drew; rejected findings are not threats. A
scan released with no such box is clean. Left out (counted in the summary), because
their truth is not known: scans a supervisor re-opened, scans sent to inspection with no
box, and scans with an accepted finding whose category the model does not have (an
"anomaly" region accepted without a re-label would otherwise train as background).
Categories are the model card's, in its order.

The manifest check goes with them (docs/cargo.md, "Risk and review"): each exported image
carries the declared manifest (``declared_manifest``) and the officer's decision on each
manifest discrepancy of the reviewed result (``manifest_review``), and
``discrepancies.csv`` lists every decision of every reviewed scan's latest review, one row
each, also for scans left out of the COCO set (a scan sent to inspection because its
"empty" container was loaded has no threat box, yet its confirmed discrepancy is a label).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inference.coco import (
    annotation_entry,
    coco_document,
    image_entry,
    number_annotations,
    write_annotations,
)
from inference.scan.formats import sniff_format
from inference.service.db import Review, ScanRecord
from inference.service.records import Records
from inference.service.storage import BlobStore

_SUFFIX = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg"}


DISCREPANCIES_CSV = "discrepancies.csv"
CSV_FIELDS = (
    "review_id",
    "scan_id",
    "station",
    "station_scan_id",
    "officer",
    "reviewed_at",
    "review_verdict",
    "model_version",
    "index",
    "kind",
    "container",
    "score",
    "decision",
    "box",
    "explanation",
)
"""The columns of ``discrepancies.csv`` (``box``: x0 y0 x1 y1 in scan pixels)."""


@dataclass
class ExportSummary:
    out: Path
    scans: int = 0
    clean: int = 0
    instances: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    discrepancies: dict[str, int] = field(default_factory=dict)  # decision -> count

    def __str__(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.instances.items())
        text = f"wrote {self.scans} reviewed scans ({self.clean} clean) to {self.out}: {per}"
        if self.discrepancies:
            said = ", ".join(f"{v} {k}ed" for k, v in sorted(self.discrepancies.items()))
            text += f"; manifest discrepancies: {said} ({DISCREPANCIES_CSV})"
        if self.skipped:
            text += "; left out: " + ", ".join(f"{v} {k}" for k, v in self.skipped.items())
        return text


def card_categories(model: Path) -> list[str]:
    """The category list of the card beside ``model`` (MODEL.onnx -> MODEL.json)."""
    card = Path(model).with_suffix(".json")
    try:
        cats = json.loads(card.read_text()).get("categories")
    except FileNotFoundError:
        raise ValueError(f"no model card at {card}") from None
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{card}: not a model card ({exc})") from None
    if not isinstance(cats, list) or not cats or not all(isinstance(c, str) for c in cats):
        raise ValueError(f"{card}: no category list")
    return cats


def parse_since(text: str) -> datetime:
    """A date or an ISO 8601 time; without a zone, UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a date or ISO 8601 time: {text!r}") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def ground_truth(review: Review, categories: list[str]) -> tuple[list[dict[str, Any]], str | None]:
    """The review's boxes as (category, box, origin), or why the scan must be left out."""
    boxes = []
    for f in review.findings:
        if f.get("decision") not in ("accept", "relabel"):
            continue
        if f.get("category") not in categories:
            return [], "with an accepted finding of no model category"
        boxes.append({"category": f["category"], "box": f["box"], "origin": f["decision"]})
    for a in review.added:
        if a.get("category") not in categories:
            return [], "with an added box of no model category"
        boxes.append({"category": a["category"], "box": a["box"], "origin": "added"})
    if not boxes and review.verdict != "release":
        return [], "sent to inspection with no box"
    return boxes, None


def _write(path: Path, data: bytes) -> None:
    """Write once: an existing file of the same size is the same content-addressed blob."""
    if path.is_file() and path.stat().st_size == len(data):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _image(
    scan: ScanRecord, review: Review, stem: str, high: bytes, low: bytes | None
) -> dict[str, Any]:
    image = image_entry(
        review.id,
        f"{stem}_high{_SUFFIX.get(sniff_format(high), '.bin')}",
        scan.width,
        scan.height,
        scan.bit_depth,
        scan_id=scan.id,
        station=scan.station.name,
        station_scan_id=scan.station_scan_id,
        review_id=review.id,
        officer=review.user.name,
        reviewed_at=review.created_at.isoformat(),
        review_verdict=review.verdict,
        model_version=review.model_version,
        high_sha256=scan.high_sha256,
    )
    if low is not None:
        image["low_file_name"] = f"{stem}_low{_SUFFIX.get(sniff_format(low), '.bin')}"
        image["low_sha256"] = scan.low_sha256
    manifest = (scan.meta or {}).get("manifest")
    if manifest is not None:
        image["declared_manifest"] = manifest
    if review.discrepancies:
        image["manifest_review"] = review.discrepancies
    return image


def discrepancy_rows(scan: ScanRecord, review: Review) -> list[dict[str, Any]]:
    """The rows of ``discrepancies.csv`` for one review (none without decisions)."""
    rows = []
    for d in review.discrepancies or []:
        box = d.get("box") or []
        rows.append(
            {
                "review_id": review.id,
                "scan_id": scan.id,
                "station": scan.station.name,
                "station_scan_id": scan.station_scan_id or "",
                "officer": review.user.name,
                "reviewed_at": review.created_at.isoformat(),
                "review_verdict": review.verdict,
                "model_version": review.model_version,
                "index": d.get("index"),
                "kind": d.get("kind"),
                "container": "" if d.get("container") is None else d["container"],
                "score": d.get("score"),
                "decision": d.get("decision"),
                "box": " ".join(str(v) for v in box),
                "explanation": d.get("explanation") or "",
            }
        )
    return rows


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _annotation(box: dict[str, Any], categories: list[str]) -> dict[str, Any]:
    """An officer's box: no mask, and where it came from (accept | relabel | added)."""
    x0, y0, x1, y1 = (float(v) for v in box["box"])
    return annotation_entry(
        categories.index(box["category"]) + 1,
        [x0, y0, x1 - x0, y1 - y0],
        (x1 - x0) * (y1 - y0),
        origin=box["origin"],
    )


def export_reviews(
    records: Records,
    blobs: BlobStore,
    out: Path | str,
    categories: list[str],
    since: datetime | None = None,
) -> ExportSummary:
    """Write every reviewed scan (latest review at or after ``since``) into ``out``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(out)
    skipped: Counter[str] = Counter()
    exported: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    decided: list[dict[str, Any]] = []
    for scan, review, status in records.latest_reviews(since):
        if status != "reviewed":
            skipped["re-opened"] += 1
            continue
        decided += discrepancy_rows(scan, review)
        boxes, why = ground_truth(review, categories)
        if why is not None:
            skipped[why] += 1
            continue
        try:
            high = blobs.get(scan.high_sha256)
            low = blobs.get(scan.low_sha256) if scan.low_sha256 else None
        except (FileNotFoundError, ValueError):
            skipped["whose image files are missing"] += 1
            continue
        image = _image(scan, review, f"images/{review.id:06d}", high, low)
        _write(out / image["file_name"], high)
        if low is not None:
            _write(out / image["low_file_name"], low)
        image["clean"] = not boxes
        exported.append((image, [_annotation(b, categories) for b in boxes]))
    images, annotations = number_annotations(exported)
    info = {
        "description": "CargoScan officer reviews",
        "version": "1",
        "generator": "cargoscan reviews export",
        "since": since.isoformat() if since else None,
        "created": datetime.now(timezone.utc).isoformat(),
    }
    write_annotations(out, coco_document(info, categories, images, annotations))
    if decided or (out / DISCREPANCIES_CSV).exists():  # an older export's file is replaced
        tmp = out / f".{DISCREPANCIES_CSV}.{os.getpid()}.tmp"
        tmp.write_bytes(_csv(decided))
        os.replace(tmp, out / DISCREPANCIES_CSV)
    summary.discrepancies = dict(Counter(str(r["decision"]) for r in decided))
    summary.scans = len(images)
    summary.clean = sum(1 for im in images if im["clean"])
    counts = Counter(a["category_id"] for a in annotations)
    summary.instances = {n: counts.get(i + 1, 0) for i, n in enumerate(categories)}
    summary.skipped = dict(skipped)
    return summary
