"""The second stage: a small network that looks again at each candidate the detector found.

Why: on real scans the detector's false alarms are a handful of structures (chassis parts
at floor level on empty boxes, corners of dense blocks) that score as high as the weaker
projected threats, and at 1 % false alarms the threshold is set by the single worst clean
scan. A classifier that sees each candidate in its context (a crop 2.5 times its size),
trained on the detector's own candidates on real backgrounds (hits on projected threats
against everything else), tells them apart far better than the detector's heat map alone
(docs/real-scans.md, "The verifier").

The card says which scans it applies to (``bit_depths``: so far 8-bit exports, the real
scans it was trained on) and from which detector score a candidate is verified
(``floor``): candidates below it are dropped, those above it take the verifier's
probability as their score. Crops are cut from the model input the detector saw, so
training and serving share :func:`crops` and :func:`features` as they share
:func:`inference.preprocess.preprocess`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CLOSE",
    "CROP",
    "VIEWS",
    "WIDE",
    "Verifier",
    "VerifierSpec",
    "View",
    "crops",
    "features",
]

CROP = 64
"""Side of a candidate's crop in the verifier's input (pixels)."""
View = tuple[float, float, float]
"""How one view of a candidate is cut: (context, shortest side, longest side): a square
``context`` times the box's longer side, kept within the two sides (model pixels)."""
CLOSE: View = (2.5, 48.0, 400.0)
"""The candidate and its surroundings: a speck still shows them, a person-sized box is not
shrunk to nothing."""
WIDE: View = (8.0, 160.0, 640.0)
"""Its neighbourhood: on real trucks the worst false alarms are chassis parts under the
floor that repeat along the trailer (docs/real-scans.md); a view wide enough to show the
repeats tells them from a single block hidden there."""
VIEWS: tuple[View, ...] = (CLOSE,)
"""The views of a verifier whose card names none (stage 10's)."""


def crops(
    tensor: np.ndarray,
    boxes: np.ndarray,
    hw: tuple[int, int],
    views: Sequence[View] = VIEWS,
) -> np.ndarray:
    """(N, 2 * len(views), CROP, CROP) float32 crops of a model input ``tensor`` (1, 2, Hp,
    Wp) around ``boxes`` (N, 4, model pixels), one square per view (:data:`View`), both
    channels each; what falls outside the scan's ``hw`` (the padding, or beyond the scan)
    is zero, as the padding is (air)."""
    h, w = hw
    image = tensor[0, :, :h, :w]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), 2 * len(views), CROP, CROP), np.float32)
    for v, (context, shortest, longest) in enumerate(views):
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            side = float(np.clip(context * max(x1 - x0, y1 - y0), shortest, longest))
            a0 = round(float((x0 + x1) / 2 - side / 2))
            b0 = round(float((y0 + y1) / 2 - side / 2))
            a1, b1 = a0 + int(side), b0 + int(side)
            window = np.zeros((2, b1 - b0, a1 - a0), np.float32)
            sx0, sy0, sx1, sy1 = max(a0, 0), max(b0, 0), min(a1, w), min(b1, h)
            if sx1 > sx0 and sy1 > sy0:
                window[:, sy0 - b0 : sy1 - b0, sx0 - a0 : sx1 - a0] = image[:, sy0:sy1, sx0:sx1]
            for c in range(2):
                out[i, 2 * v + c] = cv2.resize(
                    window[c], (CROP, CROP), interpolation=cv2.INTER_AREA
                )
    return out


def features(
    scores: np.ndarray, boxes: np.ndarray, labels: np.ndarray, n_categories: int
) -> np.ndarray:
    """(N, 3 + C) float32: the detector's score, the log of the box's width and height (in
    the scan's pixels) and the category one-hot, beside each crop."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    sides = np.log(np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0))
    onehot = np.eye(n_categories, dtype=np.float64)[np.asarray(labels, np.int64)]
    onehot = onehot.reshape(len(boxes), n_categories)
    score = np.asarray(scores, np.float64).reshape(-1, 1)
    return np.hstack([score, sides, onehot]).astype(np.float32)


@dataclass(frozen=True)
class VerifierSpec:
    """The card's ``verifier`` section."""

    file: str
    sha256: str
    floor: float
    bit_depths: tuple[int, ...]
    views: tuple[View, ...] = VIEWS

    @classmethod
    def of(cls, section: Mapping[str, Any]) -> VerifierSpec:
        views = tuple((float(c), float(lo), float(hi)) for c, lo, hi in section.get("views", VIEWS))
        return cls(
            file=str(section["file"]),
            sha256=str(section["sha256"]),
            floor=float(section["floor"]),
            bit_depths=tuple(int(b) for b in section["bit_depths"]),
            views=views,
        )


class Verifier:
    """An ONNX Runtime session on the verifier and the card's rules for using it."""

    def __init__(self, session: Any, spec: VerifierSpec, n_categories: int) -> None:
        self.session = session
        self.spec = spec
        self.n_categories = n_categories

    @classmethod
    def load(cls, path: Path, spec: VerifierSpec, n_categories: int, threads: int) -> Verifier:
        import hashlib

        import onnxruntime as ort

        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise ValueError(f"{path}: sha256 {digest[:12]}... does not match the card")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return cls(session, spec, n_categories)

    def applies(self, bit_depth: int) -> bool:
        return int(bit_depth) in self.spec.bit_depths

    def probabilities(self, crop: np.ndarray, feature: np.ndarray) -> np.ndarray:
        """(N,) probability that each candidate is a threat."""
        if not len(crop):
            return np.zeros(0, np.float32)
        (logits,) = self.session.run(None, {"crops": crop, "features": feature})
        return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)

    def rescore(
        self,
        tensor: np.ndarray,
        hw: tuple[int, int],
        model_boxes: np.ndarray,
        boxes: np.ndarray,
        scores: Sequence[float],
        labels: Sequence[int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """(kept indices, their new scores): candidates at or above the floor, scored by
        the verifier; the others are dropped."""
        scores_arr = np.asarray(scores, np.float32)
        kept = np.flatnonzero(scores_arr >= self.spec.floor)
        if not len(kept):
            return kept, np.zeros(0, np.float32)
        crop = crops(tensor, np.asarray(model_boxes)[kept], hw, self.spec.views)
        feature = features(
            scores_arr[kept], np.asarray(boxes)[kept], np.asarray(labels)[kept], self.n_categories
        )
        return kept, self.probabilities(crop, feature)
