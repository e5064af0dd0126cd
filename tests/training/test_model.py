"""CargoNet: output shapes at stride 4, config round trip, and ONNX Runtime agreeing with torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.model import STRIDE, CargoNet, ModelConfig, count_macs, to_onnx


@pytest.fixture(scope="module")
def net() -> CargoNet:
    torch.manual_seed(0)
    model = CargoNet(ModelConfig())
    # Non-trivial batch-norm statistics, so the export check is not about zeros.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 2, 96, 160) * 2)
        # An untrained heat map is nearly flat, and the 3x3 peak test would then
        # turn on float rounding; sharpen it as training would.
        model.heat.out.weight.mul_(50.0)
    return model.eval()


@pytest.mark.parametrize(("h", "w"), [(64, 64), (96, 320), (128, 224)])
def test_outputs_are_stride_4_maps_of_any_multiple_of_32(net: CargoNet, h: int, w: int):
    with torch.no_grad():
        out = net(torch.rand(1, 2, h, w))
    n_cat = len(net.config.categories)
    assert out["heat"].shape == (1, n_cat, h // STRIDE, w // STRIDE)
    assert out["box"].shape == (1, 4, h // STRIDE, w // STRIDE)
    assert out["anomaly"].shape == (1, 1, h // STRIDE, w // STRIDE)


def test_config_round_trips_and_rebuilds_the_same_network(net: CargoNet):
    cfg = ModelConfig.from_dict(net.config.to_dict())
    assert cfg == net.config
    twin = CargoNet(cfg)
    twin.load_state_dict(net.state_dict())
    twin.eval()
    x = torch.rand(1, 2, 64, 96)
    with torch.no_grad():
        assert torch.equal(twin(x)["heat"], net(x)["heat"])


def test_onnx_export_matches_torch_at_another_input_size(net: CargoNet, tmp_path: Path):
    path = tmp_path / "cargonet.onnx"
    wrapper = to_onnx(net, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 2, 160, 416) * 2  # not the export size: the graph is size-free
    heat, box, anomaly = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        t_heat, t_box, t_anomaly = wrapper(x)
    assert not net.training  # the export left the network in eval mode
    np.testing.assert_allclose(heat, t_heat.numpy(), atol=1e-5)
    np.testing.assert_allclose(box, t_box.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(anomaly, t_anomaly.numpy(), atol=1e-5)
    # Peaks only: every non-zero heat value is the maximum of its 3x3 neighbourhood.
    t = torch.from_numpy(heat)
    nz = t > 0
    assert torch.equal(t[nz], torch.nn.functional.max_pool2d(t, 3, 1, 1)[nz])


def test_cost_per_pixel_stays_small():
    """Multiply-accumulates per input pixel stay under a third of YOLOv8n's.

    YOLOv8n: 8.7 GFLOPs at 640x640, about 10.6 k MAC per pixel. Counted, not
    timed: the timing comparison belongs in bench/.
    """
    macs = count_macs(CargoNet(ModelConfig()).eval(), (1, 2, 640, 2048))
    assert macs / (640 * 2048) < 10_600 / 3
