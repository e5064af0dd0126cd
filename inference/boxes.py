"""Box operations on (N, 4) x0, y0, x1, y1 arrays, shared by the runtime and evaluation.

One definition of "overlap" for the whole project: the result builder merges findings
by the same rule by which evaluation counts a finding as a hit on a threat, so a merged
finding hits what its parts hit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["HIT_IOU", "box_iou", "hits", "iou_matrix"]

HIT_IOU = 0.3


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of two sets of x0, y0, x1, y1 boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes (0 when both are empty)."""
    return float(iou_matrix(np.asarray(a), np.asarray(b))[0, 0])


def hits(pred: np.ndarray, gt: np.ndarray, iou: float = HIT_IOU) -> np.ndarray:
    """(N, M) bool: box n hits box m (IoU >= iou, or n's centre inside m)."""
    pred = np.asarray(pred, np.float64).reshape(-1, 4)
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    cx, cy = (pred[:, 0] + pred[:, 2]) / 2, (pred[:, 1] + pred[:, 3]) / 2
    inside = (
        (cx[:, None] >= gt[None, :, 0])
        & (cx[:, None] <= gt[None, :, 2])
        & (cy[:, None] >= gt[None, :, 1])
        & (cy[:, None] <= gt[None, :, 3])
    )
    return inside | (iou_matrix(pred, gt) >= iou)
