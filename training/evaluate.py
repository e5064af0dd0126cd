"""`cargoscan evaluate`: an ONNX model through the service's engine on labelled scans.

Writes OUT/metrics.json:

    {"categories": {name: {"ap50", "detection_rate_at_far": {far: rate},
                           "threshold_at_far": {far: threshold}}},
     "scan": {"detection_rate_at_far": {far: rate}, "false_alarm_rate_at_far": {far: rate}},
     "map50", "map", "clean_scans", "threat_instances",
     "at_card_thresholds": {...}, "by_attenuation": {...}, "by_contrast": {...},
     "by_concealment": {...},
     "single_energy": bool, "eight_bit": bool}

Per category, the threshold is the one that lets at most `far` of the clean
scans alarm (see `training.metrics`). At scan level a scan alarms when any
finding reaches its category's threshold; the measured scan-level false-alarm
rate is reported beside the detection rate, since several categories can
each add false alarms. `by_attenuation` splits the detection rate at the first
false-alarm rate by how much matter the beam crossed where each threat sits (the
median high-energy -ln T over its box, in bands): deep in dense cargo a threat
is a faint change under photon noise, and the bands show how much of what is
missed lies there. `by_contrast` splits it by how much each threat changes the
image where it lies (`synth`'s per-instance `contrast`, net of the cargo it
displaced): a miss under 0.1 is one no transmission image shows plainly, above
it the model could have seen it. `by_concealment` splits it by hiding place.
`at_card_thresholds` gives the same figures at the
thresholds the model card ships (calibrated on validation data; 8-bit scans
get the card's 8-bit thresholds), which is what a station will actually see.
With `eight_bit`, every scan is first turned into what a single-energy
scanner's 8-bit JPEG export would send (`training.augment.eight_bit_export`,
seeded per scan). mAP comes from pycocotools with area
ranges and detection limits set for scans (threats from a few pixels to a
person).

And the pictures people would rather see than read (`training.report`):
pr_curves.png, detection_vs_far.png, detection_by_attenuation.png,
detection_by_contrast.png and detection_by_concealment.png (where the data set
records contrast and hiding places, as `cargoscan synth` does) and
worst_cases.png.

`evaluate_detector` gives the same figures (without the card's and the verdicts') for
any detector, a function from a scan to its findings: `bench/peer_accuracy.py` judges
YOLOv8n by it.

When the data set carries the generator's cargo truth (`cargoscan synth` writes each
container's box, load and mass and the true and declared manifests), each scan is also
sent with its declared manifest as a station sends it and the contents verification
(`inference.cargo`) is measured: metrics.json's `cargo` (`training.cargo_metrics`:
container IoU, empty/loaded, mass error by load kind, and per discrepancy kind the
detection rate at 5 % false flags on consistent scans and at the shipped thresholds).

`clean_scan_alarms` is the other check: scans known to hold no contraband
(e.g. real scans) through the engine at the card's thresholds; the share that
alarms is the false-alarm rate a station would see on that traffic.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inference.cargo import inspect_cargo
from inference.coco import read_coco
from inference.contracts import card_text
from inference.engine import Analysis, Engine, Finding, ModelError
from inference.preprocess import attenuation
from inference.result import build_result, thresholds_for
from inference.scan import Scan, ScanError, load_scan
from training.augment import eight_bit_export_of
from training.cargo_metrics import (
    CargoRecord,
    cargo_figures,
    cargo_record,
    has_cargo_truth,
    station_metadata,
)
from training.data import IMAGE_SUFFIXES, LabelledScan, data_label, open_sources
from training.metrics import (
    ATTENUATION_EDGES,
    CONTRAST_EDGES,
    ScanFindings,
    detection_by_attenuation,
    detection_by_concealment,
    detection_by_contrast,
    detection_rate_at_far,
    hits,
)

FARS = (0.01, 0.001)
# Area ranges in px^2 at 5 mm pitch: a pistol part ~15x15, a brick stack ~60x30, a person ~100x200.
AREA_RANGES = [[0, 1e10], [0, 32**2], [32**2, 96**2], [96**2, 1e10]]
MAX_DETS = [10, 50, 100]


def _coco_map(
    gt: dict[str, Any], detections: list[dict[str, Any]]
) -> tuple[float, float, dict[int, float]]:
    """(mAP@[.5:.95], mAP@.5, AP@.5 per category id) from pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        if not detections:
            return 0.0, 0.0, {c: 0.0 for c in coco.getCatIds()}
        dt = coco.loadRes(detections)
        ev = COCOeval(coco, dt, "bbox")
        ev.params.imgIds = [im["id"] for im in gt["images"]]
        ev.params.areaRng = AREA_RANGES
        ev.params.maxDets = MAX_DETS
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # precision is [iou, recall, category, area, max dets]: IoU 0.5, all areas, most dets.
    p50 = ev.eval["precision"][0, :, :, 0, -1]
    per_cat = {}
    for k, cat in enumerate(ev.params.catIds):
        valid = p50[:, k][p50[:, k] > -1]
        per_cat[cat] = float(valid.mean()) if valid.size else float("nan")
    return float(max(ev.stats[0], 0.0)), float(max(ev.stats[1], 0.0)), per_cat


