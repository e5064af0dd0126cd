"""Fixtures of the service tests (helpers in service_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inference.service.settings import Settings
from tests.inference.service.service_helpers import ADMIN_KEY


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
