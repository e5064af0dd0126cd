"""The Open Inference Protocol (KServe v2) REST API for the raw model.

For ML tooling that speaks the protocol (load tests, shadow evaluation, other serving
stacks): tensors in, tensors out, no decoding, no storage, no verdict. The input is the
model's pre-processed tensor (``inference.preprocess``), float32 ``[N, 2, H, W]`` with H
and W multiples of the card's ``multiple_of``, held to the limits a scan upload is held to
(``MAX_PIXELS`` for all N, and per image ``MAX_SCAN_SIDE``, ``MAX_ASPECT_RATIO`` and
``MAX_MODEL_PIXELS``: 413 for a size, 422 for a shape, naming the shape and the limit).
Health endpoints are open (probes carry no keys); model metadata and inference need a
station or admin key. Errors follow the protocol: ``{"error": "..."}``. Readiness answers
200 when ready and 503 when not (the protocol reads any non-200 as false).

Tensors travel as JSON or, with the protocol's binary tensor data extension (what
Triton's clients send by default), as raw little-endian bytes after a JSON header whose
length the ``Inference-Header-Content-Length`` header gives: an input with
``parameters.binary_data_size`` instead of ``data``; outputs in binary when the request
asks (``outputs[i].parameters.binary_data`` or ``parameters.binary_data_output``). A
full-size 2x800x3008 tensor is 19 MB raw and several times that as JSON text.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from inference.scan import ModelShape, ScanError, ScanTooLarge
from inference.scan.channels import check_size
from inference.service.auth import AnyCaller
from inference.service.core import Service, service_version
from inference.service.deps import get_service
from inference.service.rollout import LiveModel

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

_DTYPES = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(int32)": "INT32"}
HEADER_LENGTH = "Inference-Header-Content-Length"
FP32 = np.dtype("<f4")  # the protocol's binary tensors are little-endian, row-major


class OIPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _model(service: Service, name: str, version: str | None = None) -> LiveModel:
    model = service.models.current
    if model is None:
        raise OIPError(503, f"model {name!r} is not ready: {service.models.status}")
    if name != model.info["name"]:
        raise OIPError(404, f"unknown model {name!r}; this server serves {model.info['name']!r}")
    if version is not None and version != model.version:
        raise OIPError(404, f"model {name!r} has no version {version!r}; serving {model.version}")
    return model


def _tensors(items: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "datatype": _DTYPES.get(t.type, t.type),
            "shape": [d if isinstance(d, int) else -1 for d in t.shape],
        }
        for t in items
    ]


@router.get("")
def server_metadata() -> dict[str, Any]:
    return {
        "name": "cargoscan",
        "version": service_version(),
        "extensions": ["binary_tensor_data"],
    }


@router.get("/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
def ready(request: Request) -> JSONResponse:
    ok = get_service(request).ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def _metadata(request: Request, name: str, version: str | None) -> JSONResponse:
    try:
        model = _model(get_service(request), name, version)
    except OIPError as exc:
        return _error(exc.status, exc.message)
    session = model.engine.session
    return JSONResponse(
        {
            "name": model.info["name"],
            "versions": [model.version],
            "platform": "onnxruntime_onnx",
            "inputs": _tensors(session.get_inputs()),
            "outputs": _tensors(session.get_outputs()),
            "parameters": {
                "categories": model.engine.categories,
                "stride": model.engine.stride,
                "multiple_of": model.engine.card.input.multiple_of,
                "sha256": model.info["sha256"],
            },
        }
    )


@router.get("/models/{name}")
def model_metadata(request: Request, _who: AnyCaller, name: str) -> JSONResponse:
    return _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}")
def model_version_metadata(
    request: Request, _who: AnyCaller, name: str, version: str
) -> JSONResponse:
    return _metadata(request, name, version)


@router.get("/models/{name}/ready")
def model_ready(request: Request, name: str) -> JSONResponse:
    try:
        _model(get_service(request), name)
    except OIPError as exc:
        return JSONResponse({"name": name, "ready": False, "error": exc.message}, exc.status)
    return JSONResponse({"name": name, "ready": True})


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary section of a request body (no header: all JSON)."""
    if header_length is None:
        return raw, b""
    try:
        n = int(header_length)
    except ValueError:
        raise OIPError(
            400, f"{HEADER_LENGTH} must be a whole number of bytes, got {header_length!r}"
        ) from None
    if not 0 < n <= len(raw):
        raise OIPError(400, f"{HEADER_LENGTH} is {n}, but the body has {len(raw)} bytes")
    return raw[:n], raw[n:]


def _input_values(spec: dict[str, Any], shape: list[int], binary: bytes) -> np.ndarray:
    """The input tensor's values, from its JSON ``data`` or from the binary section."""
    data = spec.get("data")
    params = spec.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if data is not None:
            raise OIPError(400, "input has both 'data' and parameters.binary_data_size")
        want = math.prod(shape) * FP32.itemsize
        if not isinstance(size, int) or isinstance(size, bool) or size != want:
            raise OIPError(
                400, f"binary_data_size must be {want} bytes for FP32 {shape}, got {size!r}"
            )
        if len(binary) != size:
            raise OIPError(
                400,
                f"the body holds {len(binary)} bytes of binary tensor data; "
                f"binary_data_size says {size}",
            )
        return np.frombuffer(binary, dtype=FP32).astype(np.float32).reshape(shape)
    if binary:
        raise OIPError(400, f"{len(binary)} bytes of binary data, but no input names a size")
    if not isinstance(data, list):
        raise OIPError(400, "input 'data' must be a (flat or nested) list of numbers")
    try:
        arr = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise OIPError(400, "input 'data' must hold numbers only") from None
    if arr.size != math.prod(shape):
        raise OIPError(400, f"input has {arr.size} values; shape {shape} needs {math.prod(shape)}")
    return arr.reshape(shape)


