"""`cargoscan verifier`: train the second stage (:mod:`inference.verifier`) on a model's own
candidates and attach it to the model's card.

How: the detector runs on labelled scans (threats projected into real scans, with the
backgrounds left clean too: `cargoscan tip`); each finding the engine reports (from a score of
0.05) is a candidate, a hit when it overlaps a labelled threat (IoU >= 0.3), and the
verifier learns hits from the rest on crops of the model input around them (and the
detector's score, the box's sides and category). A share of the backgrounds is held
back: the epoch kept is the one whose candidates, scored as the engine will score them,
give the highest scan-level detection rate at 1 % false alarms there. The verifier is
written beside the model (``NAME.verifier.onnx``) and named in its card; its thresholds
are then set again with `cargoscan export --val` / `calibrate` and `commission`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from inference.boxes import iou_matrix
from inference.contracts import card_text
from inference.engine import Engine
from inference.scan import Scan
from inference.verifier import CROP, VIEWS, View, crops, features
from training.augment import eight_bit_export_of
from training.data import LabelledScan, as_paths, open_sources
from training.evaluate import Tally
from training.model import ONNX_OPSET

__all__ = ["Candidates", "VerifierNet", "mine", "train_verifier"]

HIT_IOU = 0.3
"""A candidate overlapping a labelled threat this much is a hit (category aside: the
verifier tells threats from structure; the detector names the category)."""
FLOOR = 0.10
"""Candidates the detector scores at least this are verified, the others dropped. Chosen
on held-back backgrounds of tip-train: 7.4 candidates a scan, scan-level detection at 1 %
false alarms 0.935 there (0.928 with every candidate from 0.05, 0.902 from 0.20)."""
BATCH = 128
LR = 2e-3


class VerifierNet(nn.Module):
    """Six 3x3 convolutions (16-96 channels, three of stride 2) over the 64 px crop, pooled,
    beside the candidate's features, into one logit: ~66 MFLOP a candidate."""

    def __init__(self, n_features: int, channels: int = 2) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            )

        self.body = nn.Sequential(
            block(channels, 16, 1), block(16, 32, 2), block(32, 32, 1),
            block(32, 64, 2), block(64, 64, 1), block(64, 96, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Linear(96 + n_features, 64), nn.ReLU(inplace=True), nn.Linear(64, 1)
        )

    def forward(self, crop: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.body(crop), feature], 1)).squeeze(1)


@dataclass
class Candidates:
    """The detector's candidates on a labelled set, scan by scan (``scan`` indexes into
    the set, ``group`` is the scan's background, or its own name)."""

    crops: np.ndarray  # (N, 2 * views, CROP, CROP) float16
    features: np.ndarray  # (N, F) float32
    hit: np.ndarray  # (N,) bool
    scan: np.ndarray  # (N,) int
    boxes: np.ndarray  # (N, 4) scan pixels
    scores: np.ndarray  # (N,) detector scores
    labels: np.ndarray  # (N,) category indices
    groups: list[str]  # per scan
    categories: list[str]
    bit_depths: list[int]  # of the scans mined: those the verifier will apply to
    views: tuple[View, ...] = VIEWS


def _groups(data: Sequence[Path]) -> list[str]:
    """Each scan's background (projections into one real scan share it), in set order."""
    groups: list[str] = []
    for path in data:
        images = json.loads((path / "annotations.json").read_text())["images"]
        for image in images:
            tip = image.get("tip") or {}
            groups.append(f"{path}:{tip.get('background') or image['file_name']}")
    return groups


