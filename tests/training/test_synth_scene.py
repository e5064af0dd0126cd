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


def test_the_acv_mix_plans_every_scan_and_leaves_the_default_mix_alone():
    from training.synth.scene import ACV_PLANS, ACV_SHARES, DISCREPANCY_KINDS, acv_plan

    # Any 30 consecutive scans hold the shares: 10 consistent empty, 5 consistent loaded,
    # 3 of each discrepancy kind; the plan is the index's, whatever the seed.
    assert Counter(acv_plan(i) for i in range(7, 37)) == Counter(ACV_SHARES)
    assert set(ACV_PLANS) == {"consistent_empty", "consistent_loaded", *DISCREPANCY_KINDS}
    assert "manifest_mix" not in SynthConfig().to_dict()  # default sets keep their bytes
    assert SynthConfig(manifest_mix="acv").to_dict()["manifest_mix"] == "acv"
    with pytest.raises(ValueError, match="manifest_mix"):
        SynthConfig(manifest_mix="acvv")


@pytest.mark.parametrize(
    "plan",
    [
        "consistent_loaded",
        "declared_empty_but_loaded",
        "undeclared_goods",
        "false_description",
        "weight_mismatch",
    ],
)
def test_a_planned_manifest_lies_as_planned(plan: str):
    from training.synth.scene import _material_of

    items = _items("cotton T-shirts", "electric motors")
    true, declared, discrepancy = make_manifests(items, np.random.default_rng(5), plan)
    assert discrepancy == (None if plan == "consistent_loaded" else plan)
    if plan == "consistent_loaded":
        assert [d["hs_code"] for d in declared] == [t["hs_code"] for t in true]
    elif plan == "declared_empty_but_loaded":
        assert declared == []
    elif plan == "undeclared_goods":
        assert len(declared) == len(true) - 1
    elif plan == "false_description":
        pairs = zip(declared, true, strict=True)
        changed = [(d, t) for d, t in pairs if d["hs_code"] != t["hs_code"]]
        assert len(changed) == 1
        d, t = changed[0]
        assert _material_of(d["description"]) != _material_of(t["description"])
        assert d["declared_weight_kg"] == pytest.approx(t["declared_weight_kg"], rel=0.04)
    else:
        ratios = [d["declared_weight_kg"] / t["declared_weight_kg"]
                  for d, t in zip(declared, true, strict=True)]  # fmt: skip
        assert min(ratios) < 0.7


def test_planned_empty_boxes_are_empty_and_can_be_declared_loaded():
    rng = np.random.default_rng(2)
    true, declared, discrepancy = make_manifests([[]], rng, "declared_loaded_but_empty")
    assert true == [] and len(declared) == 1 and discrepancy == "declared_loaded_but_empty"
    assert make_manifests([[]], rng, "consistent_empty") == ([], [], None)
    # Undeclared goods need two lines to drop one: with one, the manifest stays true.
    one = _items("cotton T-shirts")
    assert make_manifests(one, rng, "undeclared_goods")[2] is None


@pytest.mark.slow
def test_acv_scans_are_loaded_as_planned_and_deterministic():
    cfg = SynthConfig(manifest_mix="acv")
    for index, plan in ((0, "consistent_empty"), (5, "undeclared_goods")):
        scan = generate_scan(index, 21, cfg)
        masses = [c["mass_kg"] for c in scan.info["containers"]]
        assert scan.info["manifest_mix"] == "acv"
        if plan == "consistent_empty":
            assert masses and all(m == 0 for m in masses)
            assert scan.info["declared_manifest"] == []
            assert scan.info["manifest_discrepancy"] is None
        else:
            assert all(m > 0 for m in masses) and len(scan.info["true_manifest"]) >= 2
            assert scan.info["manifest_discrepancy"] == "undeclared_goods"
    again = generate_scan(5, 21, cfg)
    assert np.array_equal(again.high, scan.high) and again.info == scan.info
