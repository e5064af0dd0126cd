"""The `cargoscan` command line.

Every subcommand's heavy imports happen inside its handler, so `cargoscan --help`
stays instant and the torch-free runtime never pulls in training code unless a
training subcommand is actually run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The officer views (inference.render.VIEWS, which a test keeps equal): here as plain
# names so that `cargoscan --help` imports no NumPy or OpenCV.
VIEW_NAMES = ("grey", "inverse", "material", "window", "edge")


def _add_render(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--out", type=Path, required=True, help="output picture (PNG or JPEG)")
    p.set_defaults(handler=_run_render)


def _run_render(args: argparse.Namespace) -> int:
    from inference.render import render_to_file
    from inference.scan import ScanError, load_scan

    try:
        scan = load_scan(args.scan, args.low)
    except ScanError as exc:
        print(f"cargoscan render: {exc}", file=sys.stderr)
        return 2
    window = tuple(args.window) if args.window else None
    render_to_file(scan, args.out, view=args.view, window=window)
    print(f"wrote {args.out}")
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="generate a synthetic labelled dual-energy scan data set (COCO)"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--count", type=int, required=True, help="number of scans")
    p.add_argument("--seed", type=int, default=0, help="seed; same arguments give identical bytes")
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: CPU count)"
    )
    p.add_argument(
        "--clean-fraction",
        type=float,
        default=1 / 3,
        help="share of scans with no threat (default: a third)",
    )
    p.add_argument("--pitch", type=float, default=5.0, help="pixel pitch in mm (default 5)")
    p.add_argument(
        "--energies",
        type=float,
        nargs=2,
        metavar=("HIGH_MV", "LOW_MV"),
        default=(6.0, 4.0),
        help="linac end-point energies in MV (default 6 4)",
    )
    p.add_argument(
        "--contact-sheet",
        type=Path,
        default=None,
        help="also write a contact sheet of the first scans (material view, labelled boxes)",
    )
    p.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from training.synth.dataset import SynthConfig, write_dataset

    if args.count < 1:
        print("cargoscan synth: --count must be at least 1", file=sys.stderr)
        return 2
    if not 0.0 <= args.clean_fraction <= 1.0:
        print("cargoscan synth: --clean-fraction must be between 0 and 1", file=sys.stderr)
        return 2
    config = SynthConfig(
        pitch_mm=args.pitch,
        high_mv=args.energies[0],
        low_mv=args.energies[1],
        clean_fraction=args.clean_fraction,
    )
    summary = write_dataset(
        args.out, count=args.count, seed=args.seed, workers=args.workers, config=config
    )
    print(summary)
    if args.contact_sheet is not None:
        from training.synth.contact_sheet import write_contact_sheet

        write_contact_sheet(args.out, args.contact_sheet)
        print(f"wrote {args.contact_sheet}")
    return 0


def _add_tip(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tip",
        help="project synthetic threats into real scans (threat image projection), as COCO",
        description="Projects the synthetic generator's threats physically (added attenuation) "
        "into the scans under --backgrounds and writes the data set in the layout of synth.",
    )
    p.add_argument("--backgrounds", type=Path, required=True, help="folder of real scans")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--count", type=int, required=True, help="number of output scans")
    p.add_argument("--seed", type=int, default=0, help="seed; same arguments give identical bytes")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPUs)")
    p.add_argument(
        "--clean-fraction", type=float, default=1 / 3, help="share left clean (default: a third)"
    )
    p.add_argument(
        "--tone",
        type=float,
        nargs=2,
        metavar=("A_MAX", "POWER"),
        default=None,
        help="8-bit export curve grey = air (1 - a/A_MAX)^POWER (default 3.3 1)",
    )
    p.add_argument("--sheet", type=Path, default=None, help="also write a contact sheet PNG")
    p.add_argument(
        "--check",
        action="store_true",
        help="also check that whole-image statistics cannot tell clean from projected scans",
    )
    p.set_defaults(handler=_run_tip)


def _run_tip(args: argparse.Namespace) -> int:
    from training.tip import TipConfig, TipError, check_dataset, write_tip_dataset, write_tip_sheet

    config = TipConfig(clean_fraction=args.clean_fraction, tone=args.tone)
    try:
        summary = write_tip_dataset(
            args.backgrounds,
            args.out,
            count=args.count,
            seed=args.seed,
            workers=args.workers,
            config=config,
        )
    except TipError as exc:
        print(f"cargoscan tip: {exc}", file=sys.stderr)
        return 1
    print(summary)
    try:
        if args.sheet is not None:
            write_tip_sheet(args.out, args.backgrounds, args.sheet)
            print(f"wrote {args.sheet}")
        if args.check:
            print(check_dataset(args.out))
    except ValueError as exc:  # no threats to show, too few scans to check
        print(f"cargoscan tip: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a detector on COCO/YOLO folders (also under torchrun -m training)"
    )
    p.add_argument("--data", type=Path, action="append", required=True, help="data set (repeat)")
    p.add_argument("--weight", type=float, action="append", default=None, help="per --data")
    p.add_argument("--val", type=Path, default=None, help="held-out data set for validation")
    p.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps", type=int, default=200, help="optimiser steps per epoch")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=512, help="training crop size (px)")
    p.add_argument(
        "--crop-weight",
        action="append",
        default=[],
        metavar="CATEGORY=W",
        help="weight of a category's boxes as crop targets: W times the crops around "
        "each of them (repeat; default 1 each)",
    )
    p.add_argument(
        "--crop-weight-place",
        action="append",
        default=[],
        metavar="PLACE=W",
        help="weight of boxes hidden in PLACE (COCO 'concealment', e.g. tyre) as crop "
        "targets, times the category's (repeat; default 1 each)",
    )
    p.add_argument(
        "--eight-bit-share",
        type=float,
        default=0.15,
        metavar="P",
        help="share of training samples shown as a single-energy scanner's 8-bit JPEG "
        "export (default 0.15; another 0.15 are 16-bit single-energy scans)",
    )
    p.add_argument(
        "--hard-negative-share",
        type=float,
        default=0.0,
        metavar="P",
        help="share of crops cut around hard negatives: where the model itself fires on "
        "no threat, mined on whole training scans before each epoch (default 0: none)",
    )
    p.add_argument(
        "--hard-negative-scans",
        type=int,
        default=300,
        metavar="N",
        help="training scans mined for hard negatives before each epoch, in turn (default 300)",
    )
    p.add_argument(
        "--hard-negative-min-score",
        type=float,
        default=0.1,
        metavar="S",
        help="weakest false finding that counts as a hard negative (default 0.1)",
    )
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this model: a checkpoint (.pt) or an exported .onnx beside its card",
    )
    p.add_argument(
        "--blocks",
        default=None,
        metavar="N,N,N,N,N",
        help="residual blocks per stage, strides 2 to 32 (default 0,1,2,3,3); with --init, "
        "at least the model's own: the extra blocks start as identities, so the run "
        "begins from that model with more depth to learn with",
    )
    p.set_defaults(handler=_run_train)


def _name_weights(items: list[str], flag: str, what: str) -> dict[str, float] | None:
    """NAME=W pairs of a repeatable flag; None (after saying why) when one is malformed."""
    weights: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not name or not 0 <= weight < math.inf:
            print(
                f"cargoscan train: {flag} wants {what}=W with W >= 0, got {item!r}",
                file=sys.stderr,
            )
            return None
        weights[name] = weight
    return weights


def _run_train(args: argparse.Namespace) -> int:
    from training.train import TrainConfig, train

    if args.epochs < 1 or args.steps < 1 or args.batch < 1 or args.crop % 32:
        print(
            "cargoscan train: epochs, steps, batch >= 1 and crop a multiple of 32", file=sys.stderr
        )
        return 2
    crop_weights = _name_weights(args.crop_weight, "--crop-weight", "CATEGORY")
    place_weights = _name_weights(args.crop_weight_place, "--crop-weight-place", "PLACE")
    if crop_weights is None or place_weights is None:
        return 2
    try:
        blocks = [int(n) for n in args.blocks.split(",")] if args.blocks else None
    except ValueError:
        print(
            f"cargoscan train: --blocks wants counts like 0,1,2,3,3, got {args.blocks!r}",
            file=sys.stderr,
        )
        return 2
    cfg = TrainConfig(
        data=[str(d) for d in args.data],
        weights=args.weight or [],
        val=str(args.val) if args.val else None,
        out=str(args.out),
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        batch_size=args.batch,
        crop=args.crop,
        crop_weights=crop_weights,
        place_weights=place_weights,
        eight_bit_share=args.eight_bit_share,
        hard_negative_share=args.hard_negative_share,
        hard_negative_scans=args.hard_negative_scans,
        hard_negative_min_score=args.hard_negative_min_score,
        lr=args.lr,
        seed=args.seed,
        init=str(args.init) if args.init else None,
        blocks=blocks,
    )
    try:
        out = train(cfg, resume=args.resume)
    except ValueError as exc:
        print(f"cargoscan train: {exc}", file=sys.stderr)
        return 2
    print(f"run written to {out}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX with its model card")
    p.add_argument("--checkpoint", type=Path, required=True, help="e.g. runs/NAME/best.pt")
    p.add_argument("--out", type=Path, required=True, help="e.g. models/NAME.onnx")
    p.add_argument(
        "--val",
        type=Path,
        action="append",
        default=None,
        help="validation data for the thresholds (repeat to add e.g. a clean-only set)",
    )
    p.add_argument("--far", type=float, default=0.01, help="false-alarm rate for the thresholds")
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from training.export import ExportError, export

    if not args.checkpoint.is_file():
        print(f"cargoscan export: no checkpoint at {args.checkpoint}", file=sys.stderr)
        return 2
    try:
        card = export(args.checkpoint, args.out, args.val, args.far)
    except (ExportError, ValueError) as exc:
        print(f"cargoscan export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} and {card}")
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibrate an exported model's thresholds again (16-bit and 8-bit) on "
        "validation data; the ONNX file is not touched",
    )
    p.add_argument("--model", type=Path, required=True, help="MODEL.onnx (its card beside it)")
    p.add_argument(
        "--val",
        type=Path,
        action="append",
        required=True,
        help="validation data (COCO or YOLO); repeat to add e.g. a clean-only set",
    )
    p.add_argument("--far", type=float, default=0.01, help="false-alarm rate for the thresholds")
    p.set_defaults(handler=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from inference.engine import ModelError
    from inference.scan import ScanError
    from training.export import recalibrate

    if not 0 < args.far < 1:
        print(f"cargoscan calibrate: --far must lie in (0, 1), got {args.far}", file=sys.stderr)
        return 2
    try:
        card = recalibrate(args.model, args.val, args.far)
    except (ModelError, ValueError, ScanError) as exc:
        print(f"cargoscan calibrate: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {card}")
    return 0


def _add_commission(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "commission",
        help="a site's operating point from its cleared scans: alarm and review thresholds "
        "for the rates it wants, written beside the model (model and card untouched)",
        description="Runs MODEL over scans a site's officers cleared (folders, searched "
        "recursively; NAME_high/NAME_low pairs are one dual-energy scan) and writes an "
        "operating-point file: per-category alarm thresholds (never below the card's unless "
        "--below-card) for "
        "--alarm-rate, review thresholds and the anomaly level for --review-rate, per bit "
        "depth. Serve it with `cargoscan serve --operating-point FILE` or roll it out with "
        "`cargoscan model activate MODEL --operating-point FILE`. With --projected (a data set "
        "from `cargoscan tip`), also says what the site's thresholds cost in detection.",
    )
    p.add_argument("--model", type=Path, required=True, help="MODEL.onnx (its card beside it)")
    p.add_argument(
        "--cleared",
        type=Path,
        action="append",
        required=True,
        help="a folder of the site's cleared scans; repeat to add more",
    )
    p.add_argument("--site", required=True, help="the site's name (shown in every result)")
    p.add_argument(
        "--out", type=Path, default=None, help="default MODEL.site-SITE.json beside the model"
    )
    p.add_argument("--alarm-rate", type=float, default=0.02, help="share of cleared scans "
                   "allowed to alarm (default 0.02)")  # fmt: skip
    p.add_argument("--review-rate", type=float, default=0.10, help="share allowed to alarm "
                   "or go to review (default 0.10)")  # fmt: skip
    p.add_argument(
        "--projected",
        type=Path,
        action="append",
        default=None,
        help="labelled scans with projected threats (cargoscan tip): detection at the card's "
        "and at the site's thresholds",
    )
    p.add_argument(
        "--below-card",
        action="store_true",
        help="let alarm thresholds go below the card's where the cleared scans allow (needs "
        "many cleared scans: a few hundred give thresholds that do not hold on new traffic)",
    )
    p.add_argument(
        "--into-card",
        action="store_true",
        help="also write the operating point into the model's own card (for a shipped "
        "default that must carry it; the ONNX file and its sha256 stay)",
    )
    p.set_defaults(handler=_run_commission)


def _run_commission(args: argparse.Namespace) -> int:
    import re

    from inference.engine import ModelError
    from inference.scan import ScanError
    from training.commission import commission, write_into_card

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", args.site).strip("-") or "site"
    out = args.out or args.model.with_name(f"{args.model.stem}.site-{safe}.json")
    try:
        op = commission(
            args.model, args.cleared, out, args.site,
            alarm_rate=args.alarm_rate, review_rate=args.review_rate,
            below_card=args.below_card,
        )  # fmt: skip
    except (ModelError, ValueError, ScanError, OSError) as exc:
        print(f"cargoscan commission: {exc}", file=sys.stderr)
        return 1
    for depth, rep in op["report"].items():
        n = rep["scans"]
        print(
            f"{depth}: {n} cleared scans; at the card's thresholds {rep['card']['alarmed']} "
            f"alarm, {rep['card']['alarm_or_review']} alarm or review; at the site's "
            f"{rep['site']['alarmed']} alarm, {rep['site']['alarm_or_review']} alarm or review"
        )
    if args.projected:
        from training.evaluate import evaluate

        for label, op_path in (("card", None), ("site", out)):
            m = evaluate(
                args.model, args.projected, out.with_suffix("") / label,
                operating_point=op_path, pictures=False,
            )  # fmt: skip
            card = m["at_card_thresholds"] or {}
            scan = card.get("scan", {})
            per = {c: v["detection_rate"] for c, v in card.get("categories", {}).items()}
            print(
                f"projected threats at the {label}'s thresholds: {scan.get('detection_rate')} "
                f"of threat scans alarm, {scan.get('false_alarm_rate')} of clean; per "
                f"category {per}"
            )
    if args.into_card:
        print(f"wrote the operating point into {write_into_card(args.model, op, args.cleared)}")
    print(f"wrote {out}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="run an ONNX model on labelled scans (metrics.json + pictures), "
        "or count its alarms on scans known to be clean",
    )
    p.add_argument("--model", type=Path, required=True, help="MODEL.onnx (its card beside it)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--data",
        type=Path,
        action="append",
        help="labelled scans: a COCO folder (annotations.json) or YOLO folder; repeat to "
        "read several as one (e.g. a test set and a larger clean-only set)",
    )
    what.add_argument(
        "--clean-scans",
        type=Path,
        help="a folder of scans with no known contraband (e.g. real scans): "
        "the share that alarms at the card's thresholds",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--single-energy",
        action="store_true",
        help="drop the low channel: how the model does on a single-energy scanner",
    )
    p.add_argument(
        "--eight-bit",
        action="store_true",
        help="send each scan as a single-energy scanner's 8-bit JPEG export would "
        "(simulated tone curve and JPEG; the card's 8-bit thresholds apply)",
    )
    p.add_argument(
        "--operating-point",
        type=Path,
        default=None,
        help="a site's operating point (cargoscan commission) in place of the card's thresholds",
    )
    p.add_argument("--no-pictures", action="store_true", help="metrics only, no PNGs")
    p.add_argument(
        "--record-in-card",
        action="store_true",
        help="also write the headline figures into the model card (metrics.test, "
        "test_single_energy or test_8bit; metrics.clean_scans with --clean-scans)",
    )
    p.add_argument(
        "--record-as",
        default=None,
        metavar="KEY",
        help="with --record-in-card: the key under metrics (e.g. test_projected_real)",
    )
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from inference.engine import ModelError
    from inference.scan import ScanError
    from training.evaluate import (
        clean_scan_alarms,
        evaluate,
        record_clean_in_card,
        record_in_card,
    )

    pictures = not args.no_pictures
    try:
        if args.clean_scans is not None:
            result = clean_scan_alarms(
                args.model, args.clean_scans, args.out,
                operating_point=args.operating_point, pictures=pictures,
            )  # fmt: skip
            n = result["scans"]
            print(
                f"{result['alarmed']} of {n} clean scans alarm "
                f"({100 * result['alarm_share']:.1f} %), "
                f"{result['alarmed'] + result['reviewed']} alarm or go to review "
                f"({100 * result['alarm_or_review_share']:.1f} %); "
                f"{result['findings_per_scan']:.2f} findings a scan "
                f"({result['anomaly_findings_per_scan']:.2f} anomaly); "
                f"alarms per category {result['per_category']}"
            )
            print(f"wrote {args.out / 'clean_alarms.json'}")
            if args.record_in_card:
                where = record_clean_in_card(
                    args.model, result, args.clean_scans, args.record_as or "clean_scans"
                )
                print(f"recorded in {where}")
            return 0
        metrics = evaluate(
            args.model,
            args.data,
            args.out,
            single_energy=args.single_energy,
            eight_bit=args.eight_bit,
            operating_point=args.operating_point,
            pictures=pictures,
        )
        if args.record_in_card:
            where = record_in_card(args.model, metrics, args.data, args.record_as)
            print(f"recorded in {where}")
    except (ModelError, ValueError, ScanError) as exc:
        print(f"cargoscan evaluate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: metrics[k] for k in ("map50", "map", "scan", "verdicts")}, indent=1))
    print(f"wrote {args.out / 'metrics.json'}")
    return 0


def _service_settings(args: argparse.Namespace, **extra: object):  # -> Settings
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


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyse scans offline: a result JSON and an annotated picture per scan",
        description="A scan named NAME_high.* is paired with NAME_low.* beside it (dual energy).",
    )
    p.add_argument("scans", type=Path, nargs="+", metavar="SCAN", help="high (or only) channel")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--model",
        type=Path,
        default=Path("models/cargoscan-default.onnx"),
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
    from inference.scan import ScanError, load_scan

    try:
        engine = Engine.load(args.model, operating_point=args.operating_point)
    except ModelError as exc:
        print(f"cargoscan analyze: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in args.scans:
        low = None if args.single_energy else _low_partner(path)
        try:
            scan = load_scan(path, low)
        except (ScanError, OSError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        name = path.stem[: -len("_high")] if path.stem.endswith("_high") else path.stem
        start = time.perf_counter()
        analysis = engine.analyze(scan)
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


def _add_db_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, default=None, help="default $CARGOSCAN_DATA_DIR or data/service"
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default $CARGOSCAN_DATABASE_URL or SQLite in the data dir)",
    )


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the scanner API (HTTP); every setting also as CARGOSCAN_* variable",
        description="Serve the scanner API, the Open Inference Protocol, /healthz, /readyz "
        "and /metrics. Settings come from CARGOSCAN_* environment variables (DATA_DIR, "
        "DATABASE_URL, MODEL_PATH, ADMIN_KEY, WORKERS, QUEUE_SIZE, MAX_BODY_BYTES, "
        "MAX_PIXELS, DRAIN_TIMEOUT_S, ...); the flags override them.",
    )
    p.add_argument("--host", default=None, help="default $CARGOSCAN_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default $CARGOSCAN_PORT or 8000")
    p.add_argument("--model", type=Path, default=None, help="MODEL.onnx to serve at start")
    p.add_argument(
        "--operating-point",
        type=Path,
        default=None,
        help="a site's operating point for that model (cargoscan commission)",
    )
    p.add_argument("--workers", type=int, default=None, help="inference threads (default 1)")
    _add_db_flags(p)
    p.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from inference.service.server import serve

    settings = _service_settings(
        args,
        host=args.host,
        port=args.port,
        model_path=args.model,
        operating_point=args.operating_point,
        workers=args.workers,
    )
    serve(settings)
    return 0


def _add_station(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("station", help="scanner stations and their API keys")
    ssub = p.add_subparsers(dest="station_command", required=True, metavar="ACTION")
    add = ssub.add_parser("add", help="add a station and print its new API key (shown once)")
    add.add_argument("name", help="station name, e.g. port-gate-3")
    _add_db_flags(add)
    add.set_defaults(handler=_run_station_add)
    ls = ssub.add_parser("list", help="list the stations")
    _add_db_flags(ls)
    ls.set_defaults(handler=_run_station_list)


@contextlib.contextmanager
def _records(settings: object) -> Iterator[Any]:
    """The service's database for a CLI command (migrated), closed again afterwards."""
    from inference.service.app import open_records

    records = open_records(settings)  # type: ignore[arg-type]
    try:
        yield records
    finally:
        records.engine.dispose()


