"""Material-view calibration curves computed from the scanner physics.

The officer's material view (`inference.render`) sorts each pixel into
organic / mixed / metal by the dual-energy ratio a_low / a_high at its
a_high. With beam hardening that ratio depends on thickness, so the view needs
reference curves, one per class, on a grid of a_high. This module computes
them with the same spectra and NIST coefficients that make the synthetic
scans, and writes `inference/material_calibration.json`:

    python -m training.synth.calibration [--high 6 --low 4] [--out PATH]

A test checks that the shipped file matches what the physics gives.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.synth.physics import Spectrum, linac_spectrum, polychromatic_transmission

# Reference materials for the three classes (effective Z ~7, 13, 26).
REFERENCE_MATERIALS = {"organic": "food", "mixed": "aluminium", "metal": "steel"}
A_HIGH_GRID = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "inference" / "material_calibration.json"


def _attenuation_curve(material: str, spectrum: Spectrum, masses: np.ndarray) -> np.ndarray:
    maps = {material: masses.astype(np.float32)[None, :]}
    return -np.log(polychromatic_transmission(maps, spectrum)[0].astype(np.float64))


def ratio_curve(material: str, high: Spectrum, low: Spectrum, a_high: np.ndarray) -> np.ndarray:
    """a_low / a_high of a slab of `material` at the thickness that gives each a_high."""
    masses = np.geomspace(0.05, 2000.0, 600)
    ah = _attenuation_curve(material, high, masses)
    al = _attenuation_curve(material, low, masses)
    m = np.interp(a_high, ah, masses)  # ah rises monotonically with mass
    return np.interp(m, masses, al) / np.interp(m, masses, ah)


def calibration(high_mv: float = 6.0, low_mv: float = 4.0) -> dict:
    high, low = linac_spectrum(high_mv), linac_spectrum(low_mv)
    grid = np.array(A_HIGH_GRID)
    out: dict = {
        "energies_mv": [high_mv, low_mv],
        "source": (
            "training.synth.calibration: slabs of food / aluminium / steel through the "
            f"{high_mv:g}/{low_mv:g} MV linac spectra of training.synth.physics "
            "(NIST SRD 126 mu/rho)"
        ),
        "a_high": [float(v) for v in grid],
    }
    for cls, material in REFERENCE_MATERIALS.items():
        out[cls] = [round(float(v), 5) for v in ratio_curve(material, high, low, grid)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--high", type=float, default=6.0, help="high energy end point, MV")
    ap.add_argument("--low", type=float, default=4.0, help="low energy end point, MV")
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = ap.parse_args(argv)
    args.out.write_text(json.dumps(calibration(args.high, args.low), indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
