"""Contents verification (issue 26, docs/cargo.md): measured, never asserted.

- Real scans (`../shared/real-cargo`, when present): container IoU (each labelled box
  against the best found one) and empty/loaded against `tests/data/real_cargo_empty.csv`,
  on each half: "tune" (ids whose SHA-256 fraction is below 0.5, where the 8-bit
  thresholds were chosen) and "held" (the rest, never used to choose anything).
- N synthetic scans generated here (seeded): mass error by load kind (median signed,
  median and 90th percentile absolute), empty/loaded per container, consistent scans
  flagged, detection per discrepancy kind, ln(observed/true) spread by material, and
  small loads hidden in empty boxes (front wall, floor cavity) detected.
- Time: the cargo analysis per scan beside the model (ONNX Runtime, the default model
  through `inference.engine.Engine`) on the same pre-processed scans.

Run from the project root: `.venv/bin/python bench/cargo.py --scans 40`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.cargo import analyze_cargo  # noqa: E402
from inference.preprocess import preprocess  # noqa: E402
from inference.scan import Scan, ScanMetadata, load_scan  # noqa: E402

REAL = ROOT.parent / "shared" / "real-cargo" / "ajna_bbox"
LABELS = ROOT / "tests" / "data" / "real_cargo_empty.csv"
KINDS = (
    "declared_empty_but_loaded",
    "declared_loaded_but_empty",
    "undeclared_goods",
    "false_description",
    "weight_mismatch",
)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def half(scan_id: str) -> str:
    """The half, tune or held: a fixed split by the id's SHA-256, so no choice can leak."""
    frac = int(hashlib.sha256(scan_id.encode()).hexdigest(), 16) / 2**256
    return "tune" if frac < 0.5 else "held"


def real_figures() -> dict[str, dict[str, float]] | None:
    """Container IoU and empty/loaded accuracy per half on the real scans (None: absent)."""
    if not REAL.is_dir():
        return None
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in csv.DictReader(LABELS.open()):
        sid = row["id"]
        image, labels = REAL / sid / f"{sid}.jpg", REAL / sid / f"{sid}.txt"
        if not image.is_file():
            continue
        scan = load_scan(image)
        h, w = scan.shape
        report = analyze_cargo(scan, preprocess(scan))
        found = [c.box for c in report.containers]
        figures = out[half(sid)]
        if labels.is_file():
            for line in labels.read_text().splitlines():
                cx, cy, bw, bh = map(float, line.split()[1:5])
                box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
                figures["iou"].append(max((iou(box, f) for f in found), default=0.0))
        loaded = any(not c.empty for c in report.containers)
        figures["right"].append(float(loaded == (row["contents"] == "loaded")))
    return {
        k: {
            "scans": len(v["right"]),
            "iou_median": float(np.median(v["iou"])),
            "iou_under_085": float(np.sum(np.asarray(v["iou"]) < 0.85)),
            "empty_loaded_right": float(np.mean(v["right"])),
        }
        for k, v in sorted(out.items())
    }