def _run_station_add(args: argparse.Namespace) -> int:
    from inference.service.auth import hash_key, new_key
    from inference.service.records import DuplicateName

    name = args.name.strip()
    if not name or len(name) > 100:
        print("cargoscan station add: NAME must be 1-100 characters", file=sys.stderr)
        return 2
    key = new_key()
    with _records(_service_settings(args)) as records:
        try:
            records.add_station(name, hash_key(key))
        except DuplicateName as exc:
            print(f"cargoscan station add: {exc}", file=sys.stderr)
            return 2
    print(f"station {name!r} added; its API key (shown once, store it now):", file=sys.stderr)
    print(key)
    return 0


def _run_station_list(args: argparse.Namespace) -> int:
    with _records(_service_settings(args)) as records:
        for st in records.stations():
            print(f"{st.name}\t{st.created_at.isoformat()}")
    return 0


def _add_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="the serving model of a running service")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    act = msub.add_parser(
        "activate",
        help="roll out MODEL.onnx on a running server: load, warm up, check, swap",
        description="Asks a running server (admin API, key from --admin-key or "
        "$CARGOSCAN_ADMIN_KEY) to load PATH (a path on the server's machine), warm it up, "
        "check it on recent scans and swap it in. If a step fails the old model keeps serving.",
    )
    act.add_argument("path", type=Path, help="MODEL.onnx with its .json card beside it")
    act.add_argument(
        "--operating-point",
        type=Path,
        default=None,
        help="a site's operating point for that model (a path on the server's machine)",
    )
    act.add_argument("--url", default=None, help="server URL (default http://HOST:PORT)")
    act.add_argument("--admin-key", default=None, help="default $CARGOSCAN_ADMIN_KEY")
    act.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    act.set_defaults(handler=_run_model_activate)


