"""What the second stage (the verifier, `inference/verifier.py`) costs a scan.

The verifier applies to the bit depths its card names (8-bit exports for the shipped
model): every candidate from the card's floor up is cut out (one view or two) and scored
by a small CNN. This runs the same scans through the engine with and without it, in one
process, alternating scan by scan (which goes first alternates round by round), and
prints the time of the verifier's own step (crops and network) per scan, the candidates
it looked at, and the whole analysis with and without it, with the ratio.

Scans: the real 8-bit scans under `../shared/real-cargo` when present (read, never
copied), else synthetic scans sent as simulated 8-bit exports.

    .venv/bin/python bench/verifier_cost.py [--model PATH] [--scans N] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inference import DEFAULT_MODEL
from inference.engine import Engine
from inference.scan import Scan

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-cargo"


def scans_to_time(count: int) -> tuple[str, list[Scan]]:
    """(where they come from, the scans)."""
    from training.evaluate import clean_scan_paths, load_clean_scan

    if REAL.is_dir():
        paths = clean_scan_paths(REAL)[:count]
        return f"{len(paths)} real scans from {REAL}", [load_clean_scan(p) for p in paths]
    from training.augment import eight_bit_export_of
    from training.synth.scene import SynthConfig, generate_scan

    made = [generate_scan(i, 7, SynthConfig()) for i in range(count)]
    scans = [eight_bit_export_of(Scan(high=s.high, low=s.low), i) for i, s in enumerate(made)]
    return f"{count} synthetic scans as 8-bit exports (no {REAL})", scans


def timed(step: Callable[..., Any], into: list[tuple[float, int]]) -> Callable[..., Any]:
    """``step`` (the verifier's rescore) that records (seconds, candidates looked at)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        kept, scores = step(*args, **kwargs)
        into.append((time.perf_counter() - started, len(kept)))
        return kept, scores

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--scans", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    verified = Engine.load(args.model)
    alone = Engine.load(args.model, verifier=False)
    if verified.verifier is None:
        raise SystemExit(f"{args.model}: its card names no verifier")
    steps: list[tuple[float, int]] = []
    verifier = verified.verifier
    verifier.rescore = timed(verifier.rescore, steps)  # type: ignore[method-assign]
    where, scans = scans_to_time(args.scans)
    views = len(verifier.spec.views)
    print(f"{args.model.name}: verifier {verifier.spec.file}, {views} view(s); {where}")
    with_ms, without_ms = [], []
    for r in range(args.rounds):
        pairs = ((verified, with_ms), (alone, without_ms))
        for scan in scans:  # which goes first alternates by round: no order advantage
            for engine, into in pairs if r % 2 == 0 else pairs[::-1]:
                started = time.perf_counter()
                engine.analyze(scan)
                into.append(1000 * (time.perf_counter() - started))
    own = np.array([s for s, _ in steps]) * 1000
    looked = np.array([n for _, n in steps])
    pct = np.percentile
    print(
        f"verifier step: median {np.median(own):.1f} ms, 90th percentile {pct(own, 90):.1f} ms, "
        f"{looked.mean():.1f} candidates a scan ({len(steps)} steps)"
    )
    w, wo = statistics.median(with_ms), statistics.median(without_ms)
    print(f"whole analysis: {w:.1f} ms with it, {wo:.1f} ms without (ratio {w / wo:.3f})")


if __name__ == "__main__":
    main()
