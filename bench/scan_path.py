"""The path around the model: where a scan's processing_ms goes, beside the bare model.

Issue 27's bar: a 16-bit dual-energy scan of about 2,800x800 costs the service at most
1.5x (goal 1.2x) the bare model's time on the same input. This prints, in one process and
one run, for the same scan:

- the bare model: ``session.run`` on the pre-processed tensor;
- the stages one at a time: decoding the two channels (PNG and TIFF), pre-processing, the
  model, post-processing (findings, anomaly map PNG, the result body) and storage (the
  three blobs, written and fsync'ed one after the other as a plain loop would);
- ``processing_ms`` as the service reports it: ``Service.analyze_upload`` of a real
  service (SQLite, blob store, the model loaded as ``cargoscan serve`` loads it) for the
  scan sent as two PNGs and as two uncompressed TIFFs (what the station client sends);

each round measures them all, alternating, so the ratio processing_ms / bare model is
taken within a round (a busy machine slows both sides alike) and its spread over the
rounds is printed, not one median.

    .venv/bin/python bench/scan_path.py [--rounds 5] [--model models/cargoscan-default.onnx]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference import DEFAULT_MODEL

FORMATS = ("png", "tiff")


def scan_bytes(seed: int, min_width: int) -> tuple[dict[str, tuple[bytes, bytes]], str]:
    """The first generated scan at least ``min_width`` long, as two PNGs and two TIFFs."""
    from station.client import encode_channel
    from training.synth.scene import SynthConfig, generate_scan

    cfg = SynthConfig()
    for index in range(40):
        scan = generate_scan(index, seed, cfg)
        h, w = scan.high.shape
        if w >= min_width:
            encoded = {
                fmt: (encode_channel(scan.high, fmt), encode_channel(scan.low, fmt))
                for fmt in FORMATS
            }
            return encoded, f"{w}x{h} 16-bit dual energy (seed {seed}, scan {index})"
    raise SystemExit(f"no generated scan is {min_width} px long: lower --min-width")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000.0


def one_round(bench: Any, r: int) -> dict[str, float]:
    """Every figure once, the bare model first and again last (its mean is the round's)."""
    from inference.preprocess import preprocess
    from inference.result import anomaly_png, build_result, scan_cells
    from inference.scan import ScanMetadata, decode_scan

    engine = bench.service.models.current.engine
    high, low = bench.data["png"]
    out: dict[str, float] = {}
    _, bare_a = timed(lambda: engine.run(bench.model_input))
    for fmt in FORMATS:
        h, lo = bench.data[fmt]
        scan, out[f"decode {fmt}"] = timed(lambda h=h, lo=lo: decode_scan(h, lo))
    model_input, out["pre-processing"] = timed(lambda: preprocess(scan))
    outputs, out["model"] = timed(lambda: engine.run(model_input))

    def post() -> bytes:
        analysis = engine.decode(scan, model_input, outputs)
        build_result(engine, analysis, "bench", 0.0, anomaly_map_url="/m")
        return anomaly_png(scan_cells(analysis, engine.stride))

    png, out["post-processing"] = timed(post)
    _, out["storage"] = timed(lambda: [bench.blobs.put(b) for b in (high, low, png)])
    for fmt in FORMATS:
        h, lo = bench.data[fmt]
        meta = ScanMetadata.from_dict({"station_scan_id": f"bench-{r}-{fmt}"})
        done = bench.service.analyze_upload(bench.station_id, h, lo, meta)
        out[f"processing_ms {fmt}"] = float(done.result["processing_ms"])
    _, bare_b = timed(lambda: engine.run(bench.model_input))
    out["bare model"] = (bare_a + bare_b) / 2.0
    return out


class Bench:
    """A real service on a temporary data folder, the scan's bytes and its model input."""

    def __init__(self, model: Path, data: dict[str, tuple[bytes, bytes]], root: Path) -> None:
        from inference.preprocess import preprocess
        from inference.scan import decode_scan
        from inference.service.core import Service
        from inference.service.settings import Settings
        from inference.service.storage import BlobStore

        self.data = data
        self.service = Service(Settings(data_dir=root / "service", model_path=model))
        self.service.open()
        self.service.load_startup_model()
        if self.service.models.current is None:
            raise SystemExit(f"no model: {self.service.models.status}")
        self.station_id = self.service.records.add_station("bench", "x" * 64).id
        self.blobs = BlobStore(root / "plain")
        self.model_input = preprocess(decode_scan(*data["png"]))

    def close(self) -> None:
        self.service.close()


def spread(values: list[float]) -> str:
    return f"{min(values):8.1f} {statistics.median(values):8.1f} {max(values):8.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-width", type=int, default=2700)
    args = parser.parse_args()

    t0 = time.perf_counter()
    data, what = scan_bytes(args.seed, args.min_width)
    sizes = ", ".join(f"{f} {sum(len(b) for b in data[f]) / 1e6:.1f} MB" for f in FORMATS)
    print(f"scan: {what}; {sizes} a post (made in {time.perf_counter() - t0:.0f} s)")
    print(f"model: {args.model}; machine: {os.cpu_count()} cores, load {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="cargoscan-bench-") as tmp:
        bench = Bench(args.model, data, Path(tmp))
        try:
            for r in range(2):  # warm-up: sessions, arenas, first-call imports
                one_round(bench, -1 - r)
            rounds = [one_round(bench, r) for r in range(args.rounds)]
        finally:
            bench.close()
    print(f"\n{args.rounds} rounds, ms{'':>15}     min   median      max")
    for name in rounds[0]:
        print(f"  {name:<22} {spread([r[name] for r in rounds])}")
    print("\nprocessing_ms / bare model (bar 1.5x, goal 1.2x): each round's; min over min")
    bare_min = min(r["bare model"] for r in rounds)
    for fmt in FORMATS:
        ratios = [r[f"processing_ms {fmt}"] / r["bare model"] for r in rounds]
        each = " ".join(f"{x:.2f}" for x in ratios)
        best = min(r[f"processing_ms {fmt}"] for r in rounds) / bare_min
        print(f"  {fmt:<5} median {statistics.median(ratios):.2f}x [{each}]; min/min {best:.2f}x")
    print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