def _run_model_activate(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    settings = _service_settings(args)
    key = args.admin_key or (settings.admin_key.get_secret_value() if settings.admin_key else "")
    if not key:
        print(
            "cargoscan model activate: no admin key (--admin-key or CARGOSCAN_ADMIN_KEY)",
            file=sys.stderr,
        )
        return 2
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    req = urllib.request.Request(
        f"{url}/api/v1/admin/model",
        data=json.dumps(
            {
                "path": str(args.path.expanduser().resolve()),
                "operating_point": str(args.operating_point.expanduser().resolve())
                if args.operating_point
                else None,
            }
        ).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except (ValueError, AttributeError):
            detail = exc.reason
        print(f"cargoscan model activate: {exc.code}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"cargoscan model activate: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    previous = body["previous"]["version"] if body.get("previous") else "none"
    print(f"serving {body['model']['version']} (was {previous})")
    print(json.dumps(body, indent=1))
    return 0


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="a scanner station: generate synthetic scans and post them to a running service",
        description="Generates dual-energy scans with the synthetic generator and posts them "
        "(16-bit PNGs + metadata with a station_scan_id) like a portal would: a 429/503 is "
        "retried after Retry-After, a timeout or lost connection with exponential back-off, "
        "always under the same station_scan_id (so a retry is never stored twice). Prints "
        "the service's verdict for each scan next to what the scan really holds.",
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar, lines only")
    p.set_defaults(handler=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    import os

    from training.simulate import KEY_ENV, RetryPolicy, StationRejected, simulate
    from training.synth.scene import SynthConfig

    key = args.key or os.environ.get(KEY_ENV, "")
    if not key:
        print(f"cargoscan simulate: no station key (--key or ${KEY_ENV})", file=sys.stderr)
        return 2
    if args.count < 0 or args.rate < 0 or args.max_attempts < 1 or args.pitch <= 0:
        print(
            "cargoscan simulate: --count, --rate >= 0, --max-attempts >= 1, --pitch > 0",
            file=sys.stderr,
        )
        return 2
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
        )
    except StationRejected as exc:
        print(f"cargoscan simulate: the service refuses this station: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"cargoscan simulate: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 1 if summary.failed else 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
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
        "--model", type=Path, default=Path("models/cargoscan-default.onnx"), help="MODEL.onnx"
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
    from training.demo import run_demo

    return run_demo(
        data_dir=args.data_dir,
        port=args.port,
        model=args.model,
        rate_per_min=args.rate,
        count=args.count,
        seed=args.seed,
        pitch_mm=args.pitch,
    )


def _add_user(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="officers' accounts (officer, supervisor, admin)")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = usub.add_parser(
        "add",
        help="add an account; the password is read from standard input or asked for",
        description="Roles: officers review scans; supervisors also see every review and "
        "re-open scans; admins also manage stations, users and models.",
    )
    add.add_argument("name", help="user name, e.g. j.smith")
    add.add_argument("--role", required=True, choices=("officer", "supervisor", "admin"))
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (e.g. from a secret store), not a prompt",
    )
    _add_db_flags(add)
    add.set_defaults(handler=_run_user_add)
    ls = usub.add_parser("list", help="list the accounts")
    _add_db_flags(ls)
    ls.set_defaults(handler=_run_user_list)


def _read_password(from_stdin: bool) -> str | None:
    """The new password: one line of standard input, or typed twice at a prompt."""
    import getpass

    if from_stdin:
        return sys.stdin.read().rstrip("\r\n")
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        print("cargoscan user add: the passwords differ", file=sys.stderr)
        return None
    return first


def _run_user_add(args: argparse.Namespace) -> int:
    from inference.service.auth import check_password, check_user_name, hash_password
    from inference.service.records import DuplicateName

    problem = check_user_name(args.name)
    if problem:
        print(f"cargoscan user add: NAME: {problem}", file=sys.stderr)
        return 2
    password = _read_password(args.password_stdin)
    if password is None:
        print("cargoscan user add: no password (use --password-stdin)", file=sys.stderr)
        return 2
    problem = check_password(password)
    if problem:
        print(f"cargoscan user add: the password must have {problem}", file=sys.stderr)
        return 2
    with _records(_service_settings(args)) as records:
        try:
            records.add_user(args.name, args.role, hash_password(password))
        except DuplicateName as exc:
            print(f"cargoscan user add: {exc}", file=sys.stderr)
            return 2
    print(f"user {args.name!r} added as {args.role}")
    return 0


def _run_user_list(args: argparse.Namespace) -> int:
    with _records(_service_settings(args)) as records:
        for u in records.users():
            state = "active" if u.active else "inactive"
            print(f"{u.name}\t{u.role}\t{state}\t{u.created_at.isoformat()}")
    return 0


def _add_reviews(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reviews", help="officers' reviews of scans")
    rsub = p.add_subparsers(dest="reviews_command", required=True, metavar="ACTION")
    exp = rsub.add_parser(
        "export",
        help="write the reviewed scans as a training data set (the COCO layout of synth)",
        description="Each reviewed scan's latest review is its ground truth: the findings "
        "officers accepted or re-labelled and the boxes they drew; scans released with none "
        "are clean. The original 16-bit images are copied unchanged, so "
        "`cargoscan train --data OUT --data data/synth` fine-tunes on them as they are.",
    )
    exp.add_argument("--out", type=Path, required=True, help="output folder")
    exp.add_argument(
        "--since",
        default=None,
        metavar="DATE",
        help="only scans reviewed at or after DATE (ISO 8601; UTC unless it says)",
    )
    exp.add_argument(
        "--model",
        type=Path,
        default=None,
        help="MODEL.onnx whose card gives the categories (default: the model the service "
        "served last, else its configured model)",
    )
    _add_db_flags(exp)
    exp.set_defaults(handler=_run_reviews_export)


def _run_reviews_export(args: argparse.Namespace) -> int:
    from inference.service.export import card_categories, export_reviews, parse_since
    from inference.service.storage import BlobStore

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"cargoscan reviews export: --since: {exc}", file=sys.stderr)
        return 2
    settings = _service_settings(args)
    with _records(settings) as records:
        model = args.model
        if model is None:
            last = records.latest_activation()
            model = Path(last.path) if last is not None else settings.model_path
        if model is None:
            print("cargoscan reviews export: no model card: pass --model", file=sys.stderr)
            return 2
        try:
            categories = card_categories(model)
        except ValueError as exc:
            print(f"cargoscan reviews export: {exc}", file=sys.stderr)
            return 2
        blobs = BlobStore(settings.data_dir / "blobs")
        summary = export_reviews(records, blobs, args.out, categories, since)
    print(summary)
    return 0


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="the service's hash-chained audit log")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    ver = asub.add_parser(
        "verify",
        help="re-hash the whole audit log and check every link; names the first broken entry",
        description="Exit 0 when every entry hashes to its stored hash and links to the one "
        "before it; 1 naming the first entry that does not (changed, removed or inserted). "
        "Prints the head's hash: note it somewhere else to detect a cut-off tail later.",
    )
    _add_db_flags(ver)
    ver.set_defaults(handler=_run_audit_verify)


def _run_audit_verify(args: argparse.Namespace) -> int:
    from inference.service.audit import verify_chain

    with _records(_service_settings(args)) as records:
        report = verify_chain(records.engine)
    if not report.ok:
        print(f"audit log BROKEN at entry #{report.broken_seq}: {report.problem}", file=sys.stderr)
        print(f"({report.entries} entries before it check out)", file=sys.stderr)
        return 1
    print(f"audit log OK: {report.entries} entries, head #{report.head_seq} {report.head_hash}")
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check an evidence package (GET /api/v1/scans/ID/evidence) offline",
        description="Checks every file's SHA-256 against the signed manifest, every "
        "signature, and that the signed result names these scan bytes and this result. No "
        "database or network needed. Exit 0 if all holds, 1 naming each thing that does not.",
    )
    p.add_argument("package", type=Path, help="the evidence ZIP")
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--key-sha256",
        default=None,
        help="the fingerprint the administration published: refuse packages by other keys",
    )
    key.add_argument(
        "--public-key", type=Path, default=None, help="the expected public key (PEM file)"
    )
    p.set_defaults(handler=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from inference.service.evidence import verify_package
    from inference.service.signing import public_key_sha256

    expected = args.key_sha256
    try:
        if args.public_key is not None:
            expected = public_key_sha256(args.public_key.read_bytes())
        data = args.package.read_bytes()
    except (OSError, ValueError) as exc:
        print(f"cargoscan verify: {exc}", file=sys.stderr)
        return 2
    report = verify_package(data, expected)
    if not report.ok:
        print(f"FAILED: {args.package}: {len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"OK: evidence for scan {report.scan_id}, signed by key sha256 {report.key_sha256}")
    for line in report.checked:
        print(f"  {line}")
    if expected is None:
        print("  (compare the key's fingerprint with the one the administration published)")
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_render,
    _add_synth,
    _add_tip,
    _add_train,
    _add_export,
    _add_calibrate,
    _add_commission,
    _add_evaluate,
    _add_analyze,
    _add_serve,
    _add_station,
    _add_user,
    _add_reviews,
    _add_model,
    _add_simulate,
    _add_demo,
    _add_audit,
    _add_verify,
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
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
