"""`cargoscan quantize`: a real exported model as static INT8 through ONNX Runtime."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cargoscan.cli import main
from inference.engine import Engine
from inference.preprocess import preprocess
from training.evaluate import clean_scan_paths, load_clean_scan
from training.export import export
from training.model import CargoNet, ModelConfig
from training.quantize import calibration_paths
from training.synth.dataset import write_dataset
from training.synth.scene import SynthConfig

# Calibrating and quantising a model takes seconds a test: out of the quick run.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def float_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An exported (untrained) CargoNet with its card, and 6 small synthetic scans."""
    root = tmp_path_factory.mktemp("quantize")
    data = root / "scans"
    config = SynthConfig(clean_fraction=0.5)
    write_dataset(data, count=6, seed=71, workers=1, progress=False, config=config)
    torch.manual_seed(0)
    net = CargoNet(ModelConfig())
    ckpt = root / "ck.pt"
    torch.save({"model": net.state_dict(), "model_config": net.config.to_dict()}, ckpt)
    export(ckpt, root / "m.onnx")
    return root / "m.onnx", data


def test_calibration_takes_the_same_share_of_each_folder(tmp_path: Path):
    for name, n in (("a", 10), ("b", 4)):
        (tmp_path / name).mkdir()
        for k in range(n):
            (tmp_path / name / f"{k:02d}.png").write_bytes(b"")
    chosen = calibration_paths([tmp_path / "a", tmp_path / "b"], count=4)
    assert [p.parent.name for p in chosen] == ["a", "a", "b", "b"]
    assert chosen[:2] == [tmp_path / "a" / "00.png", tmp_path / "a" / "05.png"]


def test_quantize_writes_an_int8_graph_whose_card_says_so_and_outputs_stay_close(
    float_model: tuple[Path, Path], tmp_path: Path
):
    model, scans = float_model
    out = tmp_path / "m-int8.onnx"
    args = ["quantize", "--model", str(model), "--out", str(out)]
    assert main([*args, "--calibration", str(scans), "--count", "4", "--check", str(scans)]) == 0

    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 20  # every convolution's weights
    # The decoding after the network (sigmoid, exp, the peak test) reads float tensors:
    # no score, logit or box side goes through a uint8 grid.
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type in ("Sigmoid", "Exp", "MaxPool", "Clip"):
            feeding = producer.get(node.input[0])
            assert feeding is None or feeding.op_type != "DequantizeLinear", node.name
    assert not any(n.op_type == "QuantizeLinear" for n in graph.node if "/net/" not in n.input[0])

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["onnx"]["precision"] == "int8"
    assert card["onnx"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    q = card["quantization"]
    assert q["from"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert len(q["calibration_scans"]) == 4
    assert q["output_change"]["scans"] == 6

    # The engine loads it (the sha256 check passes) and scores a scan close to the float one.
    f_engine, q_engine = Engine.load(model), Engine.load(out)
    tensor = preprocess(load_clean_scan(clean_scan_paths(scans)[0])).tensor
    f_heat = f_engine.session.run(None, {"input": tensor})[0]
    q_heat = q_engine.session.run(None, {"input": tensor})[0]
    assert np.abs(f_heat - q_heat).max() < 0.1
    assert q["output_change"]["max_abs_heat"] >= float(np.abs(f_heat - q_heat).max()) - 1e-4


def test_quantize_refuses_an_int8_model_and_too_few_scans(
    float_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    model, scans = float_model
    out = tmp_path / "q.onnx"
    base = ["quantize", "--model", str(model), "--calibration", str(scans)]
    assert main([*base, "--out", str(out), "--count", "2"]) == 2
    assert "too few" in capsys.readouterr().err
    assert not out.exists()
    assert main([*base, "--out", str(out), "--count", "4"]) == 0
    again = ["quantize", "--model", str(out), "--calibration", str(scans)]
    assert main([*again, "--out", str(tmp_path / "qq.onnx")]) == 2
    assert "already int8" in capsys.readouterr().err


def test_qat_fake_quantises_the_int8_files_grids_and_quantize_keeps_them(
    float_model: tuple[Path, Path], tmp_path: Path
):
    """`train --qat`'s fake quantisation reproduces the int8 file, and `quantize
    --activations-from` writes a new int8 file on exactly the same activation grids."""
    from training.qat import activation_grids, attach_fake_quant, freeze_batch_norm
    from training.warm_start import config_of, warm_start

    model, scans = float_model
    int8 = tmp_path / "m-int8.onnx"
    args = ["quantize", "--model", str(model), "--calibration", str(scans), "--count", "4"]
    assert main([*args, "--out", str(int8)]) == 0
    tensor = preprocess(load_clean_scan(clean_scan_paths(scans)[0])).tensor
    sample = tensor[0][:, :256, :512]

    net = CargoNet(config_of(model))
    warm_start(net, model, [torch.from_numpy(tensor[:, :, :256, :256])])
    with torch.no_grad():
        float_logits = net.eval()(torch.from_numpy(sample[None]))["heat"].numpy()
    record = attach_fake_quant(net, model, int8, sample)
    freeze_batch_norm(net)
    assert record["matched"] >= record["activations"] * 3 // 4
    assert all(name in activation_grids(int8) for name in record["points"].values())
    net.train()  # batch norm stays frozen: the same outputs in either mode
    with torch.no_grad():
        qat_logits = net(torch.from_numpy(sample[None]))["heat"].numpy()
    assert not np.array_equal(qat_logits, float_logits)

    # Every fake-quantised tensor lies on its int8 grid: x / scale + zero point is an
    # integer in 0..255 (what ONNX Runtime's uint8 activation holds).
    grids, seen = activation_grids(int8), {}
    modules = dict(net.named_modules())
    for point in record["points"]:
        name, where = point.rsplit(":", 1)
        if where == "out":
            modules[name].register_forward_hook(
                lambda _m, _i, out, p=point: seen.__setitem__(p, out.detach().numpy().copy())
            )
    with torch.no_grad():
        net(torch.from_numpy(sample[None]))
    assert len(seen) >= 10
    for point, value in seen.items():
        grid = grids[record["points"][point]]
        q = value / grid.scale + grid.zero_point
        assert np.abs(q - np.round(q)).max() < 2e-2, point
        assert q.min() > -0.5 and q.max() < 255.5, point

    again = tmp_path / "again-int8.onnx"
    assert main([*args, "--out", str(again), "--activations-from", str(int8)]) == 0
    assert activation_grids(again) == activation_grids(int8)
    card = json.loads(again.with_suffix(".json").read_text())
    assert (
        card["quantization"]["activations_from"]["sha256"]
        == hashlib.sha256(int8.read_bytes()).hexdigest()
    )
