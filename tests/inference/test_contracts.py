"""The typed contracts: the shipped card validates and loses nothing on a round trip, a bad
card is refused naming the field, and what build_result makes is a valid ScanResult."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.contracts import CardError, ModelCard, ScanResult, card_text
from inference.engine import Analysis, Engine, Finding, ModelError
from inference.operating_point import KIND, apply
from inference.preprocess import ModelInput
from inference.result import build_result

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "cargoscan-default.json"
CATS = ["firearm", "narcotics", "cigarettes", "currency", "person"]


@pytest.fixture
def shipped() -> dict[str, Any]:
    return json.loads(SHIPPED.read_text())


def test_the_shipped_card_validates_and_round_trips_without_losing_keys(shipped):
    card = ModelCard.of(shipped, str(SHIPPED))
    assert card.categories == CATS
    assert card.thresholds is not None and set(card.thresholds) == set(CATS)
    assert card.network is not None and card.network.categories == CATS
    assert card.outputs.stride == 4 and card.input.multiple_of == 32
    assert card.to_dict() == shipped  # every key and value, the free-form ones included
    assert json.loads(card_text(card.to_dict(), "again")) == shipped


def test_unknown_keys_are_kept_and_absent_ones_not_added():
    raw = {"categories": ["firearm"], "future_key": {"x": 1}, "input": {"new": True}}
    card = ModelCard.of(raw)
    assert card.input.multiple_of == 32 and card.outputs.stride == 4  # the defaults
    assert card.to_dict() == raw


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c.pop("categories"), "categories: Field required"),
        (lambda c: c["thresholds"].update(firearm="high"), "thresholds.firearm"),
        (lambda c: c["thresholds"].update(person=-0.1), "thresholds.person"),
        (lambda c: c.update(anomaly_level="0.7"), "anomaly_level"),
        (lambda c: c["model_config"].pop("widths"), "model_config.widths"),
        (lambda c: c["outputs"].update(stride=0), "outputs.stride"),
    ],
)
def test_a_bad_card_is_refused_naming_the_field(shipped, change, field):
    bad = copy.deepcopy(shipped)
    change(bad)
    with pytest.raises(CardError, match="not a valid model card") as err:
        ModelCard.of(bad, "m.json")
    assert str(err.value).startswith("m.json: ") and field in str(err.value)
    with pytest.raises(ModelError, match="not a valid model card"):
        Engine(session=None, card=bad, threads=1)
    with pytest.raises(CardError, match=field.split(":")[0]):
        card_text(bad, "m.json")  # and no writer writes it


def test_the_engine_refuses_an_invalid_card_file_naming_file_and_field(shipped, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the card is refused first")
    del shipped["categories"]
    model.with_suffix(".json").write_text(json.dumps(shipped))
    with pytest.raises(ModelError, match=r"m\.json: not a valid model card: categories"):
        Engine.load(model)


def test_a_site_operating_point_lays_over_a_typed_card(shipped):
    op = {
        "kind": KIND,
        "site": "gate 3",
        "model_sha256": shipped["onnx"]["sha256"],
        "thresholds": {"firearm": 0.5},
    }
    card = apply(shipped, op)
    assert card.thresholds == {"firearm": 0.5}  # the table replaces the card's
    assert card.operating_point_site == "gate 3"
    assert card.metrics == shipped["metrics"]  # the rest as it was


def _analysis(findings: list[Finding], bit_depth: int = 16) -> Analysis:
    h, w = 100, 300
    mi = ModelInput(np.zeros((1, 2, 128, 320), np.float32), (h, w), (h, w), 1.0, False)
    amap = np.zeros((32, 80), np.float32)
    amap[2:12, 40:60] = 0.95  # an anomaly region away from the findings
    return Analysis(findings, amap, (128, 320), mi, bit_depth=bit_depth)


@pytest.mark.parametrize("site", [None, "gate 3"])
def test_build_result_makes_a_valid_scan_result_in_the_documented_order(shipped, site):
    # The shipped card's own numbers change with each model: pin the person's here.
    card = dict(
        shipped,
        thresholds={**shipped["thresholds"], "person": 0.23},
        review_thresholds={**shipped["review_thresholds"], "person": 0.17},
    )
    card = dict(card, operating_point_site=site) if site else card
    engine = Engine(session=None, card=card, threads=1)
    findings = [
        Finding("firearm", 0.9, (10.0, 10.0, 60.0, 60.0)),  # alarm
        Finding("person", 0.2, (200.0, 60.0, 280.0, 99.0)),  # review (0.17 to 0.23)
    ]
    res = build_result(engine, _analysis(findings), "s1", 12.34, anomaly_map_url="/m")
    assert ScanResult.model_validate(res).to_dict() == res
    assert list(res) == [
        "scan_id",
        "model",
        "processing_ms",
        "risk",
        "verdict",
        "findings",
        "cargo_region",
        "anomaly_map",
    ]
    assert ("operating_point" in res["model"]) == (site is not None)
    assert [f["source"] for f in res["findings"]] == ["detector", "anomaly", "detector"]
    for k, f in enumerate(res["findings"], start=1):
        assert list(f) == [
            "id",
            "category",
            "score",
            "box",
            "polygon",
            "source",
            "alarm",
            "explanation",
        ]
        assert f["id"] == k and isinstance(f["box"], list)
    assert res["verdict"] == "alarm" and res["processing_ms"] == 12.3
