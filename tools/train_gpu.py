"""`make train-gpu`: a short GPU slot used end to end, from nothing to a commissioned and
evaluated model under one output folder (issue 27, item 4).

Why one script: a GPU slot is short (often 15 minutes) and starts on a bare machine, so
nothing may wait on a person or on data made beforehand. It runs the project's own steps,
as the docs run them by hand, with the time spent where it counts:

1. The real scans (``--real``) are split by the hash rule of docs/real-scans.md into a
   training share and a held-out share (links, not copies); held-out scans feed nothing
   but the final evaluation.
2. A generator process (niced, so the loader workers feeding the GPU come first) writes
   data on the other cores for the whole run: first a training chunk of each kind and the
   validation set, then the evaluation sets, then training chunks (threats projected into
   the training share, `cargoscan tip`; synthetic scans, `cargoscan synth`) until training
   ends, ``--max-train-scans`` is reached or the disk runs low.
3. Training (`training.train`) runs in rounds of ``--steps`` steps, each round one epoch
   of one run that resumes, so every round trains on every chunk finished by then. Its
   time budget (``TrainConfig.time_budget_s``) ends the run after ``--minutes`` of
   training, with the learning rate's cosine spread over that time; large batches and
   mixed precision on CUDA (bf16 where the GPU has it, else fp16 with a gradient scaler).
4. The best round is exported with thresholds calibrated on synthetic scans (`export
   --val`), and the real-scan operating point is commissioned on the training share's
   clean scans and written into the card (`commission --into-card`).
5. It is evaluated on a synthetic test seed, on threats projected into the held-out real
   scans, and for the alarm rate of the held-out clean real scans; the headline figures
   go into the card, ``metrics.json`` and ``summary.md``.

Run from the project root: ``.venv/bin/python tools/train_gpu.py --out DIR --minutes 9``.
Nothing needs a GPU: on a CPU it runs the same steps (the test runs it with tiny sizes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the project's packages, uninstalled too
    sys.path.insert(0, str(REPO))

# The split of docs/real-scans.md: a scan trains when the first 8 hex digits of the
# SHA-256 of its id, read as a fraction of 16^8, are below this.
TRAIN_SHARE = 0.6
# Data seeds: the project's evaluation sets (docs/real-scans.md, docs/training-log.md)
# and, apart from them, one seed per training chunk.
SEED_TEST, SEED_CALIB, SEED_TIP_HELD, SEED_TIP_VAL = 3, 4, 22, 23
SEED_SYNTH_CHUNK, SEED_TIP_CHUNK = 1000, 2000
MIN_FREE_BYTES = 8 << 30  # the generator stops when the disk has less left


@dataclass(frozen=True)
class Job:
    """One data set for the generator: `synth` (scans) or `tip` (into `backgrounds`)."""

    kind: str
    out: str
    count: int
    seed: int
    backgrounds: str | None = None


@dataclass(frozen=True)
class ChunkPlan:
    """Training chunks after the fixed jobs: tip and synth in turn, numbered from 1."""

    folder: str
    size: int
    max_scans: int
    real_train: str | None
    pitch_mm: float


def real_share(scan_id: str) -> float:
    """Where a real scan falls in [0, 1): below TRAIN_SHARE it trains, else it is held out."""
    return int(hashlib.sha256(scan_id.encode()).hexdigest()[:8], 16) / 16**8


def split_real_scans(src: Path, train_dir: Path, held_dir: Path) -> dict[str, int]:
    """Link each scan folder of `src` into the training or held-out share (folders made,
    files linked: `tip` does not follow linked folders); loose files (the licence) go
    into both. Returns how many scans each share holds."""
    counts = {"train": 0, "held": 0}
    for part in (train_dir, held_dir):
        part.mkdir(parents=True)
    for entry in sorted(src.resolve().iterdir()):
        if entry.is_dir():
            share = "train" if real_share(entry.name) < TRAIN_SHARE else "held"
            dst = (train_dir if share == "train" else held_dir) / entry.name
            dst.mkdir()
            for f in sorted(entry.iterdir()):
                (dst / f.name).symlink_to(f)
            counts[share] += 1
        elif entry.is_file():
            for part in (train_dir, held_dir):
                (part / entry.name).symlink_to(entry)
    if not counts["train"] or not counts["held"]:
        raise ValueError(f"{src}: its scan folders do not fill both shares ({counts})")
    return counts


def is_ready(folder: Path) -> bool:
    """Both generators write annotations.json last (tip into a staging folder)."""
    return (folder / "annotations.json").is_file()


def _write(job: Job, workers: int, pitch_mm: float) -> None:
    from training.synth.dataset import SynthConfig, write_dataset
    from training.tip import write_tip_dataset

    out = Path(job.out)
    if job.kind == "tip":
        assert job.backgrounds is not None
        write_tip_dataset(
            job.backgrounds, out, count=job.count, seed=job.seed, workers=workers, progress=False
        )
        return
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cfg = SynthConfig(pitch_mm=pitch_mm)
    write_dataset(
        staging, count=job.count, seed=job.seed, workers=workers, config=cfg, progress=False
    )
    os.replace(staging, out)


def generate(
    jobs: list[Job], plan: ChunkPlan, workers: int, stop: Any, parent: int, error: str
) -> None:
    """The generator process: the fixed jobs in order, then training chunks until `stop`
    is set, the parent is gone, `plan.max_scans` are made or the disk runs low."""
    os.nice(5)
    try:
        for job in jobs:
            t0 = time.monotonic()
            _write(job, workers, plan.pitch_mm)
            print(
                f"[data] {Path(job.out).name}: {job.count} scans in {time.monotonic() - t0:.0f} s",
                flush=True,
            )
        made = sum(j.count for j in jobs if Path(j.out).parent == Path(plan.folder))
        k = 1
        while not stop.is_set() and os.getppid() == parent and made < plan.max_scans:
            if shutil.disk_usage(plan.folder).free < MIN_FREE_BYTES:
                print("[data] stopping: under 8 GiB of disk left", flush=True)
                return
            for kind in ("tip", "synth") if plan.real_train else ("synth",):
                size = min(plan.size, plan.max_scans - made)
                if size < 1 or stop.is_set():
                    break
                seed = (SEED_TIP_CHUNK if kind == "tip" else SEED_SYNTH_CHUNK) + k
                out = str(Path(plan.folder) / f"{kind}-{k:03d}")
                _write(Job(kind, out, size, seed, plan.real_train), workers, plan.pitch_mm)
                made += size
            k += 1
    except BaseException as exc:
        Path(error).write_text(f"{type(exc).__name__}: {exc}\n")
        raise


def wait_for(folders: Sequence[Path], proc: multiprocessing.process.BaseProcess, error: Path):
    """Block until every folder is complete; fail with the generator's error if it died."""
    while not all(is_ready(f) for f in folders):
        if proc.exitcode is not None:
            why = error.read_text().strip() if error.is_file() else f"exit {proc.exitcode}"
            missing = [f.name for f in folders if not is_ready(f)]
            raise RuntimeError(f"the data generator stopped ({why}); missing {missing}")
        time.sleep(0.5)


