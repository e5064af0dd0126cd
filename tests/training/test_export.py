"""`cargoscan export`: ONNX + card, thresholds from validation data, parity with torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cargoscan.cli import main
from inference.contracts import ModelCard
from training.export import check_parity
from training.model import CargoNet, ExportWrapper, ModelConfig, to_onnx
from training.synth.dataset import write_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data = tmp_path_factory.mktemp("export_data")
    write_dataset(data, count=3, seed=41, workers=1, progress=False)
    out = tmp_path_factory.mktemp("export_run") / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--steps", "1"]
    assert main([*args, "--batch", "2", "--crop", "128"]) == 0
    return data, out / "best.pt"


def test_export_writes_a_model_and_a_card_that_describe_each_other(run, tmp_path: Path):
    data, checkpoint = run
    model = tmp_path / "models" / "tiny.onnx"
    assert (
        main(["export", "--checkpoint", str(checkpoint), "--out", str(model), "--val", str(data)])
        == 0
    )
    card = json.loads(model.with_suffix(".json").read_text())
    assert ModelCard.of(card).to_dict() == card  # what the runtime reads, nothing lost
    assert card["onnx"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert card["categories"] == ["firearm", "narcotics", "cigarettes", "currency", "person"]
    assert set(card["thresholds"]) == set(card["categories"])
    # 8-bit scans get thresholds of their own, from 8-bit exports of the same scans.
    assert set(card["thresholds_8bit"]) == set(card["categories"])
    eight = card["metrics"]["validation"]["eight_bit"]
    assert eight["clean_scans"] == card["metrics"]["validation"]["clean_scans"]
    assert card["calibration"]["false_alarm_rate"] == 0.01
    # Review has thresholds of its own (never above the alarm ones) and an anomaly level,
    # for both bit depths, set on the clean validation scans at the card's review rate.
    for suffix in ("", "_8bit"):
        review, alarm = card[f"review_thresholds{suffix}"], card[f"thresholds{suffix}"]
        assert set(review) == set(card["categories"])
        assert all(min(0.05, alarm[c]) <= review[c] <= alarm[c] for c in card["categories"])
        assert 0.5 <= card[f"anomaly_level{suffix}"] <= 0.99
    assert card["calibration"]["review_rate"] == 0.1
    assert "review threshold" in card["verdict"]["review"]
    assert card["input"]["preprocess_version"] == "3"
    assert card["parity_max_abs_diff"] <= 1e-3
    # The training data summary counts what the data set's labels hold.
    coco = json.loads((data / "annotations.json").read_text())
    (summary,) = card["training"]["data_summary"]
    assert summary["scans"] == len(coco["images"]) == 3
    assert summary["clean_scans"] == sum(im["clean"] for im in coco["images"])
    assert sum(summary["instances"].values()) == len(coco["annotations"])
    assert summary["weight"] == 1.0
    # With the run's settings, so it can be redone from the card alone.
    training = card["training"]
    assert (training["epochs"], training["steps_per_epoch"], training["checkpoint_epoch"]) == (
        1,
        1,
        1,
    )
    assert (training["batch_size"], training["crop"], training["crop_weights"]) == (2, 128, {})
    assert training["lr"] == 2e-3
    assert (training["hard_negative_share"], training["hard_negative_min_score"]) == (0.0, 0.1)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    heat, box, anomaly = session.run(None, {"input": np.zeros((1, 2, 96, 160), np.float32)})
    assert heat.shape == (1, 5, 24, 40) and box.shape == (1, 4, 24, 40)
    assert anomaly.shape == (1, 1, 24, 40)


def test_parity_check_sees_a_different_network(tmp_path: Path):
    torch.manual_seed(1)
    a, b = CargoNet(ModelConfig()), CargoNet(ModelConfig())
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.5)
    path = tmp_path / "parity.onnx"
    to_onnx(a, path)
    x = [torch.rand(1, 2, 64, 64)]
    assert check_parity(path, ExportWrapper(a), x) < 1e-3
    assert check_parity(path, ExportWrapper(b), x) > 1e-2


def test_parity_check_forgives_near_ties_in_flat_heat_but_not_a_raised_heat(tmp_path: Path):
    # An untrained network's heat is almost flat: neighbours differ by float rounding,
    # and each runtime may keep a different one of them as the 3x3 peak.
    torch.manual_seed(0)
    a, b = CargoNet(ModelConfig()), CargoNet(ModelConfig())
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        a.heat.out.bias.fill_(-2.0)
        b.heat.out.bias.fill_(-1.9)
    path = tmp_path / "flat.onnx"
    to_onnx(a, path)
    x = [torch.rand(1, 2, 320, 960) * 2]
    assert check_parity(path, ExportWrapper(a), x) < 1e-3
    assert check_parity(path, ExportWrapper(b), x) > 5e-3


def test_export_refuses_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert (
        main(["export", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "m.onnx")])
        == 2
    )
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_calibrate_sets_the_cards_thresholds_again_without_touching_the_model(run, tmp_path: Path):
    data, checkpoint = run
    model = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(model)]) == 0
    before = model.read_bytes()
    assert json.loads(model.with_suffix(".json").read_text())["thresholds"] is None
    assert main(["calibrate", "--model", str(model), "--val", str(data)]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert model.read_bytes() == before
    assert card["onnx"]["sha256"] == hashlib.sha256(before).hexdigest()
    # The thresholds are those `evaluate` finds at 1 % on the same scans, through
    # the same engine, for the 16-bit scans and for their 8-bit exports alike.
    for flag, key in (([], "thresholds"), (["--eight-bit"], "thresholds_8bit")):
        out = tmp_path / key
        args = ["evaluate", "--model", str(model), "--data", str(data), "--out", str(out)]
        assert main([*args, "--no-pictures", *flag]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        found = {n: c["threshold_at_far"]["0.01"] for n, c in metrics["categories"].items()}
        assert card[key] == pytest.approx(found)
    assert card["calibration"]["data"] == str(data)
    # Export's own calibration runs the exported file in ONNX Runtime too: the same thresholds.
    exported = tmp_path / "calibrated.onnx"
    assert (
        main(
            ["export", "--checkpoint", str(checkpoint), "--out", str(exported), "--val", str(data)]
        )
        == 0
    )
    at_export = json.loads(exported.with_suffix(".json").read_text())
    for key in ("thresholds", "thresholds_8bit"):
        assert at_export[key] == pytest.approx(card[key], abs=1e-5)


def test_calibrate_refuses_data_without_clean_scans(
    run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    data, checkpoint = run
    model = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(model)]) == 0
    card_before = model.with_suffix(".json").read_bytes()
    coco = json.loads((data / "annotations.json").read_text())
    threats = [im for im in coco["images"] if not im["clean"]]
    (tmp_path / "dirty").mkdir()
    (tmp_path / "dirty" / "annotations.json").write_text(json.dumps({**coco, "images": threats}))
    for im in threats:
        for key in ("file_name", "low_file_name"):
            target = tmp_path / "dirty" / im[key]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((data / im[key]).read_bytes())
    args = ["calibrate", "--model", str(model), "--val", str(tmp_path / "dirty")]
    assert main(args) == 2
    assert "no clean scans" in capsys.readouterr().err
    assert model.with_suffix(".json").read_bytes() == card_before
    assert main(["calibrate", "--model", str(tmp_path / "none.onnx"), "--val", str(data)]) == 2
