"""`cargoscan quantize`: an exported model as static INT8 (QDQ, per channel), with its card.

Why: this project's CPUs (AVX-512 VNNI) run int8 convolutions several times faster per
multiply-add than float32, and the model is convolutions end to end. Static quantisation
fixes every activation's range beforehand, so the ranges must come from scans of every
kind the model will see: synthetic dual-energy scans and real 8-bit exports score
differently, and ranges set on one kind alone clip the other. Weights are per output
channel (depthwise filters differ widely in scale); activations are asymmetric uint8.

The card is the float model's, with the new file's sha256, ``onnx.precision: "int8"``
and a ``quantization`` record (method, calibration scans, the float file it came from,
how far the outputs moved on scans it was not calibrated on, and the float model's test
figures, which leave ``metrics`` until measured again on the int8 file). The thresholds stay
the float model's until ``val`` is given: then they are calibrated again through the
engine, as `cargoscan export --val` does (a site's operating point is laid over again
with `cargoscan commission --into-card`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from inference.contracts import card_text
from inference.engine import Engine, ModelError
from inference.preprocess import preprocess

__all__ = ["calibration_paths", "quantize"]

MIN_CALIBRATION_SCANS = 4
KEEP_FLOAT = (
    "/net/stages.0/",
    "/net/stages.1/",
    "/net/heat/out/",
    "/net/box/out/",
    "/net/anomaly/out/",
)
"""Nodes left in float32: the stem and the first stage (stride 2 and 4: their inputs span
air to dense steel, and int8 there moved scores the most: mean change 0.023 with them
quantised, 0.014 without, on 20 real and synthetic scans), and the heads' output
convolutions (the scores and box sides themselves).