def train_rounds(args: argparse.Namespace, run: Path, chunks: Path, val: Path) -> dict[str, Any]:
    """Rounds of one resumed run until its time budget is spent; each round adds the
    chunks finished since the last. Returns what the rounds did."""
    from training.train import TrainConfig, train

    order: list[Path] = []  # append-only: hard-negative pool indices stay valid
    rounds: list[dict[str, Any]] = []
    base = TrainConfig(
        data=[],
        out=str(run),
        val=str(val),
        steps_per_epoch=args.steps,
        batch_size=args.batch,
        crop=args.crop,
        lr=args.lr,
        seed=args.seed,
        init=None if args.scratch else str(args.init),
        loader_workers=args.loader_workers,
        hard_negative_share=args.hard_negative_share,
        hard_negative_scans=args.hard_negative_scans,
        hard_negative_min_score=0.2,
        precision=args.precision,
        time_budget_s=args.minutes * 60.0,
    )
    while True:
        order += sorted(
            (p for p in chunks.glob("*-[0-9][0-9][0-9]") if is_ready(p) and p not in order),
            key=lambda p: p.name,
        )
        kinds = [p.name.split("-")[0] for p in order]
        weight = {"tip": args.tip_weight, "synth": 1.0}
        weights = [weight[k] / kinds.count(k) for k in kinds]
        epoch = len(rounds)
        t0 = time.monotonic()
        cfg = TrainConfig(
            **{
                **asdict(base),
                "data": [str(p) for p in order],
                "weights": weights,
                "epochs": epoch + 1,
            }
        )
        train(cfg, resume=epoch > 0, progress=args.progress)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        if len(lines) <= epoch:  # the budget was spent before this round began
            break
        record = json.loads(lines[-1])
        budget = record.get("time_budget", {})
        rounds.append(
            {
                "round": epoch + 1,
                "chunks": len(order),
                "scans": _scans(order),
                "steps": budget.get("steps"),
                "seconds": round(time.monotonic() - t0, 1),
                "train_loss": record["train"].get("total"),
                "val_detection_rate": (record.get("val") or {}).get("mean_detection_rate"),
            }
        )
        print(f"[train] round {epoch + 1}: {rounds[-1]}", flush=True)
        if budget.get("spent") or epoch + 1 >= args.max_rounds:
            break
    return {"rounds": rounds, "chunks": [str(p) for p in order], "scans": _scans(order)}