def findings_arrays(
    engine: Engine, analysis: Analysis
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An analysis's findings as boxes (N, 4), scores (N,) and category indices (N,)."""
    found = analysis.findings
    return (
        np.array([f.box for f in found], np.float64).reshape(-1, 4),
        np.array([f.score for f in found], np.float64),
        np.array([engine.categories.index(f.category) for f in found], np.int64),
    )


def box_attenuation(high: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per box (x0, y0, x1, y1 in pixels), the median high-energy attenuation -ln T inside
    it: how much matter the beam crossed where a threat sits, the threat included."""
    if not len(boxes):
        return np.zeros(0, np.float64)
    a = attenuation(high)
    h, w = a.shape
    out = []
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        c0, r0 = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.floor(y0), 0, h - 1))
        c1, r1 = max(int(np.ceil(min(x1, w))), c0 + 1), max(int(np.ceil(min(y1, h))), r0 + 1)
        out.append(float(np.median(a[r0:r1, c0:c1])))
    return np.array(out, np.float64)


def _single_energy(scan: Scan) -> Scan:
    """The scan as a single-energy scanner would send it: the high channel only."""
    return replace(scan, low=None)


def _none_if_nan(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def scan_alarms(scans: list[ScanFindings], thresholds: dict[int, float]) -> np.ndarray:
    """Per scan: does any finding reach its category's threshold?"""
    return np.array(
        [
            any(
                float(sc) > thresholds[int(lab)] for sc, lab in zip(s.scores, s.labels, strict=True)
            )
            for s in scans
        ],
        bool,
    )


def _rates_at(scans: list[ScanFindings], thresholds: dict[int, float]) -> dict[str, float | None]:
    alarms = scan_alarms(scans, thresholds)
    clean = np.array([s.clean for s in scans])
    return {
        "detection_rate": float(alarms[~clean].mean()) if (~clean).any() else None,
        "false_alarm_rate": float(alarms[clean].mean()) if clean.any() else None,
    }


def _card_figures(
    engine: Engine, scans: list[ScanFindings], bit_depths: list[int]
) -> dict[str, Any] | None:
    """Detection and false-alarm rates at the thresholds the card ships (per scan, those
    for its bit depth)."""
    if not engine.card.thresholds:
        return None
    by_depth = {}
    for depth in sorted(set(bit_depths)):
        named, _ = thresholds_for(engine.card, depth)
        by_depth[depth] = {c: named[name] for c, name in enumerate(engine.categories)}
    out: dict[str, Any] = {
        # Those of the first scan's bit depth (a test set is usually all one kind) ...
        "thresholds": {
            name: by_depth[bit_depths[0]][c] if bit_depths else engine.card.thresholds[name]
            for c, name in enumerate(engine.categories)
        },
        # ... and those of every bit depth the set held.
        "thresholds_by_bit_depth": {
            str(d): {name: t[c] for c, name in enumerate(engine.categories)}
            for d, t in by_depth.items()
        },
        "categories": {},
    }
    for c, name in enumerate(engine.categories):
        instances = hit_count = clean_alarms = clean_n = 0
        for s, depth in zip(scans, bit_depths, strict=True):
            mine = (s.labels == c) & (s.scores > by_depth[depth][c])
            if s.clean:
                clean_n += 1
                clean_alarms += bool(mine.any())
                continue
            gt = s.gt_boxes[s.gt_labels == c]
            instances += len(gt)
            if len(gt):
                hit_count += int(hits(s.boxes[mine], gt).any(axis=0).sum())
        out["categories"][name] = {
            "detection_rate": hit_count / instances if instances else None,
            "false_alarm_rate": clean_alarms / clean_n if clean_n else None,
        }
    alarms = np.array(
        [scan_alarms([s], by_depth[d])[0] for s, d in zip(scans, bit_depths, strict=True)], bool
    )
    clean = np.array([s.clean for s in scans], bool)
    out["scan"] = {
        "detection_rate": float(alarms[~clean].mean()) if (~clean).any() else None,
        "false_alarm_rate": float(alarms[clean].mean()) if clean.any() else None,
    }
    return out


def verdict_figures(scans: list[ScanFindings], results: list[dict[str, Any]]) -> dict[str, Any]:
    """What an officer sees, from the results `cargoscan analyze` and the service give
    (merged findings, no specks, the card's review rule): the share of threat and of clean
    scans per verdict, findings per clean scan, and the share of threats an alarm finding
    (any category) or any shown finding (detector or anomaly) covers."""
    clean = [r for s, r in zip(scans, results, strict=True) if s.clean]
    threat = [(s, r) for s, r in zip(scans, results, strict=True) if not s.clean]

    def shares(rs: list[dict[str, Any]]) -> dict[str, float | None]:
        n = len(rs)
        return {
            v: (sum(r["verdict"] == v for r in rs) / n if n else None)
            for v in ("alarm", "review", "clear")
        }

    instances = alarm_covered = covered = 0
    for s, r in threat:
        instances += len(s.gt_boxes)
        shown = np.array([f["box"] for f in r["findings"]], np.float64).reshape(-1, 4)
        alarming = np.array([f["box"] for f in r["findings"] if f["alarm"]], np.float64).reshape(
            -1, 4
        )
        covered += int(hits(shown, s.gt_boxes).any(axis=0).sum())
        alarm_covered += int(hits(alarming, s.gt_boxes).any(axis=0).sum())
    return {
        "threat_scans": shares([r for _, r in threat]),
        "clean_scans": shares(clean),
        "findings_per_clean_scan": (
            sum(len(r["findings"]) for r in clean) / len(clean) if clean else None
        ),
        "threats_in_an_alarm_finding": alarm_covered / instances if instances else None,
        "threats_in_any_finding": covered / instances if instances else None,
    }


Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A detector's findings on one scan: boxes (N, 4) x0, y0, x1, y1 in the scan's pixels,
scores (N,) and category indices (N,)."""


class Tally:
    """What `evaluate` counts scan by scan, whichever detector found the boxes: the
    findings beside the labels, the COCO ground truth and detections for mAP, and the
    scans' names and bit depths.

    Why apart from the engine: a peer detector (`bench/peer_accuracy.py`) must be judged
    by exactly the figures `cargoscan evaluate` gives CargoNet.
    """

    def __init__(self, categories: Sequence[str]) -> None:
        self.categories = list(categories)
        self.scans: list[ScanFindings] = []
        self.bit_depths: list[int] = []
        self.names: list[str] = []
        self.detections: list[dict[str, Any]] = []
        self.clean_digests: set[str] = set()  # distinct clean images (copies count once)
        self.gt: dict[str, Any] = {
            "images": [],
            "annotations": [],
            "categories": [{"id": c + 1, "name": n} for c, n in enumerate(self.categories)],
        }

    def add(self, item: LabelledScan, scan: Scan, found: Detections) -> None:
        """One scan: `item` as labelled, `scan` as the detector was sent it."""
        boxes, scores, labels = found
        # Measured on the scan as recorded (not its 8-bit export): the same bands throughout.
        depth = box_attenuation(item.scan.high, item.boxes)
        self.scans.append(
            ScanFindings(
                boxes, scores, labels, item.boxes, item.labels, depth, item.contrasts, item.places
            )
        )
        self.bit_depths.append(int(scan.bit_depth))
        self.names.append(item.name)
        if not len(item.labels):
            self.clean_digests.add(scan_digest(item.scan))
        image_id = len(self.scans)
        h, w = scan.shape
        gt = self.gt
        gt["images"].append({"id": image_id, "width": w, "height": h})
        for (x0, y0, x1, y1), lab in zip(item.boxes, item.labels, strict=True):
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": image_id,
                 "category_id": int(lab) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                 "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0}
            )  # fmt: skip
        for (x0, y0, x1, y1), sc, lab in zip(boxes, scores, labels, strict=True):
            self.detections.append(
                {"image_id": image_id, "category_id": int(lab) + 1,
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(sc)}
            )  # fmt: skip

    def metrics(
        self, fars: tuple[float, ...] = FARS
    ) -> tuple[dict[str, Any], dict[float, dict[int, float]]]:
        """The detector-independent figures of metrics.json (per category, scan level,
        mAP, the splits, the counts) and the per-category thresholds at each rate."""
        scans = self.scans
        m, m50, per_cat_ap = _coco_map(self.gt, self.detections)
        metrics: dict[str, Any] = {"categories": {}}
        thresholds: dict[float, dict[int, float]] = {far: {} for far in fars}
        for c, name in enumerate(self.categories):
            rates, t = detection_rate_at_far(scans, c, fars)
            for far in fars:
                thresholds[far][c] = t[far]
            metrics["categories"][name] = {
                "ap50": _none_if_nan(per_cat_ap.get(c + 1, float("nan"))),
                "detection_rate_at_far": {str(f): _none_if_nan(r) for f, r in rates.items()},
                "threshold_at_far": {str(f): v for f, v in t.items()},
            }
        scan_rates, scan_fars = {}, {}
        for far in fars:
            r = _rates_at(scans, thresholds[far])
            scan_rates[str(far)], scan_fars[str(far)] = r["detection_rate"], r["false_alarm_rate"]
        metrics["scan"] = {
            "detection_rate_at_far": scan_rates,
            "false_alarm_rate_at_far": scan_fars,
        }
        metrics["map50"], metrics["map"] = m50, m
        for key, split in (
            ("by_attenuation", detection_by_attenuation),
            ("by_contrast", detection_by_contrast),
            ("by_concealment", detection_by_concealment),
        ):
            metrics[key] = {
                "far": str(fars[0]),
                "all": split(scans, None, thresholds[fars[0]]),
                "categories": {
                    name: split(scans, c, thresholds[fars[0]])
                    for c, name in enumerate(self.categories)
                },
            }
        metrics["by_attenuation"]["edges"] = list(ATTENUATION_EDGES)
        metrics["by_contrast"]["edges"] = list(CONTRAST_EDGES)
        metrics["clean_scans"] = sum(s.clean for s in scans)
        metrics["clean_distinct_scans"] = len(self.clean_digests)
        metrics["threat_instances"] = int(sum(len(s.gt_labels) for s in scans))
        return metrics, thresholds


def scan_digest(scan: Scan) -> str:
    """SHA-256 of a scan's pixels (both channels): identical copies of a clean scan (a
    `tip` set leaves each background clean several times, re-encoded the same way) are
    one scan to a false-alarm rate."""
    digest = hashlib.sha256(np.ascontiguousarray(scan.high))  # hashed in place, no copy
    if scan.low is not None:
        digest.update(np.ascontiguousarray(scan.low))
    return digest.hexdigest()


def resolution_line(metrics: Mapping[str, Any], fars: Sequence[float] = FARS) -> str | None:
    """A warning when the clean scans cannot resolve a false-alarm rate: with D distinct
    clean images, a rate below 1/D lets no distinct image pass, so "detection at that
    rate" is detection at zero false alarms."""
    total, distinct = metrics.get("clean_scans", 0), metrics.get("clean_distinct_scans", 0)
    if not distinct:
        return None
    coarse = [f for f in fars if f < 1.0 / distinct]
    if distinct == total and not coarse:
        return None
    rates = " and ".join(f"{100 * f:g} %" for f in coarse) or "none"
    return (
        f"clean scans: {total}, {distinct} distinct images; a false-alarm rate finer than "
        f"1/{distinct} ({rates}) lets no distinct clean image pass: detection there is at "
        f"zero false alarms"
    )


def _as_sent(item: LabelledScan, index: int, single_energy: bool, eight_bit: bool) -> Scan:
    """Scan `index` as the evaluation sends it: the high channel only, or the 8-bit export."""
    scan = _single_energy(item.scan) if single_energy else item.scan
    return eight_bit_export_of(scan, index) if eight_bit else scan


def cargo_truths(data: Path | Sequence[Path]) -> dict[str, dict[str, Any]]:
    """The generator's cargo truth per scan name ("<data set>:<image id>", as the COCO
    source names its scans), for the COCO sets among `data` that carry it."""
    out: dict[str, dict[str, Any]] = {}
    for root in [data] if isinstance(data, (str, Path)) else data:
        root = Path(root)
        if not (root / "annotations.json").is_file():
            continue
        for image in read_coco(root).images:
            if has_cargo_truth(image.entry):
                out[f"{root.name}:{image.id}"] = dict(image.entry)
    return out


def evaluate(
    model: Path,
    data: Path | Sequence[Path],
    out: Path,
    fars: tuple[float, ...] = FARS,
    *,
    single_energy: bool = False,
    eight_bit: bool = False,
    operating_point: Path | None = None,
    pictures: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the model on a labelled COCO or YOLO folder, or several read as one (e.g. a
    test set and a larger clean-only set); write metrics.json (and pictures).

    `single_energy` drops the low channel; `eight_bit` sends each scan as an 8-bit
    single-energy JPEG export instead (seeded by its index, so runs repeat). A site's
    `operating_point` replaces the card's thresholds in `at_card_thresholds` and `verdicts`.
    """
    engine = Engine.load(model, operating_point=operating_point)
    source = open_sources(data, engine.categories)
    tally = Tally(engine.categories)
    truths = cargo_truths(data)
    cargo: list[CargoRecord] = []
    results: list[dict[str, Any]] = []
    refused: list[str] = []  # declared manifests the metadata check refuses
    for k in tqdm(range(len(source)), desc="evaluate", unit="scan", disable=not progress):
        item = source.labelled(k)
        truth = truths.get(item.name)
        if truth is not None:  # sent with its declared manifest, as a station sends it
            try:
                meta = station_metadata(truth)
            except ScanError:  # the service would refuse it (422): no manifest to check
                refused.append(item.name)
                truth = None
            else:
                item = replace(item, scan=replace(item.scan, metadata=meta))
        scan = _as_sent(item, k, single_energy, eight_bit)
        analysis = engine.analyze(scan)
        results.append(build_result(engine, analysis, item.name, 0.0))
        tally.add(item, scan, findings_arrays(engine, analysis))
        if truth is not None and analysis.model_input is not None:
            seen = inspect_cargo(scan, analysis.model_input)
            cargo.append(cargo_record(item.name, truth, seen))
    metrics, thresholds = tally.metrics(fars)
    scans = tally.scans
    metrics["at_card_thresholds"] = _card_figures(engine, scans, tally.bit_depths)
    metrics["verdicts"] = verdict_figures(scans, results)
    metrics["single_energy"] = single_energy or eight_bit
    metrics["eight_bit"] = eight_bit
    metrics["model"] = {"name": engine.card.name, "sha256": engine.card.onnx.sha256}
    metrics["cargo"] = cargo_figures(cargo) if cargo else None
    if metrics["cargo"] is not None:
        metrics["cargo"]["refused_manifests"] = refused
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    if pictures:
        from training import report

        report.curves(scans, engine.categories, thresholds[fars[0]], fars[0], out)
        for key in report.SPLITS:
            report.split_bars(metrics[key], key, out)
        report.worst_cases(
            source, scans, tally.names, engine.categories, thresholds[fars[0]], out,
            single_energy=single_energy or eight_bit,
        )  # fmt: skip
    return metrics


def evaluate_detector(
    detect: Callable[[Scan], Detections],
    categories: Sequence[str],
    data: Path | Sequence[Path],
    fars: tuple[float, ...] = FARS,
    *,
    single_energy: bool = False,
    eight_bit: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], Tally]:
    """`evaluate`'s figures for any detector: `detect(scan)` gives its findings in the
    scan's pixels (category indices into `categories`). Each call is timed (wall clock,
    the scan already decoded): metrics["seconds_per_scan"] holds the times in order.

    Why: a peer (another network, another runtime) is measured by the same counts,
    thresholds and mAP as our engine, on the same scans sent the same way.
    """
    source = open_sources(data, categories)
    tally = Tally(categories)
    seconds: list[float] = []
    for k in tqdm(range(len(source)), desc="evaluate", unit="scan", disable=not progress):
        item = source.labelled(k)
        scan = _as_sent(item, k, single_energy, eight_bit)
        started = time.perf_counter()
        found = detect(scan)
        seconds.append(time.perf_counter() - started)
        tally.add(item, scan, found)
    metrics, _ = tally.metrics(fars)
    metrics["single_energy"] = single_energy or eight_bit
    metrics["eight_bit"] = eight_bit
    metrics["seconds_per_scan"] = seconds
    return metrics, tally


def record_in_card(
    model: Path, metrics: dict[str, Any], data: Path | Sequence[Path], key: str | None = None
) -> Path:
    """Add a test evaluation's headline figures to the model card (`metrics.KEY`; by
    default test, test_single_energy or test_8bit).

    The card is what people read about a model; its figures on held-out data belong
    there. The ONNX bytes (and so the sha256 the card holds) do not change.
    """
    card_path = Path(model).with_suffix(".json")
    card = json.loads(card_path.read_text())
    key = key or (
        "test_8bit"
        if metrics.get("eight_bit")
        else "test_single_energy"
        if metrics.get("single_energy")
        else "test"
    )
    card.setdefault("metrics", {})[key] = {
        "data": data_label(data),
        "clean_scans": metrics["clean_scans"],
        "threat_instances": metrics["threat_instances"],
        "map50": metrics["map50"],
        "map": metrics["map"],
        "detection_rate_at_far": {
            name: c["detection_rate_at_far"] for name, c in metrics["categories"].items()
        },
        "scan": metrics["scan"],
        "at_card_thresholds": metrics.get("at_card_thresholds"),
        "by_attenuation": metrics.get("by_attenuation", {}).get("all"),
        "by_contrast": metrics.get("by_contrast", {}).get("all"),
        "by_concealment": metrics.get("by_concealment", {}).get("all"),
        "by_concealment_per_category": metrics.get("by_concealment", {}).get("categories"),
        "verdicts": metrics.get("verdicts"),
    }
    card_path.write_text(card_text(card, str(card_path)))
    return card_path


def record_clean_in_card(
    model: Path, result: dict[str, Any], folder: Path, key: str = "clean_scans"
) -> Path:
    """Add a clean-scan check's figures (`clean_scan_alarms`) to the model card
    (`metrics.KEY`): alarm and review shares, findings per scan, per category."""
    card_path = Path(model).with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.setdefault("metrics", {})[key] = {
        "data": str(folder),
        **{k: v for k, v in result.items() if k not in ("per_scan", "model", "thresholds")},
    }
    card_path.write_text(card_text(card, str(card_path)))
    return card_path


def clean_scan_paths(folder: Path) -> list[Path]:
    """Every scan under ``folder`` (recursively): its only or high channel's file; a
    ``<stem>_low`` image beside a ``<stem>_high`` one is its partner, not a scan."""
    paths = sorted(
        p for p in Path(folder).rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_low")
    )  # fmt: skip
    if not paths:
        raise ValueError(f"{folder}: no scans ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def load_clean_scan(path: Path) -> Scan:
    """One scan of :func:`clean_scan_paths`, with its low channel when it has one."""
    low = path.with_name(path.name.replace("_high", "_low")) if "_high" in path.stem else None
    return load_scan(path, low if low is not None and low.is_file() else None)


def clean_scan_alarms(
    model: Path,
    folder: Path,
    out: Path,
    *,
    operating_point: Path | None = None,
    pictures: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Scans known to hold no contraband through `cargoscan analyze`'s own result builder:
    the share that alarms, the share an officer must look at (alarm or review), and the
    findings per scan, per category, at the card's operating point (or a site's).

    Every image under `folder` (recursively) is one single-energy scan, or a pair when a
    `<stem>_low` image sits beside a `<stem>_high` one. Writes OUT/clean_alarms.json and,
    with `pictures`, OUT/clean_alarms.png (the alarmed scans with their findings).
    """
    engine = Engine.load(model, operating_point=operating_point)
    card_t = engine.card.thresholds
    if not card_t:
        raise ModelError(f"{model}: its card has no thresholds (export it with --val)")
    used: dict[str, dict[str, float]] = {}
    records, alarmed = [], []
    for path in tqdm(clean_scan_paths(folder), desc="clean scans", unit="scan",
                     disable=not progress):  # fmt: skip
        scan = load_clean_scan(path)
        analysis = engine.analyze(scan)
        used[f"{analysis.bit_depth}-bit"] = thresholds_for(engine.card, analysis.bit_depth)[0]
        result = build_result(engine, analysis, path.stem, 0.0)
        listed = [
            {"category": f["category"], "score": f["score"], "box": f["box"],
             "source": f["source"], "alarm": f["alarm"]}
            for f in result["findings"]
        ]  # fmt: skip
        records.append(
            {"file": str(path.relative_to(folder)), "verdict": result["verdict"],
             "alarm": result["verdict"] == "alarm", "risk": round(result["risk"], 4),
             "findings": listed}
        )  # fmt: skip
        if result["verdict"] == "alarm":
            over = [
                Finding(f["category"], f["score"], tuple(f["box"])) for f in listed if f["alarm"]
            ]
            alarmed.append((path, scan, over))
    n = len(records)
    verdicts = [r["verdict"] for r in records]
    categories = [*engine.categories, "anomaly"]
    result = {
        "model": {"name": engine.card.name, "sha256": engine.card.onnx.sha256},
        "operating_point": engine.card.operating_point_site or "card",
        "thresholds": card_t,
        "thresholds_used": used,  # per bit depth seen: what decided the alarms
        "scans": n,
        "alarmed": verdicts.count("alarm"),
        "reviewed": verdicts.count("review"),
        "alarm_share": verdicts.count("alarm") / n,
        "review_share": verdicts.count("review") / n,
        "alarm_or_review_share": (n - verdicts.count("clear")) / n,
        "findings_per_scan": sum(len(r["findings"]) for r in records) / n,
        "anomaly_findings_per_scan": sum(
            f["source"] == "anomaly" for r in records for f in r["findings"]
        ) / n,
        # scans with a finding of the category over its alarm threshold
        "per_category": {
            name: sum(any(f["alarm"] and f["category"] == name for f in r["findings"])
                      for r in records)
            for name in engine.categories
        },
        "findings_per_scan_by_category": {
            name: sum(f["category"] == name for r in records for f in r["findings"]) / n
            for name in categories
        },
        "per_scan": records,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "clean_alarms.json").write_text(json.dumps(result, indent=2) + "\n")
    if pictures:
        from training import report

        report.alarm_sheet(alarmed, card_t, out / "clean_alarms.png")
    return result
