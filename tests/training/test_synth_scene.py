"""Scenes: manifests usually right and sometimes wrong on purpose; threats in the image."""

from __future__ import annotations

from collections import Counter
from typing import Any

import cv2
import numpy as np
import pytest

from training.synth.cargo import COMMODITIES, LoadedItem
from training.synth.physics import linac_spectrum, polychromatic_transmission
from training.synth.scene import (
    SynthConfig,
    ThreatLabel,
    generate_scan,
    make_manifests,
    threat_contrast,
)


def _items(*descriptions: str) -> list[list[LoadedItem]]:
    by_desc = {c.description: c for c in COMMODITIES}
    return [
        [
            LoadedItem(by_desc[d], packages=10, mass_kg=5000.0 + k, blocks=[])
            for k, d in enumerate(descriptions)
        ]
    ]


def test_true_manifest_lists_what_was_loaded():
    true, _, _ = make_manifests(
        _items("cotton T-shirts", "electric motors"), np.random.default_rng(0)
    )
    assert [line["description"] for line in true] == ["cotton T-shirts", "electric motors"]
    assert [line["declared_weight_kg"] for line in true] == [5000.0, 5001.0]


@pytest.mark.parametrize("seed", range(3))
def test_declared_manifest_is_usually_right_and_each_lie_is_what_it_says(seed: int):
    rng = np.random.default_rng(seed)
    kinds: Counter[str | None] = Counter()
    for _ in range(400):
        items = _items("cotton T-shirts", "electric motors")
        true, declared, discrepancy = make_manifests(items, rng)
        kinds[discrepancy] += 1
        if discrepancy is None:
            assert [d["hs_code"] for d in declared] == [t["hs_code"] for t in true]
            for d, t in zip(declared, true, strict=True):
                assert d["declared_weight_kg"] == pytest.approx(t["declared_weight_kg"], rel=0.04)
        elif discrepancy == "declared_empty_but_loaded":
            assert declared == [] and true
        elif discrepancy == "undeclared_goods":
            assert len(declared) == len(true) - 1
        elif discrepancy == "false_description":
            assert len(declared) == len(true)
            assert (
                sum(d["hs_code"] != t["hs_code"] for d, t in zip(declared, true, strict=True)) == 1
            )
        elif discrepancy == "weight_mismatch":
            ratios = [
                d["declared_weight_kg"] / t["declared_weight_kg"]
                for d, t in zip(declared, true, strict=True)
            ]
            assert min(ratios) < 0.7
        else:
            pytest.fail(f"unexpected discrepancy {discrepancy}")
    assert 0.65 < kinds[None] / 400 < 0.85  # mostly honest
    assert len(kinds) == 5  # and every kind of lie turns up


def test_empty_container_can_be_declared_loaded():
    rng = np.random.default_rng(1)
    seen = Counter(make_manifests([[]], rng)[2] for _ in range(300))
    assert seen[None] > 250 and seen["declared_loaded_but_empty"] > 5


@pytest.mark.slow
def test_scans_vary_and_threats_sit_inside_the_image():
    cfg = SynthConfig()
    arrangements, loads = set(), set()
    for i in range(9):
        scan = generate_scan(i, 3, cfg)
        arrangements.add(scan.info["vehicle"]["arrangement"])
        loads.update(scan.info["load"])
        h, w = scan.high.shape
        x0, y0, x1, y1 = scan.cargo_region
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (x1 - x0) * 5.0 > 5500  # a container is at least 20 ft long
        for t in scan.threats:
            x, y, bw, bh = t.bbox
            assert x >= 0 and x + bw <= w and y >= 0 and y + bh <= h
            assert t.mask[y : y + bh, x : x + bw].sum() == t.mask.sum()
    assert len(arrangements) >= 2 and len(loads) >= 3


