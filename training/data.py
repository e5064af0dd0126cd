"""Labelled scan data sets for training.

Every sample is decoded by `inference.scan` and pre-processed by
`inference.preprocess`, the same code the service runs, so what the model
learns on is exactly what it will be shown. Sources:

- `CocoScans`: the COCO layout `cargoscan synth` writes (and that officer
  review exports use): `annotations.json` with `file_name` / `low_file_name`.
- `YoloScans`: a YOLO folder (`images/`, `labels/<stem>.txt` with normalised
  `cls cx cy w h`, class names in `classes.txt`), single energy unless a
  `low/` folder holds a low-energy image of the same name.
- `MixedScans`: several of them, drawn with weights.

Everything here is numpy: the torch `Dataset` wrapper lives with the model, the
augmentations in `training.augment`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inference.coco import ANNOTATIONS, load_document, read_coco
from inference.preprocess import PREPROCESS_VERSION, preprocess
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
        coco = read_coco(self.root)
        self.info: dict[str, Any] = coco.info
        names = coco.categories
        self.categories = list(categories) if categories is not None else list(names.values())
        index = {name: k for k, name in enumerate(self.categories)}
        unknown = sorted(set(names.values()) - set(index))
        used = {names[a.category_id] for a in coco.annotations}
        if unknown and used & set(unknown):
            raise ValueError(
                f"{coco.path}: categories {unknown} are not in the model's list {self.categories}"
            )
        per_image = coco.annotations_by_image()
        self.items = []
        for image in coco.images:
            anns = per_image.get(image.id, [])
            boxes = np.array(
                [[x, y, x + w, y + h] for x, y, w, h in (a.bbox for a in anns)], np.float64
            ).reshape(-1, 4)
            labels = np.array([index[names[a.category_id]] for a in anns], np.int64)
            places = tuple(a.concealment for a in anns)
            contrasts = np.array([a.contrast for a in anns], np.float64)
            size = (image.height, image.width)
            low = image.low_file_name
            self.items.append(
                (image.file_name, low, boxes, labels, image.id, size, places, contrasts)
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
    if (root / ANNOTATIONS).is_file():
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
    if not (Path(folder) / ANNOTATIONS).is_file():
        return None
    return _origin(load_document(folder).get("info") or {})


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
