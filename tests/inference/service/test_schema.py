"""The API against its own OpenAPI schema (schemathesis, in-process over ASGI): for every
operation, requests generated from the schema, and requests that break it on purpose, as
the caller it is for (a station posts scans, a supervisor's account reads and reviews, the
admin key administers); no answer is a 500, and every documented answer to a valid request
matches the schema (body, content type, headers).

Operations with a scan id run against a real stored scan too, so the 200 answers (result,
image, tiles, reviews, evidence) are checked, not only the 404s. Bounded: a few examples an
operation, well under a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[dev]'")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.python import asgi  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from inference.service.app import create_app, open_records  # noqa: E402
from inference.service.auth import hash_password  # noqa: E402
from inference.service.settings import Settings  # noqa: E402
from tests.inference.service.service_helpers import ADMIN, add_station, scan_pngs  # noqa: E402

EXAMPLES = 10
"""Per operation and kind of run (hypothesis stops sooner on small input spaces)."""
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]
PASSWORD = "supervisor's password"
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Iterator[dict[str, Any]]:
    settings = make_settings(station_rate_per_min=0)
    station = add_station(settings, "gate-1")
    records = open_records(settings)
    records.add_user("sam", "supervisor", hash_password(PASSWORD))
    records.engine.dispose()
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan
    client = asgi.get_client(app)
    try:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = client.post("/api/v1/auth/login", json={"username": "sam", "password": PASSWORD})
        assert r.status_code == 200, r.text
        user = {"Authorization": f"Bearer {r.json()['token']}"}
        files = {k: (v[0], v[1], v[2]) for k, v in scan_pngs().items()}
        r = client.post("/api/v1/scans", files=files, headers=station)
        assert r.status_code == 201, r.text
        yield {
            "schema": schema,
            "station": station,
            "user": user,
            "scan_id": r.json()["scan_id"],
        }
    finally:
        client.close()
        asgi.shutdown_lifespans()


def _caller(api: dict[str, Any], method: str, path: str) -> dict[str, str]:
    """The headers of the caller an operation is for."""
    if path.startswith("/api/v1/admin"):
        return ADMIN
    if (method, path) == ("POST", "/api/v1/scans") or path == "/api/v1/auth/logout":
        return api["station"]  # a station's logout revokes nothing: the user token lives on
    return api["user"]


def _run(
    operation: Any, headers: dict[str, str], mode: GenerationMode = POSITIVE, **fixed: Any
) -> int:
    """Run ``operation`` with generated requests; negative ones (that break the schema on
    purpose) must get a 4xx, never a 500; positive ones must also match the schema."""
    calls = 0
    checks = CHECKS if mode == POSITIVE else [not_a_server_error]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def check(case: Any) -> None:
        nonlocal calls
        response = case.call(headers=headers)
        calls += 1
        case.validate_response(response, checks=checks, headers=headers)

    try:
        check()
    except Unsatisfiable:  # nothing to break (an operation without parameters)
        assert mode == NEGATIVE
    return calls


@pytest.mark.slow
def test_every_operation_answers_by_its_schema_and_never_500(api: dict[str, Any]):
    schema = api["schema"]
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) > 25
    calls = 0
    for op in operations:
        headers = _caller(api, op.method.upper(), op.path)
        calls += _run(op, headers)
        calls += _run(op, headers, NEGATIVE)
        if "{scan_id}" in op.path:
            calls += _run(op, headers, path_parameters={"scan_id": api["scan_id"]})
    print(f"\nschemathesis: {len(operations)} operations, {calls} requests, no failure")