def _scans(folders: Sequence[Path]) -> int:
    return sum(len(json.loads((f / "annotations.json").read_text())["images"]) for f in folders)


def _evaluate_job(kind: str, model: str, data: str, out: str, pictures: bool) -> dict[str, Any]:
    """One evaluation, in a process of its own so that the three run side by side."""
    from training.evaluate import clean_scan_alarms, evaluate

    if kind == "clean":
        return clean_scan_alarms(
            Path(model), Path(data), Path(out), pictures=pictures, progress=False
        )
    return evaluate(Path(model), [Path(data)], Path(out), pictures=pictures, progress=False)


def headline(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The figures the summary compares: a test evaluation's or a clean-scan check's."""
    if not metrics:
        return None
    if "alarm_share" in metrics:
        keys = ("scans", "alarm_share", "alarm_or_review_share", "findings_per_scan")
        return {k: metrics.get(k) for k in keys}
    scan = metrics.get("scan") or {}
    card = (metrics.get("at_card_thresholds") or {}).get("scan") or {}
    return {
        "map50": metrics.get("map50"),
        "scan_detection_at_1pct": (scan.get("detection_rate_at_far") or {}).get("0.01"),
        "card_threat_scans_alarming": card.get("detection_rate"),
        "card_clean_scans_alarming": card.get("false_alarm_rate"),
    }


def finish(args: argparse.Namespace, run: Path, sets: dict[str, Path]) -> dict[str, Any]:
    """Export with calibration, commission on the real training share, evaluate."""
    from training.commission import commission, write_into_card
    from training.evaluate import record_clean_in_card, record_in_card
    from training.export import export

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    model = args.out / "model" / f"{args.name}.onnx"
    checkpoint = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
    export(checkpoint, model, [sets["calib"]])
    timings["export_s"] = time.monotonic() - t0
    result: dict[str, Any] = {"model": str(model), "checkpoint": str(checkpoint)}
    if "real_train" in sets:
        t0 = time.monotonic()
        site = f"real scans, training share ({sets['real_train'].name})"
        op_path = model.with_name(f"{model.stem}.site-real-train.json")
        op = commission(
            model,
            [sets["real_train"]],
            op_path,
            site,
            alarm_rate=args.alarm_rate,
            review_rate=args.review_rate,
            progress=False,
        )
        write_into_card(model, op, [sets["real_train"]])
        result["commissioned"] = {"file": str(op_path), "report": op["report"]}
        timings["commission_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    jobs = {"synthetic_test": ("labelled", sets["test"], "test")}
    if "tip_held" in sets:
        jobs["projected_real"] = ("labelled", sets["tip_held"], "test_projected_real")
        jobs["clean_real"] = ("clean", sets["real_held"], "clean_scans")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
        futures = {
            name: pool.submit(
                _evaluate_job,
                kind,
                str(model),
                str(data),
                str(args.out / "eval" / name),
                not args.no_pictures,
            )
            for name, (kind, data, _) in jobs.items()
        }
        evaluated = {name: f.result() for name, f in futures.items()}
    for name, (kind, data, key) in jobs.items():  # the card, one writer at a time
        if kind == "clean":
            record_clean_in_card(model, evaluated[name], data, key)
        else:
            record_in_card(model, evaluated[name], [data], key)
    timings["evaluate_s"] = time.monotonic() - t0
    result["evaluation"] = {name: headline(m) for name, m in evaluated.items()}
    result["timings"] = {k: round(v, 1) for k, v in timings.items()}
    return result


def init_figures(init: Path | None) -> dict[str, Any] | None:
    """The starting model's own figures, as its card records them (for comparison)."""
    card = init.with_suffix(".json") if init is not None and init.suffix == ".onnx" else None
    if card is None or not card.is_file():
        return None
    metrics = json.loads(card.read_text()).get("metrics") or {}
    pairs = (
        ("synthetic_test", "test"),
        ("projected_real", "test_projected_real"),
        ("clean_real", "clean_scans"),
    )
    return {
        name: {"data": (metrics.get(key) or {}).get("data"), **(headline(metrics.get(key)) or {})}
        for name, key in pairs
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def summary_markdown(report: dict[str, Any]) -> str:
    """summary.md: what ran, for how long, and the figures beside the starting model's."""
    tr, ev = report["training"], report["result"]["evaluation"]
    init = report.get("init_figures") or {}
    lines = [
        f"# {report['name']}: a {report['budget_minutes']:g}-minute training run",
        "",
        f"- Device: {report['device']} ({report['precision']}); batch {report['batch']}, "
        f"crop {report['crop']}, lr {report['lr']:.2e}; started from "
        f"{report['init'] or 'scratch'}.",
        f"- Training: {sum(r['steps'] or 0 for r in tr['rounds'])} steps in "
        f"{len(tr['rounds'])} round(s), {report['timings']['train_s']:.0f} s, on "
        f"{tr['scans']} scans in {len(tr['chunks'])} chunks, generated beside it by "
        f"{report['workers']} process(es).",
        f"- Real scans: {report['real'] or 'none given'}"
        + (
            f" ({report['real_split']['train']} training, {report['real_split']['held']} "
            "held out; held-out scans only evaluate)"
            if report.get("real_split")
            else ""
        ),
        f"- Wall clock: {report['timings']['total_s']:.0f} s in all "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in report['timings'].items() if k != 'total_s')}).",
        f"- Model: `{report['result']['model']}` and its card; per-set metrics under `eval/`.",
        "",
        "| | this run | starting model (its card) |",
        "| --- | --- | --- |",
    ]
    for name, figures in ev.items():
        for key, value in (figures or {}).items():
            before = (init.get(name) or {}).get(key)
            lines.append(f"| {name}: {key} | {_fmt(value)} | {_fmt(before)} |")
    lines += [
        "",
        "Scan detection at 1 % false alarms; card_* at the card's thresholds "
        "(commissioned 8-bit ones on real scans). The starting model's figures are on "
        "the data its card names, which may differ from this run's sets.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    import torch

    from inference import DEFAULT_MODEL

    cuda = torch.cuda.is_available()
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    p.add_argument("--minutes", type=float, required=True, help="training wall-clock budget")
    p.add_argument(
        "--real",
        type=Path,
        default=None,
        help="real scans, one folder per scan (../shared/real-cargo/ajna_bbox)",
    )
    p.add_argument("--init", type=Path, default=DEFAULT_MODEL, help="model to start from")
    p.add_argument("--scratch", action="store_true", help="train from scratch instead")
    p.add_argument("--name", default="cargoscan-gpu", help="the model's name (file stem)")
    p.add_argument("--batch", type=int, default=64 if cuda else 8, help="crops per step")
    p.add_argument("--crop", type=int, default=384, help="crop size in px (multiple of 32)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak lr (default 3e-4 with --init, 2e-3 from scratch, times "
        "sqrt(batch / 8): the CPU recipes' batch of 8)",
    )
    p.add_argument("--steps", type=int, default=200, help="steps per round (one epoch)")
    p.add_argument("--max-rounds", type=int, default=10_000, help="cap on rounds")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--loader-workers", type=int, default=min(8, cpus // 2) if cuda else 0)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data generator processes (default: the cores the loader leaves)",
    )
    p.add_argument("--chunk", type=int, default=64, help="scans per training chunk")
    p.add_argument("--max-train-scans", type=int, default=2000, help="training scans at most")
    p.add_argument("--tip-weight", type=float, default=2.0, help="projected : synthetic (1)")
    p.add_argument("--hard-negative-share", type=float, default=0.25)
    p.add_argument("--hard-negative-scans", type=int, default=64, help="mined per round")
    p.add_argument("--val-count", type=int, default=120, help="validation scans (best round)")
    p.add_argument("--calib-count", type=int, default=300, help="synthetic calibration scans")
    p.add_argument("--test-count", type=int, default=300, help="synthetic test scans (seed 3)")
    p.add_argument("--held-count", type=int, default=300, help="projections into held-out")
    p.add_argument("--pitch", type=float, default=5.0, help="synthetic pixel pitch, mm")
    p.add_argument("--alarm-rate", type=float, default=0.02, help="commissioning alarm rate")
    p.add_argument("--review-rate", type=float, default=0.05, help="commissioning review rate")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--no-pictures", action="store_true", help="evaluation figures only")
    p.add_argument("--progress", action="store_true", help="progress bars while training")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.batch < 1 or args.steps < 1 or args.crop % 32:
        p.error("--minutes > 0, --batch and --steps >= 1, --crop a multiple of 32")
    if not args.scratch and not args.init.is_file():
        p.error(f"--init {args.init}: no such model (or train from --scratch)")
    if args.real is not None and not args.real.is_dir():
        p.error(f"--real {args.real}: not a folder")
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} is not empty: each run gets a folder of its own")
    if args.lr is None:
        args.lr = (2e-3 if args.scratch else 3e-4) * math.sqrt(args.batch / 8)
    if args.workers is None:
        args.workers = max(1, cpus - args.loader_workers - 1)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    started = time.monotonic()
    out: Path = args.out
    data = out / "data"
    chunks = data / "train"
    chunks.mkdir(parents=True)
    sets: dict[str, Path] = {"calib": data / "calib", "test": data / "test-synth"}
    report: dict[str, Any] = {
        "name": args.name,
        "budget_minutes": args.minutes,
        "real": str(args.real) if args.real else None,
    }
    jobs: list[Job] = []
    if args.real is not None:
        sets |= {
            "real_train": data / "real-train",
            "real_held": data / "real-held",
            "val": data / "tip-val",
            "tip_held": data / "tip-held",
        }
        report["real_split"] = split_real_scans(args.real, sets["real_train"], sets["real_held"])
        rt = str(sets["real_train"])
        jobs.append(Job("tip", str(chunks / "tip-000"), args.chunk, SEED_TIP_CHUNK, rt))
    else:
        sets["val"] = sets["calib"]  # as before real scans: the epoch chosen on calibration
    jobs.append(Job("synth", str(chunks / "synth-000"), args.chunk, SEED_SYNTH_CHUNK))
    first = [Path(j.out) for j in jobs] + [sets["val"]]
    if args.real is not None:
        jobs.append(Job("tip", str(sets["val"]), args.val_count, SEED_TIP_VAL, rt))
    jobs.append(Job("synth", str(sets["calib"]), args.calib_count, SEED_CALIB))
    jobs.append(Job("synth", str(sets["test"]), args.test_count, SEED_TEST))
    if args.real is not None:
        held = str(sets["real_held"])
        jobs.append(Job("tip", str(sets["tip_held"]), args.held_count, SEED_TIP_HELD, held))
    plan = ChunkPlan(
        str(chunks),
        args.chunk,
        args.max_train_scans,
        str(sets["real_train"]) if args.real else None,
        args.pitch,
    )
    ctx = multiprocessing.get_context("spawn")
    stop, error = ctx.Event(), data / "generator-error.txt"
    gen = ctx.Process(
        target=generate,
        name="cargoscan-data",
        args=(jobs, plan, args.workers, stop, os.getpid(), str(error)),
    )
    gen.start()
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        wait_for(first, gen, error)
        timings["first_data_s"] = time.monotonic() - t0
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: pick the fastest kernels
        t0 = time.monotonic()
        report["training"] = train_rounds(args, out / "run", chunks, sets["val"])
        timings["train_s"] = time.monotonic() - t0
        stop.set()
        t0 = time.monotonic()
        wait_for([sets[k] for k in ("calib", "test", "tip_held") if k in sets], gen, error)
        timings["wait_eval_data_s"] = time.monotonic() - t0
        report["result"] = finish(args, out / "run", sets)
        timings |= report["result"].pop("timings")
    finally:
        stop.set()
        gen.join(timeout=300)
        if gen.is_alive():
            gen.terminate()
    timings["total_s"] = time.monotonic() - started
    from training.train import autocast_dtype

    cuda = torch.cuda.is_available()
    amp = autocast_dtype(args.precision, torch.device("cuda" if cuda else "cpu"))
    report |= {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)",
        "precision": "fp32" if amp is None else f"{str(amp).removeprefix('torch.')} autocast",
        "batch": args.batch,
        "crop": args.crop,
        "lr": args.lr,
        "steps_per_round": args.steps,
        "workers": args.workers,
        "loader_workers": args.loader_workers,
        "init": None if args.scratch else str(args.init),
        "init_figures": None if args.scratch else init_figures(args.init),
        "data": {k: str(v) for k, v in sets.items()},
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(report))
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
