"""The raw-model API (`/v2`) with Triton's own Python client against a real `cargoscan
serve`: health and metadata, then a full-size scan tensor both ways, as binary tensor
data (the client's default) and as JSON, with outputs equal to ONNX Runtime's on the
same model file; and a binary body the server must refuse."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from inference.service.settings import Settings
from station.server import free_port
from tests.inference.service.service_helpers import ADMIN_KEY, REPO, ServeProcess, add_station

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra)")

# A real server and a 19 MB tensor each way: out of the quick run.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def expected_session(models: dict[str, Path]) -> ort.InferenceSession:
    return ort.InferenceSession(str(models["alarm"]), providers=["CPUExecutionProvider"])


def test_triton_client_infers_a_full_size_tensor_in_binary_and_json(
    tmp_path: Path,
    models: dict[str, Path],
    serve_process: ServeProcess,
    expected_session: ort.InferenceSession,
):
    port = free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "CARGOSCAN_DATA_DIR": str(data),
        "CARGOSCAN_MODEL_PATH": str(models["alarm"]),
        "CARGOSCAN_ADMIN_KEY": ADMIN_KEY,
        "CARGOSCAN_PORT": str(port),
        "CARGOSCAN_ENGINE_THREADS": "2",
        "PYTHONPATH": str(REPO),
    }
    env.pop("CARGOSCAN_DATABASE_URL", None)
    key = add_station(Settings(data_dir=data, database_url=None), "gate-1")
    serve_process(port, env, ready_timeout_s=90)

    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=300.0)
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("alarm", headers=key)
    assert meta["inputs"][0]["name"] == "input"
    outputs = [o["name"] for o in meta["outputs"]]

    x = np.random.default_rng(0).random((1, 2, 800, 3008), dtype=np.float32)
    want = dict(zip(outputs, expected_session.run(outputs, {"input": x}), strict=True))
    for binary in (True, False):
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        asked = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
        # A fresh dict each call: the client writes its header-length entry into it.
        result = client.infer("alarm", [tensor], outputs=asked, headers=dict(key), request_id="t1")
        for name in outputs:
            got = result.as_numpy(name)
            assert got.shape == want[name].shape, name
            np.testing.assert_allclose(got, want[name], atol=1e-5, err_msg=f"{name} {binary}")
        if binary:  # the outputs came back as raw bytes, sized in the JSON header
            sizes = [o["parameters"]["binary_data_size"] for o in result.get_response()["outputs"]]
            assert sizes == [want[n].nbytes for n in outputs]
    # No outputs named: the client asks for all of them in binary.
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("alarm", [tensor], headers=dict(key))
    np.testing.assert_allclose(result.as_numpy("heat"), want["heat"], atol=1e-5)
    client.close()

    # A binary body that does not add up is refused with the protocol's error.
    url = f"http://127.0.0.1:{port}/v2/models/alarm/infer"
    head = {"inputs": [{"name": "input", "shape": [1, 2, 32, 32], "datatype": "FP32"}]}
    head["inputs"][0]["parameters"] = {"binary_data_size": 2 * 32 * 32 * 4}
    body = json.dumps(head).encode()
    cases = [
        ({"Inference-Header-Content-Length": str(len(body))}, body + b"\0" * 100, "100 bytes"),
        ({"Inference-Header-Content-Length": "x"}, body, "whole number"),
        ({"Inference-Header-Content-Length": str(len(body) + 9)}, body, "the body has"),
        ({}, body + b"\0" * 8192, "not JSON"),
    ]
    for extra, raw, says in cases:
        r = httpx.post(url, content=raw, headers={**key, **extra}, timeout=30)
        assert r.status_code == 400 and says in r.json()["error"], (says, r.text)
