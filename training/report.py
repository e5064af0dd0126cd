"""Evaluation pictures: curves per category and contact sheets of the worst cases.

A number says how good a model is; a picture says where it fails. These are
what an ML engineer opens first after `cargoscan evaluate`:

- pr_curves.png: precision against recall per category (a finding is a true
  positive when it hits a not yet matched instance, see `training.metrics`);
- detection_vs_far.png: detection rate against false-alarm rate per category
  and per scan, the curve customs reads the operating point from;
- detection_by_attenuation.png: the detection rate at the operating point per
  band of attenuation where the threats sit, with the instance counts: what
  the beam could still see through and what it could not;
- detection_by_contrast.png and detection_by_concealment.png: the same per band
  of how much each threat changes the image and per hiding place, where the
  data set records them (`cargoscan synth` does);
- worst_cases.png: the instances found with the lowest scores (misses) and
  the highest-scoring findings on clean scans (false alarms), cropped from
  the material view with truth in green and findings in red.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.boxes import hits
from inference.render import render
from inference.scan import Scan
from training.metrics import ScanFindings, category_scores

TILE = 300  # px, side of one contact-sheet tile
GREEN, RED = (40, 220, 40), (255, 50, 50)


def _figure() -> tuple[Any, Any]:
    """A figure outside pyplot's global state: no backend switch, nothing to close."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), dpi=110)
    return fig, fig.add_subplot()


