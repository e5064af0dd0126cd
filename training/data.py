"""Labelled scan data sets for training, and augmentations that respect the physics.

Every sample is decoded by `inference.scan` and pre-processed by
`inference.preprocess`, the same code the service runs, so what the model
learns on is exactly what it will be shown. Sources:

- `CocoScans`: the COCO layout `cargoscan synth` writes (and that officer
  review exports use): `annotations.json` with `file_name` / `low_file_name`.
- `YoloScans`: a YOLO folder (`images/`, `labels/<stem>.txt` with normalised
  `cls cx cy w h`, class names in `classes.txt`), single energy unless a
  `low/` folder holds a low-energy image of the same name.
- `MixedScans`: several of them, drawn with weights.

Everything here is numpy: the torch `Dataset` wrapper lives with the model.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from inference.preprocess import (
    ATTENUATION_SCALE,
    PREPROCESS_VERSION,
    attenuation,
    preprocess,
)
from inference.scan import Scan, load_scan

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass
class Sample:
    """One scan as the model sees it, with its labels in the same pixels."""

    image: np.ndarray  # float32 (2, H, W): pre-processed channels (high, low), no padding
    boxes: np.ndarray  # float32 (N, 4): x0, y0, x1, y1
    labels: np.ndarray  # int64 (N,): index into the data set's categories
    has_low: bool
    source: str  # "<data set>:<image>" for error analysis
    # Where each box is hidden (COCO `concealment`: "tyre", "floor_cavity", ...);
    # "" where the data set does not say. Empty tuple: unknown for every box.
    places: tuple[str, ...] = ()
    # A region (x0, y0, x1, y1) to cut the training crop around instead of a threat:
    # a hard negative, where the model fired on no threat (`training.hard_negatives`).
    focus: np.ndarray | None = None

    @property
    def clean(self) -> bool:
        return len(self.labels) == 0


@dataclass
class LabelledScan:
    """One decoded scan with its labels in the original pixels (for evaluation)."""

    scan: Scan
    boxes: np.ndarray  # float64 (N, 4): x0, y0, x1, y1 in original pixels
    labels: np.ndarray  # int64 (N,)
    name: str  # "<data set>:<image>"
    # Where each box is hidden ("" unknown), and how much it changes the image
    # (COCO `contrast`, high-energy -ln T; NaN unknown), as `synth` records them.
    places: tuple[str, ...] = ()
    contrasts: np.ndarray | None = None


def _number(value: object) -> float:
    """An annotation's optional number; NaN when it is missing or not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


class ScanSource(Protocol):
    categories: list[str]
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def labelled(self, index: int) -> LabelledScan: ...

    def box_tags(self) -> list[tuple[np.ndarray, tuple[str, ...]]]: ...


def sample_of(
    scan: Scan, boxes: np.ndarray, labels: np.ndarray, scale: float, source: str
) -> Sample:
    """Pre-process one decoded scan; its boxes follow it into model pixels."""
    model_input = preprocess(scan, pad_multiple=1, scale=scale)
    h, w = model_input.scaled_hw
    return Sample(
        image=np.ascontiguousarray(model_input.tensor[0, :, :h, :w]),
        boxes=model_input.to_model(boxes).astype(np.float32).reshape(-1, 4),
        labels=labels.astype(np.int64),
        has_low=model_input.has_low,
        source=source,
    )


