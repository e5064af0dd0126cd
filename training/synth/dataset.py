"""`cargoscan synth`: write a synthetic data set as COCO JSON + 16-bit PNGs.

Layout of DIR (that of `inference.coco`):
    annotations.json         COCO; each image has file_name (high channel) and
                             low_file_name (low channel), relative to DIR
    images/NNNNNN_high.png   16-bit single-channel PNG
    images/NNNNNN_low.png

Scans are generated in worker processes but each is a pure function of
(seed, index), and the JSON is assembled in index order, so the bytes on disk
do not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from inference.coco import (
    coco_document,
    encode_png,
    image_entry,
    number_annotations,
    threat_annotation,
    write_annotations,
)
from training.synth.scene import SynthConfig, SynthScan, generate_scan
from training.synth.threats import CATEGORIES

__all__ = ["DatasetSummary", "SynthConfig", "worker_pool", "write_dataset"]


@dataclass
class DatasetSummary:
    out: Path
    images: int
    clean: int
    instances: dict[str, int]

    def __str__(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.instances.items())
        return f"wrote {self.images} scans ({self.clean} clean) to {self.out}: {per}"


# Thread pools of the native libraries, capped to one thread in each worker:
# the process pool already uses every core, more threads only oversubscribe.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _single_threaded_worker() -> None:
    cv2.setNumThreads(1)


@contextmanager
def _one_thread_env() -> Iterator[None]:
    """Workers are spawned (not forked: forking a process whose BLAS threads
    are running can deadlock), and read these variables when they import numpy."""
    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update({k: "1" for k in _THREAD_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Process pool for scan generation: spawned workers, one native thread each."""
    spawn = multiprocessing.get_context("spawn")
    with (
        _one_thread_env(),
        ProcessPoolExecutor(workers, mp_context=spawn, initializer=_single_threaded_worker) as pool,
    ):
        yield pool


def _write_one(args: tuple[int, int, SynthConfig, str]) -> dict[str, Any]:
    """Generate scan `index`, write its PNGs, return its COCO fragments."""
    index, seed, cfg, out = args
    scan: SynthScan = generate_scan(index, seed, cfg)
    stem = f"images/{index:06d}"
    for suffix, img in (("high", scan.high), ("low", scan.low)):
        data = encode_png(img, f"scan {index}")
        path = Path(out) / f"{stem}_{suffix}.png"
        tmp = path.with_suffix(".png.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    h, w = scan.high.shape
    image = image_entry(
        index + 1,
        f"{stem}_high.png",
        int(w),
        int(h),
        16,
        low_file_name=f"{stem}_low.png",
        **{"cargo_region": list(scan.cargo_region), "clean": not scan.threats, **scan.info},
    )
    anns = [
        threat_annotation(
            CATEGORIES.index(t.category) + 1,
            t.bbox,
            t.mask,
            subtype=t.subtype,
            concealment=t.where,
            mass_kg=t.mass_kg,
            contrast=t.contrast,
            contrast_to_noise=t.contrast_to_noise,
        )
        for t in scan.threats
    ]
    return {"image": image, "annotations": anns}


def write_dataset(
    out: Path | str,
    *,
    count: int,
    seed: int = 0,
    workers: int | None = None,
    config: SynthConfig | None = None,
    progress: bool = True,
) -> DatasetSummary:
    """Generate `count` scans into `out` (created if needed)."""
    cfg = config or SynthConfig()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    jobs = [(i, seed, cfg, str(out)) for i in range(count)]
    results: list[dict[str, Any]] = []
    bar = tqdm(total=count, desc="synth", unit="scan", disable=not progress)
    # Even one worker is a spawned single-threaded process: multi-threaded BLAS in this
    # process rounds differently, and the bytes must not depend on the worker count.
    with worker_pool(workers) as pool:
        for res in pool.map(_write_one, jobs, chunksize=1):
            results.append(res)
            bar.update()
    bar.close()

    images, annotations = number_annotations((r["image"], r["annotations"]) for r in results)
    info = {
        "description": "CargoScan synthetic dual-energy cargo X-ray scans",
        "version": "1",
        "generator": "cargoscan synth",
        "seed": seed,
        "count": count,
        "config": cfg.to_dict(),
    }
    write_annotations(out, coco_document(info, CATEGORIES, images, annotations))
    instances = {
        n: sum(1 for a in annotations if a["category_id"] == i + 1)
        for i, n in enumerate(CATEGORIES)
    }
    return DatasetSummary(out, len(images), sum(1 for im in images if im["clean"]), instances)
