"""CargoNet: a small fully convolutional detector for long, full-resolution scans.

Designed for these scans, not for photos:
- input: the two pre-processed attenuation channels (`inference.preprocess`),
  any size that is a multiple of 32 (whole scans at inference, crops in
  training);
- threats are small and dense (often under 50 px), so the heads work at
  stride 4 and the features from stride 32 come back down through a light
  top-down path; depthwise-separable blocks keep the cost per pixel low,
  because a 3000x800 scan has 2.4 Mpx;
- anchor-free, CenterNet-style outputs per category: a centre heat map and,
  at each cell, the distances to the box's four sides; plus one
  class-agnostic anomaly map;
- only standard ONNX operators (Conv, Relu, Sigmoid, MaxPool, Resize, Add,
  Mul, Equal/Cast), so ONNX Runtime runs it anywhere.

The plain `nn.Module` holds no training logic (losses and targets live in
the training loop), so export touches only this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network from a checkpoint."""

    categories: tuple[str, ...] = ("firearm", "narcotics", "cigarettes", "currency", "person")
    in_channels: int = 2
    # Depth and width go where pixels are few (strides 16 and 32: a person or a
    # pallet needs context there) and stay thin at strides 2-8, where a 3000x800
    # scan has most of its pixels.
    widths: tuple[int, ...] = (16, 32, 64, 128, 192)  # at strides 2, 4, 8, 16, 32
    blocks: tuple[int, ...] = (0, 1, 2, 3, 3)
    neck_width: int = 48
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["categories"] = list(self.categories)
        d["widths"] = list(self.widths)
        d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(
            categories=tuple(d["categories"]),
            in_channels=int(d["in_channels"]),
            widths=tuple(d["widths"]),
            blocks=tuple(d["blocks"]),
            neck_width=int(d["neck_width"]),
            extra=dict(d.get("extra", {})),
        )


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SeparableBlock(nn.Module):
    """Residual depthwise 3x3 + pointwise 1x1: most of a 3x3 conv's reach at a ninth of its cost."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.dw(x)))
        return F.relu(x + self.bn2(self.pw(y)))


class Head(nn.Module):
    def __init__(self, c: int, out: int, bias: float = 0.0) -> None:
        super().__init__()
        self.dw = conv_bn(c, c, 3, groups=c)
        self.out = nn.Conv2d(c, out, 1)
        nn.init.constant_(self.out.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dw(x))


class CargoNet(nn.Module):
    """Backbone, top-down neck to stride 4, and the heat / box / anomaly heads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        stages: list[nn.Module] = []
        c_prev = config.in_channels
        for c, n in zip(w, config.blocks, strict=True):
            stages.append(
                nn.Sequential(conv_bn(c_prev, c, 3, 2), *[SeparableBlock(c) for _ in range(n)])
            )
            c_prev = c
        self.stages = nn.ModuleList(stages)
        nw = config.neck_width
        self.lateral = nn.ModuleList([nn.Conv2d(c, nw, 1) for c in w[1:]])  # strides 4..32
        self.smooth = nn.ModuleList([SeparableBlock(nw) for _ in w[1:-1]])
        # Focal-loss prior: start with every cell at p = 0.01.
        self.heat = Head(nw, len(config.categories), bias=-4.6)
        self.box = Head(nw, 4)
        self.anomaly = Head(nw, 1, bias=-4.6)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs at stride 4: heat and anomaly logits, box sides (log, in stride units)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        y = self.lateral[-1](feats[-1])
        for k in range(len(self.lateral) - 2, -1, -1):  # top-down: 16, 8, 4
            lat = self.lateral[k](feats[k + 1])
            # scale_factor, not size: a traced size would freeze the ONNX graph
            # to the export resolution (inputs are multiples of 32, so x2 is exact).
            up = F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = self.smooth[k](lat + up)
        return {"heat": self.heat(y), "box": self.box(y), "anomaly": self.anomaly(y)}


def pad32(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad (air) the last two dimensions to a multiple of 32, the network's coarsest stride."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % 32, 0, (-h) % 32))


class ExportWrapper(nn.Module):
    """What the ONNX file holds: decoded maps the engine can read without torch.

    heat: (B, C, H/4, W/4) probabilities, zero except at local maxima (3x3)
    box: (B, 4, H/4, W/4) distances in input pixels to the left, top, right, bottom sides
    anomaly: (B, 1, H/4, W/4) probability that a cell does not fit its surroundings
    """

    def __init__(self, net: CargoNet) -> None:
        super().__init__()
        self.net = net
        # Always in eval mode: torch.onnx.export restores the mode a module had,
        # and a wrapper left in training mode would switch batch norm back to
        # batch statistics for everything computed after the export.
        self.eval()

    def probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The outputs before the peak test: the whole heat map (export checks compare it)."""
        out = self.net(x)
        box = torch.exp(out["box"].clamp(max=8.0)) * STRIDE
        return torch.sigmoid(out["heat"]), box, torch.sigmoid(out["anomaly"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat, box, anomaly = self.probabilities(x)
        peaks = (F.max_pool2d(heat, 3, 1, 1) == heat).to(heat.dtype)
        return heat * peaks, box, anomaly


ONNX_OPSET = 17


def to_onnx(net: CargoNet, path: Path | str) -> ExportWrapper:
    """Write the decoded network to ONNX, size-free (batch, height, width dynamic).

    Returns the wrapper that was exported, for comparing outputs with torch.
    """
    wrapper = ExportWrapper(net)
    torch.onnx.export(
        wrapper,
        torch.zeros(1, net.config.in_channels, 64, 128),
        str(path),
        input_names=["input"],
        output_names=["heat", "box", "anomaly"],
        dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    return wrapper


def count_macs(net: nn.Module, shape: tuple[int, int, int, int]) -> int:
    """Multiply-accumulates of the convolutions for one input shape (for the speed budget)."""
    total = 0

    def hook(mod: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += int(out.numel() * k)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net(torch.zeros(shape))
    finally:
        for h in handles:
            h.remove()
    return total
