"""A contact sheet of projected threats: each crop beside the same crop of its clean source.

For eyes, not for code: a person should not be able to tell where the threat was
added except by the threat itself (no halo, no change of noise or texture around
it), and should see that it is not too faint nor pasted-looking.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from inference.coco import read_coco
from inference.render import render
from inference.scan import load_scan
from training.synth.contact_sheet import write_grid

_TILE = 200  # crop height on the sheet, pixels


def _crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return rgb[y0:y1, x0:x1]


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    band = np.full((18, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, tile], axis=0)


def write_tip_sheet(
    data_dir: Path | str,
    backgrounds: Path | str,
    out: Path | str,
    *,
    max_threats: int = 24,
    columns: int = 3,
) -> Path:
    """Up to `max_threats` threats: projected crop | clean source crop, with category,
    hiding place and contrast (high-energy attenuation change)."""
    data_dir, backgrounds, out = Path(data_dir), Path(backgrounds), Path(out)
    coco = read_coco(data_dir)
    images = {im.id: im for im in coco.images}
    rendered: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    tiles = []
    for ann in coco.annotations[:max_threats]:
        image = images[ann.image_id]
        if image.id not in rendered:
            tip = image.entry["tip"]
            low = image.low_file_name
            made = load_scan(data_dir / image.file_name, data_dir / low if low else None)
            src_low = tip.get("background_low")
            source = load_scan(
                backgrounds / tip["background"], backgrounds / src_low if src_low else None
            )
            rendered = {image.id: (render(made, "grey"), render(source, "grey"))}
        made_rgb, source_rgb = rendered[image.id]
        x, y, w, h = ann.bbox
        margin = max(w, h) // 2 + 12
        box = (
            max(x - margin, 0),
            max(y - margin, 0),
            min(x + w + margin, image.width),
            min(y + h + margin, image.height),
        )
        pair = []
        for rgb in (made_rgb, source_rgb):
            crop = _crop(rgb, box)
            scale = _TILE / crop.shape[0]
            size = (max(int(crop.shape[1] * scale), 1), _TILE)
            pair.append(cv2.resize(crop, size, interpolation=cv2.INTER_NEAREST))
        gap = np.full((_TILE, 4, 3), 255, np.uint8)
        tile = np.concatenate([pair[0], gap, pair[1]], axis=1)
        text = (
            f"#{image.id} {coco.categories[ann.category_id]}/{ann.entry['subtype']} "
            f"{ann.concealment} c={ann.contrast:.2f}"
        )
        tiles.append(cv2.cvtColor(_caption(tile, text), cv2.COLOR_RGB2BGR))
    if not tiles:
        raise ValueError(f"{data_dir}: no projected threats to show")
    return write_grid(tiles, columns, out)
