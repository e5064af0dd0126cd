"""The COCO layout of CargoScan's labelled scan folders, written and read in one place.

Written by `cargoscan synth`, `cargoscan tip` and `cargoscan reviews export`, read by
training (`training.data.CocoScans`), the contact sheets and the checks. A folder holds
``annotations.json`` and the images it names, relative to the folder:

    info          who wrote the folder and how (generator, seed, config, licences)
    licenses      always empty
    categories    id (from 1), name, supercategory "threat", in the model's order
    images        id, file_name (the high-energy image), low_file_name (if any), width,
                  height, bit_depth, then each writer's own keys (clean, cargo_region,
                  the review, the projection, ...)
    annotations   id (from 1), image_id, category_id, bbox (x, y, w, h), area,
                  segmentation (a threat's mask as uncompressed RLE, when known),
                  iscrowd 0, then the writer's own keys (concealment, contrast, origin)

It lives in the torch-free runtime so that the service's review export and training
share it without the runtime importing training. The bytes it writes are part of the
contract: the same scans give the same ``annotations.json``, whoever writes them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "ANNOTATIONS",
    "PNG_PARAMS",
    "AnnotationsMissing",
    "CocoAnnotation",
    "CocoDataset",
    "CocoImage",
    "annotation_entry",
    "category_entries",
    "coco_document",
    "encode_png",
    "image_entry",
    "load_document",
    "number_annotations",
    "read_coco",
    "rle",
    "threat_annotation",
    "write_annotations",
]

ANNOTATIONS = "annotations.json"

# Fast zlib level: 16-bit noisy data barely compresses further, and the encoder's output
# is deterministic for a given level (the written bytes must not change between runs).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]


# --------------------------------------------------------------------------- writing


def encode_png(image: np.ndarray, what: str = "image") -> bytes:
    """A scan channel as the PNG bytes the COCO folders hold (16-bit stays 16-bit)."""
    ok, buf = cv2.imencode(".png", image, PNG_PARAMS)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8/uint16 greyscale array
        raise RuntimeError(f"PNG encoding failed for {what}")
    return buf.tobytes()


def rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO run-length encoding (uncompressed counts, column-major), no extra dependency."""
    flat = np.asfortranarray(mask).reshape(-1, order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def image_entry(
    image_id: int,
    file_name: str,
    width: int,
    height: int,
    bit_depth: int,
    *,
    low_file_name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One ``images`` entry: the keys every reader needs first, then the writer's own."""
    entry: dict[str, Any] = {"id": image_id, "file_name": file_name}
    if low_file_name is not None:
        entry["low_file_name"] = low_file_name
    entry.update(width=width, height=height, bit_depth=bit_depth)
    entry.update(extra)
    return entry


def annotation_entry(
    category_id: int,
    bbox: Sequence[float],
    area: float,
    *,
    mask: np.ndarray | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One annotation without its ids (`number_annotations` gives them): a box, and the
    mask as RLE when it is known (drawn boxes have none)."""
    entry: dict[str, Any] = {"category_id": category_id, "bbox": list(bbox), "area": area}
    if mask is not None:
        entry["segmentation"] = rle(mask)
    entry["iscrowd"] = 0
    entry.update(extra)
    return entry


def threat_annotation(
    category_id: int,
    bbox: Sequence[int],
    mask: np.ndarray,
    *,
    subtype: str,
    concealment: str,
    mass_kg: float,
    contrast: float,
    contrast_to_noise: float,
) -> dict[str, Any]:
    """A generated or projected threat: its full-image mask and how it was hidden.

    `contrast` is the change in high-energy attenuation (-ln T) the threat makes,
    `contrast_to_noise` that change over the image's noise; both are rounded here so
    synth and tip record them alike."""
    return annotation_entry(
        category_id,
        bbox,
        int(mask.sum()),
        mask=mask,
        subtype=subtype,
        concealment=concealment,
        mass_kg=round(mass_kg, 3),
        contrast=round(contrast, 4),
        contrast_to_noise=round(contrast_to_noise, 2),
    )


def number_annotations(
    per_image: Iterable[tuple[dict[str, Any], list[dict[str, Any]]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The images in order, and their annotations numbered from 1 in that order."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image, anns in per_image:
        images.append(image)
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], **ann})
    return images, annotations


def category_entries(names: Sequence[str]) -> list[dict[str, Any]]:
    """Category ids from 1, in the given order (the model's)."""
    return [{"id": i + 1, "name": n, "supercategory": "threat"} for i, n in enumerate(names)]


def coco_document(
    info: dict[str, Any],
    categories: Sequence[str],
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
) -> dict[str, Any]:
    """The whole ``annotations.json``, its keys in the order every writer uses."""
    return {
        "info": info,
        "licenses": [],
        "categories": category_entries(categories),
        "images": images,
        "annotations": annotations,
    }


def write_annotations(folder: Path | str, document: dict[str, Any]) -> Path:
    """Write ``annotations.json`` compactly and atomically: a reader never sees half of it."""
    path = Path(folder) / ANNOTATIONS
    tmp = path.with_name(f"{ANNOTATIONS}.tmp")
    tmp.write_text(json.dumps(document, separators=(",", ":")))
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- reading


class AnnotationsMissing(FileNotFoundError, ValueError):
    """A folder without ``annotations.json``: a missing file to some callers, a bad data
    folder (ValueError) to those that report it to a user."""


def load_document(folder: Path | str) -> dict[str, Any]:
    """The parsed ``annotations.json`` of ``folder``, as written; ValueError when there is
    none or it is not a JSON object."""
    root = Path(folder)
    path = root / ANNOTATIONS
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnnotationsMissing(f"{root}: no {ANNOTATIONS} (expected the COCO layout)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a COCO document (a JSON object)")
    return document


def _number(value: object) -> float:
    """An annotation's optional number; NaN when it is missing or not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class CocoImage:
    """One ``images`` entry; `entry` keeps the whole object for the writer's own keys."""

    id: int
    file_name: str
    low_file_name: str | None
    width: int  # 0 where the writer did not say
    height: int
    clean: bool | None
    entry: Mapping[str, Any]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> CocoImage:
        return cls(
            entry["id"],
            entry["file_name"],
            entry.get("low_file_name"),
            int(entry.get("width", 0)),
            int(entry.get("height", 0)),
            entry.get("clean"),
            entry,
        )


@dataclass(frozen=True)
class CocoAnnotation:
    """One annotation; `bbox` is x, y, w, h as written (ints from synth and tip)."""

    image_id: int
    category_id: int
    bbox: tuple[Any, ...]
    concealment: str  # where it is hidden ("tyre", ...); "" where the writer did not say
    contrast: float  # high-energy -ln T change; NaN where the writer did not say
    entry: Mapping[str, Any]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> CocoAnnotation:
        return cls(
            entry["image_id"],
            entry["category_id"],
            tuple(entry["bbox"]),
            str(entry.get("concealment") or ""),
            _number(entry.get("contrast")),
            entry,
        )


@dataclass(frozen=True)
class CocoDataset:
    """A folder's ``annotations.json`` as typed records, in the order written."""

    root: Path
    info: dict[str, Any]
    categories: dict[int, str]  # id -> name, in the order written
    images: list[CocoImage]
    annotations: list[CocoAnnotation]

    @property
    def path(self) -> Path:
        return self.root / ANNOTATIONS

    def annotations_by_image(self) -> dict[int, list[CocoAnnotation]]:
        """Each image id's annotations, in the order written (absent: none)."""
        per_image: dict[int, list[CocoAnnotation]] = {}
        for ann in self.annotations:
            per_image.setdefault(ann.image_id, []).append(ann)
        return per_image


def read_coco(folder: Path | str) -> CocoDataset:
    """Read ``folder``'s ``annotations.json``; ValueError with the reason when it cannot."""
    root = Path(folder)
    document = load_document(root)
    return CocoDataset(
        root,
        document.get("info") or {},
        {c["id"]: c["name"] for c in document.get("categories", [])},
        [CocoImage.of(im) for im in document.get("images", [])],
        [CocoAnnotation.of(a) for a in document.get("annotations", [])],
    )
