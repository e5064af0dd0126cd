"""Fixtures of the service tests (helpers in service_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from inference.service.settings import Settings
from station.server import ServerProcess, start_server
from tests.inference.service.accounts import World, world_of
from tests.inference.service.service_helpers import ADMIN_KEY, CHROMIUM, REPO, ServeProcess


@pytest.fixture
def make_settings(tmp_path: Path, models: dict[str, Path]) -> Callable[..., Settings]:
    def make(**kw: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "model_path": models["alarm"],
            "admin_key": ADMIN_KEY,
            "engine_threads": 1,
            "check_scans": 2,
        }
        base.update(kw)
        return Settings(**base)

    return make


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[ServeProcess]:
    """Starts a real `cargoscan serve` (`station.server`) from the repository and returns
    it once /readyz answers; every one it started is stopped when the test ends. The test
    may signal or kill it (``.proc``) and restart on the same data meanwhile.

    Call as ``serve_process(port, env, log=..., ready_timeout_s=...)``; the log (default
    ``tmp_path/serve.log``) is appended to, so a restart's output follows the first run's.
    """
    started: list[ServerProcess] = []

    def start(
        port: int,
        env: Mapping[str, str],
        *,
        log: Path | None = None,
        ready_timeout_s: float = 120.0,
    ) -> ServerProcess:
        server = start_server(port, log=log or tmp_path / "serve.log", env=env, cwd=REPO)
        started.append(server)
        server.wait_ready(ready_timeout_s)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[World]:
    """One running service per test module: two stations, four users, two scans."""
    with world_of(tmp_path_factory, models) as w:
        yield w


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium for the browser tests, one per module (their `pytestmark`
    skips them when Chromium or Playwright is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()
