"""Start a training run from a model that already exists: `cargoscan train --init`.

Why: the deployed ONNX model (with its card) is often all an ML engineer has
when officer reviews come in; the run that made it, with its checkpoints, is
long gone. Fine-tuning from it keeps what it learned instead of starting over.

A checkpoint (`best.pt`, `last.pt`) is a state dict and loads as it is. An ONNX
file needs more: export folds every batch norm into the convolution before it
(weights W*g/s, bias b - m*g/s), so the normalisation's own numbers are gone.
We put the folded convolution back and give each batch norm the statistics
its input really has on training crops (mean m', variance v'), with scale
sqrt(v' + eps) and shift bias + m'. In eval mode that is the folded network
exactly; in training mode the batch statistics are close to those, so the
first steps start from what the model knows rather than from a jolt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inference.service.signing import sha256_hex
from training.model import CargoNet, ModelConfig, SeparableBlock


def config_of(path: Path | str) -> ModelConfig:
    """The network configuration of a checkpoint, or of an ONNX model (from its card)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--init {path}: no such file")
    if path.suffix == ".onnx":
        card_path = path.with_suffix(".json")
        if not card_path.is_file():
            raise ValueError(
                f"--init {path}: its model card {card_path.name} is missing (it holds the "
                "network's configuration)"
            )
        card = json.loads(card_path.read_text())
        if "model_config" not in card:
            raise ValueError(f"--init {path}: the card {card_path.name} has no model_config")
        return ModelConfig.from_dict(card["model_config"])
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the user's input error
        raise ValueError(f"--init {path}: not a checkpoint or an .onnx model ({exc})") from exc
    if not isinstance(ck, dict) or "model_config" not in ck or "model" not in ck:
        raise ValueError(f"--init {path}: not a CargoScan checkpoint (no model / model_config)")
    return ModelConfig.from_dict(ck["model_config"])


def float_model_of(path: Path | str) -> Path:
    """`path`, or for an int8 ONNX model the float file it was quantised from (named and
    hashed in its card, beside it): int8 weights are rounded and their graph is not one
    `_load_onnx` can read, so fine-tuning always starts from the float weights."""
    path = Path(path)
    card_path = path.with_suffix(".json")
    if path.suffix != ".onnx" or not card_path.is_file():
        return path
    card = json.loads(card_path.read_text())
    if card.get("onnx", {}).get("precision") != "int8":
        return path
    source = (card.get("quantization") or {}).get("from") or {}
    float_path = path.parent / str(source.get("file", ""))
    if not source.get("file") or not float_path.is_file():
        raise ValueError(
            f"--init {path}: an int8 model, and the float file it was quantised from "
            f"({source.get('file', 'not named in its card')}) is not beside it"
        )
    if sha256_hex(float_path.read_bytes()) != source.get("sha256"):
        raise ValueError(
            f"--init {path}: {float_path.name} is not the float file it was quantised from "
            "(sha256 differs)"
        )
    return float_path


def describe(path: Path | str) -> dict[str, Any]:
    """Where a run started from, for its checkpoints and the exported card: the file,
    its sha256 and, for an ONNX model, its card's name and training record (the file
    itself may be replaced later, as a default model is)."""
    path = Path(path)
    out: dict[str, Any] = {"path": str(path), "sha256": sha256_hex(path.read_bytes())}
    if path.suffix == ".onnx":
        card = json.loads(path.with_suffix(".json").read_text())
        out["name"] = card.get("name")
        out["training"] = card.get("training")
    else:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        out["training"] = {"train_config": ck.get("train_config"), "epoch": ck.get("epoch")}
    return out


