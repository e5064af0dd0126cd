"""Data and models, for ML engineers: `synth` and `tip` (data sets), `train`, `export`,
`quantize`, `calibrate`, `evaluate` and `commission` (a site's operating point). Everything from
`training` (and so torch) is imported inside the handlers, never at the top."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from cargoscan.cli.common import (
    Subcommands,
    add_false_alarm_rate,
    add_model_with_card,
    add_output_folder,
    fail,
    writable_file,
    writable_folder,
)


def add_synth(sub: Subcommands) -> None:
    p = sub.add_parser(
        "synth", help="generate a synthetic labelled dual-energy scan data set (COCO)"
    )
    add_output_folder(p)
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
        "--manifest-mix",
        choices=("default", "acv"),
        default="default",
        help="loads and manifests: default (the detector-training mix) or acv (each scan "
        "planned: two thirds of consistent vehicles empty, every discrepancy kind a tenth; "
        "to measure contents verification, docs/cargo.md)",
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
        return fail("synth", "--count must be at least 1")
    if not 0.0 <= args.clean_fraction <= 1.0:
        return fail("synth", "--clean-fraction must be between 0 and 1")
    config = SynthConfig(
        pitch_mm=args.pitch,
        high_mv=args.energies[0],
        low_mv=args.energies[1],
        clean_fraction=args.clean_fraction,
        manifest_mix=args.manifest_mix,
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


def add_tip(sub: Subcommands) -> None:
    p = sub.add_parser(
        "tip",
        help="project synthetic threats into real scans (threat image projection), as COCO",
        description="Projects the synthetic generator's threats physically (added attenuation) "
        "into the scans under --backgrounds and writes the data set in the layout of synth.",
    )
    p.add_argument("--backgrounds", type=Path, required=True, help="folder of real scans")
    # Not add_output_folder: tip checks --out itself and, like its other bad inputs, ends
    # with one line and exit status 1.
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
    p.add_argument(
        "--decoys",
        type=int,
        default=0,
        help="up to N unlabelled benign objects (tools, sacks, cartons, books) per scan, "
        "projected as threats are, so that an added object is not a threat by itself "
        "(training sets; default 0)",
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

    if args.decoys < 0:
        return fail("tip", f"--decoys must be 0 or more, got {args.decoys}", status=1)
    config = TipConfig(clean_fraction=args.clean_fraction, tone=args.tone, decoys=args.decoys)
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
        return fail("tip", str(exc), status=1)
    print(summary)
    try:
        if args.sheet is not None:
            write_tip_sheet(args.out, args.backgrounds, args.sheet)
            print(f"wrote {args.sheet}")
        if args.check:
            print(check_dataset(args.out))
    except ValueError as exc:  # no threats to show, too few scans to check
        return fail("tip", str(exc), status=1)
    return 0


def add_train(sub: Subcommands) -> None:
    p = sub.add_parser(
        "train", help="train a detector on COCO/YOLO folders (also under torchrun -m training)"
    )
    p.add_argument("--data", type=Path, action="append", required=True, help="data set (repeat)")
    p.add_argument("--weight", type=float, action="append", default=None, help="per --data")
    p.add_argument("--val", type=Path, default=None, help="held-out data set for validation")
    p.add_argument("--out", type=writable_folder, required=True, help="run folder, e.g. runs/NAME")
    p.add_argument(
        "--epochs",
        type=int,
        default=30,
        help="epochs of --steps optimiser steps; validation, hard-negative mining and "
        "last.pt after each (default 30)",
    )
    p.add_argument("--steps", type=int, default=200, help="optimiser steps per epoch")
    p.add_argument("--batch", type=int, default=8, help="crops per optimiser step (default 8)")
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
    p.add_argument(
        "--lr",
        type=float,
        default=2e-3,
        help="peak AdamW learning rate: linear warm-up over the first 5 %% of steps, then "
        "cosine to 2 %% of it (default 2e-3; fine-tuning with --init: about 1e-4 to 3e-4)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the sampling, crops and augmentation (default 0)",
    )
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
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="arithmetic of the forward pass (default fp32; bf16 autocast on a CPU with "
        "AVX-512 BF16 or a GPU; fp16 on CUDA only; auto: the GPU's best, fp32 on a CPU)",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="NHWC activations: with --precision bf16 on a CPU about 2x the float32 "
        "steps/s (bench/train_throughput.py)",
    )
    p.add_argument(
        "--qat",
        type=Path,
        default=None,
        metavar="INT8.onnx",
        help="quantisation-aware fine-tuning: the int8 file `cargoscan quantize` made from "
        "--init; its activations are fake-quantised on the same grids while training (write "
        "the result's int8 file with `quantize --activations-from` the same file)",
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
            fail("train", f"{flag} wants {what}=W with W >= 0, got {item!r}")
            return None
        weights[name] = weight
    return weights


def _run_train(args: argparse.Namespace) -> int:
    from training.train import TrainConfig, train

    if args.epochs < 1 or args.steps < 1 or args.batch < 1 or args.crop % 32:
        return fail("train", "epochs, steps, batch >= 1 and crop a multiple of 32")
    crop_weights = _name_weights(args.crop_weight, "--crop-weight", "CATEGORY")
    place_weights = _name_weights(args.crop_weight_place, "--crop-weight-place", "PLACE")
    if crop_weights is None or place_weights is None:
        return 2
    try:
        blocks = [int(n) for n in args.blocks.split(",")] if args.blocks else None
    except ValueError:
        return fail("train", f"--blocks wants counts like 0,1,2,3,3, got {args.blocks!r}")
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
        precision=args.precision,
        channels_last=args.channels_last,
        qat=str(args.qat) if args.qat else None,
    )
    try:
        out = train(cfg, resume=args.resume)
    except ValueError as exc:
        return fail("train", str(exc))
    print(f"run written to {out}")
    return 0


def add_export(sub: Subcommands) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX with its model card")
    p.add_argument("--checkpoint", type=Path, required=True, help="e.g. runs/NAME/best.pt")
    p.add_argument("--out", type=writable_file, required=True, help="e.g. models/NAME.onnx")
    p.add_argument(
        "--val",
        type=Path,
        action="append",
        default=None,
        help="validation data for the thresholds (repeat to add e.g. a clean-only set)",
    )
    add_false_alarm_rate(p)
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from training.export import ExportError, export

    if not args.checkpoint.is_file():
        return fail("export", f"no checkpoint at {args.checkpoint}")
    try:
        card = export(args.checkpoint, args.out, args.val, args.far)
    except (ExportError, ValueError) as exc:
        return fail("export", str(exc))
    print(f"wrote {args.out} and {card}")
    return 0


def add_calibrate(sub: Subcommands) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibrate an exported model's thresholds again (16-bit and 8-bit) on "
        "validation data; the ONNX file is not touched",
    )
    add_model_with_card(p)
    p.add_argument(
        "--val",
        type=Path,
        action="append",
        required=True,
        help="validation data (COCO or YOLO); repeat to add e.g. a clean-only set",
    )
    add_false_alarm_rate(p)
    p.set_defaults(handler=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from inference.engine import ModelError
    from inference.scan import ScanError
    from training.export import recalibrate

    if not 0 < args.far < 1:
        return fail("calibrate", f"--far must lie in (0, 1), got {args.far}")
    try:
        card = recalibrate(args.model, args.val, args.far)
    except (ModelError, ValueError, ScanError) as exc:
        return fail("calibrate", str(exc))
    print(f"wrote {card}")
    return 0


def add_verifier(sub: Subcommands) -> None:
    p = sub.add_parser(
        "verifier",
        help="train the second stage on a model's own candidates (threats projected into "
        "real scans, `cargoscan tip`) and name it in the model's card; then calibrate and "
        "commission the thresholds again",
    )
    add_model_with_card(p)
    p.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="a labelled COCO folder (cargoscan tip's output); repeat to add sets",
    )
    p.add_argument(
        "--eight-bit-data",
        type=Path,
        action="append",
        default=[],
        help="a labelled 16-bit set (cargoscan synth) sent as simulated 8-bit exports, as "
        "`evaluate --eight-bit` sends it: structures of other scenes as negatives; repeat",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="run folder (verifier.pt, verifier.json)"
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument(
        "--wide-view",
        action="store_true",
        help="also show the verifier each candidate's neighbourhood (8 times the box), beside "
        "the close view (2.5 times): repeated structure along a trailer is not a threat",
    )
    p.add_argument(
        "--members",
        type=int,
        default=1,
        help="networks trained from seeds --seed, --seed + 1, ... and averaged (default 1)",
    )
    p.add_argument(
        "--val-share",
        type=float,
        default=0.2,
        help="share of the backgrounds held back to choose the epoch (default 0.2); 0 trains "
        "on all of them and keeps the last epoch (--epochs as chosen on a held-back run)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_run_verifier)


def _run_verifier(args: argparse.Namespace) -> int:
    from inference.engine import ModelError
    from inference.verifier import CLOSE, WIDE
    from training.verifier import train_verifier

    if args.epochs < 1:
        return fail("verifier", f"--epochs must be at least 1, got {args.epochs}")
    if args.members < 1:
        return fail("verifier", f"--members must be at least 1, got {args.members}")
    if not 0 <= args.val_share < 1:
        return fail("verifier", f"--val-share must be in [0, 1), got {args.val_share}")
    for folder in [*args.data, *args.eight_bit_data]:
        if not (folder / "annotations.json").is_file():
            return fail("verifier", f"{folder}: no annotations.json (a cargoscan tip output)")
    try:
        record = train_verifier(
            args.model, args.data, args.out, exported=args.eight_bit_data, epochs=args.epochs,
            val_share=args.val_share, members=args.members, seed=args.seed,
            views=(CLOSE, WIDE) if args.wide_view else (CLOSE,),
        )  # fmt: skip
    except (ModelError, ValueError) as exc:
        return fail("verifier", str(exc))
    rates = record["val_scan_rate_at_1pct"]
    kept = ", ".join(map(str, record["epochs"]))
    said = f"wrote {args.model.with_suffix('.verifier.onnx')} (epochs kept: {kept})"
    if rates["detector"] is not None:
        said += (
            f"; held-back backgrounds, scan detection at 1 % false alarms: detector "
            f"{rates['detector']:.3f}, verified {rates['verified']:.3f}"
        )
    print(f"{said}. Calibrate and commission the thresholds again.")
    return 0


def add_quantize(sub: Subcommands) -> None:
    p = sub.add_parser(
        "quantize",
        help="an exported model as static INT8 (QDQ, per channel) with its card: faster on "
        "CPUs with VNNI; check it with `cargoscan evaluate` before shipping it",
    )
    add_model_with_card(p)
    p.add_argument("--out", type=writable_file, required=True, help="e.g. models/NAME-int8.onnx")
    p.add_argument(
        "--calibration",
        type=Path,
        action="append",
        required=True,
        help="a folder of scans for the activation ranges; repeat to add each kind the model "
        "will see (e.g. synthetic dual-energy and real 8-bit exports)",
    )
    p.add_argument("--count", type=int, default=32, help="calibration scans in all (default 32)")
    p.add_argument(
        "--check",
        type=Path,
        action="append",
        default=[],
        help="a folder of scans outside calibration: how far the outputs move is recorded",
    )
    p.add_argument(
        "--val",
        type=Path,
        action="append",
        default=None,
        help="calibrate the thresholds again on the int8 file (as `export --val`)",
    )
    p.add_argument(
        "--activations-from",
        type=Path,
        default=None,
        metavar="INT8.onnx",
        help="use this int8 file's activation scales and zero points (the file a "
        "`train --qat` run was fine-tuned under) instead of calibrated ones",
    )
    p.set_defaults(handler=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> int:
    from inference.engine import ModelError
    from inference.scan import ScanError
    from training.evaluate import clean_scan_paths
    from training.quantize import quantize

    if args.count < 1:
        return fail("quantize", f"--count must be at least 1, got {args.count}")
    try:
        check = [p for folder in args.check for p in clean_scan_paths(folder)][:8]
        card = quantize(
            args.model,
            args.out,
            args.calibration,
            count=args.count,
            check=check,
            val=args.val,
            activations_from=args.activations_from,
        )
    except (ModelError, ValueError, ScanError) as exc:
        return fail("quantize", str(exc))
    change = card["quantization"]["output_change"]
    print(
        f"wrote {args.out} and its card; on {change['scans']} check scans the top score "
        f"moved by at most {change['max_abs_top_score']}"
    )
    return 0


def add_commission(sub: Subcommands) -> None:
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
    add_model_with_card(p)
    p.add_argument(
        "--cleared",
        type=Path,
        action="append",
        required=True,
        help="a folder of the site's cleared scans; repeat to add more",
    )
    p.add_argument("--site", required=True, help="the site's name (shown in every result)")
    p.add_argument(
        "--out",
        type=writable_file,
        default=None,
        help="default MODEL.site-SITE.json beside the model",
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
        "--in-sample",
        action="store_true",
        help="count the rates on the cleared scans themselves; by default each is counted "
        "against thresholds set without it (leave one out), as new traffic will meet them",
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
            below_card=args.below_card, in_sample=args.in_sample,
        )  # fmt: skip
    except (ModelError, ValueError, ScanError, OSError) as exc:
        return fail("commission", str(exc), status=1)
    for depth, rep in op["report"].items():
        n, site = rep["scans"], rep["site"]
        print(
            f"{depth}: {n} cleared scans; at the card's thresholds {rep['card']['alarmed']} "
            f"alarm, {rep['card']['alarm_or_review']} alarm or review; at the site's "
            f"{site['alarmed']} alarm, {site['alarm_or_review']} alarm or review "
            f"(each left out of setting them, as a new scan: {site['left_out']['alarmed']} "
            f"and {site['left_out']['alarm_or_review']})"
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


def add_evaluate(sub: Subcommands) -> None:
    p = sub.add_parser(
        "evaluate",
        help="run an ONNX model on labelled scans (metrics.json + pictures), "
        "or count its alarms on scans known to be clean",
    )
    add_model_with_card(p)
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
    add_output_folder(p)
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
        resolution_line,
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
        return fail("evaluate", str(exc))
    print(json.dumps({k: metrics[k] for k in ("map50", "map", "scan", "verdicts")}, indent=1))
    if (line := resolution_line(metrics)) is not None:
        print(line)
    if metrics.get("cargo"):
        from training.cargo_metrics import cargo_lines

        print("\n".join(cargo_lines(metrics["cargo"])))
    print(f"wrote {args.out / 'metrics.json'}")
    return 0