class CocoScans:
    """A COCO data set of scans (`cargoscan synth` output, review exports).

    With `cache`, each scan's pre-processed channels are kept there as float16
    .npy files and memory-mapped on later reads: decoding two 16-bit PNGs and
    pre-processing a whole scan costs ~0.35 s, reading a crop of the cache a
    few ms. The cache is keyed by the pre-processing version and the scale.
    """

    def __init__(
        self,
        root: Path | str,
        categories: Sequence[str] | None = None,
        scale: float = 1.0,
        cache: Path | str | None = None,
    ) -> None:
        self.root = Path(root)
        self.cache = Path(cache) / f"preprocess-v{PREPROCESS_VERSION}" if cache else None
        path = self.root / "annotations.json"
        try:
            coco = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(
                f"{self.root}: no annotations.json (expected the COCO layout)"
            ) from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        self.info: dict[str, Any] = coco.get("info") or {}
        names = {c["id"]: c["name"] for c in coco.get("categories", [])}
        self.categories = list(categories) if categories is not None else list(names.values())
        index = {name: k for k, name in enumerate(self.categories)}
        unknown = sorted(set(names.values()) - set(index))
        used = {names[a["category_id"]] for a in coco.get("annotations", [])}
        if unknown and used & set(unknown):
            raise ValueError(
                f"{path}: categories {unknown} are not in the model's list {self.categories}"
            )
        per_image: dict[int, list[dict]] = {}
        for ann in coco.get("annotations", []):
            per_image.setdefault(ann["image_id"], []).append(ann)
        self.items = []
        for image in coco.get("images", []):
            anns = per_image.get(image["id"], [])
            boxes = np.array(
                [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float64
            ).reshape(-1, 4)
            labels = np.array([index[names[a["category_id"]]] for a in anns], np.int64)
            places = tuple(str(a.get("concealment") or "") for a in anns)
            contrasts = np.array([_number(a.get("contrast")) for a in anns], np.float64)
            low = image.get("low_file_name")
            size = (int(image.get("height", 0)), int(image.get("width", 0)))
            self.items.append(
                (image["file_name"], low, boxes, labels, image["id"], size, places, contrasts)
            )
        self.scale = scale
        self.name = self.root.name

    def __len__(self) -> int:
        return len(self.items)

    def box_tags(self) -> list[tuple[np.ndarray, tuple[str, ...]]]:
        """Each scan's labels and hiding places, read without decoding an image."""
        return [(item[3], item[6]) for item in self.items]

    def labelled(self, index: int) -> LabelledScan:
        file_name, low, boxes, labels, image_id, _, places, contrasts = self.items[index]
        scan = load_scan(self.root / file_name, self.root / low if low else None)
        return LabelledScan(scan, boxes, labels, f"{self.name}:{image_id}", places, contrasts)

    def __getitem__(self, index: int) -> Sample:
        file_name, low, boxes, labels, image_id, (height, width), places, _ = self.items[index]
        source = f"{self.name}:{image_id}"
        if self.cache is not None and height and width:
            for has_low in (True, False):
                path = (
                    self.cache / f"{image_id}_s{self.scale:g}_{'dual' if has_low else 'single'}.npy"
                )
                if path.is_file():
                    image = np.load(path, mmap_mode="r")
                    fx, fy = image.shape[2] / width, image.shape[1] / height
                    scaled = (boxes * np.array([fx, fy, fx, fy])).astype(np.float32).reshape(-1, 4)
                    return Sample(image, scaled, labels.astype(np.int64), has_low, source, places)
        scan = load_scan(self.root / file_name, self.root / low if low else None)
        sample = replace(sample_of(scan, boxes, labels, self.scale, source), places=places)
        if self.cache is not None and height and width:
            kind = "dual" if sample.has_low else "single"
            path = self.cache / f"{image_id}_s{self.scale:g}_{kind}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, sample.image.astype(np.float16))
            os.replace(tmp, path)
        return sample


class YoloScans:
    """A YOLO folder: images/, labels/ (normalised cx cy w h), classes.txt; optional low/."""

    def __init__(
        self, root: Path | str, categories: Sequence[str] | None = None, scale: float = 1.0
    ) -> None:
        self.root = Path(root)
        names_file = self.root / "classes.txt"
        if not names_file.is_file():
            raise ValueError(f"{self.root}: no classes.txt (one class name per line)")
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        self.categories = list(categories) if categories is not None else names
        index = {name: k for k, name in enumerate(self.categories)}
        image_dir = self.root / "images"
        self.images = sorted(p for p in image_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.images:
            raise ValueError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.class_map = {}
        for k, name in enumerate(names):
            self.class_map[k] = index.get(name, -1)
        self.scale = scale
        self.name = self.root.name

    def __len__(self) -> int:
        return len(self.images)

    def _labels(self, image: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / "labels" / f"{image.stem}.txt"
        rows = []
        if path.is_file():
            for n, line in enumerate(path.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise ValueError(f"{path}:{n}: expected 'cls cx cy w h', got {line!r}")
                rows.append([float(v) for v in parts])
        table = np.array(rows, np.float64).reshape(-1, 5)
        labels = np.array([self.class_map.get(int(c), -1) for c in table[:, 0]], np.int64)
        if (labels < 0).any():
            bad = sorted({int(c) for c, lab in zip(table[:, 0], labels, strict=True) if lab < 0})
            raise ValueError(f"{path}: classes {bad} are not in the model's list {self.categories}")
        cx, cy, bw, bh = (table[:, k] for k in range(1, 5))
        boxes = np.stack(
            [
                (cx - bw / 2) * width,
                (cy - bh / 2) * height,
                (cx + bw / 2) * width,
                (cy + bh / 2) * height,
            ],
            axis=1,
        )
        return boxes, labels

    def box_tags(self) -> list[tuple[np.ndarray, tuple[str, ...]]]:
        """Each scan's labels (YOLO has no hiding places), read without decoding an image."""
        # Normalised YOLO boxes need no image size to read the labels.
        return [(self._labels(image, 1, 1)[1], ()) for image in self.images]

    def labelled(self, index: int) -> LabelledScan:
        image = self.images[index]
        low = self.root / "low" / image.name
        scan = load_scan(image, low if low.is_file() else None)
        boxes, labels = self._labels(image, scan.shape[1], scan.shape[0])
        return LabelledScan(scan, boxes, labels, f"{self.name}:{image.stem}")

    def __getitem__(self, index: int) -> Sample:
        item = self.labelled(index)
        return sample_of(item.scan, item.boxes, item.labels, self.scale, item.name)


def open_source(
    path: str | Path, categories: Sequence[str] | None = None, cache: bool = False
) -> CocoScans | YoloScans:
    """A COCO folder (annotations.json) or a YOLO folder (classes.txt).

    With `cache`, COCO scans keep their pre-processed channels in DIR/.cache.
    """
    root = Path(path)
    if (root / "annotations.json").is_file():
        return CocoScans(root, categories, cache=root / ".cache" if cache else None)
    if (root / "classes.txt").is_file():
        return YoloScans(root, categories)
    raise ValueError(
        f"{root}: neither a COCO folder (annotations.json) nor a YOLO one (classes.txt)"
    )


def as_paths(data: str | Path | Sequence[str | Path]) -> list[Path]:
    """One data folder or several, as a list (the commands take `--data`/`--val` repeated)."""
    return [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]


def data_label(data: str | Path | Sequence[str | Path]) -> str | list[str]:
    """How a model card names the data it was measured on: a path, or a list of them."""
    paths = as_paths(data)
    return str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]


def open_sources(
    data: str | Path | Sequence[str | Path], categories: Sequence[str] | None = None
) -> CocoScans | YoloScans | MixedScans:
    """One labelled data set, or several read as one, set after set.

    Why: a threshold at 1 % false alarms rests on the few highest clean scores,
    so evaluation and calibration can add a large clean-only set (`synth
    --clean-fraction 1`) to a threat set instead of regenerating both.
    """
    paths = as_paths(data)
    if not paths:
        raise ValueError("no data set given")
    if len(paths) == 1:
        return open_source(paths[0], categories)
    first = open_source(paths[0], categories)
    rest = [open_source(p, first.categories) for p in paths[1:]]
    return MixedScans([(s, 1.0) for s in (first, *rest)])


def summarize(source: CocoScans | YoloScans) -> dict[str, object]:
    """What a data set holds, for model cards: scans, clean scans, instances per category.

    Reads labels only (no image decoding), so it is cheap on large sets.
    """
    labels = [tags[0] for tags in source.box_tags()]
    if isinstance(source, CocoScans):
        dual = sum(item[1] is not None for item in source.items)
    else:
        dual = sum((source.root / "low" / image.name).is_file() for image in source.images)
    every = np.concatenate([*labels, np.zeros(0, np.int64)]).astype(np.int64)
    counts = np.bincount(every, minlength=len(source.categories))
    summary: dict[str, object] = {
        "path": str(source.root),
        "format": "coco" if isinstance(source, CocoScans) else "yolo",
        "scans": len(labels),
        "clean_scans": sum(len(x) == 0 for x in labels),
        "dual_energy_scans": int(dual),
        "instances": {name: int(n) for name, n in zip(source.categories, counts, strict=True)},
    }
    if isinstance(source, CocoScans):
        places = Counter(p for item in source.items for p in item[6] if p)
        if places:
            summary["concealments"] = dict(sorted(places.items()))
        summary["origin"] = _origin(source.info)
    return summary


_ORIGIN_KEYS = ("description", "generator", "seed", "count", "backgrounds", "background_licences")


def _origin(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in _ORIGIN_KEYS if k in info}


def data_origin(folder: Path | str) -> dict[str, Any] | None:
    """Where a COCO data set's scans come from and under which terms, from its
    annotations' ``info`` (real backgrounds projected by `cargoscan tip` carry their
    licences): for model cards. None for a folder without annotations.json."""
    path = Path(folder) / "annotations.json"
    if not path.is_file():
        return None
    return _origin(json.loads(path.read_text()).get("info") or {})


class MixedScans:
    """Several sources drawn with weights (e.g. synthetic 1.0, real reviews 3.0)."""

    def __init__(self, parts: Sequence[tuple[ScanSource, float]]) -> None:
        if not parts:
            raise ValueError("MixedScans needs at least one data set")
        self.categories = list(parts[0][0].categories)
        for source, weight in parts:
            if list(source.categories) != self.categories:
                raise ValueError(
                    f"{source.name}: categories {source.categories} differ from {self.categories}; "
                    "pass the model's category list to every data set"
                )
            if not weight > 0:
                raise ValueError(f"{source.name}: weight must be positive, got {weight}")
            if len(source) == 0:
                raise ValueError(f"{source.name}: empty data set")
        self.parts = list(parts)
        self.name = "+".join(s.name for s, _ in parts)
        self._offsets = np.cumsum([0] + [len(s) for s, _ in parts])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, index: int) -> tuple[ScanSource, int]:
        """The part a global index falls in, and the index within that part."""
        part = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return self.parts[part][0], index - int(self._offsets[part])

    def __getitem__(self, index: int) -> Sample:
        source, local = self._locate(index)
        return source[local]

    def labelled(self, index: int) -> LabelledScan:
        """Scan `index` in the original pixels; its name says which data set it came from."""
        source, local = self._locate(index)
        return source.labelled(local)

    def epoch_indices(
        self,
        size: int,
        rng: np.random.Generator,
        scan_weight: Callable[[np.ndarray, Sequence[str]], float] | None = None,
    ) -> np.ndarray:
        """Global indices for one epoch: a part by its weight, then a scan in it,
        uniformly or by `scan_weight(labels, places)`."""
        weights = np.array([w for _, w in self.parts], np.float64)
        chosen = rng.choice(len(self.parts), size=size, p=weights / weights.sum())
        sizes = np.diff(self._offsets)
        if scan_weight is None:
            return self._offsets[chosen] + rng.integers(0, sizes[chosen])
        picks = np.empty(size, np.int64)
        for k, (part, _) in enumerate(self.parts):
            where = np.flatnonzero(chosen == k)
            w = np.array([scan_weight(*tags) for tags in part.box_tags()], np.float64)
            p = w / w.sum() if w.sum() > 0 else None
            picks[where] = self._offsets[k] + rng.choice(len(part), size=where.size, p=p)
        return picks


@dataclass(frozen=True)
class Augment:
    """Augmentations that keep the physics: attenuation stays attenuation.

    - flip along x (the vehicle driving the other way); never up-down (the
      source height makes the two halves of a scan differ);
    - scale (another pixel pitch or vehicle speed);
    - crop to a fixed size, most often around a threat (or around the
      sample's `focus`, a hard negative, when it has one), for speed; the model
      sees whole scans at inference;
    - residual calibration error: a small additive shift of -ln T per row;
    - extra photon noise: sigma(a) = exp(a/2)/sqrt(N) for a random flux N;
    - low-energy dropout: the low channel replaced by the high one, exactly
      as `preprocess` does for single-energy scanners;
    - 8-bit JPEG export: some of those single-energy samples pass through
      what a scanner exporting 8-bit JPEGs does (a display tone curve, coarse
      steps, saturation, 8x8 block artefacts), as the real scans we compare
      against are such files. The tone curve is unknown to the service, which
      reads grey as transmission: real exports are close to linear in
      attenuation (grey = air * (1 - a / a_max), a_max ~ 3.3 on the reference
      scans, `bench/realism.py`), so thin steel reads three times thinner and
      dense cargo saturates. Without this the model had only seen linear
      exports and fired on corner castings of real scans.
    No colour jitter, contrast or blur on attenuation: they have no physical
    meaning here.
    """

    crop_hw: tuple[int, int] | None = (512, 512)
    flip_p: float = 0.5
    scale_range: tuple[float, float] = (0.8, 1.25)
    object_crop_p: float = 0.75
    # Weight per category (by label) of a box being the crop's target; empty = all
    # equal. Rare or hard categories (currency bundles) otherwise get few crops.
    target_weights: tuple[float, ...] = ()
    # Weight of a box as the crop's target by where it is hidden (Sample.places),
    # multiplying the category's: a bundle in a floor cavity or a package in a
    # tyre sits in clutter that uniform crops rarely show the model.
    place_weights: tuple[tuple[str, float], ...] = ()
    min_visible: float = 0.4  # share of a box that must stay in the crop to keep it
    row_gain_sigma: float = 0.01
    flux_range: tuple[float, float] = (1e4, 2e5)
    noise_p: float = 0.5
    drop_low_p: float = 0.3
    jpeg_p: float = 0.5  # share of the single-energy samples turned into an 8-bit JPEG export
    jpeg_quality: tuple[int, int] = (70, 95)
    # Export tone curves: grey = air * T^k (share `tone_power_p`), else
    # grey = air * (1 - a / a_max)^p; k, a_max and p drawn log-uniform.
    tone_power_p: float = 0.3
    tone_k: tuple[float, float] = (0.4, 1.0)
    tone_a_max: tuple[float, float] = (2.5, 6.0)
    tone_p: tuple[float, float] = (0.7, 1.4)

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        image, boxes, labels = s.image, s.boxes.astype(np.float32), s.labels
        places = s.places or ("",) * len(labels)
        lo, hi = self.scale_range
        f = _log_uniform(rng, (lo, hi)) if hi > lo else float(lo)
        if self.crop_hw is not None:
            # Cut the window first (it may be a memory-mapped cache), then
            # resample only the window: a scan is 2.4 Mpx, a crop a tenth of it.
            ch, cw = self.crop_hw
            target = None
            if s.focus is not None:
                target = np.asarray(s.focus, np.float32)
            elif len(boxes) and rng.random() < self.object_crop_p:
                target = boxes[self._target_index(labels, places, rng)]
                # Zoom in no further than keeps the threat whole in the crop (a
                # person is ~350 px tall): the model sees it whole at inference.
                fit = 0.95 * min(
                    ch / max(target[3] - target[1], 1.0), cw / max(target[2] - target[0], 1.0)
                )
                f = min(f, max(fit, lo))
            window = (int(np.ceil(ch / f)), int(np.ceil(cw / f)))
            image, boxes, labels, places = self._crop(
                image, boxes, labels, places, window, target, rng
            )
            boxes = boxes * np.array([cw / window[1], ch / window[0]] * 2, np.float32)
            image = _resize_to(image, (ch, cw))
        elif f != 1.0:
            _, h0, w0 = image.shape
            image = _resize_to(image, (max(1, round(h0 * f)), max(1, round(w0 * f))))
            fx, fy = image.shape[2] / w0, image.shape[1] / h0
            boxes = boxes * np.array([fx, fy, fx, fy], np.float32)
        if rng.random() < self.flip_p:
            image = image[:, :, ::-1]
            w = image.shape[2]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        image = np.array(image, np.float32)  # own, contiguous copy
        if self.row_gain_sigma > 0:
            shift = -np.log1p(self.row_gain_sigma * rng.standard_normal((1, image.shape[1], 1)))
            image += (shift / ATTENUATION_SCALE).astype(np.float32)
        if rng.random() < self.noise_p:
            flux = _log_uniform(rng, self.flux_range)
            a = np.clip(image, 0, None) * ATTENUATION_SCALE
            sigma = np.exp(np.minimum(a, 12.0) / 2) / np.sqrt(flux)
            image += (sigma * rng.standard_normal(image.shape) / ATTENUATION_SCALE).astype(
                np.float32
            )
        np.clip(image, 0, None, out=image)
        has_low = s.has_low
        if has_low and rng.random() < self.drop_low_p:
            if rng.random() < self.jpeg_p:
                image[0] = self._eight_bit_jpeg(image[0], rng)
            image[1] = image[0]
            has_low = False
        return replace(
            s,
            image=image,
            boxes=boxes.astype(np.float32),
            labels=labels,
            has_low=has_low,
            places=tuple(places),
            focus=None,  # it was in the scan's pixels, not the crop's
        )

    def box_weights(self, labels: np.ndarray, places: Sequence[str]) -> np.ndarray:
        """Each box's weight as a crop target: its category's times its place's."""
        by_place = dict(self.place_weights)
        places = places or ("",) * len(labels)
        return np.array(
            [
                (self.target_weights[int(c)] if self.target_weights else 1.0)
                * by_place.get(where, 1.0)
                for c, where in zip(labels, places, strict=True)
            ],
            np.float64,
        )

    def scan_weight(self, labels: np.ndarray, places: Sequence[str]) -> float:
        """How often a scan is drawn, relative to a clean one: the mean of its box weights.

        With the in-scan choice by weight (`_target_index`) this makes each box's
        share of object crops its weight times what uniform draws give it, also
        when it is a scan's only threat; unweighted, every scan weighs 1.
        """
        return float(self.box_weights(labels, places).mean()) if len(labels) else 1.0

    def _target_index(
        self, labels: np.ndarray, places: Sequence[str], rng: np.random.Generator
    ) -> int:
        """The box a crop is cut around: by its weight (uniform when all weigh 0)."""
        w = self.box_weights(labels, places)
        if w.sum() <= 0:
            return int(rng.integers(len(labels)))
        return int(rng.choice(len(labels), p=w / w.sum()))

    def _export_tone(self, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Grey level (share of the air level) a scanner's 8-bit export shows for attenuation a."""
        if rng.random() < self.tone_power_p:
            return np.exp(-_log_uniform(rng, self.tone_k) * a)
        a_max, p = _log_uniform(rng, self.tone_a_max), _log_uniform(rng, self.tone_p)
        return np.clip(1.0 - a / a_max, 0.0, None) ** p

    def eight_bit_counts(self, a: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """The 8-bit JPEG grey levels a scanner's export shows for attenuation `a`
        (-ln T), decoded back, and the air level the export used.

        The export maps attenuation through a tone curve (`_export_tone`); the
        air level sits a little under full scale, as exports leave headroom.
        """
        air = float(rng.uniform(215.0, 255.0))
        grey = self._export_tone(np.asarray(a, np.float64), rng)
        counts = np.clip(np.rint(grey * air), 0, 255).astype(np.uint8)
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        ok, encoded = cv2.imencode(".jpg", counts, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 greyscale array
            return counts, air
        return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE), air

    def _eight_bit_jpeg(self, channel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One channel as it comes back from an 8-bit JPEG export read as transmission
        (decoding mirrors `inference.preprocess.attenuation`, T >= 1/256)."""
        counts, air = self.eight_bit_counts(channel.astype(np.float64) * ATTENUATION_SCALE, rng)
        t = np.clip(counts.astype(np.float32) / np.float32(air), 1.0 / 256.0, 1.0)
        return (-np.log(t) / ATTENUATION_SCALE).astype(np.float32)

    def _crop(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        places: Sequence[str],
        window: tuple[int, int],
        target: np.ndarray | None,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
        """A window of the scan: around `target` (anywhere that keeps it whole, if it
        fits), else anywhere."""
        ch, cw = window
        _, h, w = image.shape
        if target is not None:
            x0 = int(np.clip(self._window_start(target[0], target[2], cw, rng), 0, max(w - cw, 0)))
            y0 = int(np.clip(self._window_start(target[1], target[3], ch, rng), 0, max(h - ch, 0)))
        else:
            x0 = int(rng.integers(0, max(w - cw, 0) + 1))
            y0 = int(rng.integers(0, max(h - ch, 0) + 1))
        out = np.zeros((image.shape[0], ch, cw), np.float32)  # zero = air beyond the scan
        part = image[:, y0 : y0 + ch, x0 : x0 + cw]
        out[:, : part.shape[1], : part.shape[2]] = part
        if len(boxes) == 0:
            return out, boxes.reshape(0, 4), labels, ()
        shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
        clipped = shifted.copy()
        clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0, min(cw, w - x0))
        clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0, min(ch, h - y0))
        area = np.prod(np.clip(shifted[:, 2:] - shifted[:, :2], 0, None), axis=1)
        kept_area = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
        keep = kept_area >= self.min_visible * np.maximum(area, 1e-6)
        kept_places = tuple(p for p, k in zip(places, keep, strict=True) if k)
        return out, clipped[keep], labels[keep], kept_places

    @staticmethod
    def _window_start(lo: float, hi: float, size: int, rng: np.random.Generator) -> float:
        """Start of a window of `size` along one axis holding [lo, hi] whole where it can."""
        if hi - lo <= size:
            return float(rng.uniform(hi - size, lo))
        return float((lo + hi) / 2 - rng.uniform(0.2, 0.8) * size)


# Seeds the simulated 8-bit export of validation/test scan k: [EIGHT_BIT_SEED, k], so the
# card's 8-bit thresholds and `cargoscan evaluate --eight-bit` see the same exports.
EIGHT_BIT_SEED = 8


def eight_bit_export(scan: Scan, rng: np.random.Generator) -> Scan:
    """The scan as a single-energy scanner's 8-bit JPEG export would send it.

    What the service is sent by such scanners (the real scans we compare against
    are such files); used to calibrate and measure the model on that input, whose
    clean scans score higher than 16-bit ones (a tone curve thins steel, JPEG
    blocks add edges). The tone curve and quality are drawn as in training.
    """
    counts, _ = Augment().eight_bit_counts(attenuation(scan.high), rng)
    return Scan(high=counts, metadata=scan.metadata)


def eight_bit_export_of(scan: Scan, index: int) -> Scan:
    """Scan `index` of a validation or test set as its 8-bit export, always the same one:
    calibration (`export`, `calibrate`) and `evaluate --eight-bit` must see the same."""
    return eight_bit_export(scan, np.random.default_rng([EIGHT_BIT_SEED, index]))


# Share of training samples shown as 16-bit single-energy scans (low channel dropped,
# no export): what `--eight-bit-share` leaves alone, so the single-energy figures hold.
SINGLE_ENERGY_16BIT_SHARE = 0.15


def single_energy_draws(eight_bit_share: float) -> tuple[float, float]:
    """(drop_low_p, jpeg_p) of `Augment` that show `eight_bit_share` of the samples as
    8-bit JPEG exports and SINGLE_ENERGY_16BIT_SHARE as 16-bit single-energy scans.

    The defaults (0.3, 0.5) are a share of 0.15; real stations that send 8-bit
    exports (all our real reference scans) may want the model to see more of them.
    """
    most = 1.0 - SINGLE_ENERGY_16BIT_SHARE
    if not 0.0 <= eight_bit_share <= most:
        raise ValueError(f"the 8-bit share must be within [0, {most:g}], got {eight_bit_share}")
    drop_low_p = SINGLE_ENERGY_16BIT_SHARE + eight_bit_share
    return drop_low_p, eight_bit_share / drop_low_p


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    """A draw spread evenly in log between lo and hi: for factors (scale, flux, tone)."""
    return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))


def _resize_to(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resample both channels to (h, w); INTER_AREA when shrinking (averages attenuation)."""
    c, h, w = image.shape
    if (h, w) == hw:
        return image
    interp = cv2.INTER_AREA if hw[0] * hw[1] < h * w else cv2.INTER_LINEAR
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0), dtype=np.float32)
    out = cv2.resize(hwc, (hw[1], hw[0]), interpolation=interp)
    return out.reshape(hw[0], hw[1], c).transpose(2, 0, 1)
