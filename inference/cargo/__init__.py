"""Contents verification: the containers in a scan, what each holds, and the manifest
check (docs/cargo.md). Classical image analysis and physics on the attenuation map the
model's pre-processing already made: a few milliseconds a scan, no model of its own."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from inference.cargo.containers import Container, find_containers, small_attenuation
from inference.cargo.contents import GOODS, GOODS_8BIT, Contents, describe, export_attenuation
from inference.cargo.manifest import (
    KINDS,
    Candidate,
    check_manifest,
    check_of,
    hs_material,
    manifest_candidates,
    manifest_evidence,
)
from inference.contracts import CargoContainer, CargoReport
from inference.preprocess import ATTENUATION_SCALE, ModelInput
from inference.scan import Scan, ScanMetadata

__all__ = [
    "KINDS",
    "CargoInspection",
    "Container",
    "Contents",
    "analyze_cargo",
    "check_manifest",
    "describe",
    "find_containers",
    "hs_material",
    "inspect_cargo",
]


@dataclass(frozen=True)
class CargoInspection:
    """The cargo section of a result, and what it was made from: each container with its
    contents as measured, and every manifest check with its score, flagged or not
    (evaluation reads detection at a fixed false-flag rate from them)."""

    report: CargoReport
    found: list[tuple[Container, Contents]]
    candidates: list[Candidate]

    @property
    def evidence(self) -> dict[str, float]:
        """Per discrepancy kind, the highest score (0.5 at its flag threshold)."""
        return manifest_evidence(self.candidates)


def analyze_cargo(scan: Scan, model_input: ModelInput) -> CargoReport:
    """Containers, contents and the manifest check of one scan, from the attenuation the
    engine's pre-processing made (no second pass over the raw pixels)."""
    return inspect_cargo(scan, model_input).report


def inspect_cargo(scan: Scan, model_input: ModelInput) -> CargoInspection:
    """`analyze_cargo`, keeping the measurements and every check's score."""
    start = time.perf_counter()
    high, low = small_maps(scan, model_input)
    return inspect_small(high, low, scan.shape, int(scan.bit_depth), scan.metadata, start)


def small_maps(scan: Scan, model_input: ModelInput) -> tuple[np.ndarray, np.ndarray | None]:
    """The 4x smaller high (and low) attenuation maps the analysis works on."""
    sh, sw = model_input.scaled_hw
    channels = model_input.tensor[0, :, :sh, :sw]
    high = small_attenuation(channels[0]) * np.float32(ATTENUATION_SCALE)
    low = (
        small_attenuation(channels[1]) * np.float32(ATTENUATION_SCALE)
        if scan.low is not None
        else None
    )
    if scan.bit_depth == 8:
        high = export_attenuation(high)
        low = None if low is None else export_attenuation(low)
    return high, low


def inspect_small(
    high: np.ndarray,
    low: np.ndarray | None,
    shape: tuple[int, int],
    bit_depth: int,
    metadata: ScanMetadata,
    start: float | None = None,
) -> CargoInspection:
    """`inspect_cargo` on the small maps (`small_maps`) of a scan of `shape` pixels."""
    start = time.perf_counter() if start is None else start
    h, w = shape
    pitch = metadata.pixel_pitch_mm
    containers = find_containers(high, (h, w), pitch)
    scale = (w / high.shape[1], h / high.shape[0])
    level = GOODS_8BIT if bit_depth == 8 else GOODS
    found = [(c, describe(high, low, c, scale, pitch, level)) for c in containers]
    candidates = manifest_candidates(metadata, found)
    check = check_of(metadata, found, candidates)
    report = CargoReport(
        containers=[
            CargoContainer(
                box=list(c.box),
                empty=seen.empty,
                score=seen.score,
                mass_kg=seen.mass_kg,
                fill=seen.fill,
                kind=seen.kind,
                material=seen.material,
                packing=seen.packing,
                tank=c.tank,
                load_box=list(seen.load_box) if seen.load_box else None,
            )
            for c, seen in found
        ],
        manifest_check=check,
        processing_ms=round((time.perf_counter() - start) * 1000.0, 2),
    )
    return CargoInspection(report, found, candidates)
