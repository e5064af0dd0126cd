"""The OpenAPI document describes the scan result (inference.contracts.ScanResult) on the
scan routes, so clients generated from it can read what they are sent (schemathesis, in
test_schema.py, checks the real answers against it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from inference.service.app import create_app
from inference.service.settings import Settings

JSON = "application/json"


def _openapi(tmp_path: Path) -> dict[str, Any]:
    # No lifespan: the document needs neither a model nor a database.
    client = TestClient(create_app(Settings(data_dir=tmp_path / "data")))
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def _schema(doc: dict[str, Any], path: str, method: str, status: str) -> str:
    return doc["paths"][path][method]["responses"][status]["content"][JSON]["schema"]["$ref"]


def test_the_scan_routes_answer_with_the_result_schema(tmp_path: Path):
    doc = _openapi(tmp_path)
    scan = "#/components/schemas/ScanResponse"
    assert _schema(doc, "/api/v1/scans", "post", "201") == scan
    assert _schema(doc, "/api/v1/scans", "post", "200") == scan  # a retry's stored answer
    assert _schema(doc, "/api/v1/scans/{scan_id}", "get", "200") == scan
    history = _schema(doc, "/api/v1/scans/{scan_id}/results", "get", "200")
    assert history == "#/components/schemas/ScanResults"

    schemas = doc["components"]["schemas"]
    response = schemas["ScanResponse"]
    assert set(response["required"]) == {
        "scan_id",
        "model",
        "processing_ms",
        "risk",
        "verdict",
        "findings",
        "cargo_region",
        "anomaly_map",
        "scan",
    }
    assert response["properties"]["verdict"]["enum"] == ["clear", "review", "alarm"]
    finding = schemas["ResultFinding"]
    assert finding["properties"]["source"]["enum"] == ["detector", "anomaly"]
    assert finding["properties"]["box"]["minItems"] == finding["properties"]["box"]["maxItems"]
    assert "operating_point" not in schemas["ResultModel"]["required"]  # only with a site
    results = schemas["ScanResults"]["properties"]["results"]
    assert results["items"] == {"$ref": "#/components/schemas/ScanResult"}


def test_the_scan_list_is_described_item_by_item(tmp_path: Path):
    doc = _openapi(tmp_path)
    assert _schema(doc, "/api/v1/scans", "get", "200") == "#/components/schemas/ScanList"
    schemas = doc["components"]["schemas"]
    assert set(schemas["ScanList"]["required"]) == {"items", "total", "limit", "offset", "next"}
    item = schemas["ScanListItem"]["properties"]
    assert {"scan_id", "verdict", "risk", "findings", "url"} <= set(item)
    verdicts = {v for choice in item["verdict"]["anyOf"] for v in choice.get("enum", [])}
    assert verdicts == {"clear", "review", "alarm"}
