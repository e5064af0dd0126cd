"""The `cargoscan` command line: one parser assembled from the subcommand modules, one per
audience (scans offline, data and models, the service, the scanner station).

Every subcommand's heavy imports happen inside its handler, so `cargoscan --help` stays
instant, and `cargoscan serve` or `analyze` never import torch: only the data and model
commands reach into `training`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from cargoscan.cli import scans, service, station, training
from cargoscan.cli.common import Subcommands, fail
from cargoscan.cli.scans import VIEW_NAMES

__all__ = ["SUBCOMMANDS", "VIEW_NAMES", "build_parser", "main"]

# In the order `cargoscan --help` lists them.
SUBCOMMANDS: list[Callable[[Subcommands], None]] = [
    scans.add_render,
    training.add_synth,
    training.add_tip,
    training.add_train,
    training.add_export,
    training.add_quantize,
    training.add_verifier,
    training.add_calibrate,
    training.add_commission,
    training.add_evaluate,
    scans.add_analyze,
    service.add_serve,
    service.add_station,
    service.add_user,
    service.add_reviews,
    service.add_model,
    station.add_simulate,
    station.add_demo,
    service.add_audit,
    service.add_verify,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cargoscan",
        description="CargoScan: finds contraband and anomalies in cargo X-ray scans.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except OSError as exc:
        # A file that cannot be read or written (missing, a folder, no permission, disk
        # full) is the user's to fix: one line naming it, not a traceback.
        # CARGOSCAN_DEBUG=1 keeps the traceback for developers.
        if os.environ.get("CARGOSCAN_DEBUG"):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(args.command, f"{where}{exc.strerror or exc}", 1)
