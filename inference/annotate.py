"""Annotated pictures of a result: the scan as an officer sees it, with the findings on it.

Used by `cargoscan analyze` (offline) and by evaluation sheets: the material view
(grey for single-energy scans), a box per finding in its category's colour with
the category and score, anomaly regions dashed, and a banner with the verdict
and risk. Colours are RGB and chosen to stand apart from the material palette
(orange / green / blue).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from inference.render import render
from inference.scan import Scan

CATEGORY_COLOURS: dict[str, tuple[int, int, int]] = {
    "firearm": (255, 0, 0),
    "narcotics": (255, 0, 255),
    "cigarettes": (255, 200, 0),
    "currency": (0, 255, 0),
    "person": (0, 255, 255),
    "anomaly": (255, 255, 0),
}
VERDICT_COLOURS = {"clear": (40, 160, 40), "review": (230, 160, 0), "alarm": (220, 30, 30)}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def colour_of(category: str) -> tuple[int, int, int]:
    return CATEGORY_COLOURS.get(category, (255, 255, 255))


def _dashed_rectangle(
    img: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], colour: tuple[int, int, int]
) -> None:
    dash = 10
    for x in range(p0[0], p1[0], 2 * dash):
        for y in (p0[1], p1[1]):
            cv2.line(img, (x, y), (min(x + dash, p1[0]), y), colour, 2)
    for y in range(p0[1], p1[1], 2 * dash):
        for x in (p0[0], p1[0]):
            cv2.line(img, (x, y), (x, min(y + dash, p1[1])), colour, 2)


def draw_findings(
    rgb: np.ndarray, findings: Sequence[Mapping[str, Any]], scale: float = 1.0
) -> np.ndarray:
    """Boxes and labels drawn onto a copy of `rgb` (boxes in scan pixels times `scale`)."""
    out = np.ascontiguousarray(rgb).copy()
    for f in findings:
        x0, y0, x1, y1 = (round(float(v) * scale) for v in f["box"])
        colour = colour_of(str(f["category"]))
        if f.get("source") == "anomaly":
            _dashed_rectangle(out, (x0, y0), (x1, y1), colour)
        else:
            cv2.rectangle(out, (x0 - 1, y0 - 1), (x1 + 1, y1 + 1), (0, 0, 0), 4)
            cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2)
        text = f"{f['category']} {float(f['score']):.2f}"
        (tw, th), _ = cv2.getTextSize(text, FONT, 0.5, 1)
        ty = y0 - 4 if y0 - th - 6 >= 0 else y1 + th + 4
        cv2.rectangle(out, (x0, ty - th - 3), (x0 + tw + 4, ty + 3), (0, 0, 0), -1)
        cv2.putText(out, text, (x0 + 2, ty), FONT, 0.5, colour, 1, cv2.LINE_AA)
    return out


def annotate(scan: Scan, result: Mapping[str, Any], view: str = "material") -> np.ndarray:
    """(H + banner, W, 3) uint8 RGB: the view, the findings and a verdict banner."""
    picture = draw_findings(render(scan, view), result.get("findings", []))
    verdict = str(result.get("verdict", "clear"))
    banner = np.zeros((36, picture.shape[1], 3), np.uint8)
    banner[:] = VERDICT_COLOURS.get(verdict, (90, 90, 90))
    model = result.get("model", {}).get("version", "")
    text = (
        f"{verdict.upper()}  risk {float(result.get('risk', 0.0)):.2f}  "
        f"{len(result.get('findings', []))} finding(s)  {model}"
    )
    cv2.putText(banner, text, (8, 25), FONT, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return np.vstack([banner, picture])
