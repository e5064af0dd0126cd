"""CargoNet trained by `training.train` from scratch for a wall-clock budget, with a
snapshot of its weights after every epoch; snapshots exported by `cargoscan export`'s code.

The run is the one `cargoscan train` makes with its defaults (crop, batch, learning rate,
augmentations, EMA, the 8-bit share), with `time_budget_s` ending it and spreading the
learning rate's cosine over the budget. It goes in rounds of one epoch, each resuming the
last (as tools/train_gpu.py does), so every epoch leaves a snapshot: the budget, the
schedule and the draws are those of one uninterrupted run, and the time outside the
epoch loop (opening the data, saving) is not counted, as Ultralytics does not count its
own set-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def warm_cache(data: list[str], weights: list[float], progress: bool = True) -> None:
    """Pre-process every training scan into its data set's cache before the clock starts:
    the counterpart of writing the peer's tiles, which is not timed either."""
    from tqdm import tqdm

    from training.data import MixedScans, open_source
    from training.model import ModelConfig

    categories = list(ModelConfig().categories)
    source = MixedScans(
        [(open_source(d, categories, cache=True), w) for d, w in zip(data, weights, strict=True)]
    )
    for k in tqdm(range(len(source)), desc="cache", unit="scan", disable=not progress):
        source[k]


def train_cargonet(
    data: list[str],
    weights: list[float],
    out: str,
    minutes: float,
    *,
    crop: int,
    batch: int,
    steps_per_epoch: int,
    threads: int,
    precision: str = "fp32",
    seed: int = 0,
    loader_workers: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Train for `minutes`; one snapshot per epoch in OUT/snapshots (epochNNNN.pt: the
    averaged weights and the configs, what `export` reads), with the training seconds
    spent. Returns (and writes to OUT/snapshots.json) those records."""
    import torch

    from training.train import TrainConfig, train

    torch.set_num_threads(threads)
    run, snapshots = Path(out) / "run", Path(out) / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    epoch = steps = 0
    while True:
        cfg = TrainConfig(
            data=list(data),
            out=str(run),
            weights=list(weights),
            epochs=epoch + 1,
            steps_per_epoch=steps_per_epoch,
            batch_size=batch,
            crop=crop,
            seed=seed,
            precision=precision,
            channels_last=precision == "bf16",
            loader_workers=loader_workers,
            time_budget_s=minutes * 60.0,
        )
        train(cfg, resume=epoch > 0, progress=progress)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        if len(lines) <= epoch:  # the budget was spent before this epoch began
            break
        record = json.loads(lines[-1])
        ck = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        path = snapshots / f"epoch{epoch + 1:04d}.pt"
        keep = ("model", "model_config", "train_config", "epoch", "metrics", "data_summary")
        torch.save({k: ck[k] for k in keep}, path)
        budget = record["time_budget"]
        steps += budget["steps"]
        records.append(
            {"epoch": epoch + 1, "elapsed_s": budget["elapsed_s"], "images": steps * batch,
             "steps": steps, "train_loss": record["train"].get("total"), "path": str(path)}
        )  # fmt: skip
        epoch += 1
        if budget["spent"]:
            break
    (Path(out) / "snapshots.json").write_text(json.dumps(records, indent=2) + "\n")
    return records


def export_cargonet(checkpoint: Path, out: Path) -> Path:
    """A snapshot as the ONNX model and card `cargoscan export` writes (no calibration:
    the benchmark sets its thresholds itself, the same way for both models)."""
    from training.export import export

    export(checkpoint, out)
    return out
