"""Contents verification (issue 26, docs/cargo.md): measured, never asserted.

- Real scans (`../shared/real-cargo`, when present): container IoU (each labelled box
  against the best found one) and empty/loaded against `tests/data/real_cargo_empty.csv`,
  on each half: "tune" (ids whose SHA-256 fraction is below 0.5, where the 8-bit
  thresholds were chosen) and "held" (the rest, never used to choose anything).
- Synthetic scans with the generator's truth (training.cargo_metrics, the figures
  `cargoscan evaluate` reports): container IoU, empty/loaded, mass error by load kind,
  ln(observed/true) spread by material, consistent scans flagged and per discrepancy
  kind the detection rate (at 5 % false flags and at the shipped thresholds), each scan
  sent with its declared manifest as a station sends it; and small loads hidden in empty
  boxes (front wall, floor cavity) detected.
- Time: the cargo analysis per scan beside the model (ONNX Runtime, the default model
  through `inference.engine.Engine`) on the same pre-processed scans.

Run from the project root: `.venv/bin/python bench/cargo.py --scans 40` (generates 40
scans of the "acv" mix, seed 11), or `--data DIR` on a set `cargoscan synth --manifest-mix
acv` wrote (the figures docs/cargo.md reports: tune seed 101, held seed 9001).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.boxes import box_iou  # noqa: E402
from inference.cargo import analyze_cargo  # noqa: E402
from inference.preprocess import preprocess  # noqa: E402
from inference.scan import Scan, ScanMetadata, load_scan  # noqa: E402

REAL = ROOT.parent / "shared" / "real-cargo" / "ajna_bbox"
LABELS = ROOT / "tests" / "data" / "real_cargo_empty.csv"


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
                figures["iou"].append(max((box_iou(box, f) for f in found), default=0.0))
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


def synthetic_figures(
    n: int, seed: int, mix: str, model: Path | None, data: Sequence[Path] = ()
) -> dict[str, object]:
    """training.cargo_metrics' figures (what `cargoscan evaluate` reports) on n scans
    generated here with the `mix` manifest mix, or on the COCO sets `data` (written by
    `cargoscan synth --manifest-mix acv`); and the time per scan beside the model's."""
    from inference.cargo import inspect_cargo
    from training.cargo_metrics import cargo_figures, cargo_record, station_metadata
    from training.synth.scene import SynthConfig

    engine = None
    if model is not None and model.is_file():
        from inference.engine import Engine

        engine = Engine.load(model)
    records = []
    model_ms: list[float] = []
    for name, entry, scan in _synthetic_scans(n, seed, SynthConfig(manifest_mix=mix), data):
        scan = Scan(scan.high, scan.low, metadata=station_metadata(entry))
        model_input = preprocess(scan)
        records.append(cargo_record(name, entry, inspect_cargo(scan, model_input)))
        if engine is not None:
            start = time.perf_counter()
            engine.run(model_input)
            model_ms.append((time.perf_counter() - start) * 1000.0)
    figures = cargo_figures(records)
    figures["model_ms_median"] = float(np.median(model_ms)) if model_ms else math.nan
    figures["source"] = [str(d) for d in data] or f"generated: {n} scans, seed {seed}, {mix} mix"
    return figures


def _synthetic_scans(n: int, seed: int, cfg: object, data: Sequence[Path]):
    """(name, cargo truth, scan) of each scan: read from the COCO sets, else generated."""
    from inference.coco import read_coco
    from training.cargo_metrics import has_cargo_truth
    from training.synth.scene import generate_scan

    if data:
        for root in data:
            for image in read_coco(root).images:
                if not has_cargo_truth(image.entry):
                    continue
                low = root / image.low_file_name if image.low_file_name else None
                yield f"{root.name}:{image.id}", image.entry, load_scan(root / image.file_name, low)
        return
    for i in range(n):
        s = generate_scan(i, seed, cfg)  # type: ignore[arg-type]
        yield f"seed {seed}:{i}", s.info, Scan(s.high, s.low)


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
    """Print the figures (docs/cargo.md holds the last run's)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=40, help="scans to generate (no --data)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--mix", choices=("default", "acv"), default="acv", help="manifest mix")
    parser.add_argument(
        "--data", type=Path, action="append", default=[],
        help="a COCO set with cargo truth (cargoscan synth --manifest-mix acv) instead",
    )  # fmt: skip
    parser.add_argument("--small", type=int, default=6, help="scenes per small-load case")
    parser.add_argument("--no-real", action="store_true", help="skip the real scans")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "cargoscan-default.onnx")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    out: dict[str, object] = {}
    real = None if args.no_real else real_figures()
    if real is None:
        print(f"real scans: {REAL} absent or skipped")
    else:
        out["real"] = real
        for name, f in real.items():
            print(
                f"real {name:5s}: {f['scans']:.0f} scans, IoU median {f['iou_median']:.3f} "
                f"({f['iou_under_085']:.0f} under 0.85), empty/loaded right "
                f"{f['empty_loaded_right']:.1%}"
            )
    if args.scans or args.data:
        from training.cargo_metrics import cargo_lines

        syn = synthetic_figures(args.scans, args.seed, args.mix, args.model, args.data)
        out["synthetic"] = syn
        print(f"synthetic: {syn['source']}")
        print("\n".join(cargo_lines(syn)))
        sigma = syn["mass_error"]["log_sigma_by_material"]  # type: ignore[index]
        print(f"ln(observed/true) by material seen: {sigma}")
        print(
            f"time per scan (median): cargo {syn['cargo_ms_median']:.1f} ms, "
            f"model {syn['model_ms_median']:.1f} ms"
        )
    if args.small:
        small = small_load_figures(args.small, args.seed, (150.0, 300.0, 500.0))
        out["small_loads"] = small
        for name, f in small.items():
            print(f"small load: {name}: {f}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
