"""YOLOv8n trained by Ultralytics' own `train()` on the tiles, from scratch, for a wall-clock
budget; its snapshots exported to ONNX. Each runs in a process of its own
(`bench.peer.runs.in_own_process`): Ultralytics sets process-wide state on import
(OpenCV's threads, OMP_NUM_THREADS) that must not touch CargoNet's training or timing.

Nothing is fetched: the network comes from its YAML (`yolov8n.yaml`, our class count),
`pretrained=False`, YOLO_OFFLINE=1 and YOLO_AUTOINSTALL=False (no pip, no hub). Its
recipe is its own (SGD or AdamW chosen by `optimizer=auto`, warm-up, mosaic, HSV, scale
and flip augmentation, a nominal batch of 64 by gradient accumulation, EMA), with
`time=` hours spreading its schedule over the budget, as an engineer would run it. One
change: on a CPU Ultralytics trains with cores - 1 torch threads; both models get
`threads` here, so that neither runs on fewer cores than the other.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

YAML = "yolov8n.yaml"


def _offline(config_dir: Path) -> None:
    """Ultralytics with no network: nothing downloaded, nothing installed, its settings
    file under the run's folder instead of the user's."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    config_dir.mkdir(parents=True, exist_ok=True)


def train_yolo(
    data_yaml: str,
    out: str,
    minutes: float,
    imgsz: int,
    batch: int,
    threads: int,
    seed: int = 0,
    workers: int = 0,
) -> list[dict[str, Any]]:
    """Train for `minutes` of wall clock, on the GPU when there is one (as CargoNet's run
    does); one snapshot of the EMA weights per epoch in OUT/snapshots (epochNNNN.pt), with
    the training seconds spent when it was saved. Returns (and writes to
    OUT/snapshots.json) those records. `workers`: data loader processes (Ultralytics
    uses none on a CPU whatever it is told)."""
    out_dir = Path(out)
    _offline(out_dir / ".ultralytics")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    from ultralytics import YOLO

    snapshots = out_dir / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    seen = {"images": 0, "steps": 0}

    def on_train_start(trainer: Any) -> None:
        torch.set_num_threads(threads)
        step = trainer.optimizer_step

        def counted() -> None:  # Ultralytics accumulates batches up to 64 images a step
            seen["steps"] += 1
            step()

        trainer.optimizer_step = counted

    def count_images(trainer: Any) -> None:
        seen["images"] += trainer.batch_size

    def keep_snapshot(trainer: Any) -> None:
        elapsed = time.time() - trainer.train_time_start
        path = snapshots / f"epoch{trainer.epoch + 1:04d}.pt"
        shutil.copy(trainer.last, path)
        records.append(
            {"epoch": trainer.epoch + 1, "elapsed_s": round(elapsed, 2), **seen, "path": str(path)}
        )

    model = YOLO(YAML)
    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_batch_end", count_images)
    model.add_callback("on_model_save", keep_snapshot)
    model.train(
        data=data_yaml,
        imgsz=imgsz,
        epochs=100,  # re-estimated from the time after the first epoch
        time=minutes / 60.0,
        batch=batch,
        device=0 if torch.cuda.is_available() else "cpu",
        pretrained=False,
        workers=workers,
        project=str(out_dir),
        name="train",
        exist_ok=True,
        plots=False,
        val=False,  # the last epoch is validated all the same; ours run on whole scans
        seed=seed,
        verbose=False,
    )
    (out_dir / "snapshots.json").write_text(json.dumps(records, indent=2) + "\n")
    return records


def export_yolo(checkpoints: list[str], imgsz: int, opset: int) -> list[str]:
    """Each checkpoint to ONNX beside it (Ultralytics' exporter, float32, dynamic batch
    and size, no simplifier: it would be fetched); returns the .onnx paths."""
    first = Path(checkpoints[0]).parent
    _offline(first.parent / ".ultralytics")
    import logging

    from ultralytics import YOLO

    logging.getLogger("ultralytics").setLevel(logging.WARNING)  # no banner per file

    done = []
    for ck in checkpoints:
        path = YOLO(ck).export(
            format="onnx",
            imgsz=imgsz,
            opset=opset,
            dynamic=True,
            simplify=False,
            device="cpu",
            verbose=False,
        )
        done.append(str(path))
    return done