def _binary_flag(params: Any, key: str) -> bool:
    if params is None:
        return False
    if not isinstance(params, dict) or not isinstance(params.get(key, False), bool):
        raise OIPError(400, f"parameters.{key} must be true or false")
    return bool(params.get(key, False))


def _parse_request(
    raw: bytes,
    header_length: str | None,
    model: LiveModel,
    max_pixels: int,
    shape_limits: ModelShape | None = None,
) -> tuple[Any, np.ndarray, list[tuple[str, bool]]]:
    """Validate an infer request; returns (id, input tensor, requested outputs with
    whether each goes back in binary). ``shape_limits``: the bounds a scan upload's header
    is held to (``Settings.model_shape``), for the tensor's H x W, before its values are
    read: the same side, aspect-ratio and padded-pixel limits on both ways in."""
    head, binary = split_body(raw, header_length)
    try:
        req = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        hint = f" (binary tensors need the {HEADER_LENGTH} header)" if header_length is None else ""
        raise OIPError(400, f"the body is not JSON{hint}: {exc}") from None
    if not isinstance(req, dict):
        raise OIPError(400, "the body must be a JSON object with 'inputs'")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise OIPError(400, "'inputs' must be a list of exactly one tensor ('input')")
    spec = inputs[0]
    want = model.engine.session.get_inputs()[0].name
    if spec.get("name") != want:
        raise OIPError(400, f"input tensor must be named {want!r}, got {spec.get('name')!r}")
    if spec.get("datatype") != "FP32":
        raise OIPError(400, f"input datatype must be FP32, got {spec.get('datatype')!r}")
    shape = spec.get("shape")
    multiple = model.engine.card.input.multiple_of
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        or shape[1] != 2
    ):
        raise OIPError(400, f"input shape must be [N, 2, H, W] with positive sizes, got {shape}")
    n, _, h, w = shape
    if h % multiple or w % multiple:
        raise OIPError(400, f"H and W must be multiples of {multiple}, got {h} x {w}")
    if n * h * w > max_pixels:
        raise OIPError(413, f"{n} x {h} x {w} pixels exceeds the limit of {max_pixels:,}")
    try:  # the scan upload's header check: side, aspect ratio, padded pixels (ModelShape)
        check_size(h, w, "input", None, shape_limits)
    except ScanError as exc:
        status = 413 if isinstance(exc, ScanTooLarge) else 422
        raise OIPError(status, f"input shape {shape}: {exc}") from None
    arr = _input_values(spec, shape, binary)
    if not np.isfinite(arr).all():
        raise OIPError(400, "input holds NaN or infinite values")
    all_binary = _binary_flag(req.get("parameters"), "binary_data_output")
    outputs = [o.name for o in model.engine.session.get_outputs()]
    requested = req.get("outputs")
    if requested is None:
        names = [(o, all_binary) for o in outputs]
    elif isinstance(requested, list) and all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        names = [
            (o["name"], all_binary or _binary_flag(o.get("parameters"), "binary_data"))
            for o in requested
        ]
        unknown = sorted({name for name, _ in names} - set(outputs))
        if unknown:
            raise OIPError(400, f"unknown output(s) {unknown}; the model has {outputs}")
    else:
        raise OIPError(400, "'outputs' must be a list of {\"name\": ...} objects")
    return req.get("id"), arr, names


def _response(
    head: dict[str, Any], names: list[tuple[str, bool]], values: list[np.ndarray]
) -> Response:
    """JSON outputs, or a JSON header followed by the binary outputs in order."""
    blobs = []
    outputs = []
    for (name, binary), value in zip(names, values, strict=True):
        out: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(value.shape)}
        if binary:
            blob = np.ascontiguousarray(value, dtype=FP32).tobytes()
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = np.asarray(value, np.float32).ravel().tolist()
        outputs.append(out)
    body = json.dumps({**head, "outputs": outputs}).encode()
    if not blobs:
        return Response(body, media_type="application/json")
    return Response(
        b"".join([body, *blobs]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(body))},
    )


async def _infer(request: Request, name: str, version: str | None) -> Response:
    service = get_service(request)
    try:
        model = _model(service, name, version)
        raw = await request.body()
        # json of a large tensor takes a while: off the event loop
        req_id, tensor, names = await run_in_threadpool(
            _parse_request,
            raw,
            request.headers.get(HEADER_LENGTH),
            model,
            service.settings.max_pixels,
            service.settings.model_shape(),
        )
    except OIPError as exc:
        return _error(exc.status, exc.message)
    session = model.engine.session
    feed = {session.get_inputs()[0].name: tensor}
    values = await service.pool.run(session.run, [n for n, _ in names], feed)
    head: dict[str, Any] = {"model_name": model.info["name"], "model_version": model.version}
    if req_id is not None:
        head["id"] = req_id
    return await run_in_threadpool(_response, head, names, values)


@router.post("/models/{name}/infer")
async def infer(request: Request, _who: AnyCaller, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer")
async def infer_version(request: Request, _who: AnyCaller, name: str, version: str) -> Response:
    return await _infer(request, name, version)
