"""Targets by hand, and CargoNet learning a toy scan through the real loss and decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.boxes import hits
from training.model import STRIDE, CargoNet, ExportWrapper, ModelConfig
from training.objective import decode, loss, make_targets


def test_targets_put_a_centre_peak_and_the_sides_at_the_centre_cell():
    t = make_targets([np.array([[40, 20, 80, 60]])], [np.array([2])], 5, (128, 128))
    assert t.heat.shape == (1, 5, 32, 32)
    iy, ix = 40 // STRIDE, 60 // STRIDE  # centre (60, 40) in input pixels
    assert t.heat[0, 2, iy, ix] == 1.0 and t.heat[0, 2].max() == 1.0
    assert t.heat[0, [0, 1, 3, 4]].max() == 0.0
    assert t.box_mask.sum() == 1 and t.box_mask[0, 0, iy, ix] == 1
    px, py = (ix + 0.5) * STRIDE, (iy + 0.5) * STRIDE
    expected = np.log(np.array([px - 40, py - 20, 80 - px, 60 - py]) / STRIDE)
    np.testing.assert_allclose(t.box[0, :, iy, ix].numpy(), expected, rtol=1e-6)
    # Anomaly covers the box cells, nothing else.
    assert t.anomaly[0, 0, 5:15, 10:20].min() == 1 and t.anomaly.sum() == 100


def test_clean_image_has_empty_targets_and_a_finite_loss():
    t = make_targets([np.zeros((0, 4))], [np.zeros(0, np.int64)], 5, (64, 64))
    assert t.heat.sum() == 0 and t.anomaly.sum() == 0
    out = CargoNet(ModelConfig())(torch.zeros(1, 2, 64, 64))
    terms = loss(out, t)
    assert torch.isfinite(terms["total"]) and terms["box"] == 0


def test_the_anomaly_term_is_focal_bce_with_gamma_2_and_no_alpha():
    """torchvision's sigmoid_focal_loss stands in for the hand-written one it replaced."""
    torch.manual_seed(0)
    out = CargoNet(ModelConfig())(torch.randn(2, 2, 64, 64))
    out["anomaly"] = (out["anomaly"] + 3 * torch.randn_like(out["anomaly"])).requires_grad_()
    t = make_targets(
        [np.array([[8, 8, 40, 30]]), np.zeros((0, 4))], [np.array([1]), []], 5, (64, 64)
    )
    got = loss(out, t)["anomaly"]
    p = torch.sigmoid(out["anomaly"])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        out["anomaly"], t.anomaly, reduction="none"
    )
    want = (bce * torch.where(t.anomaly > 0, 1 - p, p) ** 2).sum() / t.anomaly.sum()
    torch.testing.assert_close(got, want)
    g_got, g_want = (
        torch.autograd.grad(v, out["anomaly"], retain_graph=True)[0] for v in (got, want)
    )
    torch.testing.assert_close(g_got, g_want)


@pytest.mark.slow
def test_a_few_hundred_steps_learn_to_find_a_dense_block():
    """A dense steel-like block on a light background: the network finds it, and only it."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = CargoNet(ModelConfig(categories=("firearm", "narcotics")))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)

    def batch(n: int = 8):
        x = np.full((n, 2, 64, 96), 0.05, np.float32)
        boxes, labels = [], []
        for i in range(n):
            x0, y0 = rng.integers(4, 60), rng.integers(4, 30)
            w, h = rng.integers(12, 28), rng.integers(10, 24)
            cat = int(rng.integers(2))
            x[i, :, y0 : y0 + h, x0 : x0 + w] += 0.6 if cat == 0 else 0.25  # denser = firearm
            boxes.append(np.array([[x0, y0, x0 + w, y0 + h]], np.float32))
            labels.append(np.array([cat]))
        return torch.from_numpy(x + rng.normal(0, 0.01, x.shape).astype(np.float32)), boxes, labels

    first = None
    for _ in range(500):
        x, boxes, labels = batch()
        terms = loss(net(x), make_targets(boxes, labels, 2, (64, 96)))
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        first = first if first is not None else terms["total"].item()
    assert terms["total"].item() < 0.3 * first

    net.eval()
    x, boxes, labels = batch(16)
    with torch.no_grad():
        heat, box, _ = ExportWrapper(net)(x)
    found = 0
    for (pred, scores, cls), gt, lab in zip(decode(heat, box), boxes, labels, strict=True):
        top = int(np.argmax(scores))
        found += bool(hits(pred[top : top + 1], gt)[0, 0]) and cls[top] == lab[0]
    assert found >= 14
