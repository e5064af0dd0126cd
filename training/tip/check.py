"""Can a classifier tell projected scans from clean ones by anything but the threats?

If clean outputs and threat outputs differed in their whole-image statistics
(noise, JPEG blockiness, grey histogram, sharpness), a detector trained on them
could learn that difference instead of the threats. A logistic regression on
such statistics, cross-validated, must be near chance: balanced accuracy ~0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inference.coco import read_coco
from inference.scan import load_scan

FEATURES = (
    "mean",
    "std",
    "skewness",
    "kurtosis",
    "noise",
    "blockiness",
    "gradient",
    "dark",
    "bright",
)


def image_features(channel: np.ndarray) -> np.ndarray:
    """Whole-image statistics of one channel, scaled to its full range."""
    full = 255.0 if channel.dtype == np.uint8 else 65535.0
    x = channel.astype(np.float32) / np.float32(full)
    mean, std = float(x.mean()), float(x.std()) + 1e-9
    z = (x - mean) / std
    residual = x - cv2.medianBlur((x * 255).astype(np.uint8), 3).astype(np.float32) / 255
    noise = float(np.sqrt(np.mean(np.clip(residual, -0.05, 0.05) ** 2)))
    dx = np.abs(np.diff(x, axis=1))
    at_block = dx[:, 7::8].mean() if dx.shape[1] > 8 else 0.0
    blockiness = float(at_block - dx.mean())  # JPEG: steps at 8-pixel block edges
    gradient = float(np.hypot(*np.gradient(cv2.GaussianBlur(x, (0, 0), 1.0))).mean())
    return np.array(
        [
            mean,
            std,
            float(np.mean(z**3)),
            float(np.mean(z**4)),
            noise,
            blockiness,
            gradient,
            float(np.mean(x < 0.02)),
            float(np.mean(x > 0.98)),
        ],
        np.float64,
    )


def _logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 500) -> np.ndarray:
    """Class-balanced L2 logistic regression by gradient descent (weights, bias last)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    weight = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (weight * (p - y)) / len(y) + l2 * np.r_[w[:-1], 0.0]
        w -= 0.5 * grad
    return w


@dataclass
class CheckResult:
    balanced_accuracy: float  # 0.5 = cannot tell clean from projected
    clean: int
    projected: int
    folds: int

    def __str__(self) -> str:
        return (
            f"clean-vs-projected classifier on whole-image statistics: balanced accuracy "
            f"{self.balanced_accuracy:.2f} ({self.folds}-fold, {self.clean} clean / "
            f"{self.projected} projected; 0.5 = indistinguishable)"
        )


def separability(features: np.ndarray, projected: np.ndarray, seed: int = 0) -> CheckResult:
    """Stratified k-fold balanced accuracy of the logistic regression."""
    y = projected.astype(np.float64)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    folds = min(5, n_pos, n_neg)
    if folds < 2:
        raise ValueError("need at least two clean and two projected scans")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), np.int64)
    for cls in (0.0, 1.0):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold_of[idx] = np.arange(idx.size) % folds
    predicted = np.empty(len(y))
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        mu, sd = features[train].mean(0), features[train].std(0) + 1e-12
        w = _logistic_fit((features[train] - mu) / sd, y[train])
        xt = np.hstack([(features[test] - mu) / sd, np.ones((test.sum(), 1))])
        predicted[test] = (xt @ w > 0).astype(np.float64)
    recall = [float(np.mean(predicted[y == c] == c)) for c in (0.0, 1.0)]
    return CheckResult(float(np.mean(recall)), n_neg, n_pos, folds)


def check_dataset(data_dir: Path | str, seed: int = 0) -> CheckResult:
    """Run the check on a `cargoscan tip` (or synth) output folder's high channels."""
    data_dir = Path(data_dir)
    rows, labels = [], []
    for image in read_coco(data_dir).images:
        scan = load_scan(data_dir / image.file_name)
        rows.append(image_features(scan.high))
        labels.append(not image.clean)
    return separability(np.array(rows), np.array(labels), seed)
