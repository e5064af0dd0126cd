"""The scanner-station side, for integrators: `simulate` (a station posting generated scans
to a running service) and `demo` (the service and such a station together). Torch-free:
the `station` package needs only the synthetic generator and the runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from cargoscan.cli.common import Subcommands, fail
from inference import DEFAULT_MODEL


def add_simulate(sub: Subcommands) -> None:
    p = sub.add_parser(
        "simulate",
        help="a scanner station: generate synthetic scans and post them to a running service",
        description="Generates dual-energy scans with the synthetic generator and posts them "
        "(16-bit uncompressed TIFFs or PNGs + metadata with a station_scan_id) like a portal "
        "would: a 429/503 is retried after Retry-After, a timeout or lost connection with "
        "exponential back-off, always under the same station_scan_id (so a retry is never "
        "stored twice). Prints the service's verdict for each scan next to what the scan "
        "really holds.",
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="service URL")
    p.add_argument(
        "--key", default=None, help="the station's API key (default $CARGOSCAN_STATION_KEY)"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="scans per minute (default 0: as fast as generation and the service allow)",
    )
    p.add_argument("--count", type=int, default=0, help="scans to send (default 0: until Ctrl-C)")
    p.add_argument(
        "--seed", type=int, default=None, help="generator seed (default random; printed)"
    )
    p.add_argument("--pitch", type=float, default=5.0, help="pixel pitch in mm (default 5)")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for one answer (default 120)"
    )
    p.add_argument(
        "--max-attempts", type=int, default=30, help="tries per scan before it counts as failed"
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=None,
        help="seconds to wait for /readyz at start (default: as long as it takes)",
    )
    p.add_argument(
        "--format",
        choices=("tiff", "png"),
        default="tiff",
        help="how each 16-bit channel is sent (default tiff, uncompressed: the fastest for the "
        "service to read; png: ~20%% fewer bytes for a slow link)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar, lines only")
    p.set_defaults(handler=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    import os

    from station.client import KEY_ENV, RetryPolicy, StationRejected, simulate
    from training.synth.scene import SynthConfig

    key = args.key or os.environ.get(KEY_ENV, "")
    if not key:
        return fail("simulate", f"no station key (--key or ${KEY_ENV})")
    if args.count < 0 or args.rate < 0 or args.max_attempts < 1 or args.pitch <= 0:
        return fail("simulate", "--count, --rate >= 0, --max-attempts >= 1, --pitch > 0")
    try:
        summary = simulate(
            args.url,
            key,
            count=args.count,
            rate_per_min=args.rate,
            seed=args.seed,
            config=SynthConfig(pitch_mm=args.pitch),
            policy=RetryPolicy(max_attempts=args.max_attempts),
            timeout_s=args.timeout,
            ready_timeout_s=args.ready_timeout,
            progress=not args.no_progress,
            image_format=args.format,
        )
    except StationRejected as exc:
        return fail("simulate", f"the service refuses this station: {exc}")
    except TimeoutError as exc:
        return fail("simulate", str(exc), status=1)
    print(summary)
    return 1 if summary.failed else 0


def add_demo(sub: Subcommands) -> None:
    p = sub.add_parser(
        "demo",
        help="run the service on data/demo with a simulated scanner station (`make demo`)",
        description="Starts `cargoscan serve` on localhost with the default model and a data "
        "directory of its own, adds a demo station, and runs `cargoscan simulate` against it "
        "until Ctrl-C, which stops everything. Without a model the service starts but is not "
        "ready; the demo rolls the default model out as soon as it appears.",
    )
    p.add_argument("--data-dir", type=Path, default=Path("data/demo"), help="default data/demo")
    p.add_argument("--port", type=int, default=8000, help="default 8000 (next free one if taken)")
    p.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="MODEL.onnx (default: the shipped default model)",
    )
    p.add_argument(
        "--rate", type=float, default=12.0, help="scans per minute (default 12; 0: flat out)"
    )
    p.add_argument("--count", type=int, default=0, help="scans to send (default 0: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=None, help="generator seed (default random)")
    p.add_argument(
        "--pitch", type=float, default=5.0, help="pixel pitch in mm (default 5; 10 for small scans)"
    )
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from station.demo import run_demo

    return run_demo(
        data_dir=args.data_dir,
        port=args.port,
        model=args.model,
        rate_per_min=args.rate,
        count=args.count,
        seed=args.seed,
        pitch_mm=args.pitch,
    )
