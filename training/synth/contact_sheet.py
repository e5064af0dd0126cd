"""A contact sheet of a synthetic data set: material view with the labelled boxes.

For eyes, not for code: the quickest way to see what a data set holds and
whether the labels sit on the threats.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from inference.annotate import colour_of
from inference.coco import read_coco
from inference.render import render
from inference.scan import load_scan


def write_contact_sheet(
    data_dir: Path | str,
    out: Path | str,
    *,
    max_scans: int = 12,
    columns: int = 2,
    tile_width: int = 900,
    view: str = "material",
) -> Path:
    """Render up to `max_scans` scans of a COCO data set into one labelled PNG."""
    data_dir, out = Path(data_dir), Path(out)
    coco = read_coco(data_dir)
    by_image = coco.annotations_by_image()
    tiles = []
    for image in coco.images[:max_scans]:
        low = image.low_file_name
        scan = load_scan(data_dir / image.file_name, data_dir / low if low else None)
        rgb = render(scan, view)
        scale = tile_width / rgb.shape[1]
        tile = cv2.resize(
            rgb, (tile_width, max(int(rgb.shape[0] * scale), 1)), interpolation=cv2.INTER_AREA
        )
        tile = cv2.cvtColor(tile, cv2.COLOR_RGB2BGR)
        for ann in by_image.get(image.id, []):
            x, y, w, h = (v * scale for v in ann.bbox)
            name = coco.categories[ann.category_id]
            colour = colour_of(name)[::-1]  # BGR for OpenCV
            p0, p1 = (int(x) - 2, int(y) - 2), (int(x + w) + 2, int(y + h) + 2)
            cv2.rectangle(tile, p0, p1, colour, 2)
            cv2.putText(
                tile,
                name,
                (p0[0], max(p0[1] - 4, 10)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                colour,
                1,
                cv2.LINE_AA,
            )
        entry = image.entry
        caption = f"#{image.id} {entry['vehicle']['arrangement']} {'/'.join(entry['load'])}"
        if entry.get("manifest_discrepancy"):
            caption += f"  manifest: {entry['manifest_discrepancy']}"
        cv2.putText(
            tile, caption, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
        tiles.append(tile)
    if not tiles:
        raise ValueError(f"no scans in {data_dir}")
    return write_grid(tiles, columns, out)


def write_grid(tiles: list[np.ndarray], columns: int, out: Path) -> Path:
    """Tiles (BGR) in rows of ``columns`` on white, each padded to the largest tile plus a
    6 px gutter, written as one picture."""
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    padded = [
        np.pad(
            t,
            ((0, height - t.shape[0] + 6), (0, width - t.shape[1] + 6), (0, 0)),
            constant_values=255,
        )
        for t in tiles
    ]
    while len(padded) % columns:
        padded.append(np.full_like(padded[0], 255))
    rows = [np.concatenate(padded[i : i + columns], axis=1) for i in range(0, len(padded), columns)]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(rows, axis=0))
    return out
