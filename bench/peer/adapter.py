"""YOLOv8n's ONNX export on a whole scan, as an engineer would run Ultralytics on one:
cut the scan into overlapping tiles of the training size, run them, put the boxes back
in the scan's pixels, and suppress duplicates per category.

Each tile keeps only the boxes whose centre lies in its own share of the scan (the
overlap between two tiles is split down the middle), so an object near a seam is taken
from the tile that sees it best; what is left is merged by per-category greedy NMS at
the engine's IoU. Scores below the engine's floor are dropped and the 100 best kept,
the rules `inference.engine` applies to CargoNet, so both are counted alike.

The tiles are the same 8-bit pictures the peer was trained on (`bench.peer.tiles.rgb8`
of `inference.preprocess`'s attenuation), divided by 255 as Ultralytics does.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np

from bench.peer.tiles import rgb8
from inference.boxes import iou_matrix
from inference.engine import MAX_FINDINGS, MIN_SCORE, NMS_IOU
from inference.preprocess import preprocess
from inference.scan import Scan

TOP_PER_TILE = 300
"""Candidates kept per tile before stitching (Ultralytics' own max_det)."""


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: a step of tile - overlap, the last tile flush with the
    end; one tile at 0 when the scan is no longer than a tile."""
    if length <= tile:
        return [0]
    step = tile - overlap
    if step < 1:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    return [*range(0, length - tile, step), length - tile]


def cores(origins: list[int], tile: int) -> list[tuple[float, float]]:
    """Each tile's own share of the axis: from the middle of its overlap with the one
    before to the middle of its overlap with the one after."""
    seams = [(b + a + tile) / 2 for a, b in pairwise(origins)]
    return list(zip([-np.inf, *seams], [*seams, np.inf], strict=True))


def per_category_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float
) -> np.ndarray:
    """Indices kept by greedy NMS within each category, by falling score."""
    order = np.argsort(-scores, kind="stable")
    if order.size < 2:
        return order
    b, lab = boxes[order], labels[order]
    over = (iou_matrix(b, b) > iou) & (lab[:, None] == lab[None, :])
    suppressed = np.zeros(order.size, bool)
    kept = []
    for n in range(order.size):
        if suppressed[n]:
            continue
        kept.append(n)
        suppressed |= over[n]
    return order[kept]


class TiledYolo:
    """`detect(scan)` -> (boxes, scores, labels) in the scan's pixels, from a YOLO ONNX
    export whose output is (batch, 4 + classes, anchors): cx, cy, w, h in input pixels,
    then the class probabilities (Ultralytics' export of a detection model)."""

    def __init__(
        self,
        model: Path | str,
        *,
        tile: int,
        overlap: int = 128,
        threads: int = 2,
        batch: int = 4,
        min_score: float = MIN_SCORE,
        max_findings: int = MAX_FINDINGS,
        iou: float = NMS_IOU,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.tile, self.overlap, self.batch = tile, overlap, batch
        self.min_score, self.max_findings, self.iou = min_score, max_findings, iou

    def __call__(self, scan: Scan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        model_input = preprocess(scan, pad_multiple=1)
        h, w = model_input.scaled_hw
        picture = rgb8(model_input.tensor[0, :, :h, :w], model_input.has_low)
        t = self.tile
        ys, xs = starts(h, t, self.overlap), starts(w, t, self.overlap)
        y_cores, x_cores = cores(ys, t), cores(xs, t)
        jobs = [(y, x, yc, xc) for y, yc in zip(ys, y_cores, strict=True)
                for x, xc in zip(xs, x_cores, strict=True)]  # fmt: skip
        found_boxes, found_scores, found_labels = [], [], []
        for first in range(0, len(jobs), self.batch):
            part = jobs[first : first + self.batch]
            batch = np.zeros((len(part), 3, t, t), np.float32)  # past the edge: air, black
            for n, (y, x, _, _) in enumerate(part):
                cut = picture[y : y + t, x : x + t]
                batch[n, :, : cut.shape[0], : cut.shape[1]] = cut.transpose(2, 0, 1) / 255.0
            (out,) = self.session.run(None, {self.input: batch})
            for n, (y, x, (y_lo, y_hi), (x_lo, x_hi)) in enumerate(part):
                boxes, scores, labels = self._tile_findings(out[n])
                boxes += np.array([x, y, x, y], np.float32)
                cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
                mine = (cx >= x_lo) & (cx < x_hi) & (cy >= y_lo) & (cy < y_hi)
                found_boxes.append(boxes[mine])
                found_scores.append(scores[mine])
                found_labels.append(labels[mine])
        boxes = np.concatenate(found_boxes).astype(np.float64).reshape(-1, 4)
        scores = np.concatenate(found_scores).astype(np.float64)
        labels = np.concatenate(found_labels).astype(np.int64)
        keep = per_category_nms(boxes, scores, labels, self.iou)[: self.max_findings]
        return model_input.to_original(boxes[keep]), scores[keep], labels[keep]

    def _tile_findings(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One tile's output (4 + classes, anchors) -> its best-class boxes x0, y0, x1, y1
        above the floor, at most TOP_PER_TILE of them."""
        probs = out[4:]
        labels = probs.argmax(axis=0)
        scores = probs[labels, np.arange(probs.shape[1])]
        keep = np.flatnonzero(scores >= self.min_score)
        keep = keep[np.argsort(-scores[keep], kind="stable")[:TOP_PER_TILE]]
        cx, cy, bw, bh = out[:4, keep]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        return boxes.astype(np.float32), scores[keep], labels[keep]