def precision_recall(scans: Sequence[ScanFindings], category: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall as the score threshold falls, greedy matching by score."""
    scored = []  # (score, is true positive)
    total = 0
    for s in scans:
        mine = np.flatnonzero(s.labels == category)
        gt = s.gt_boxes[s.gt_labels == category]
        total += len(gt)
        order = mine[np.argsort(-s.scores[mine])]
        h = hits(s.boxes[order], gt) if len(gt) else np.zeros((len(order), 0), bool)
        taken = np.zeros(len(gt), bool)
        for row, idx in enumerate(order):
            free = np.flatnonzero(h[row] & ~taken)
            if free.size:
                taken[free[0]] = True
            scored.append((float(s.scores[idx]), bool(free.size)))
    if not scored or total == 0:
        return np.zeros(0), np.zeros(0)
    scored.sort(key=lambda t: -t[0])
    tp = np.cumsum([t for _, t in scored])
    precision = tp / np.arange(1, len(scored) + 1)
    return precision, tp / total


def detection_vs_far(scans: Sequence[ScanFindings], category: int) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rates, detection rates) over every threshold that changes either."""
    clean_max, instance_best = category_scores(scans, category)
    if not clean_max.size or not instance_best.size:
        return np.zeros(0), np.zeros(0)
    ts = np.unique(np.concatenate([clean_max, instance_best, [0.0]]))[::-1]
    far = (clean_max[None, :] > ts[:, None]).mean(axis=1)
    dr = (instance_best[None, :] > ts[:, None]).mean(axis=1)
    return far, dr


def scan_level_curve(
    scans: Sequence[ScanFindings], thresholds: dict[int, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Scan-level (false-alarm rate, detection rate) as all thresholds scale together.

    A scan's score is its largest score / category threshold, so the curve
    passes through the operating point where every category sits at its own
    threshold (ratio 1).
    """
    ratios = np.array(
        [
            max(
                (
                    float(sc) / max(thresholds[int(lab)], 1e-6)
                    for sc, lab in zip(s.scores, s.labels, strict=True)
                ),
                default=0.0,
            )
            for s in scans
        ]
    )
    clean = np.array([s.clean for s in scans])
    if not clean.any() or clean.all():
        return np.zeros(0), np.zeros(0)
    ts = np.unique(np.concatenate([ratios, [0.0]]))[::-1]
    far = (ratios[clean][None, :] > ts[:, None]).mean(axis=1)
    dr = (ratios[~clean][None, :] > ts[:, None]).mean(axis=1)
    return far, dr


def curves(
    scans: Sequence[ScanFindings],
    categories: Sequence[str],
    thresholds: dict[int, float],
    far: float,
    out: Path,
) -> list[Path]:
    """Write pr_curves.png and detection_vs_far.png into `out`."""
    fig, ax = _figure()
    for c, name in enumerate(categories):
        p, r = precision_recall(scans, c)
        if r.size:
            ax.plot(r, np.maximum.accumulate(p[::-1])[::-1], label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01))
    ax.set_title("Precision-recall per category")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left")
    pr_path = out / "pr_curves.png"
    fig.tight_layout()
    fig.savefig(pr_path)

    fig, ax = _figure()
    n_clean = sum(s.clean for s in scans)
    floor = 1.0 / max(2 * n_clean, 1)  # a rate of 0 drawn at half of one clean scan
    for c, name in enumerate(categories):
        f, d = detection_vs_far(scans, c)
        if f.size:
            ax.step(np.maximum(f, floor), d, where="post", label=name)
    f, d = scan_level_curve(scans, thresholds)
    if f.size:
        ax.step(np.maximum(f, floor), d, where="post", color="black", lw=2, label="scan")
    ax.axvline(far, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set(xlabel=f"false-alarm rate (share of {n_clean} clean scans)", ylabel="detection rate")
    ax.set_ylim(0, 1.01)
    ax.set_title("Detection rate vs false-alarm rate")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    far_path = out / "detection_vs_far.png"
    fig.tight_layout()
    fig.savefig(far_path)
    return [pr_path, far_path]


SPLITS = {
    # metrics.json key: (what the groups are, tick label of a group)
    "by_attenuation": ("attenuation where the threat sits", "-ln T {}"),
    "by_contrast": ("how much the threat changes the image (|contrast|, -ln T)", "{}"),
    "by_concealment": ("hiding place", "{}"),
}


def split_bars(split: dict[str, Any], key: str, out: Path) -> Path | None:
    """detection_<by_...>.png from one of metrics.json's splits (`SPLITS`): one group of
    bars per band or place, one bar per category and a black one for all threats
    together. None, and no picture, when no instance has the split's tag."""
    groups = {**split["categories"], "all threats": split["all"]}
    bands = list(split["all"])
    if not any(split["all"][b]["instances"] for b in bands):
        return None
    what, tick = SPLITS[key]
    fig, ax = _figure()
    fig.set_size_inches(max(9, 1.3 * len(bands) + 3), 5)
    width = 0.8 / len(groups)
    for k, (name, per_band) in enumerate(groups.items()):
        xs = np.arange(len(bands)) + (k - (len(groups) - 1) / 2) * width
        # A category may have no instance in a place at all (no entry there).
        entries = [per_band.get(b, {}) for b in bands]
        rates = [e.get("rate") or 0.0 for e in entries]
        colour = "black" if name == "all threats" else None
        drawn = ax.bar(xs, rates, width, label=name, color=colour)
        # Found none of several: mark it, so it does not read as "none there".
        for x, e in zip(xs, entries, strict=True):
            if e.get("instances") and not e["detected"]:
                ax.text(
                    x, 0.01, "0", ha="center", fontsize=7, color=drawn.patches[0].get_facecolor()
                )
    for x, b in enumerate(bands):
        ax.text(x, 1.02, f"n={split['all'][b]['instances']}", ha="center", fontsize=8)
    ax.set_xticks(np.arange(len(bands)), [tick.format(b) for b in bands])
    ax.set(ylabel="detection rate", ylim=(0, 1.1))
    ax.set_title(f"Detection rate at {100 * float(split['far']):g} % false alarms by {what}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the bars
    path = out / f"detection_{key}.png"
    fig.tight_layout()
    fig.savefig(path)
    return path


def _view(scan: Scan) -> np.ndarray:
    return render(scan, "material" if scan.low is not None else "grey")


def _tile(
    rgb: np.ndarray,
    focus: np.ndarray,
    truth: Sequence[np.ndarray],
    found: Sequence[tuple[np.ndarray, float]],
    caption: str,
) -> np.ndarray:
    """A square crop around `focus` with boxes drawn, scaled to TILE, captioned."""
    h, w = rgb.shape[:2]
    cx, cy = (focus[0] + focus[2]) / 2, (focus[1] + focus[3]) / 2
    side = int(max(focus[2] - focus[0], focus[3] - focus[1], 160) * 1.6)
    x0 = int(np.clip(cx - side / 2, 0, max(w - side, 0)))
    y0 = int(np.clip(cy - side / 2, 0, max(h - side, 0)))
    crop = np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side])
    scale = TILE / max(crop.shape[:2])
    crop = cv2.resize(
        crop, (max(int(crop.shape[1] * scale), 1), max(int(crop.shape[0] * scale), 1))
    )
    tile = np.zeros((TILE + 22, TILE, 3), np.uint8)
    tile[: crop.shape[0], : crop.shape[1]] = crop

    def box(b: np.ndarray, colour: tuple[int, int, int]) -> None:
        p = ((np.asarray(b, np.float64) - [x0, y0, x0, y0]) * scale).round().astype(int)
        cv2.rectangle(tile, (p[0], p[1]), (p[2], p[3]), colour, 2)

    for b in truth:
        box(b, GREEN)
    for b, score in found:
        box(b, RED)
        p = ((np.asarray(b) - [x0, y0, x0, y0]) * scale).astype(int)
        cv2.putText(tile, f"{score:.2f}", (max(p[0], 0), max(p[1] - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, RED, 1, cv2.LINE_AA)  # fmt: skip
    cv2.putText(tile, caption[:48], (3, TILE + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (230, 230, 230), 1, cv2.LINE_AA)  # fmt: skip
    return tile


def _sheet(tiles: list[np.ndarray], columns: int, title: str) -> np.ndarray:
    rows = [tiles[k : k + columns] for k in range(0, len(tiles), columns)] or [[]]
    th, tw = TILE + 22, TILE
    sheet = np.full((30 + len(rows) * th, columns * tw, 3), 20, np.uint8)
    cv2.putText(sheet, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                cv2.LINE_AA)  # fmt: skip
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            sheet[30 + r * th : 30 + (r + 1) * th, c * tw : (c + 1) * tw] = tile
    return sheet


def worst_cases(
    source: Any,
    scans: Sequence[ScanFindings],
    names: Sequence[str],
    categories: Sequence[str],
    thresholds: dict[int, float],
    out: Path,
    *,
    count: int = 8,
    single_energy: bool = False,
) -> Path:
    """worst_cases.png: the weakest detections and the strongest false alarms."""
    misses = []  # (best hitting score / threshold, scan index, instance index)
    for i, s in enumerate(scans):
        for j, (gt, lab) in enumerate(zip(s.gt_boxes, s.gt_labels, strict=True)):
            mine = s.labels == lab
            h = hits(s.boxes[mine], gt[None])[:, 0]
            best = float(s.scores[mine][h].max()) if h.any() else 0.0
            misses.append((best / max(thresholds[int(lab)], 1e-6), i, j))
    alarms = []  # (score / threshold, scan index, finding index), clean scans only
    for i, s in enumerate(scans):
        if s.clean:
            for j, (sc, lab) in enumerate(zip(s.scores, s.labels, strict=True)):
                alarms.append((float(sc) / max(thresholds[int(lab)], 1e-6), i, j))
    misses.sort()
    alarms.sort(reverse=True)
    views: dict[int, np.ndarray] = {}

    def view(i: int) -> np.ndarray:
        if i not in views:
            scan = source.labelled(i).scan
            views[i] = _view(replace(scan, low=None) if single_energy else scan)
        return views[i]

    tiles = []
    for ratio, i, j in misses[:count]:
        s = scans[i]
        lab = int(s.gt_labels[j])
        mine = np.flatnonzero(s.labels == lab)
        near = [(s.boxes[k], float(s.scores[k])) for k in mine[:3]]
        caption = f"MISS {categories[lab]} {ratio:.2f}xT {names[i]}"
        tiles.append(_tile(view(i), s.gt_boxes[j], [s.gt_boxes[j]], near, caption))
    for ratio, i, j in alarms[:count]:
        s = scans[i]
        caption = f"FA {categories[int(s.labels[j])]} {ratio:.2f}xT {names[i]}"
        tiles.append(_tile(view(i), s.boxes[j], [], [(s.boxes[j], float(s.scores[j]))], caption))
    sheet = _sheet(
        tiles,
        4,
        "Worst misses (top rows) and worst false alarms on clean scans; xT = score/threshold",
    )
    path = out / "worst_cases.png"
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


def alarm_sheet(
    alarmed: Sequence[tuple[Path, Scan, Sequence[Any]]],
    thresholds: dict[str, float],
    path: Path,
    count: int = 12,
) -> Path:
    """The alarmed clean scans, whole, with the findings that raised the alarm."""
    width = 600
    tiles = []
    for file, scan, findings in alarmed[:count]:
        rgb = _view(scan)
        scale = width / rgb.shape[1]
        tile = cv2.resize(
            rgb, (width, max(int(rgb.shape[0] * scale), 1)), interpolation=cv2.INTER_AREA
        )
        tile = np.ascontiguousarray(tile)
        for f in findings:
            p = (np.asarray(f.box) * scale).round().astype(int)
            cv2.rectangle(tile, (p[0], p[1]), (p[2], p[3]), RED, 2)
            cv2.putText(tile, f"{f.category} {f.score:.2f}",
                        (p[0], max(p[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, RED, 1,
                        cv2.LINE_AA)  # fmt: skip
        label = np.full((20, width, 3), 20, np.uint8)
        cv2.putText(label, file.name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1)
        tiles.append(np.vstack([label, tile]))
    if not tiles:
        tiles = [np.full((60, width, 3), 20, np.uint8)]
        cv2.putText(tiles[0], "no alarms", (8, 35), cv2.FONT_HERSHEY_SIMPLEX, 0.7, GREEN, 2)
    sheet = np.vstack(tiles)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path
