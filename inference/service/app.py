"""The app factory: ``create_app(settings)`` -> a FastAPI app; everything heavy in lifespan.

Nothing is built at import: the database engine, the migrations, the blob store and the
model are made when the app starts (the lifespan), so tests and the CLI can create apps
with their own settings side by side, and importing this module costs no I/O.

Start-up order: database (migrated to the newest revision) -> ``/healthz`` answers ->
the model loads and warms up in the background -> ``/readyz`` turns 200. Shutdown (SIGTERM
from uvicorn): ``/readyz`` turns 503 (draining) and new scans get 503, the requests in
flight finish, the pool drains, then the database is closed.

The running ``Service`` is in ``core.py``; the routers (``api``, ``oip``, ``users``,
``audit_api``, ``reviews``, ``viewer``) share ``deps.py`` and never import this module.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.scan import ScanError, ScanTooLarge
from inference.service.auth import KEY_PREFIX, hash_key
from inference.service.core import (
    API,
    ScanConflict,
    Service,
    ServiceUnavailable,
    open_records,
    service_version,
)
from inference.service.headers import SecurityHeadersMiddleware
from inference.service.limits import StationRateLimitMiddleware
from inference.service.metrics import MetricsMiddleware
from inference.service.pool import QueueFull
from inference.service.settings import Settings

__all__ = ["create_app", "open_records", "scan_error_status"]

log = logging.getLogger("cargoscan.service")


# --------------------------------------------------------------------------- middleware


class BodyLimitMiddleware:
    """413 for a body over the limit: at once from Content-Length, or as soon as a
    chunked body passes it (the upload is never buffered beyond the limit)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body too large: the limit is {self.limit:,} bytes"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise StarletteHTTPException(413, message)
            return msg

        await self.app(scope, limited, send)


# --------------------------------------------------------------------------- errors


