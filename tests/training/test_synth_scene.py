"""Scenes: manifests usually right and sometimes wrong on purpose; threats in the image."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from training.synth.cargo import COMMODITIES, LoadedItem
from training.synth.scene import SynthConfig, generate_scan, make_manifests


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