class SentScans:
    """Labelled sets read as one, each scan as the engine is sent it: the sets in
    ``exported`` (16-bit synthetic ones) as simulated 8-bit single-energy exports, seeded
    by their index as `cargoscan evaluate --eight-bit` sends them."""

    def __init__(self, data: Sequence[Path], exported: Sequence[Path], categories: list[str]):
        self.sets = [(p, open_sources(p, categories), p in exported) for p in data]
        self.offsets = np.cumsum([0] + [len(source) for _, source, _ in self.sets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def sent(self, k: int) -> tuple[LabelledScan, Scan]:
        """Scan ``k`` as labelled, and as sent."""
        at = int(np.searchsorted(self.offsets, k, side="right")) - 1
        _, source, exported = self.sets[at]
        index = k - int(self.offsets[at])
        item = source.labelled(index)
        return item, eight_bit_export_of(item.scan, index) if exported else item.scan


def mine(
    model: Path,
    data: Sequence[Path],
    exported: Sequence[Path] = (),
    progress: bool = True,
    views: Sequence[View] = VIEWS,
) -> Candidates:
    """Every candidate of the detector alone (no verifier) on ``data`` (COCO sets; those in
    ``exported`` sent as 8-bit exports, :class:`SentScans`), cut as ``views``."""
    engine = Engine.load(model, verifier=False)
    source = SentScans(data, exported, list(engine.categories))
    arrays = ("crops", "features", "hit", "scan", "boxes", "scores", "labels")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in arrays}
    depths: set[int] = set()
    for k in tqdm(range(len(source)), desc="candidates", unit="scan", disable=not progress):
        item, scan = source.sent(k)
        depths.add(int(scan.bit_depth))
        analysis = engine.analyze(scan)
        found = analysis.findings
        boxes = np.array([f.box for f in found], np.float64).reshape(-1, 4)
        scores = np.array([f.score for f in found], np.float32)
        labels = np.array([engine.categories.index(f.category) for f in found], np.int64)
        hit = np.zeros(len(found), bool)
        if len(found) and len(item.boxes):
            hit = iou_matrix(boxes, item.boxes).max(axis=1) >= HIT_IOU
        mi = analysis.model_input
        assert mi is not None
        cut = crops(mi.tensor, mi.to_model(boxes), mi.scaled_hw, views)
        parts["crops"].append(cut.astype(np.float16))
        parts["features"].append(features(scores, boxes, labels, len(engine.categories)))
        parts["hit"].append(hit)
        parts["scan"].append(np.full(len(found), k))
        parts["boxes"].append(boxes)
        parts["scores"].append(scores)
        parts["labels"].append(labels)
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    return Candidates(
        **joined,
        groups=_groups(data),
        categories=list(engine.categories),
        bit_depths=sorted(depths),
        views=tuple(views),
    )


def verified_scores(candidates: Candidates, probabilities: np.ndarray) -> np.ndarray:
    """The engine's rule: from the floor up the verifier's probability, below it dropped
    (a score of -1: never over any threshold)."""
    return np.where(candidates.scores >= FLOOR, probabilities, -1.0).astype(np.float32)


def scan_detection(
    source: SentScans, candidates: Candidates, scores: np.ndarray, scans: set[int], far: str
) -> float:
    """Scan-level detection rate at ``far`` false alarms, `cargoscan evaluate`'s figure,
    over ``scans`` of ``source`` with ``scores`` for the candidates (negative: dropped)."""
    tally = Tally(candidates.categories)
    for k in sorted(scans):
        item, scan = source.sent(k)
        own = (candidates.scan == k) & (scores >= 0)
        found = (candidates.boxes[own], scores[own], candidates.labels[own])
        tally.add(item, scan, found)
    metrics, _ = tally.metrics()
    return float(metrics["scan"]["detection_rate_at_far"][far])


def _probabilities(net: VerifierNet, candidates: Candidates, index: np.ndarray) -> np.ndarray:
    net.eval()
    out = np.zeros(len(candidates.scores), np.float32)
    with torch.no_grad():
        for i in range(0, len(index), 512):
            b = index[i : i + 512]
            logit = net(
                torch.from_numpy(candidates.crops[b].astype(np.float32)),
                torch.from_numpy(candidates.features[b]),
            )
            out[b] = torch.sigmoid(logit).numpy()
    return out


class VerifierEnsemble(nn.Module):
    """Members trained alike from different seeds, their logits averaged: one ONNX graph
    with the single network's inputs and output. Why: on 93 backgrounds one training's
    per-category figures swing widely with its seed and data order (currency 0.55 in one,
    0.24 in another); the average of a few is steadier and better than a typical member."""

    def __init__(self, members: Sequence[VerifierNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, crop: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(crop, feature) for m in self.members]).mean(0)


@dataclass
class _Split:
    """Which candidates train and which scans (backgrounds held back) choose the epoch."""

    train_idx: np.ndarray
    val_idx: np.ndarray
    val_scans: set[int]


def _augment(crop: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A batch of crops mirrored along the scan and/or up-down (a threat is one either way)."""
    if rng.random() < 0.5:
        crop = crop.flip(3)
    if rng.random() < 0.5:
        crop = crop.flip(2)
    return crop


def _fit_member(
    candidates: Candidates,
    source: SentScans,
    split: _Split,
    *,
    epochs: int,
    seed: int,
    path: Path,
    desc: str,
    progress: bool,
) -> tuple[VerifierNet, list[dict[str, float | None]], tuple[float | None, int]]:
    """One network trained from ``seed``; the epoch with the best held-back scan-level
    detection (the last one when nothing is held back) is kept and saved to ``path``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_idx = split.train_idx
    hits = candidates.hit.astype(np.float32)
    positives = max(float(hits[train_idx].sum()), 1.0)
    # channels-last convolutions: 1.45x the steps a second on this 2-core CPU, same math
    net = VerifierNet(candidates.features.shape[1], candidates.crops.shape[1])
    net = net.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(net.parameters(), LR, weight_decay=1e-4)
    steps = epochs * (len(train_idx) // BATCH + 1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, LR, total_steps=steps)
    # Hits are ~8 % of candidates: weighted by the square root of the imbalance.
    weight = torch.tensor(((len(train_idx) - positives) / positives) ** 0.5)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=weight)
    history: list[dict[str, float | None]] = []
    best: tuple[float | None, int] = (-1.0, 0)
    for epoch in range(1, epochs + 1):
        net.train()
        total = 0.0
        order = rng.permutation(train_idx)
        batches = range(0, len(order), BATCH)
        for i in tqdm(batches, desc=f"{desc} epoch {epoch}", disable=not progress):
            b = order[i : i + BATCH]
            crop = _augment(torch.from_numpy(candidates.crops[b].astype(np.float32)), rng)
            crop = crop.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(
                net(crop, torch.from_numpy(candidates.features[b])), torch.from_numpy(hits[b])
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(b)
        rate = None
        if split.val_scans:  # else every epoch is kept over the one before: the last is kept
            probabilities = _probabilities(net, candidates, split.val_idx)
            rate = scan_detection(
                source, candidates, verified_scores(candidates, probabilities),
                split.val_scans, "0.01",
            )  # fmt: skip
        history.append({"epoch": epoch, "loss": total / len(train_idx), "val_scan_rate": rate})
        if rate is None or rate > (best[0] or -1.0):
            best = (rate, epoch)
            torch.save(net.state_dict(), path)
    net.load_state_dict(torch.load(path))
    return net.to(memory_format=torch.contiguous_format), history, best


def train_verifier(
    model: Path,
    data: Sequence[Path],
    out: Path,
    *,
    exported: Sequence[Path] = (),
    epochs: int = 10,
    val_share: float = 0.2,
    members: int = 1,
    views: Sequence[View] = VIEWS,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Mine, train ``members`` networks (seeds ``seed``, ``seed + 1``, ...), each keeping
    its best epoch on the held-back backgrounds, write their average as
    ``MODEL.verifier.onnx`` beside ``model`` and name it in the card; returns the record
    (also under ``out``). ``exported`` sets (synthetic, 16-bit) are sent as 8-bit exports:
    scenes other than the site's, so that the verifier does not take every structure it
    never saw for a threat."""
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    exported = as_paths(exported) if exported else []
    data = as_paths(data) + exported
    rng = np.random.default_rng(seed)
    candidates = mine(model, data, exported, progress, views)
    source = SentScans(data, exported, candidates.categories)
    groups = sorted(set(candidates.groups))
    size = round(len(groups) * val_share) if val_share > 0 else 0
    held = set(rng.choice(groups, size=max(1, size), replace=False)) if val_share > 0 else set()
    val_scans = {k for k, g in enumerate(candidates.groups) if g in held}
    is_val = np.isin(candidates.scan, sorted(val_scans))
    split = _Split(np.flatnonzero(~is_val), np.flatnonzero(is_val), val_scans)
    if not len(split.train_idx) or not candidates.hit[split.train_idx].any():
        raise ValueError("no candidate hits a labelled threat: nothing to learn from")
    out.mkdir(parents=True, exist_ok=True)
    base = (
        scan_detection(source, candidates, candidates.scores, val_scans, "0.01") if held else None
    )
    nets, histories, epochs_kept = [], [], []
    for m in range(members):
        net, history, best = _fit_member(
            candidates, source, split, epochs=epochs, seed=seed + m,
            path=out / f"member{m}.pt", desc=f"verifier {m + 1}/{members}", progress=progress,
        )  # fmt: skip
        nets.append(net)
        histories.append(history)
        epochs_kept.append(best)
    ensemble = VerifierEnsemble(nets)
    torch.save(ensemble.state_dict(), out / "verifier.pt")
    verified = None
    if held:
        probabilities = _probabilities(ensemble, candidates, split.val_idx)
        verified = scan_detection(
            source, candidates, verified_scores(candidates, probabilities), val_scans, "0.01"
        )
    record = _attach(model, ensemble, candidates, data, exported, histories, epochs_kept)
    record["val_scan_rate_at_1pct"] = {"detector": base, "verified": verified}
    record["val"] = {"backgrounds": len(held), "scans": len(val_scans)}
    _write_card_section(model, record)
    (out / "verifier.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _attach(
    model: Path,
    net: nn.Module,
    candidates: Candidates,
    data: Sequence[Path],
    exported: Sequence[Path],
    histories: list[list[dict[str, float | None]]],
    kept: list[tuple[float | None, int]],
) -> dict[str, Any]:
    """Export the verifier to ONNX beside ``model``; its card section (not yet written)."""
    net.eval()
    path = model.with_suffix(".verifier.onnx")
    torch.onnx.export(
        net,
        (
            torch.zeros(1, candidates.crops.shape[1], CROP, CROP),
            torch.zeros(1, candidates.features.shape[1]),
        ),
        str(path),
        input_names=["crops", "features"],
        output_names=["logits"],
        dynamic_axes={"crops": {0: "n"}, "features": {0: "n"}, "logits": {0: "n"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    return {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "floor": FLOOR,
        "bit_depths": candidates.bit_depths,
        "views": [list(v) for v in candidates.views],
        "trained_on": [str(p) for p in data],
        "sent_as_8bit_exports": [str(p) for p in exported],
        "members": len(histories),
        "epochs": [epoch for _, epoch in kept],  # kept, per member
        "history": histories,  # per member, per epoch
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_card_section(model: Path, record: dict[str, Any]) -> None:
    """Name the verifier in the model's card."""
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["verifier"] = record
    card_path.write_text(card_text(card, str(card_path)))
