"""Run the app under uvicorn with a graceful shutdown (``cargoscan serve``).

On SIGTERM / SIGINT uvicorn stops accepting connections, waits for the requests in
flight (up to ``drain_timeout_s``), then runs the app's shutdown. The subclass below
also marks the service as draining the moment the signal arrives, so ``/readyz`` turns
503 for a load balancer's probe on a kept-alive connection and new scans are refused with
503 + Retry-After while the accepted ones finish.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from inference.service.app import create_app
from inference.service.settings import Settings


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; returns after a clean drain."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings)
    service = app.state.service

    def draining() -> None:
        service.draining = True
        service.metrics.ready.set(0)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=settings.drain_timeout_s,
        log_level="info",
        proxy_headers=True,
    )
    server = _DrainingServer(config, draining)
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return
    # uvicorn re-raises the signal it caught once it has drained, to the handler that was
    # installed before it; a no-op there lets `cargoscan serve` end with status 0 after a
    # clean drain instead of dying by SIGTERM (143), which supervisors log as a failure.
    handled = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, _drained) for sig in handled}
    try:
        server.run()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _drained(_sig: int, _frame: FrameType | None) -> None:
    """The signal was handled by a clean shutdown already."""
