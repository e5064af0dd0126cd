"""All service settings in one place, read from ``CARGOSCAN_*`` environment variables.

One pydantic-settings class, so an operator has one list to read (``cargoscan serve
--help`` names the flags that override the most common ones) and tests build a
``Settings(...)`` with keyword arguments instead of patching globals.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.scan import DEFAULT_MAX_PIXELS

DEFAULT_MODEL = Path("models/cargoscan-default.onnx")


class Settings(BaseSettings):
    """Service configuration; every field can be set as ``CARGOSCAN_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="CARGOSCAN_", protected_namespaces=(), extra="ignore"
    )

    data_dir: Path = Field(
        Path("data/service"),
        description="scan files (by SHA-256) and the default SQLite database live here",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite:///DATA_DIR/cargoscan.db. "
        "postgresql://user@host/db works as well (psycopg 3 driver)",
    )
    model_path: Path | None = Field(
        DEFAULT_MODEL, description="ONNX model to serve at start (its .json card beside it)"
    )
    admin_key: SecretStr | None = Field(
        None, description="bearer key of the admin API (roll-out, all stations' scans)"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    workers: int = Field(1, ge=1, le=64, description="inference threads (one model session)")
    engine_threads: int = Field(2, ge=1, le=64, description="ONNX Runtime threads per inference")
    queue_size: int = Field(
        8, ge=0, le=10_000, description="requests that may wait for a free inference thread"
    )
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="413 above this")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=256, description="per channel; 413 above")
    retry_after_s: int = Field(2, ge=1, description="least Retry-After of a 429")
    drain_timeout_s: int = Field(30, ge=0, description="graceful shutdown: wait this long")
    check_scans: int = Field(3, ge=0, le=50, description="stored scans a new model must pass")

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cargoscan.db').resolve()}"
