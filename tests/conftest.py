"""Fixtures shared across the test packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.service.service_helpers import build_models


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real exported models (see build_models), built once per test session."""
    return build_models(tmp_path_factory.mktemp("models"))
