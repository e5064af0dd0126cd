"""Scans offline, for officers and integrators: `render` (an officer view) and `analyze`
(the model's result and an annotated picture), with no service running. Torch-free."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cargoscan.cli.common import Subcommands, add_output_folder, fail, writable_file
from inference import DEFAULT_MODEL

# The officer views (inference.render.VIEWS, which a test keeps equal): here as plain
# names so that `cargoscan --help` imports no NumPy or OpenCV.
VIEW_NAMES = ("grey", "inverse", "material", "window", "edge")


def add_render(sub: Subcommands) -> None:
    p = sub.add_parser(
        "render",
        help="render a scan as one of the officer views (grey, inverse, material, window, edge)",
    )
    p.add_argument("scan", type=Path, help="high-energy (or only) channel image: PNG, TIFF or JPEG")
    p.add_argument("--low", type=Path, default=None, help="low-energy channel image, if any")
    p.add_argument(
        "--view",
        default="grey",
        choices=VIEW_NAMES,
        help="which view to draw (default: grey)",
    )
    p.add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("LEVEL", "WIDTH"),
        default=None,
        help="contrast window on attenuation -ln(T) for --view window (default: automatic)",
    )
    p.add_argument("--out", type=writable_file, required=True, help="output picture (PNG or JPEG)")
    p.set_defaults(handler=_run_render)


def _run_render(args: argparse.Namespace) -> int:
    from inference.render import render_to_file
    from inference.scan import ScanError, load_scan

    try:
        scan = load_scan(args.scan, args.low)
    except ScanError as exc:
        return fail("render", str(exc))
    window = tuple(args.window) if args.window else None
    render_to_file(scan, args.out, view=args.view, window=window)
    print(f"wrote {args.out}")
    return 0


def add_analyze(sub: Subcommands) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyse scans offline: a result JSON and an annotated picture per scan",
        description="A scan named NAME_high.* is paired with NAME_low.* beside it (dual energy).",
    )
    p.add_argument("scans", type=Path, nargs="+", metavar="SCAN", help="high (or only) channel")
    add_output_folder(p)
    p.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="ONNX model with its .json card (default: the shipped default model)",
    )
    p.add_argument(
        "--operating-point",
        type=Path,
        default=None,
        help="a site's operating point (cargoscan commission): its thresholds replace the card's",
    )
    p.add_argument("--view", choices=VIEW_NAMES, default="material", help="picture view")
    p.add_argument("--single-energy", action="store_true", help="ignore any low channel")
    p.add_argument(
        "--cargo",
        action="store_true",
        help="experimental: also containers, contents and the manifest check (NAME.json "
        "beside the scan gives the manifest); not yet reliable on real 8-bit scans",
    )
    p.set_defaults(handler=_run_analyze)


def _low_partner(high: Path) -> Path | None:
    """NAME_high.EXT -> NAME_low.EXT when that file exists."""
    if not high.stem.endswith("_high"):
        return None
    low = high.with_name(high.stem[: -len("_high")] + "_low" + high.suffix)
    return low if low.is_file() else None


def _run_analyze(args: argparse.Namespace) -> int:
    import time

    import cv2

    from inference.annotate import annotate
    from inference.engine import Engine, ModelError
    from inference.result import anomaly_png, build_result, scan_cells
    from inference.scan import ScanError, ScanMetadata, load_scan

    try:
        engine = Engine.load(args.model, operating_point=args.operating_point)
    except ModelError as exc:
        return fail("analyze", str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in args.scans:
        low = None if args.single_energy else _low_partner(path)
        name = path.stem[: -len("_high")] if path.stem.endswith("_high") else path.stem
        try:
            scan = load_scan(path, low)
            # The station's metadata (pitch, manifest) from NAME.json beside the scan.
            meta_file = path.with_name(f"{name}.json")
            if meta_file.is_file():
                scan.metadata = ScanMetadata.from_dict(meta_file.read_bytes())
        except (ScanError, OSError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        start = time.perf_counter()
        analysis = engine.analyze(scan, cargo=args.cargo)
        took_ms = (time.perf_counter() - start) * 1000.0
        amap = args.out / f"{name}_anomaly.png"
        amap.write_bytes(anomaly_png(scan_cells(analysis, engine.stride)))
        result = build_result(engine, analysis, name, took_ms, anomaly_map_url=amap.name)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        picture = annotate(scan, result, args.view)
        cv2.imwrite(str(args.out / f"{name}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        print(
            f"{name}: {result['verdict']} risk {result['risk']:.2f} "
            f"{len(result['findings'])} finding(s) {took_ms:.0f} ms"
        )
    print(f"wrote {len(args.scans) - failed} result(s) to {args.out}")
    return 1 if failed else 0