def _validation_message(exc: RequestValidationError) -> str:
    """One line naming each bad field: ``high: Field required; limit: ...``."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        named = [x for x in loc[1:] if not x.isdigit()] if len(loc) > 1 else loc
        where = ".".join(named) or (f"request {loc[0]}" if loc else "request")
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def scan_error_status(exc: ScanError) -> int:
    """413 for a scan too large to take (pixels, sides: checked from the header), 422
    otherwise."""
    return 413 if isinstance(exc, ScanTooLarge) else 422


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.exception_handler(ScanError)
    async def _scan(_req: Request, exc: ScanError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=scan_error_status(exc))

    @app.exception_handler(DataError)
    async def _data(_req: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses (e.g. a NUL character for PostgreSQL) is bad input.
        log.warning("database refused a value: %s", exc.orig)
        return JSONResponse(
            {"detail": "a value in the request cannot be stored (control characters?)"},
            status_code=422,
        )

    @app.exception_handler(QueueFull)
    async def _full(req: Request, exc: QueueFull) -> JSONResponse:
        req.app.state.service.metrics.rejected.inc()
        return JSONResponse(
            {"detail": str(exc)},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(ScanConflict)
    async def _conflict(_req: Request, exc: ScanConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(req: Request, exc: ServiceUnavailable) -> JSONResponse:
        retry = str(req.app.state.service.settings.retry_after_s)
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": retry})

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("unexpected error %s", ref, exc_info=exc)
        return JSONResponse(
            {"detail": f"internal error (reference {ref}); the service log has the details"},
            status_code=500,
        )


def _document_error_body(app: FastAPI) -> None:
    """The schema says what a 422 really holds: ``{"detail": "<one line naming each bad
    field>"}`` (see ``_validation_message``), not FastAPI's list of error objects. Found
    by schemathesis (tests/inference/service/test_schema.py): clients generated from the
    schema would fail to read every 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"] = {
                "title": "HTTPValidationError",
                "type": "object",
                "properties": {
                    "detail": {
                        "title": "Detail",
                        "type": "string",
                        "description": "what is wrong, naming each bad field",
                    }
                },
                "required": ["detail"],
            }
            schemas.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# --------------------------------------------------------------------------- the app


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app for ``settings`` (default: from the environment)."""
    # Here, not at the top: ``open_records`` (the CLI's) does not load the routers (OpenCV).
    from inference.service import api, audit_api, oip, related, reviews, shift, users, viewer
    from inference.service.api_docs import install_api_docs

    settings = settings or Settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(service.open)
        loading = asyncio.get_running_loop().run_in_executor(None, service.load_startup_model)
        app.state.startup_task = loading
        try:
            yield
        finally:
            service.draining = True
            service.metrics.ready.set(0)
            try:
                await asyncio.wait_for(asyncio.shield(loading), timeout=60)
            except Exception as exc:  # a model that hangs must not hang the shutdown
                log.warning("start-up model loading did not end cleanly: %s", exc)
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="CargoScan",
        summary="Finds contraband and anomalies in cargo X-ray scans.",
        version=service_version(),
        lifespan=lifespan,
        docs_url=None,  # install_api_docs: Swagger UI from this machine, not a CDN
        redoc_url=None,
    )
    app.state.service = service
    _install_error_handlers(app)
    _document_error_body(app)
    app.include_router(api.router)
    app.include_router(oip.router)
    app.include_router(users.router)
    app.include_router(audit_api.router)
    app.include_router(reviews.router)
    app.include_router(shift.router)
    app.include_router(related.router)
    app.include_router(viewer.router)
    app.mount("/static", viewer.static_files(), name="static")
    install_api_docs(app)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        """Liveness: the process answers (no dependency checked)."""
        return {"status": "ok", "uptime_s": round(time.time() - service.started, 1)}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        """200 once the model is loaded and warm; 503 before that and while draining."""
        model = service.models.current
        if service.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if model is None:
            return JSONResponse(
                {"status": "not ready", "reason": service.models.status}, status_code=503
            )
        body: dict[str, Any] = {"status": "ready", "model": model.info}
        if service.follow_error is not None:  # serving, but not what another replica rolled out
            body["follow_error"] = service.follow_error
        return JSONResponse(body)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics(request: Request) -> Response:
        """Prometheus text format; behind ``CARGOSCAN_METRICS_KEY`` when that is set."""
        if not _metrics_allowed(settings, request.headers.get("authorization")):
            return JSONResponse(
                {"detail": "/metrics needs 'Authorization: Bearer <metrics key>' here"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="cargoscan-metrics"'},
            )
        return PlainTextResponse(service.metrics.render(), media_type=service.metrics.content_type)

    # Outermost first: security headers on every answer; metrics see every answer, including
    # a 413 from the body limit and a station's 429 (given before its upload is read).
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(
        StationRateLimitMiddleware,
        buckets=service.station_buckets,
        key_prefix=KEY_PREFIX,
        exempt_hash=lambda: _admin_key_hash(settings),
        on_limited=service.rate_limited.labels("station").inc,
    )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    app.add_middleware(SecurityHeadersMiddleware, api_prefix=API + "/")
    return app


def _metrics_allowed(settings: Settings, authorization: str | None) -> bool:
    """Open without a metrics key; with one, its bearer (or the admin key's). Why a key at
    all: the counts tell an outsider how busy each gate is and which model serves."""
    if settings.metrics_key is None or not settings.metrics_key.get_secret_value():
        return True
    scheme, _, sent = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not sent.strip():
        return False
    sent_hash = hash_key(sent.strip())
    allowed = [settings.metrics_key.get_secret_value()]
    if settings.admin_key is not None and settings.admin_key.get_secret_value():
        allowed.append(settings.admin_key.get_secret_value())
    return any(hmac.compare_digest(sent_hash, hash_key(k)) for k in allowed)


def _admin_key_hash(settings: Settings) -> str | None:
    """SHA-256 of the admin key (exempt from the station limit even if it looks like one)."""
    key = settings.admin_key.get_secret_value() if settings.admin_key is not None else ""
    return hash_key(key) if key else None
