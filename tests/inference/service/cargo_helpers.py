"""A synthetic scan whose declared manifest contradicts it, for the contents-verification
tests of the service and the viewer (docs/cargo.md, "Risk and review").

Scan 28 of seed 7 (the generator's default mix) is a loaded 40 ft box (about 24 t) that the
generator's *declared* manifest says is empty (``manifest_discrepancy``:
``declared_empty_but_loaded``); its true manifest lists the load. Generated without threats
(``clean_fraction=1``: the manifests are drawn before the threats, so they are the same),
so the detector's findings leave it CLEAR and only the manifest check can raise its risk.
Generating it takes about 10 s: once per test session (cached)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tests.inference.service.service_helpers import REPO, png16

SEED, INDEX = 7, 28
SHIPPED_MODEL = REPO / "models" / "cargoscan-default.onnx"


@dataclass(frozen=True)
class ContradictedScan:
    high: bytes  # 16-bit PNG
    low: bytes
    declared: dict[str, Any]  # the station's metadata with the (wrong) declared manifest
    true: dict[str, Any]  # the same with the true manifest (consistent)
    containers: list[dict[str, Any]]  # the generator's boxes and true masses


@functools.lru_cache(maxsize=1)
def contradicted_scan() -> ContradictedScan:
    """The scan, its PNG bytes and two metadata: the declared (wrong) and the true."""
    from station.client import scan_metadata
    from training.synth.scene import SynthConfig, generate_scan

    cfg = SynthConfig(clean_fraction=1.0)
    synth = generate_scan(INDEX, SEED, cfg)
    assert synth.info["manifest_discrepancy"] == "declared_empty_but_loaded", (
        f"the generator changed: scan {INDEX} of seed {SEED} is now "
        f"{synth.info['manifest_discrepancy']!r}; pick another declared-empty loaded scan"
    )
    assert synth.info["declared_manifest"] == [] and synth.info["true_manifest"]
    meta = scan_metadata(synth, INDEX, SEED, cfg, datetime(2027, 1, 20, 8, 0, tzinfo=timezone.utc))
    true_lines = [
        {k: v for k, v in line.items() if k != "container"} for line in synth.info["true_manifest"]
    ]
    return ContradictedScan(
        high=png16(synth.high),
        low=png16(synth.low),
        declared=meta,
        true={**meta, "manifest": true_lines},
        containers=synth.info["containers"],
    )


def files_of(scan: ContradictedScan) -> dict[str, Any]:
    """The multipart files of an upload."""
    return {
        "high": ("high.png", scan.high, "image/png"),
        "low": ("low.png", scan.low, "image/png"),
    }
