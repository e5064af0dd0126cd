"""Prometheus metrics of one app: requests, latency, queue depth, findings, model version.

Each app has its own registry (not prometheus-client's global one), so two apps in one
process (tests, a roll-out rehearsal) never share or clash over counters.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The service's instruments, registered in a private registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cargoscan_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "cargoscan_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "cargoscan_queue_depth", "inference jobs running or waiting", registry=r
        )
        self.inference = Histogram(
            "cargoscan_inference_duration_seconds",
            "one scan: decode, model, result",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.findings = Counter(
            "cargoscan_findings",
            "findings reported to stations, by category and source",
            ["category", "source"],
            registry=r,
        )
        self.verdicts = Counter(
            "cargoscan_verdicts", "scan verdicts reported", ["verdict"], registry=r
        )
        self.rejected = Counter(
            "cargoscan_queue_rejections", "requests answered 429 (queue full)", registry=r
        )
        self.model = Gauge(
            "cargoscan_model_info",
            "the model serving now (value 1)",
            ["name", "version", "sha256"],
            registry=r,
        )
        self.ready = Gauge("cargoscan_ready", "1 when /readyz answers 200", registry=r)
        self.rollouts = Counter(
            "cargoscan_model_rollouts", "model roll-outs by outcome", ["outcome"], registry=r
        )

    def set_model(self, info: dict[str, str] | None) -> None:
        self.model.clear()
        if info:
            self.model.labels(info["name"], info["version"], info["sha256"]).set(1)

    def count_result(self, result: dict[str, Any]) -> None:
        self.verdicts.labels(result["verdict"]).inc()
        for f in result["findings"]:
            self.findings.labels(f["category"], f["source"]).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by its route *template* (``/api/v1/scans/{scan_id}``),
    never the raw path, so scan ids cannot blow up the number of series."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
