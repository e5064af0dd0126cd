"""Hard negatives: where the model itself fires on no threat, fed back as training crops.

Training crops are cut around a threat most of the time (`Augment.object_crop_p`)
and anywhere otherwise; a 384 px crop shows about 6 % of a 3000x800 scan. So
the few things in clean cargo that look like a threat (a dense block at floor
level reads like a brick in a floor cavity) are seen rarely, while the crops
around real bricks teach the model that dense blocks score high. At 1 % false
alarms the threshold is set by the highest clean scores, so those few regions
set every category's detection rate.

Bootstrapping, as detectors have done since Sung and Poggio: before each epoch
the current model (the weight average, which is what gets exported) runs over a
rotating share of the training scans, whole, exported to ONNX and run by ONNX
Runtime as the engine runs them; its findings that hit no labelled threat join
a pool, and a set share of the epoch's crops is cut around pool regions, drawn
by score. A scan's entries are replaced each time it is mined again, so regions
the model has learnt to leave alone drop out.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from inference.boxes import hits
from training.model import CargoNet, ExportWrapper, pad32, to_onnx
from training.objective import decode

Findings = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (N, 4), scores (N,), labels (N,)


def whole_scan_findings(
    wrapper: ExportWrapper, image: np.ndarray, device: torch.device
) -> Findings:
    """Boxes, scores and labels on one whole pre-processed scan (2, H, W), through
    the exported graph's maths; the scan is padded to a multiple of 32 as the engine does."""
    x = pad32(torch.from_numpy(np.asarray(image, np.float32))[None])  # cache: float16
    with torch.no_grad():
        heat, box, _ = wrapper(x.to(device))
    return decode(heat.cpu(), box.cpu())[0]


def false_findings(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    gt_boxes: np.ndarray,
    min_score: float,
    per_scan: int,
) -> list[tuple[np.ndarray, int, float]]:
    """The strongest findings that hit no labelled threat of any category, at most
    `per_scan`, each at least `min_score`, none hitting a stronger one already kept
    (one region, one entry)."""
    order = np.argsort(-np.asarray(scores))
    kept: list[tuple[np.ndarray, int, float]] = []
    on_threat = hits(boxes, gt_boxes).any(axis=1) if len(gt_boxes) else np.zeros(len(boxes), bool)
    for n in order:
        if scores[n] < min_score or len(kept) >= per_scan:
            break
        if on_threat[n]:
            continue
        box = np.asarray(boxes[n], np.float32)
        if kept and hits(box[None], np.stack([k[0] for k in kept])).any():
            continue
        kept.append((box, int(labels[n]), float(scores[n])))
    return kept


@dataclass
class HardNegativePool:
    """Mined regions per training scan (global index into the mixed sources)."""

    regions: dict[int, list[tuple[np.ndarray, int, float]]]

    @classmethod
    def empty(cls) -> HardNegativePool:
        return cls({})

    def update(self, index: int, found: list[tuple[np.ndarray, int, float]]) -> None:
        """What mining scan `index` found now replaces what it found before."""
        if found:
            self.regions[index] = found
        else:
            self.regions.pop(index, None)

    def __len__(self) -> int:
        return sum(len(v) for v in self.regions.values())

    def draw(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`count` (scan index, region box) pairs, each region drawn in proportion to its score."""
        flat = [(i, box, score) for i, found in self.regions.items() for box, _, score in found]
        if not flat or count <= 0:
            return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
        weights = np.array([s for _, _, s in flat], np.float64)
        picks = rng.choice(len(flat), size=count, p=weights / weights.sum())
        indices = np.array([flat[k][0] for k in picks], np.int64)
        boxes = np.stack([flat[k][1] for k in picks]).astype(np.float32)
        return indices, boxes

    def summary(self, categories: Sequence[str]) -> dict[str, Any]:
        """For metrics.jsonl: how big the pool is and what the model confuses."""
        scores = [s for found in self.regions.values() for _, _, s in found]
        by_category = {name: 0 for name in categories}
        for found in self.regions.values():
            for _, c, _ in found:
                by_category[categories[c]] += 1
        return {
            "scans": len(self.regions),
            "regions": len(scores),
            "mean_score": float(np.mean(scores)) if scores else None,
            "max_score": float(np.max(scores)) if scores else None,
            "by_category": by_category,
        }

    def state(self) -> dict[str, torch.Tensor]:
        """Plain tensors for a checkpoint (loadable with weights_only=True)."""
        rows = [
            (i, c, s, *box.tolist()) for i, found in self.regions.items() for box, c, s in found
        ]
        table = torch.tensor(rows, dtype=torch.float64).reshape(-1, 7)
        return {"table": table}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> HardNegativePool:
        pool = cls.empty()
        for row in state["table"].tolist():
            index, category, score, *box = row
            pool.regions.setdefault(int(index), []).append(
                (np.array(box, np.float32), int(category), float(score))
            )
        return pool


def scans_to_mine(total: int, per_epoch: int, epoch: int, seed: int) -> np.ndarray:
    """The training scans mined before `epoch`: consecutive slices of one fixed
    shuffle, so every scan is mined once before any is mined again."""
    order = np.random.default_rng([seed, 4242]).permutation(total)
    count = min(per_epoch, total)
    return np.take(order, np.arange(epoch * count, (epoch + 1) * count), mode="wrap")


def onnx_findings(net: CargoNet) -> Callable[[np.ndarray], Findings]:
    """The network as the engine runs it: exported to ONNX, run by ONNX Runtime on the
    CPU (about ten times faster than torch there on a whole scan, ~0.1 s against
    1.2 s at 800x2800). Returns a function from a pre-processed scan to its findings."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        to_onnx(copy.deepcopy(net).cpu(), path)  # a copy: export leaves it in eval mode
        graph = path.read_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def run(image: np.ndarray) -> Findings:
        x = pad32(torch.from_numpy(np.asarray(image, np.float32))[None]).numpy()
        heat, box, _ = session.run(None, {"input": x})
        return decode(torch.from_numpy(heat), torch.from_numpy(box))[0]

    return run


def mine(
    findings: Callable[[np.ndarray], Findings],
    source: Any,
    indices: Sequence[int],
    min_score: float,
    per_scan: int,
    progress: bool = False,
) -> dict[int, list[tuple[np.ndarray, int, float]]]:
    """False findings on each of `source[indices]` (whole scans)."""
    found = {}
    for index in tqdm(indices, desc="mine hard negatives", unit="scan", disable=not progress):
        s = source[int(index)]
        boxes, scores, labels = findings(s.image)
        found[int(index)] = false_findings(boxes, scores, labels, s.boxes, min_score, per_scan)
    return found
