"""`cargoscan evaluate`: metrics.json in the issue's shape from a real export through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inference.cli import main
from training.export import export
from training.model import CargoNet, ModelConfig
from training.synth.dataset import write_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    write_dataset(data, count=6, seed=51, workers=1, progress=False)
    torch.manual_seed(0)
    net = CargoNet(ModelConfig())
    with torch.no_grad():
        net.heat.out.bias.fill_(-2.0)  # findings above the floor, as a trained model gives
    ckpt = root / "ck.pt"
    torch.save({"model": net.state_dict(), "model_config": net.config.to_dict()}, ckpt)
    export(ckpt, root / "m.onnx")
    return root / "m.onnx", data


def test_metrics_json_has_the_agreed_shape_and_consistent_counts(setup, tmp_path: Path):
    model, data = setup
    assert (
        main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path)]) == 0
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    coco = json.loads((data / "annotations.json").read_text())
    assert m["clean_scans"] == sum(im["clean"] for im in coco["images"]) == 2
    assert m["threat_instances"] == len(coco["annotations"])
    assert set(m["categories"]) == {"firearm", "narcotics", "cigarettes", "currency", "person"}
    for cat in m["categories"].values():
        assert set(cat["detection_rate_at_far"]) == {"0.01", "0.001"}
        assert set(cat["threshold_at_far"]) == {"0.01", "0.001"}
        for rate in cat["detection_rate_at_far"].values():
            assert rate is None or 0.0 <= rate <= 1.0
    assert set(m["scan"]["detection_rate_at_far"]) == {"0.01", "0.001"}
    assert 0.0 <= m["map50"] <= 1.0 and 0.0 <= m["map"] <= m["map50"] + 1e-9


def test_evaluate_refuses_a_missing_model(
    setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    _, data = setup
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "x.onnx"),
                "--data",
                str(data),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "missing" in capsys.readouterr().err