Every node outside ``/net/`` (the decoding `ExportWrapper` adds: sigmoid, exp, the peak
test) stays float as well, always: quantised, the heads' logits went through a uint8
grid before the sigmoid (0.08 logit steps, about 0.02 of score near 0.5) and the box
sides after the exp (steps of some 40 px), for no speed (they are element-wise)."""

NETWORK_SCOPE = "/net/"
"""Node-name prefix of the network proper in the exported graph (`training.model`)."""


CALIBRATION_METHODS = {
    "minmax": lambda m: m.MinMax,
    "percentile": lambda m: m.Percentile,
    "entropy": lambda m: m.Entropy,
}
"""How activation ranges are set from the calibration scans (ONNX Runtime's methods)."""


def _fixed_grids(int8_model: Path, produced: set[str]) -> dict[str, list[dict[str, Any]]]:
    """ONNX Runtime's TensorQuantOverrides pinning each activation that ``int8_model``
    quantises (and the graph being quantised ``produced``) to that file's scale and zero
    point."""
    from training.qat import activation_grids

    grids = activation_grids(int8_model)
    if not grids:
        raise ValueError(f"{int8_model}: no uint8 activations: not an int8 file of `quantize`")
    return {
        name: [
            {"scale": np.array(g.scale, np.float32), "zero_point": np.array(g.zero_point, np.uint8)}
        ]
        for name, g in grids.items()
        if name in produced
    }


def calibration_paths(folders: Sequence[Path], count: int) -> list[Path]:
    """About ``count`` scans spread evenly over each folder's scans in turn (sorted, so
    the choice repeats), the same share from every folder."""
    from training.evaluate import clean_scan_paths

    per_folder = max(1, count // max(1, len(folders)))
    chosen: list[Path] = []
    for folder in folders:
        paths = clean_scan_paths(folder)
        step = max(1, len(paths) // per_folder)
        chosen += paths[::step][:per_folder]
    return chosen


HISTOGRAM_SHAPE = (800, 1536)
"""The histogram methods stack every scan's activations, so their scans are cut or padded
(with air) to one size: the full height of a truck scan and half a 40 ft container."""


def _tensors(paths: Sequence[Path], progress: bool, same_size: bool) -> Iterator[np.ndarray]:
    from tqdm import tqdm

    from training.evaluate import load_clean_scan

    for path in tqdm(paths, desc="calibration scans", unit="scan", disable=not progress):
        tensor = preprocess(load_clean_scan(path)).tensor
        if same_size:
            h, w = HISTOGRAM_SHAPE
            fixed = np.zeros((1, tensor.shape[1], h, w), np.float32)
            part = tensor[:, :, :h, :w]
            fixed[:, :, : part.shape[2], : part.shape[3]] = part
            tensor = fixed
        yield tensor


def _output_change(float_engine: Engine, int8_engine: Engine, paths: Sequence[Path]) -> dict:
    """How far the int8 outputs lie from the float ones on scans outside calibration: the
    largest change of any heat or anomaly probability, and of each scan's top score."""
    from training.evaluate import load_clean_scan

    heat, anomaly, top = 0.0, 0.0, 0.0
    for path in paths:
        tensor = preprocess(load_clean_scan(path)).tensor
        f_heat, _, f_anomaly = float_engine.session.run(None, {"input": tensor})
        q_heat, _, q_anomaly = int8_engine.session.run(None, {"input": tensor})
        heat = max(heat, float(np.abs(f_heat - q_heat).max()))
        anomaly = max(anomaly, float(np.abs(f_anomaly - q_anomaly).max()))
        top = max(top, abs(float(f_heat.max()) - float(q_heat.max())))
    return {
        "scans": len(paths),
        "max_abs_heat": round(heat, 4),
        "max_abs_anomaly": round(anomaly, 4),
        "max_abs_top_score": round(top, 4),
    }


def quantize(
    model: Path,
    out: Path,
    calibration: Sequence[Path],
    *,
    count: int = 32,
    check: Sequence[Path] = (),
    val: Sequence[Path] | None = None,
    keep_float: Sequence[str] = KEEP_FLOAT,
    method: str = "minmax",
    activations_from: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``out`` (int8 ONNX) and its card from ``model`` (float ONNX with its card),
    calibrating activation ranges on about ``count`` scans from ``calibration`` folders;
    ``check`` scans (outside calibration) measure how far outputs moved. With
    ``activations_from`` (an int8 file of this network), every activation it quantises
    keeps that file's scale and zero point: the grids a `train --qat` run learnt under.
    Returns the card."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_engine = Engine.load(model)
    if float_engine.card.onnx.model_extra.get("precision") == "int8":
        raise ModelError(f"{model}: already int8")
    paths = calibration_paths(calibration, count)
    if len(paths) < MIN_CALIBRATION_SCANS:
        raise ValueError(
            f"{len(paths)} calibration scans are too few to set activation ranges: give at "
            f"least {MIN_CALIBRATION_SCANS}"
        )

    class Scans(CalibrationDataReader):
        def __init__(self) -> None:
            self.tensors = _tensors(paths, progress, same_size=method != "minmax")

        def get_next(self) -> dict[str, np.ndarray] | None:
            tensor = next(self.tensors, None)
            return None if tensor is None else {"input": tensor}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        # Symbolic shape inference cannot resolve the free height and width: skip it.
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        prepared_model = onnx.load(str(prepared))
        nodes = prepared_model.graph.node
        names = [n.name for n in nodes]
        keep = [
            n
            for n in names
            if not n.startswith(NETWORK_SCOPE) or any(n.startswith(k) for k in keep_float)
        ]
        extra: dict[str, Any] = {}
        if activations_from is not None:
            extra["TensorQuantOverrides"] = _fixed_grids(
                activations_from, {o for n in nodes for o in n.output}
            )
        quantize_static(
            str(prepared),
            str(tmp),
            Scans(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
            calibrate_method=CALIBRATION_METHODS[method](CalibrationMethod),
            extra_options=extra,
        )
    data = tmp.read_bytes()
    card = json.loads(Path(model).with_suffix(".json").read_text())
    card["name"] = out.stem
    card["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    card["onnx"] = {
        **card["onnx"],
        "file": out.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "precision": "int8",
    }
    int8_engine = Engine.from_bytes(data, card, threads=float_engine.threads)
    # The float model's test figures are not this file's: kept apart until measured again
    # (`cargoscan evaluate --record-in-card`).
    metrics = card.get("metrics") or {}
    measured = {k: metrics.pop(k) for k in list(metrics) if k not in ("training", "validation")}
    card["quantization"] = {
        "method": "static, QDQ; int8 weights per output channel, uint8 activations "
        f"({method} ranges), ONNX Runtime {onnxruntime.__version__}",
        "calibration_scans": [str(p) for p in paths],
        "kept_float": keep,
        "from": {"file": Path(model).name, "sha256": float_engine.card.onnx.sha256},
        "output_change": _output_change(float_engine, int8_engine, list(check)),
        "activations_from": None
        if activations_from is None
        else {
            "file": str(activations_from),
            "sha256": hashlib.sha256(Path(activations_from).read_bytes()).hexdigest(),
        },
        "float_metrics": measured,
    }
    if val:
        from training.data import open_sources
        from training.export import engine_thresholds

        source = open_sources(val, int8_engine.categories)
        keys, val_metrics = engine_thresholds(
            int8_engine, source, card["calibration"]["false_alarm_rate"], progress
        )
        card.update(keys)
        card.setdefault("metrics", {})["validation"] = val_metrics
        card["calibration"] = {
            **card["calibration"],
            "data": [str(v) for v in val],
            "through": "the engine (ONNX Runtime), on the int8 file",
        }
    os.replace(tmp, out)
    card_path = out.with_suffix(".json")
    card_path.write_text(card_text(card, str(card_path)))
    return card
