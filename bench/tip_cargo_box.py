"""How well `cargoscan tip` finds the cargo: its container box against labelled boxes.

Reads the real reference scans (../shared/real-cargo: 8-bit JPEGs with YOLO boxes of
the container body, class 0) when they are there, finds each scan's cargo box with
the same code `cargoscan tip` runs (no labels used), and prints the mean IoU against
the union of the labelled boxes (a 2x20 ft load is one cargo region), with the worst
scans. Nothing is written.

Run from the project root:  .venv/bin/python bench/tip_cargo_box.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from inference.boxes import box_iou  # noqa: E402
from inference.scan import load_scan  # noqa: E402
from training.tip.background import estimate_export_curve, padding_masks  # noqa: E402
from training.tip.cargo_space import find_cargo_space  # noqa: E402
from training.tip.dataset import detection_attenuation  # noqa: E402

DEFAULT_REAL = ROOT.parent / "shared" / "real-cargo"


def labelled_box(label_file: Path, width: int, height: int) -> tuple[float, ...] | None:
    """Union of the YOLO boxes (cls cx cy w h, normalised) in pixels."""
    xs, ys = [], []
    for line in label_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5:
            cx, cy, bw, bh = map(float, parts[1:])
            xs += [(cx - bw / 2) * width, (cx + bw / 2) * width]
            ys += [(cy - bh / 2) * height, (cy + bh / 2) * height]
    return (min(xs), min(ys), max(xs), max(ys)) if xs else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="real scans folder")
    args = parser.parse_args(argv)
    scans = sorted(args.real.rglob("*.jpg")) if args.real.is_dir() else []
    if not scans:
        print(f"no real scans under {args.real}: nothing to measure")
        return 0
    results, pitches = [], []
    start = time.perf_counter()
    for path in scans:
        label_file = path.with_suffix(".txt")
        if not label_file.is_file():
            continue
        grey = load_scan(path).high
        h, w = grey.shape
        truth = labelled_box(label_file, w, h)
        if truth is None:
            continue
        curve = estimate_export_curve(grey)
        space = find_cargo_space(detection_attenuation(grey, curve), padding_masks(grey, 255)[1])
        results.append((box_iou(space.box, truth) if space.box else 0.0, path.stem))
        pitches.append((space.pitch_x_mm, space.pitch_y_mm))
    took = (time.perf_counter() - start) / max(len(results), 1)
    scores = np.array([r[0] for r in results])
    px, py = np.array(pitches).T
    print(f"{len(results)} labelled scans, {took * 1000:.0f} ms each")
    print(
        f"cargo box IoU vs labels: mean {scores.mean():.3f}, median {np.median(scores):.3f}, "
        f"< 0.7: {(scores < 0.7).sum()}, < 0.5: {(scores < 0.5).sum()}"
    )
    print(
        f"pitch mm, median (p10-p90): x {np.median(px):.2f} ({np.percentile(px, 10):.2f}-"
        f"{np.percentile(px, 90):.2f}), y {np.median(py):.2f} ({np.percentile(py, 10):.2f}-"
        f"{np.percentile(py, 90):.2f})"
    )
    print("worst:", ", ".join(f"{name} {score:.2f}" for score, name in sorted(results)[:5]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
