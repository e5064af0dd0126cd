"""Contents verification measured against the generator's truth (issue 26, docs/cargo.md).

`cargoscan synth` writes, per scan, each container's box as it appears, its load kind and
true mass, the true and the declared manifest, and which discrepancy (if any) the
declared one carries. `cargoscan evaluate` (and bench/cargo.py) send each scan with its
declared manifest as a station does (`station_metadata`), keep a `CargoRecord` per scan
and report `cargo_figures`:

- containers: IoU of each true box with the best found one (median, share under 0.85);
- empty/loaded: per true container, right when the best-matching found box (IoU >= 0.5)
  makes the same call (no match counts as wrong);
- mass: |observed / true - 1| per loaded container called loaded (median, 90th
  percentile; overall and by load kind);
- the manifest check: per discrepancy kind, the detection rate at the threshold that
  flags at most FALSE_FLAG_RATE of the consistent scans for that kind (every check
  scores 0..1 whether it flags or not), and the detection and consistent scans' flag
  rate at the shipped thresholds (any kind flagged), split by empty and loaded vehicles.

"Consistent" means the vehicle holds what its declaration says: a true declared
manifest and no threat hidden in a container's cargo space (the generator's
`hidden_kg`). A declared-empty box carrying a stowaway or 150 kg of cigarettes is the
smuggling route contents verification exists for, so its flag is not a false one; such
scans are reported apart (`hidden_goods`: how many, how many flagged, and of those
declared empty how many as declared_empty_but_loaded). Sets written before the
generator recorded `hidden_kg` count every scan with a threat as hiding goods.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.boxes import box_iou
from inference.cargo import KINDS, CargoInspection
from inference.scan import ScanMetadata

FALSE_FLAG_RATE = 0.05
IOU_BAR = 0.85
MATCH_IOU = 0.5


def has_cargo_truth(entry: Mapping[str, Any]) -> bool:
    """Whether a COCO image entry carries the generator's cargo truth."""
    return "containers" in entry and "declared_manifest" in entry


def station_metadata(entry: Mapping[str, Any]) -> ScanMetadata:
    """The metadata a station sends with a generated scan (station.client.scan_metadata's
    cargo part): the pitch and the declared manifest, whose lines do not name the box
    (the generator's box index is its own, not the shipper's)."""
    scanner = entry.get("scanner") or {}
    manifest = [
        {k: v for k, v in line.items() if k != "container"} for line in entry["declared_manifest"]
    ]
    meta: dict[str, Any] = {"manifest": manifest}
    if scanner.get("pixel_pitch_mm"):
        meta["pixel_pitch_mm"] = float(scanner["pixel_pitch_mm"])
    return ScanMetadata.from_dict(meta)


@dataclass(frozen=True)
class ContainerOutcome:
    """One true container against the best-matching found one."""

    load: str  # the generator's load kind ("empty", "cartons", ...)
    true_mass_kg: float
    iou: float
    called_empty: bool | None  # None: no found box overlaps it by MATCH_IOU
    mass_kg: float
    material: str  # as seen


@dataclass(frozen=True)
class CargoRecord:
    """One scan's truth beside what contents verification made of it."""

    name: str
    discrepancy: str | None  # the generator's, None: the declared manifest is true
    vehicle_empty: bool  # every box truly empty
    clean: bool  # no threat placed anywhere
    hidden_kg: float  # threats' mass in the containers' cargo space (undeclared goods)
    containers: tuple[ContainerOutcome, ...]
    flagged: frozenset[str]  # kinds the result reports
    evidence: Mapping[str, float]  # per kind, the highest check score
    cargo_ms: float


def cargo_record(name: str, entry: Mapping[str, Any], seen: CargoInspection) -> CargoRecord:
    """Match the found containers to the true ones and keep what the figures need."""
    outcomes = []
    found = seen.report.containers
    for truth in entry["containers"]:
        best = max(found, key=lambda c: box_iou(c.box, truth["box"]), default=None)
        overlap = box_iou(best.box, truth["box"]) if best is not None else 0.0
        matched = best is not None and overlap >= MATCH_IOU
        outcomes.append(
            ContainerOutcome(
                load=str(truth["load"]),
                true_mass_kg=float(truth["mass_kg"]),
                iou=overlap,
                called_empty=best.empty if matched and best is not None else None,
                mass_kg=best.mass_kg if matched and best is not None else 0.0,
                material=best.material if matched and best is not None else "unknown",
            )
        )
    return CargoRecord(
        name=name,
        discrepancy=entry.get("manifest_discrepancy"),
        vehicle_empty=all(t["mass_kg"] <= 0 for t in entry["containers"]),
        clean=bool(entry.get("clean", True)),
        hidden_kg=hidden_goods_kg(entry),
        containers=tuple(outcomes),
        flagged=frozenset(d.kind for d in seen.report.manifest_check.discrepancies),
        evidence=dict(seen.evidence),
        cargo_ms=seen.report.processing_ms,
    )


