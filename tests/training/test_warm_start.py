"""`cargoscan train --init`: a run starts from a checkpoint or an exported ONNX model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from cargoscan.cli import main
from training.model import CargoNet, ModelConfig, to_onnx
from training.synth.dataset import write_dataset
from training.train import load_checkpoint
from training.warm_start import config_of, grow, grown_config, warm_start

SMALL = ModelConfig(widths=(8, 16, 24, 32, 40), blocks=(0, 1, 1, 1, 1), neck_width=16)


def _trained_looking(seed: int) -> CargoNet:
    """A network whose batch norms hold non-trivial statistics and affine terms."""
    torch.manual_seed(seed)
    net = CargoNet(SMALL)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


def _export(net: CargoNet, path: Path) -> Path:
    to_onnx(net, path)
    path.with_suffix(".json").write_text(json.dumps({"model_config": net.config.to_dict()}))
    return path


def test_onnx_start_reproduces_the_exported_network(tmp_path: Path):
    source = _trained_looking(3)
    model = _export(source, tmp_path / "m.onnx")
    samples = [torch.rand(2, 2, 128, 128) * 3 for _ in range(3)]
    net = CargoNet(config_of(model))
    warm_start(net, model, samples)
    x = torch.rand(1, 2, 96, 160) * 3
    with torch.no_grad():
        want, got = source(x), net.eval()(x)
        for key in ("heat", "box", "anomaly"):
            assert torch.allclose(got[key], want[key], atol=1e-4), key
        # In training mode the batch statistics of crops like the samples match the
        # stored ones, so the first training step starts from the same network.
        batch = torch.cat(samples[:2])
        train_heat = net.train()(batch)["heat"]
        eval_heat = net.eval()(batch)["heat"]
    assert (train_heat - eval_heat).abs().max() < 0.05 * eval_heat.abs().max()
    # A fresh network is far from the source: the check above is not vacuous.
    with torch.no_grad():
        fresh = CargoNet(SMALL).eval()(x)["heat"]
    assert not torch.allclose(fresh, want["heat"], atol=1e-2)


def test_onnx_start_refuses_a_model_that_is_not_the_card_network(tmp_path: Path):
    model = _export(_trained_looking(4), tmp_path / "m.onnx")
    card = json.loads(model.with_suffix(".json").read_text())
    card["model_config"]["neck_width"] = 24
    model.with_suffix(".json").write_text(json.dumps(card))
    net = CargoNet(config_of(model))
    with pytest.raises(ValueError, match=r"convolution \d+ has weights of shape"):
        warm_start(net, model, [torch.rand(1, 2, 64, 64)])
    model.with_suffix(".json").unlink()
    with pytest.raises(ValueError, match="model card"):
        config_of(model)
    with pytest.raises(ValueError, match="no such file"):
        config_of(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a checkpoint"):
        config_of(tmp_path / "junk.pt")


@pytest.mark.slow
def test_train_init_from_onnx_and_from_checkpoint(tmp_path: Path, capsys):
    data = tmp_path / "data"
    write_dataset(data, count=2, seed=43, workers=1, progress=False)
    source = _trained_looking(5)
    model = _export(source, tmp_path / "deployed.onnx")
    common = ["--data", str(data), "--epochs", "1", "--steps", "1", "--batch", "2", "--crop", "128"]
    common += ["--lr", "1e-6"]  # so that what moves is the batch-norm statistics only
    assert main(["train", *common, "--out", str(tmp_path / "ft"), "--init", str(model)]) == 0
    run_config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert run_config["model"] == SMALL.to_dict() and run_config["init"] == str(model)
    # The checkpoint says where the run started, by content, not only by path.
    init = torch.load(tmp_path / "ft" / "best.pt", weights_only=True)["init"]
    assert (
        init["path"] == str(model)
        and init["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    )
    tuned, _ = load_checkpoint(tmp_path / "ft" / "best.pt")
    # One small step away from the deployed network, not a fresh start.
    x = torch.rand(1, 2, 128, 192) * 3
    with torch.no_grad():
        want = source(x)["heat"]
        moved = (tuned(x)["heat"] - want).abs().mean()
        fresh = (CargoNet(SMALL).eval()(x)["heat"] - want).abs().mean()
    assert moved < 0.1 * fresh
    ft2 = tmp_path / "ft2"
    args = ["train", *common, "--out", str(ft2), "--init", str(tmp_path / "ft" / "best.pt")]
    assert main(args) == 0
    assert json.loads((ft2 / "config.json").read_text())["model"] == SMALL.to_dict()
    assert main(["train", *common, "--out", str(tmp_path / "x"), "--init", "nope.onnx"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_grown_network_computes_what_it_grew_from_and_its_new_blocks_learn():
    source = _trained_looking(6)
    net = CargoNet(grown_config(SMALL, (0, 2, 1, 3, 2)))
    grow(net, source)
    x = torch.rand(2, 2, 96, 160) * 3
    with torch.no_grad():
        for mode in ("eval", "train"):  # train: batch statistics, the first step's network
            want = getattr(source, mode)()(x)
            got = getattr(net, mode)()(x)
            for key in ("heat", "box", "anomaly"):
                assert torch.allclose(got[key], want[key], atol=1e-5), (mode, key)
    net.train()(x)["heat"].sigmoid().sum().backward()
    new_scale = net.stages[3][3].bn2.weight
    assert new_scale.grad is not None and new_scale.grad.abs().sum() > 0
    assert sum(p.numel() for p in net.parameters()) > sum(p.numel() for p in source.parameters())
    with pytest.raises(ValueError, match="cannot lose blocks"):
        grown_config(SMALL, (0, 0, 1, 1, 1))
    with pytest.raises(ValueError, match="one per stage"):
        grown_config(SMALL, (0, 1, 1, 1))


def test_train_init_with_more_blocks_starts_from_the_model(tmp_path: Path, capsys):
    data = tmp_path / "data"
    write_dataset(data, count=2, seed=44, workers=1, progress=False)
    source = _trained_looking(7)
    model = _export(source, tmp_path / "deployed.onnx")
    common = ["--data", str(data), "--epochs", "1", "--steps", "1", "--batch", "2", "--crop", "128"]
    common += ["--lr", "1e-6", "--init", str(model)]
    out = tmp_path / "grown"
    assert main(["train", *common, "--out", str(out), "--blocks", "0,2,1,2,1"]) == 0
    assert json.loads((out / "config.json").read_text())["model"]["blocks"] == [0, 2, 1, 2, 1]
    tuned, _ = load_checkpoint(out / "best.pt")
    assert tuned.config.blocks == (0, 2, 1, 2, 1)
    x = torch.rand(1, 2, 128, 192) * 3
    with torch.no_grad():
        want = source(x)["heat"]
        moved = (tuned(x)["heat"] - want).abs().mean()
        fresh = (CargoNet(tuned.config).eval()(x)["heat"] - want).abs().mean()
    assert moved < 0.1 * fresh
    assert main(["train", *common, "--out", str(tmp_path / "x"), "--blocks", "0,0,1,1,1"]) == 2
    assert "cannot lose blocks" in capsys.readouterr().err
    assert main(["train", *common, "--out", str(tmp_path / "y"), "--blocks", "two"]) == 2
    assert "--blocks wants counts" in capsys.readouterr().err
    # Without --init, --blocks sets the depth of a fresh network, shallower too.
    fresh = common[: common.index("--init")]
    assert main(["train", *fresh, "--out", str(tmp_path / "f"), "--blocks", "0,1,1,1,0"]) == 0
    assert load_checkpoint(tmp_path / "f" / "best.pt")[0].config.blocks == (0, 1, 1, 1, 0)
    assert main(["train", *fresh, "--out", str(tmp_path / "g"), "--blocks", "0,1,1"]) == 2
    assert "--blocks wants 5 counts" in capsys.readouterr().err


def test_an_int8_model_starts_from_the_float_file_its_card_names(tmp_path: Path):
    from training.warm_start import float_model_of

    float_path = _export(_trained_looking(3), tmp_path / "m-float.onnx")
    int8 = tmp_path / "m.onnx"
    int8.write_bytes(b"an int8 graph")
    card = {
        "onnx": {"file": "m.onnx", "precision": "int8"},
        "quantization": {
            "from": {
                "file": "m-float.onnx",
                "sha256": hashlib.sha256(float_path.read_bytes()).hexdigest(),
            }
        },
    }
    int8.with_suffix(".json").write_text(json.dumps(card))
    assert float_model_of(int8) == float_path
    assert float_model_of(float_path) == float_path  # a float model is itself

    float_path.write_bytes(float_path.read_bytes() + b"\0")  # another float file
    with pytest.raises(ValueError, match="sha256 differs"):
        float_model_of(int8)
    float_path.unlink()
    with pytest.raises(ValueError, match="is not beside it"):
        float_model_of(int8)