def synthetic_figures(n: int, seed: int, model: Path | None) -> dict[str, object]:
    """Mass error, empty/loaded, manifest flags and time on n generated scans."""
    from training.synth.scene import SynthConfig, generate_scan

    cfg = SynthConfig()
    engine = None
    if model is not None and model.is_file():
        from inference.engine import Engine

        engine = Engine.load(model)
    err: dict[str, list[float]] = defaultdict(list)
    log_by_material: dict[str, list[float]] = defaultdict(list)
    right: list[float] = []
    consistent_flagged: list[float] = []
    detected: dict[str, list[float]] = defaultdict(list)
    cargo_ms: list[float] = []
    model_ms: list[float] = []
    for i in range(n):
        s = generate_scan(i, seed, cfg)
        meta = {"pixel_pitch_mm": cfg.pitch_mm, "manifest": s.info["declared_manifest"]}
        scan = Scan(s.high, s.low, metadata=ScanMetadata.from_dict(meta))
        model_input = preprocess(scan)
        start = time.perf_counter()
        report = analyze_cargo(scan, model_input)
        cargo_ms.append((time.perf_counter() - start) * 1000.0)
        if engine is not None:
            start = time.perf_counter()
            engine.run(model_input)
            model_ms.append((time.perf_counter() - start) * 1000.0)
        for truth in s.info["containers"]:
            best = max(report.containers, key=lambda c: iou(c.box, truth["box"]), default=None)
            if best is None or iou(best.box, truth["box"]) < 0.5:
                continue
            right.append(float(best.empty == (truth["mass_kg"] <= 0)))
            if truth["mass_kg"] > 0 and not best.empty:
                ratio = max(best.mass_kg, 1.0) / truth["mass_kg"]
                err[truth["load"]].append(ratio - 1.0)
                log_by_material[best.material].append(math.log(ratio))
        kinds = {d.kind for d in report.manifest_check.discrepancies}
        truth_kind = s.info["manifest_discrepancy"]
        if truth_kind is None:
            consistent_flagged.append(float(bool(kinds)))
        else:
            detected[truth_kind].append(float(truth_kind in kinds))
    mass = {
        kind: {
            "n": len(v),
            "median_signed": float(np.median(v)),
            "median_abs": float(np.median(np.abs(v))),
            "p90_abs": float(np.percentile(np.abs(v), 90)),
        }
        for kind, v in sorted(err.items())
    }
    every = [x for v in err.values() for x in v]
    return {
        "scans": n,
        "seed": seed,
        "mass": mass,
        "mass_all": {
            "median_abs": float(np.median(np.abs(every))) if every else math.nan,
            "p90_abs": float(np.percentile(np.abs(every), 90)) if every else math.nan,
        },
        "log_sigma": {k: (len(v), float(np.std(v))) for k, v in sorted(log_by_material.items())},
        "empty_loaded_right": (float(np.mean(right)), len(right)),
        "consistent_flagged": (float(np.mean(consistent_flagged)), len(consistent_flagged)),
        "detected": {k: (float(np.mean(v)), len(v)) for k, v in sorted(detected.items())},
        "cargo_ms_median": float(np.median(cargo_ms)),
        "model_ms_median": float(np.median(model_ms)) if model_ms else math.nan,
    }


def small_load_figures(n: int, seed: int, masses: Sequence[float]) -> dict[str, object]:
    """Share of empty boxes with a hidden load read as loaded, and of bare ones as empty."""
    from training.synth.scene import SynthConfig, generate_small_load_scan

    cfg = SynthConfig()
    out: dict[str, object] = {}
    for where in ("front_wall", "floor_cavity"):
        for mass in (0.0, *masses):
            hits = []
            for i in range(n):
                s = generate_small_load_scan(i, seed, cfg, where, max(mass, 1e-3))
                meta = ScanMetadata.from_dict({"pixel_pitch_mm": cfg.pitch_mm})
                scan = Scan(s.high, s.low, metadata=meta)
                report = analyze_cargo(scan, preprocess(scan))
                hits.append(float(any(not c.empty for c in report.containers)))
            out[f"{where} {mass:.0f} kg read loaded"] = (float(np.mean(hits)), n)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (docs/cargo.md holds the last run's figures)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--small", type=int, default=6, help="scenes per small-load case")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "cargoscan-default.onnx")
    args = parser.parse_args(argv)
    real = real_figures()
    if real is None:
        print(f"real scans: {REAL} absent, skipped")
    else:
        for name, f in real.items():
            print(
                f"real {name:5s}: {f['scans']:.0f} scans, IoU median {f['iou_median']:.3f} "
                f"({f['iou_under_085']:.0f} under 0.85), empty/loaded right "
                f"{f['empty_loaded_right']:.1%}"
            )
    syn = synthetic_figures(args.scans, args.seed, args.model)
    print(f"synthetic: {syn['scans']} scans, seed {syn['seed']}")
    print("| load kind | n | median signed | median abs | p90 abs |")
    for kind, f in syn["mass"].items():  # type: ignore[union-attr]
        print(
            f"| {kind} | {f['n']} | {f['median_signed']:+.0%} | {f['median_abs']:.0%} "
            f"| {f['p90_abs']:.0%} |"
        )
    print(f"mass error, all loads: {syn['mass_all']}")
    print(f"ln(observed/true) spread by material seen: {syn['log_sigma']}")
    print(f"empty/loaded right (containers): {syn['empty_loaded_right']}")
    print(f"consistent scans flagged: {syn['consistent_flagged']}")
    for kind in KINDS:
        print(f"detected {kind}: {syn['detected'].get(kind, 'none generated')}")  # type: ignore[union-attr]
    print(
        f"time per scan (median): cargo {syn['cargo_ms_median']:.1f} ms, "
        f"model {syn['model_ms_median']:.1f} ms"
    )
    if args.small:
        for name, f in small_load_figures(args.small, args.seed, (150.0, 300.0, 500.0)).items():
            print(f"small load: {name}: {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
