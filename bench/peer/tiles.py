"""Our training scans as an engineer would feed them to Ultralytics: 8-bit 3-channel tiles
and YOLO label files, cut the way `cargoscan train` cuts its crops.

The picture (`rgb8`), from the attenuation `inference.preprocess` gives (-ln T, the same
numbers CargoNet is trained on, so both models start from the same calibrated scan):

- red   = high-energy attenuation, a_high in [0, A_MAX] -> 0..255 (linear);
- green = low-energy attenuation, the same window;
- blue  = the ratio a_low / a_high in [RATIO_LO, RATIO_HI] -> 0..255, where a_high is at
  least RATIO_MIN_ATTENUATION (0 elsewhere: in air and thin walls the ratio is noise).
  It is what tells organic from metal on a dual-energy scanner.

A single-energy scan (8-bit real exports, and `cargoscan tip`'s projections into them)
has no low channel: its tile is the high window in all three planes. Air is black (zero
attenuation), as is the padding past a scan's edge, the zero attenuation our crops and
the network's padding use too.

The crops (`write_yolo_set`): the scans are drawn as `training.train` draws them
(`MixedScans.epoch_indices`, the data sets by weight, a scan uniformly) and cut by the
crop of `training.augment.Augment` with every other augmentation off: a window of
`crop` px at full resolution, around a threat 75 % of the time when the scan has one,
anywhere otherwise; boxes less than 40 % inside the window are dropped. So the share of
tiles without a threat is the share of our training crops without one. Ultralytics then
adds its own augmentations (mosaic, scale, flips, HSV) while it trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from inference.preprocess import ATTENUATION_SCALE
from training.augment import Augment
from training.data import MixedScans

A_MAX = 10.0
"""-ln T at full scale (255): beyond ~10 a 16-bit detector reads noise only; one grey
level is 0.04, under the faintest contrast a threat shows in plain view (0.1)."""
RATIO_LO, RATIO_HI = 0.9, 1.4
"""a_low / a_high at 0 and 255: 1.0-1.25 covers organic to steel on the synthetic 6/4 MV
scanner (1st-99th percentile of cargo pixels), with headroom both sides."""
RATIO_MIN_ATTENUATION = 0.3
"""a_high below which the ratio channel is 0."""


def rgb8(channels: np.ndarray, has_low: bool) -> np.ndarray:
    """(H, W, 3) uint8, planes in RGB order, from pre-processed channels (2, H, W) =
    (a_high, a_low) / ATTENUATION_SCALE; a single-energy scan repeats its high plane."""
    a = np.asarray(channels, np.float32) * np.float32(ATTENUATION_SCALE)
    high = _to8(a[0], 0.0, A_MAX)
    if not has_low:
        return np.dstack([high, high, high])
    low = _to8(a[1], 0.0, A_MAX)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(a[0] >= RATIO_MIN_ATTENUATION, a[1] / a[0], RATIO_LO)
    return np.dstack([high, low, _to8(ratio, RATIO_LO, RATIO_HI)])


def _to8(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear window [lo, hi] -> 0..255, rounded and clipped."""
    return np.clip(np.rint((x - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def yolo_rows(boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> list[str]:
    """YOLO label lines (`cls cx cy w h`, normalised to the tile) for pixel boxes x0, y0,
    x1, y1 clipped to the tile; boxes left without area are dropped."""
    rows = []
    for (x0, y0, x1, y1), c in zip(
        np.asarray(boxes, np.float64).reshape(-1, 4), labels, strict=True
    ):
        x0, x1 = np.clip([x0, x1], 0, width)
        y0, y1 = np.clip([y0, y1], 0, height)
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        rows.append(f"{int(c)} {cx:.6f} {cy:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return rows


def crop_only(crop: int) -> Augment:
    """`Augment` reduced to its crop: no scale, flip, noise, gain or channel drop."""
    return Augment(
        crop_hw=(crop, crop),
        flip_p=0.0,
        scale_range=(1.0, 1.0),
        row_gain_sigma=0.0,
        noise_p=0.0,
        drop_low_p=0.0,
    )


def write_split(
    source: MixedScans,
    out: Path,
    split: str,
    count: int,
    crop: int,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """`count` tiles of `source` into OUT/images/SPLIT and OUT/labels/SPLIT; what they hold."""
    images, labels_dir = out / "images" / split, out / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    cut = crop_only(crop)
    draws = source.epoch_indices(count, np.random.default_rng([seed, 0]))
    empty = dual = 0
    instances = np.zeros(len(source.categories), np.int64)
    for k, index in enumerate(
        tqdm(draws, desc=f"tiles {split}", unit="tile", disable=not progress)
    ):
        sample = cut(source[int(index)], np.random.default_rng([seed, int(k)]))
        rgb = rgb8(sample.image, sample.has_low)
        h, w = rgb.shape[:2]
        rows = yolo_rows(sample.boxes, sample.labels, w, h)
        name = f"{k:06d}"
        # cv2 writes BGR: the file shows red = high, as Ultralytics reads it back (to RGB).
        cv2.imwrite(str(images / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        (labels_dir / f"{name}.txt").write_text("".join(f"{r}\n" for r in rows))
        empty += not rows
        dual += bool(sample.has_low)
        for r in rows:
            instances[int(r.split()[0])] += 1
    return {
        "tiles": count,
        "tiles_without_threat": empty,
        "share_without_threat": empty / count if count else None,
        "dual_energy_tiles": dual,
        "instances": {n: int(c) for n, c in zip(source.categories, instances, strict=True)},
    }


def write_yolo_set(
    train: MixedScans,
    val: MixedScans,
    out: Path,
    *,
    tiles: int,
    val_tiles: int,
    crop: int,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """The Ultralytics data set: train and val tiles, their labels, OUT/data.yaml and
    OUT/tiles.json (what was written, the window); returns data.yaml's path.

    `val` is only there because Ultralytics wants a val split (it validates its last
    epoch); the benchmark's own validation runs on whole scans.
    """
    out = Path(out).resolve()
    summary = {
        "crop": crop,
        "seed": seed,
        "window": {
            "red": f"a_high (-ln T) in [0, {A_MAX:g}] -> 0..255",
            "green": f"a_low (-ln T) in [0, {A_MAX:g}] -> 0..255 (= red on single-energy scans)",
            "blue": f"a_low / a_high in [{RATIO_LO:g}, {RATIO_HI:g}] -> 0..255 where a_high >= "
            f"{RATIO_MIN_ATTENUATION:g}, else 0 (= red on single-energy scans)",
        },
        "train": write_split(train, out, "train", tiles, crop, seed, progress),
        "val": write_split(val, out, "val", val_tiles, crop, seed + 1, progress),
    }
    (out / "tiles.json").write_text(json.dumps(summary, indent=2) + "\n")
    names = "".join(f"  {k}: {name}\n" for k, name in enumerate(train.categories))
    yaml = out / "data.yaml"
    yaml.write_text(
        "# Written by bench/peer_accuracy.py: CargoScan training scans as 3-channel 8-bit\n"
        "# tiles (tiles.json says how). Ultralytics data set.\n"
        f"path: {out}\ntrain: images/train\nval: images/val\n"
        f"nc: {len(train.categories)}\nnames:\n{names}"
    )
    return yaml
