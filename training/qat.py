"""Quantisation-aware fine-tuning: the network learns the rounding of its own int8 file.

Why: post-training int8 (`cargoscan quantize`) costs 2-3.5 points of detection on real
backgrounds, and the cost is in the 8-bit activations (the same int8 weights with 16-bit
activations score as float; docs/benchmarks.md). A first try fake-quantised the network
under ranges it tracked itself, then let `quantize` set the ranges again from
calibration scans: what the weights had learnt was lost. Here the ranges are fixed and
exact: they are read from an int8 file that `quantize` made from the starting model
(each activation's scale and zero point), the torch tensors that ONNX Runtime quantises
are found by value (the same scan through the float graph and through torch), and
training runs with those tensors fake-quantised to the same uint8 grid. The int8 file of
the result is then written with the same activation parameters (`quantize
--activations-from`), so training and the shipped file round alike.

Batch norm is frozen (eval statistics) while fine-tuning: the int8 graph has it folded
into the convolution, and batch statistics would move the tensors off the ranges.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.model import CargoNet, SeparableBlock

__all__ = ["ActivationGrid", "activation_grids", "attach_fake_quant", "freeze_batch_norm"]

QUANT_MIN, QUANT_MAX = 0, 255  # uint8 activations, as `quantize` writes them


@dataclass(frozen=True)
class ActivationGrid:
    """One quantised activation of an int8 ONNX file: x ~ scale * (q - zero_point)."""

    scale: float
    zero_point: int


def activation_grids(int8_model: Path | str) -> dict[str, ActivationGrid]:
    """Every activation tensor an int8 (QDQ) file quantises, by tensor name.

    Weights (initialisers) are left out: they are quantised again from the new weights.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(int8_model)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    grids: dict[str, ActivationGrid] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in init:
            continue
        scale = init[node.input[1]]
        zero = init[node.input[2]] if len(node.input) > 2 else np.zeros((), np.uint8)
        if scale.size != 1 or zero.dtype != np.uint8:
            continue  # per-channel or not uint8: not an activation of `quantize`'s kind
        grids[node.input[0]] = ActivationGrid(float(scale.reshape(())), int(zero.reshape(())))
    return grids


def _onnx_tensors(float_model: Path, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The named intermediate tensors of the float graph (as `quantize` prepares it) for x."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
    produced = {out for node in model.graph.node for out in node.output}
    names = [n for n in names if n in produced]  # graph outputs are renamed by `quantize`
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    values = session.run(names, {session.get_inputs()[0].name: x})
    return dict(zip(names, values, strict=True))


def _torch_points(net: CargoNet, x: torch.Tensor) -> dict[tuple[str, str], np.ndarray]:
    """Candidate tensors in torch, keyed (module name, "in" or "out"): every convolution's
    and separable block's input, every batch norm's, ReLU's, convolution's and block's
    output. Which of them ONNX Runtime quantises is decided by value, in `attach`."""
    seen: dict[tuple[str, str], np.ndarray] = {}
    handles = []
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Conv2d | SeparableBlock):
            handles.append(
                mod.register_forward_pre_hook(
                    lambda _m, inp, n=name: seen.__setitem__((n, "in"), inp[0].detach().clone())
                )
            )
        if isinstance(mod, nn.Conv2d | nn.BatchNorm2d | nn.ReLU | SeparableBlock):
            handles.append(
                mod.register_forward_hook(
                    lambda _m, _i, out, n=name: seen.__setitem__((n, "out"), out.detach().clone())
                )
            )
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(x)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return {k: v.numpy() for k, v in seen.items()}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(
        np.allclose(a, b, rtol=1e-3, atol=1e-4 * (1 + np.abs(b).max()))
    )


def attach_fake_quant(
    net: CargoNet, float_model: Path | str, int8_model: Path | str, sample: np.ndarray
) -> dict[str, Any]:
    """Fake-quantise, in place, each torch tensor that `int8_model` quantises, on its grid.

    ``float_model`` is the ONNX file `int8_model` was made from, with the same weights as
    ``net`` (matching is by value on ``sample``, a pre-processed scan (C, H, W), H and W
    multiples of 32). Returns which tensors were matched and which were not (those keep
    the calibration's grid in the int8 file and stay float here).
    """
    grids = activation_grids(int8_model)
    x = np.ascontiguousarray(sample[None].astype(np.float32))
    onnx_values = _onnx_tensors(Path(float_model), sorted(grids), x)
    points = _torch_points(net, torch.from_numpy(x))
    matched: dict[tuple[str, str], str] = {}
    for key, value in points.items():
        for name, reference in onnx_values.items():
            if _same(value, reference):
                matched[key] = name
                break
    modules = dict(net.named_modules())
    for (module_name, where), tensor in matched.items():
        grid = grids[tensor]

        def quantise(t: torch.Tensor, g: ActivationGrid = grid) -> torch.Tensor:
            return torch.fake_quantize_per_tensor_affine(
                t, g.scale, g.zero_point, QUANT_MIN, QUANT_MAX
            )

        mod = modules[module_name]
        if where == "in":
            mod.register_forward_pre_hook(lambda _m, inp, q=quantise: (q(inp[0]), *inp[1:]))
        else:
            mod.register_forward_hook(lambda _m, _i, out, q=quantise: q(out))
    covered = set(matched.values())
    return {
        "activations": len(grids),
        "matched": len(covered),
        "unmatched": sorted(set(grids) - covered),
        "points": {f"{m}:{w}": t for (m, w), t in sorted(matched.items())},
    }


def freeze_batch_norm(net: nn.Module) -> None:
    """Batch norm always in eval mode (running statistics, not updated): as folded in int8."""

    def keep_eval(mod: nn.Module, _inp: tuple[torch.Tensor, ...]) -> None:
        mod.training = False

    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.register_forward_pre_hook(keep_eval)
