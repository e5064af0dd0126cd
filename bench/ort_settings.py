"""ONNX Runtime settings for the shipped model (issue 27, item 2): what each one buys.

The engine opens the model with 2 intra-op threads, one inter-op thread and ONNX
Runtime's defaults otherwise (all graph optimisations, spinning threads, memory arena).
This times the same 800x3008 dual-energy input under each alternative, every setting in
a process of its own, in rounds that alternate the settings (as `detector_speed.py`
does), and prints each one's median over rounds, its spread, the ratio to the engine's
setting and the session's start-up time:

- `engine`: the engine's own session;
- `basic` / `extended`: lower graph optimisation levels (what the fusions are worth);
- `saved-graph`: the graph optimised once and saved (`optimized_model_filepath`), then
  opened with optimisations off: the same kernels, a faster start;
- `no-spin`: intra-op threads that sleep instead of spinning between operators;
- `no-arena`: no CPU memory arena (every tensor allocated anew);
- `threads-1`: one intra-op thread.

    .venv/bin/python bench/ort_settings.py [--rounds 5] [--runs 10] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference import DEFAULT_MODEL

SETTINGS = ("engine", "basic", "extended", "saved-graph", "no-spin", "no-arena", "threads-1")


def options_for(setting: str, saved: Path) -> ort.SessionOptions:
    """Session options of `setting`; `saved` is where `saved-graph` keeps its graph."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1 if setting == "threads-1" else 2
    options.inter_op_num_threads = 1
    level = ort.GraphOptimizationLevel
    if setting == "basic":
        options.graph_optimization_level = level.ORT_ENABLE_BASIC
    elif setting == "extended":
        options.graph_optimization_level = level.ORT_ENABLE_EXTENDED
    elif setting == "saved-graph":
        options.graph_optimization_level = level.ORT_DISABLE_ALL
    elif setting == "no-spin":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif setting == "no-arena":
        options.enable_cpu_mem_arena = False
    return options


def save_optimised(model: Path, saved: Path) -> None:
    """The graph after all of ONNX Runtime's optimisations, written once."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(saved)
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def time_one(model: Path, setting: str, saved: Path, runs: int) -> dict[str, float]:
    """Start-up and median run time of one setting (in this process)."""
    path = saved if setting == "saved-graph" else model
    t0 = time.perf_counter()
    sess = ort.InferenceSession(
        str(path), options_for(setting, saved), providers=["CPUExecutionProvider"]
    )
    start_ms = (time.perf_counter() - t0) * 1000
    x = np.random.default_rng(0).random((1, 2, 800, 3008), dtype=np.float32)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return {"start_ms": start_ms, "run_ms": statistics.median(times)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10, help="timed runs per setting and round")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: one setting
    ap.add_argument("--saved", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(time_one(args.model, args.one, args.saved, args.runs)))
        return 0
    if not args.model.is_file():
        print(f"no model at {args.model}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "optimised.onnx"
        save_optimised(args.model, saved)
        results: dict[str, list[dict[str, float]]] = {s: [] for s in args.settings}
        for r in range(args.rounds):
            for setting in args.settings:
                cmd = [sys.executable, __file__, "--model", str(args.model), "--one", setting]
                cmd += ["--saved", str(saved), "--runs", str(args.runs)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                results[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    base = statistics.median(x["run_ms"] for x in results.get("engine", []) or [{"run_ms": 1}])
    print(f"{args.model.name} at 800x3008, {args.rounds} rounds x {args.runs} runs")
    print(f"{'setting':<12} {'run ms (spread)':>24} {'vs engine':>9} {'start ms':>9}")
    for setting, rows in results.items():
        runs = [x["run_ms"] for x in rows]
        med = statistics.median(runs)
        start = statistics.median(x["start_ms"] for x in rows)
        spread = f"{med:6.1f} ({min(runs):.1f}-{max(runs):.1f})"
        print(f"{setting:<12} {spread:>24} {base / med:8.2f}x {start:9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
