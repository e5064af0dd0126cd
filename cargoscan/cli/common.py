"""What the subcommand modules share: the error exit, options several commands take, and
the service's settings and database for the administration commands.

Imports here stay standard-library only (the service's own modules load inside the
functions), so building the parser for `cargoscan --help` pulls in nothing heavy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# What add_parser is called on: each subcommand module's add_* functions take one.
Subcommands = argparse._SubParsersAction


def fail(command: str, message: str, status: int = 2) -> int:
    """Say what went wrong as `cargoscan COMMAND: MESSAGE` on standard error; returns the
    exit status, so a handler can `return fail(...)`."""
    print(f"cargoscan {command}: {message}", file=sys.stderr)
    return status


def _nearest_existing(path: Path) -> Path:
    """The path itself or its closest ancestor that exists (what `mkdir -p` would write in)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_folder(value: str) -> Path:
    """argparse type for an output folder: refuse a file or an unwritable place at once, not
    after minutes of work and with a traceback."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a file, not a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{value}: {base} is not writable")
    return path


def writable_file(value: str) -> Path:
    """argparse type for an output file: its folder must be (or become) a writable folder."""
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder, not a file")
    writable_folder(str(path.parent) if str(path.parent) else ".")
    return path


def add_output_folder(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=writable_folder, required=True, help="output folder")


def add_model_with_card(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="MODEL.onnx (its card beside it)")


def add_false_alarm_rate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--far", type=float, default=0.01, help="false-alarm rate for the thresholds")


def add_db_flags(p: argparse.ArgumentParser) -> None:
    """Where the service keeps its data: for the commands that open its database."""
    p.add_argument(
        "--data-dir", type=Path, default=None, help="default $CARGOSCAN_DATA_DIR or data/service"
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default $CARGOSCAN_DATABASE_URL or SQLite in the data dir)",
    )


def service_settings(args: argparse.Namespace, **extra: object):  # -> Settings
    """Settings from CARGOSCAN_* variables, overridden by the flags that were given."""
    from pydantic import ValidationError

    from inference.service.settings import Settings

    given = {
        "data_dir": getattr(args, "data_dir", None),
        "database_url": getattr(args, "database_url", None),
        **extra,
    }
    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise SystemExit(f"cargoscan: bad setting: {exc}") from None


@contextlib.contextmanager
def open_service_records(settings: object) -> Iterator[Any]:
    """The service's database for a CLI command (migrated), closed again afterwards."""
    from inference.service.app import open_records

    records = open_records(settings)  # type: ignore[arg-type]
    try:
        yield records
    finally:
        records.engine.dispose()
