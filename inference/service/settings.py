"""All service settings in one place, read from ``CARGOSCAN_*`` environment variables.

One pydantic-settings class, so an operator has one list to read (``cargoscan serve
--help`` names the flags that override the most common ones) and tests build a
``Settings(...)`` with keyword arguments instead of patching globals.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference import DEFAULT_MODEL
from inference.scan import DEFAULT_MAX_PIXELS, ModelShape


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
    operating_point: Path | None = Field(
        None,
        description="a site's operating point for that model (`cargoscan commission`): "
        "its thresholds replace the card's",
    )
    admin_key: SecretStr | None = Field(
        None, description="bearer key of the admin API (roll-out, all stations' scans)"
    )
    signing_key_path: Path | None = Field(
        None,
        description="Ed25519 private key (PEM) that signs results, reviews and evidence "
        "packages; must exist when set. Default DATA_DIR/signing-key.pem, made on the first "
        "start (mode 0600)",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    workers: int = Field(1, ge=1, le=64, description="inference threads (one model session)")
    engine_threads: int = Field(2, ge=1, le=64, description="ONNX Runtime threads per inference")
    cargo_analysis: bool = Field(
        False,
        description="experimental: containers, contents and the manifest check in each "
        "result (docs/cargo.md; not yet reliable on real 8-bit scans)",
    )
    queue_size: int = Field(
        8, ge=0, le=10_000, description="requests that may wait for a free inference thread"
    )
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="413 above this")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=256, description="per channel; 413 above")
    # What the model is given: the scan padded to a multiple of 32 a side (ModelShape).
    max_model_pixels: int | None = Field(
        None,
        ge=1024,
        description="pixels of the padded model input (each side rounded up to a multiple "
        "of 32); 413 above. Default: MAX_PIXELS plus 10 %",
    )
    max_scan_side: int = Field(30_000, ge=64, description="longest side of a scan (px); 413 above")
    max_aspect_ratio: float = Field(
        25.0, ge=1.0, description="long side / short side of a scan; 422 above"
    )
    retry_after_s: int = Field(2, ge=1, description="least Retry-After of a 429")
    drain_timeout_s: int = Field(30, ge=0, description="graceful shutdown: wait this long")
    check_scans: int = Field(3, ge=0, le=50, description="stored scans a new model must pass")
    model_sync_s: float = Field(
        10.0,
        ge=0,
        description="replicas on one database: look this often (s) for a model another "
        "replica rolled out, and serve it too (0: never)",
    )

    # Hardening: per-caller limits (inference/service/limits.py) and secrets from files.
    station_rate_per_min: float = Field(
        120.0, ge=0, description="requests a minute per station key (0: no limit); 429 above"
    )
    station_burst: int = Field(30, ge=1, description="requests a station may send at once")
    login_max_failures: int = Field(
        5, ge=1, description="failed logins per user name and client address in the window"
    )
    login_window_s: int = Field(900, ge=1, description="the failed-login window (s)")
    login_max_failures_per_address: int = Field(
        100, ge=1, description="failed logins per client address, all names, in the window"
    )
    metrics_key: SecretStr | None = Field(
        None,
        description="when set, /metrics answers only 'Authorization: Bearer METRICS_KEY' "
        "(or the admin key); 401 otherwise. Unset: open, as Prometheus scrapes by default",
    )
    login_hash_threads: int = Field(
        2, ge=1, le=64, description="password checks (Argon2, ~64 MB each) run at once"
    )
    login_hash_queue: int = Field(
        32, ge=0, description="logins that may wait for a password check; 429 above"
    )
    admin_key_file: Path | None = Field(
        None,
        description="read the admin key from this file (a mounted secret) instead of "
        "CARGOSCAN_ADMIN_KEY; surrounding whitespace is ignored",
    )

    @model_validator(mode="after")
    def _admin_key_from_file(self) -> Settings:
        """A secret file beats an environment variable (which leaks into ``ps e`` and child
        processes); a file that cannot be read or is empty stops the start."""
        if self.admin_key_file is not None:
            try:
                text = self.admin_key_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"admin_key_file: cannot read {self.admin_key_file}: {exc}"
                ) from None
            if not text:
                raise ValueError(f"admin_key_file: {self.admin_key_file} is empty")
            self.admin_key = SecretStr(text)
        return self

    def model_shape(self) -> ModelShape:
        """The bounds on what the model is given, checked from an upload's header."""
        padded = self.max_model_pixels or self.max_pixels + self.max_pixels // 10
        return ModelShape(
            max_padded_pixels=padded,
            max_side=self.max_scan_side,
            max_aspect=self.max_aspect_ratio,
        )

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cargoscan.db').resolve()}"