def test_stanchion_boxes_darken_only_the_trailer_and_leave_the_scene_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
):
    """Flatbed stanchion boxes draw from a spawned stream: the same seed gives the same
    vehicle, load and threats with or without them; only the steel around the deck differs."""
    import training.synth.vehicle as vehicle

    calls: list[float] = []
    real = vehicle.draw_stanchion_boxes

    def counted(*args: Any) -> None:
        calls.append(args[3])  # deck height
        real(*args)

    monkeypatch.setattr(vehicle, "draw_stanchion_boxes", counted)
    with_boxes = generate_scan(0, 99, SynthConfig())  # a flatbed that carries them
    assert calls, "seed 99 scan 0 was chosen for its stanchion boxes"
    monkeypatch.setattr(vehicle, "draw_stanchion_boxes", lambda *args: None)
    without = generate_scan(0, 99, SynthConfig())

    assert with_boxes.info == without.info
    assert [t.bbox for t in with_boxes.threats] == [t.bbox for t in without.threats]

    def attenuation(s: Any) -> np.ndarray:
        return -np.log(np.clip(s.high.astype(np.float64), 1, None))

    # Mean over 15x15 patches, so photon noise (drawn anew) averages out.
    darker = cv2.blur(attenuation(with_boxes) - attenuation(without), (15, 15))
    half = darker.shape[0] // 2
    assert np.abs(darker[:half]).max() < 0.02  # roof and load: untouched
    assert darker[half:].max() > 0.3  # the boxes: centimetres of steel


def _slab_attenuation(maps: dict[str, float], spectrum) -> float:
    """-ln T of one ray through the given g/cm^2 of each material."""
    ray = {k: np.full((1, 1), v, np.float32) for k, v in maps.items()}
    return float(-np.log(polychromatic_transmission(ray, spectrum)[0, 0]))


def test_a_threats_contrast_is_what_it_changes_net_of_the_cargo_it_displaced():
    cfg = SynthConfig()
    spectrum = linac_spectrum(cfg.high_mv)
    size = 300
    mask = np.zeros((size, size), bool)
    mask[120:180, 110:190] = True
    label = ThreatLabel("firearm", "pistol", "load", (110, 120, 80, 60), mask, 1.0)
    unloaded = {"paper": np.full((size, size), 30.0, np.float32)}
    # 10 g/cm^2 of steel in the load, well inside the blur's reach.
    loaded = {
        "paper": unloaded["paper"],
        "steel": np.where(mask, 10.0, 0.0).astype(np.float32),
    }
    contrast, to_noise = threat_contrast(unloaded, loaded, label, spectrum, cfg.detector)
    expected = _slab_attenuation({"paper": 30.0, "steel": 10.0}, spectrum) - _slab_attenuation(
        {"paper": 30.0}, spectrum
    )
    assert expected > 0.1
    assert contrast == pytest.approx(expected, rel=0.03)
    # Over the photon noise of a pixel behind that much matter.
    t_with = np.exp(-_slab_attenuation({"paper": 30.0, "steel": 10.0}, spectrum))
    assert to_noise == pytest.approx(expected * np.sqrt(cfg.detector.air_quanta * t_with), rel=0.05)
    # The same steel in place of as much paper (mass for mass): at MeV energies the
    # high channel sees mass, not the material, so it nearly vanishes.
    swapped = {"paper": np.where(mask, 20.0, 30.0).astype(np.float32), "steel": loaded["steel"]}
    assert abs(threat_contrast(unloaded, swapped, label, spectrum, cfg.detector)[0]) < 0.05
    # Bank notes packed among paper of their own density change nothing at all.
    same = threat_contrast(unloaded, {"paper": unloaded["paper"]}, label, spectrum, cfg.detector)
    assert same == (0.0, 0.0)
    # A hollow in denser cargo shows as a negative change.
    hollow = {"paper": np.where(mask, 10.0, 30.0).astype(np.float32)}
    assert threat_contrast(unloaded, hollow, label, spectrum, cfg.detector)[0] < -0.1


@pytest.mark.slow
def test_generated_threats_record_a_contrast_and_most_are_plain_to_see():
    scans = [generate_scan(i, 12, SynthConfig()) for i in range(4)]
    threats = [t for s in scans for t in s.threats]
    assert threats
    contrasts = np.array([t.contrast for t in threats])
    assert np.isfinite(contrasts).all()
    assert np.isfinite([t.contrast_to_noise for t in threats]).all()
    assert np.median(np.abs(contrasts)) > 0.1
