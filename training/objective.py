"""What CargoNet is trained to output, and how far it is from that.

Targets (per image, at the model's stride):
- heat[c]: a Gaussian bump at the centre cell of each instance of category c,
  its spread set by the box size (CenterNet), 1 exactly at the centre;
- box: at each instance's centre cell, log of the distances (in strides) from
  the cell centre to the box's four sides;
- anomaly: 1 over every threat box, whatever its category, so the anomaly
  head learns "does not fit" without caring which threat it is.

Loss = penalty-reduced focal loss on heat (CenterNet; not torchvision's
`sigmoid_focal_loss`, which has no Gaussian penalty reduction) + L1 on the log
distances at centre cells + focal BCE on the anomaly map (torchvision's
`sigmoid_focal_loss`, gamma 2, no alpha).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from training.model import STRIDE


@dataclass
class Targets:
    heat: torch.Tensor  # (B, C, h, w) in [0, 1]
    box: torch.Tensor  # (B, 4, h, w) log distances in strides
    box_mask: torch.Tensor  # (B, 1, h, w) 1 at centre cells
    anomaly: torch.Tensor  # (B, 1, h, w) 0/1


def _gaussian(shape_hw: tuple[int, int], cx: float, cy: float, sigma: float) -> np.ndarray:
    h, w = shape_hw
    ys, xs = np.ogrid[:h, :w]
    return np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma)).astype(np.float32)


def make_targets(
    boxes: list[np.ndarray], labels: list[np.ndarray], n_classes: int, input_hw: tuple[int, int]
) -> Targets:
    """Targets for a batch; boxes are x0, y0, x1, y1 in input pixels."""
    h, w = input_hw[0] // STRIDE, input_hw[1] // STRIDE
    b = len(boxes)
    heat = np.zeros((b, n_classes, h, w), np.float32)
    box = np.zeros((b, 4, h, w), np.float32)
    mask = np.zeros((b, 1, h, w), np.float32)
    anomaly = np.zeros((b, 1, h, w), np.float32)
    for i, (bb, ll) in enumerate(zip(boxes, labels, strict=True)):
        for (x0, y0, x1, y1), c in zip(np.asarray(bb).reshape(-1, 4), np.asarray(ll), strict=True):
            if x1 <= x0 or y1 <= y0:
                continue
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            ix, iy = int(np.clip(cx, 0, w - 1)), int(np.clip(cy, 0, h - 1))
            sigma = max(min(x1 - x0, y1 - y0) / STRIDE / 6.0, 0.7)
            bump = _gaussian((h, w), ix, iy, sigma)
            np.maximum(heat[i, int(c)], bump, out=heat[i, int(c)])
            px, py = (ix + 0.5) * STRIDE, (iy + 0.5) * STRIDE
            sides = np.array([px - x0, py - y0, x1 - px, y1 - py], np.float32)
            box[i, :, iy, ix] = np.log(np.maximum(sides, 1.0) / STRIDE)
            mask[i, 0, iy, ix] = 1.0
            gx0, gy0 = int(np.floor(x0 / STRIDE)), int(np.floor(y0 / STRIDE))
            gx1, gy1 = int(np.ceil(x1 / STRIDE)), int(np.ceil(y1 / STRIDE))
            anomaly[i, 0, max(gy0, 0) : gy1, max(gx0, 0) : gx1] = 1.0
    return Targets(*(torch.from_numpy(a) for a in (heat, box, mask, anomaly)))


def focal_heat_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1.0).float()
    pos_loss = -torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = -torch.log(1 - p) * p**alpha * (1 - target) ** beta * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def loss(outputs: dict[str, torch.Tensor], t: Targets) -> dict[str, torch.Tensor]:
    """The three terms and their sum (weights: heat 1, box 1, anomaly 0.5)."""
    heat = focal_heat_loss(outputs["heat"], t.heat)
    n = t.box_mask.sum().clamp(min=1.0)
    box = (F.l1_loss(outputs["box"], t.box, reduction="none") * t.box_mask).sum() / (4 * n)
    focal = sigmoid_focal_loss(outputs["anomaly"], t.anomaly, alpha=-1, gamma=2, reduction="sum")
    anomaly = focal / t.anomaly.sum().clamp(min=1.0)
    total = heat + box + 0.5 * anomaly
    return {"total": total, "heat": heat, "box": box, "anomaly": anomaly}


def decode(
    heat: torch.Tensor, box: torch.Tensor, top_k: int = 100, min_score: float = 0.05
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Boxes (input pixels), scores and labels per image from ExportWrapper outputs."""
    b, c, h, w = heat.shape
    results = []
    for i in range(b):
        scores, flat = heat[i].reshape(-1).topk(min(top_k, c * h * w))
        keep = scores > min_score
        scores, flat = scores[keep], flat[keep]
        cls, rest = flat // (h * w), flat % (h * w)
        ys, xs = rest // w, rest % w
        d = box[i][:, ys, xs]  # (4, K) distances in pixels
        px, py = (xs.float() + 0.5) * STRIDE, (ys.float() + 0.5) * STRIDE
        boxes = torch.stack([px - d[0], py - d[1], px + d[2], py + d[3]], dim=1)
        results.append((boxes.numpy(), scores.numpy(), cls.numpy()))
    return results
