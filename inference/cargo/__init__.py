"""Contents verification: the containers in a scan, what each holds, and the manifest
check (docs/cargo.md). Classical image analysis and physics on the attenuation map the
model's pre-processing already made: a few milliseconds a scan, no model of its own."""

from __future__ import annotations

import time

import numpy as np

from inference.cargo.containers import Container, find_containers, small_attenuation
from inference.cargo.contents import GOODS, GOODS_8BIT, Contents, describe, export_attenuation
from inference.cargo.manifest import check_manifest, hs_material
from inference.contracts import CargoContainer, CargoReport
from inference.preprocess import ATTENUATION_SCALE, ModelInput
from inference.scan import Scan

__all__ = [
    "Container",
    "Contents",
    "analyze_cargo",
    "check_manifest",
    "describe",
    "find_containers",
    "hs_material",
]


def analyze_cargo(scan: Scan, model_input: ModelInput) -> CargoReport:
    """Containers, contents and the manifest check of one scan, from the attenuation the
    engine's pre-processing made (no second pass over the raw pixels)."""
    start = time.perf_counter()
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
    h, w = scan.shape
    pitch = scan.metadata.pixel_pitch_mm
    containers = find_containers(high, (h, w), pitch)
    scale = (w / high.shape[1], h / high.shape[0])
    level = GOODS_8BIT if scan.bit_depth == 8 else GOODS
    found = [(c, describe(high, low, c, scale, pitch, level)) for c in containers]
    check = check_manifest(scan.metadata, found)
    return CargoReport(
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