def hidden_goods_kg(entry: Mapping[str, Any]) -> float:
    """The threats' mass the generator hid in the scan's containers (older sets, without
    `hidden_kg`: any threat counts, as its place is not recorded there)."""
    boxes = entry["containers"]
    if all("hidden_kg" in b for b in boxes):
        return float(sum(b["hidden_kg"] for b in boxes))
    return 0.0 if entry.get("clean", True) else math.inf


def _quantiles(values: Sequence[float]) -> dict[str, Any]:
    a = np.abs(np.asarray(values, np.float64))
    if not a.size:
        return {"n": 0, "median_abs": None, "p90_abs": None, "median_signed": None}
    return {
        "n": int(a.size),
        "median_abs": float(np.median(a)),
        "p90_abs": float(np.percentile(a, 90)),
        "median_signed": float(np.median(values)),
    }


def threshold_at(scores: Sequence[float], rate: float) -> float:
    """The lowest threshold t with at most `rate` of `scores` strictly above it."""
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    if not s.size:
        return 0.5
    allowed = math.floor(rate * s.size + 1e-9)
    return float(s[allowed]) if allowed < s.size else 0.0


def _share(flags: Sequence[bool]) -> float | None:
    return float(np.mean(flags)) if len(flags) else None


def cargo_figures(
    records: Sequence[CargoRecord], false_flag_rate: float = FALSE_FLAG_RATE
) -> dict[str, Any]:
    """The figures of the module's docstring, as plain data (metrics.json's `cargo`)."""
    outcomes = [o for r in records for o in r.containers]
    clean_of = [r.clean for r in records for _ in r.containers]
    ious = [o.iou for o in outcomes]
    right = [o.called_empty is not None and o.called_empty == (o.true_mass_kg <= 0)
             for o in outcomes]  # fmt: skip
    by_truth = {
        "empty": [x for x, o in zip(right, outcomes, strict=True) if o.true_mass_kg <= 0],
        "loaded": [x for x, o in zip(right, outcomes, strict=True) if o.true_mass_kg > 0],
        "empty_clean": [
            x
            for x, o, c in zip(right, outcomes, clean_of, strict=True)
            if o.true_mass_kg <= 0 and c
        ],
    }
    errors: dict[str, list[float]] = defaultdict(list)
    log_by_material: dict[str, list[float]] = defaultdict(list)
    for o in outcomes:
        if o.true_mass_kg > 0 and o.called_empty is False:
            ratio = max(o.mass_kg, 1.0) / o.true_mass_kg
            errors[o.load].append(ratio - 1.0)
            log_by_material[o.material].append(math.log(ratio))
    consistent = [r for r in records if r.discrepancy is None and r.hidden_kg <= 0]
    hiding = [r for r in records if r.discrepancy is None and r.hidden_kg > 0]
    hiding_empty = [r for r in hiding if r.vehicle_empty]
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        mine = [r for r in records if r.discrepancy == kind]
        t = threshold_at([r.evidence.get(kind, 0.0) for r in consistent], false_flag_rate)
        kinds[kind] = {
            "scans": len(mine),
            "threshold_at_false_flag_rate": t,
            "false_flag_rate": _share([r.evidence.get(kind, 0.0) > t for r in consistent]),
            "detection_rate_at_false_flag_rate": _share(
                [r.evidence.get(kind, 0.0) > t for r in mine]
            ),
            "detection_rate_at_shipped": _share([kind in r.flagged for r in mine]),
            "flagged_any_at_shipped": _share([bool(r.flagged) for r in mine]),
        }
    every = [x for v in errors.values() for x in v]
    return {
        "scans": len(records),
        "containers": {
            "n": len(outcomes),
            "iou_median": float(np.median(ious)) if ious else None,
            "iou_under_085": _share([x < IOU_BAR for x in ious]),
        },
        "empty_loaded": {
            "right": _share(right),
            "right_empty": _share(by_truth["empty"]),
            "right_loaded": _share(by_truth["loaded"]),
            # empty boxes of scans without threats: a hidden person or contraband is a
            # load the generator's truth (its manifest lines) does not count
            "right_empty_no_threat": _share(by_truth["empty_clean"]),
            "n_empty_no_threat": len(by_truth["empty_clean"]),
            "n_empty": len(by_truth["empty"]),
            "n_loaded": len(by_truth["loaded"]),
            "unmatched": sum(o.called_empty is None for o in outcomes),
        },
        "mass_error": {
            "all": _quantiles(every),
            "by_load": {k: _quantiles(v) for k, v in sorted(errors.items())},
            "log_sigma_by_material": {
                k: {"n": len(v), "sigma": float(np.std(v)), "median": float(np.median(v))}
                for k, v in sorted(log_by_material.items())
            },
        },
        "manifest": {
            "false_flag_rate": false_flag_rate,
            "consistent_scans": len(consistent),
            "consistent_flagged_at_shipped": _share([bool(r.flagged) for r in consistent]),
            "consistent_empty_flagged_at_shipped": _share(
                [bool(r.flagged) for r in consistent if r.vehicle_empty]
            ),
            "consistent_loaded_flagged_at_shipped": _share(
                [bool(r.flagged) for r in consistent if not r.vehicle_empty]
            ),
            "consistent_no_threat_flagged_at_shipped": _share(
                [bool(r.flagged) for r in consistent if r.clean]
            ),
            "consistent_no_threat_scans": sum(r.clean for r in consistent),
            "consistent_flagged_kinds": {k: sum(k in r.flagged for r in consistent) for k in KINDS},
            # declared truly but for threats hidden in the cargo space: not consistent
            "hidden_goods": {
                "scans": len(hiding),
                "flagged_at_shipped": _share([bool(r.flagged) for r in hiding]),
                "empty_vehicles": len(hiding_empty),
                "empty_flagged_declared_empty_but_loaded": _share(
                    ["declared_empty_but_loaded" in r.flagged for r in hiding_empty]
                ),
                "hidden_kg_median": float(np.median([r.hidden_kg for r in hiding]))
                if hiding and all(math.isfinite(r.hidden_kg) for r in hiding)
                else None,
            },
            "kinds": kinds,
        },
        "cargo_ms_median": float(np.median([r.cargo_ms for r in records])) if records else None,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def cargo_lines(fig: Mapping[str, Any]) -> list[str]:
    """`cargo_figures` as the lines `cargoscan evaluate` prints."""
    c, e, m, man = fig["containers"], fig["empty_loaded"], fig["mass_error"], fig["manifest"]
    iou_median = "n/a" if c["iou_median"] is None else f"{c['iou_median']:.3f}"
    lines = [
        f"cargo: {fig['scans']} scans, {c['n']} containers: IoU median {iou_median} "
        f"({_pct(c['iou_under_085'])} under 0.85)",
        f"cargo: empty/loaded right {_pct(e['right'])} (empty {_pct(e['right_empty'])} of "
        f"{e['n_empty']}, loaded {_pct(e['right_loaded'])} of {e['n_loaded']}, "
        f"{e['unmatched']} not found); empty boxes of scans without threats "
        f"{_pct(e['right_empty_no_threat'])} of {e['n_empty_no_threat']}",
    ]
    a = m["all"]
    if a["n"]:
        lines.append(
            f"cargo: mass error |obs/true - 1| median {_pct(a['median_abs'])}, "
            f"p90 {_pct(a['p90_abs'])} ({a['n']} loads)"
        )
        for load, q in m["by_load"].items():
            lines.append(
                f"cargo:   {load}: median {_pct(q['median_abs'])}, p90 {_pct(q['p90_abs'])}, "
                f"signed {_pct(q['median_signed'])} ({q['n']})"
            )
    lines.append(
        f"cargo: consistent scans flagged at the shipped thresholds "
        f"{_pct(man['consistent_flagged_at_shipped'])} of {man['consistent_scans']} "
        f"(empty vehicles {_pct(man['consistent_empty_flagged_at_shipped'])}, loaded "
        f"{_pct(man['consistent_loaded_flagged_at_shipped'])}; scans without threats "
        f"{_pct(man['consistent_no_threat_flagged_at_shipped'])} of "
        f"{man['consistent_no_threat_scans']}); kinds flagged {man['consistent_flagged_kinds']}"
    )
    hid = man["hidden_goods"]
    if hid["scans"]:
        lines.append(
            f"cargo: declared truly but for threats hidden in the cargo space (not counted "
            f"as consistent): {hid['scans']} scans, {_pct(hid['flagged_at_shipped'])} flagged; "
            f"{hid['empty_vehicles']} declared-empty vehicles, "
            f"{_pct(hid['empty_flagged_declared_empty_but_loaded'])} flagged declared empty "
            f"but loaded"
        )
    for kind, k in man["kinds"].items():
        lines.append(
            f"cargo:   {kind}: {k['scans']} scans, detected "
            f"{_pct(k['detection_rate_at_false_flag_rate'])} at "
            f"{_pct(man['false_flag_rate'])} false flags, {_pct(k['detection_rate_at_shipped'])} "
            f"at the shipped thresholds"
        )
    return lines