def warm_start(net: CargoNet, path: Path | str, samples: Iterable[torch.Tensor]) -> None:
    """Load the weights of `path` (checkpoint or ONNX) into `net`, which has its config.

    `samples` are input batches like the training crops; only an ONNX start
    uses them, to measure what each batch norm sees.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        _load_onnx(net, path, samples)
    else:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(ck["model"])


def grown_config(base: ModelConfig, blocks: Sequence[int]) -> ModelConfig:
    """`base` with more residual blocks per stage (`cargoscan train --init M --blocks ...`).

    Why only more blocks: a block appended to a stage can start as an identity,
    so a grown network computes exactly what the model it grew from did and the
    run begins from what that model knows, with room to learn more. Wider
    layers or fewer blocks have no such start.
    """
    blocks = tuple(int(n) for n in blocks)
    if len(blocks) != len(base.blocks):
        raise ValueError(
            f"--blocks wants {len(base.blocks)} counts (one per stage), got {len(blocks)}"
        )
    if any(n < old for n, old in zip(blocks, base.blocks, strict=True)):
        raise ValueError(
            f"--blocks {','.join(map(str, blocks))}: a stage cannot lose blocks; the "
            f"--init model has {','.join(map(str, base.blocks))}"
        )
    return replace(base, blocks=blocks)


def grow(net: CargoNet, smaller: CargoNet) -> None:
    """Copy `smaller` into `net`, which has its configuration but more blocks per stage.

    The extra blocks go after a stage's own and start with the scale of their
    last batch norm at zero: the block then returns relu(x) = x (its input is
    already past a ReLU), so `net` computes what `smaller` does, and that scale
    still receives a gradient, so the block learns from the first step.
    """
    if grown_config(smaller.config, net.config.blocks) != net.config:
        raise ValueError("grow: the networks differ in more than their blocks per stage")
    missing, unexpected = net.load_state_dict(smaller.state_dict(), strict=False)
    new_blocks = [
        (i, j)
        for i, (n_old, n_new) in enumerate(
            zip(smaller.config.blocks, net.config.blocks, strict=True)
        )
        for j in range(n_old + 1, n_new + 1)  # index 0 of a stage is its strided conv
    ]
    new_prefixes = tuple(f"stages.{i}.{j}." for i, j in new_blocks)
    if unexpected or any(not k.startswith(new_prefixes) for k in missing):
        raise ValueError(f"grow: unmatched weights {sorted(unexpected) + sorted(missing)}")
    with torch.no_grad():
        for i, j in new_blocks:
            block = net.stages[i][j]
            assert isinstance(block, SeparableBlock)
            block.bn2.weight.zero_()


def _convs_in_run_order(net: CargoNet) -> tuple[list[nn.Conv2d], dict[nn.Conv2d, nn.BatchNorm2d]]:
    """Convolutions in the order the network runs them (the ONNX graph's order), and
    the batch norm that reads each one's output, found by following the tensors."""
    order: list[nn.Conv2d] = []
    made_by: dict[int, nn.Conv2d] = {}
    norm_of: dict[nn.Conv2d, nn.BatchNorm2d] = {}

    def on_conv(mod: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        order.append(mod)  # type: ignore[arg-type]
        made_by[id(out)] = mod  # type: ignore[assignment]

    def on_norm(mod: nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        conv = made_by.get(id(inp[0]))
        if conv is not None:
            norm_of[conv] = mod  # type: ignore[assignment]

    hooks = [
        m.register_forward_hook(on_conv if isinstance(m, nn.Conv2d) else on_norm)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))
    ]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, net.config.in_channels, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    return order, norm_of


def _load_onnx(net: CargoNet, path: Path, samples: Iterable[torch.Tensor]) -> None:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # The exporter shares equal tensors (the zero biases of an untrained network)
    # through Identity nodes, and may keep folded values as Constant nodes.
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            weights[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    onnx_convs = [n for n in graph.node if n.op_type == "Conv"]
    convs, norm_of = _convs_in_run_order(net)
    if len(onnx_convs) != len(convs):
        raise ValueError(
            f"--init {path}: {len(onnx_convs)} convolutions in the ONNX graph, "
            f"{len(convs)} in the network its card describes"
        )
    with torch.no_grad():
        for k, (node, conv) in enumerate(zip(onnx_convs, convs, strict=True)):
            w = weights.get(node.input[1])
            if w is None or tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(
                    f"--init {path}: convolution {k} has weights of shape "
                    f"{None if w is None else tuple(w.shape)}, the network wants "
                    f"{tuple(conv.weight.shape)}"
                )
            b = weights[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], w.dtype)
            conv.weight.copy_(torch.from_numpy(w.copy()))
            norm = norm_of.get(conv)
            if norm is None:
                conv.bias.copy_(torch.from_numpy(b.copy()))
                continue
            # Placeholder statistics: in eval mode this norm adds the folded bias only.
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(b.copy()))
        mean, var = _conv_output_stats(net, list(norm_of), samples)
        for conv, norm in norm_of.items():
            m, v = mean[conv], var[conv]
            norm.running_mean.copy_(m)
            norm.running_var.copy_(v)
            norm.weight.copy_(torch.sqrt(v + norm.eps))
            norm.bias.add_(m)


def _conv_output_stats(
    net: CargoNet, convs: list[nn.Conv2d], samples: Iterable[torch.Tensor]
) -> tuple[dict[nn.Conv2d, torch.Tensor], dict[nn.Conv2d, torch.Tensor]]:
    """Per-channel mean and variance of each convolution's output over the samples."""
    sums: dict[nn.Conv2d, list[torch.Tensor]] = {c: [] for c in convs}

    def on_conv(mod: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        x = out.detach().double().transpose(0, 1).reshape(out.shape[1], -1)
        acc = sums[mod]  # type: ignore[index]
        moments = torch.stack([torch.full_like(x[:, 0], x.shape[1]), x.sum(1), (x * x).sum(1)])
        if acc:
            acc[0] += moments
        else:
            acc.append(moments)

    hooks = [c.register_forward_hook(on_conv) for c in convs]
    try:
        with torch.no_grad():
            net.eval()
            for batch in samples:
                net(batch)
    finally:
        for h in hooks:
            h.remove()
    mean: dict[nn.Conv2d, torch.Tensor] = {}
    var: dict[nn.Conv2d, torch.Tensor] = {}
    for conv, acc in sums.items():
        if not acc:
            raise ValueError("warm start from ONNX needs at least one sample batch")
        n, s, ss = acc[0]
        mean[conv] = (s / n).float()
        var[conv] = (ss / n - (s / n) ** 2).clamp(min=0.0).float()
    return mean, var
