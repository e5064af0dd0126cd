"""Detection figures the way customs counts them: detection rate at a fixed false-alarm rate.

A false alarm is a clean scan (no threat of any kind) sent for inspection, so
the false-alarm rate of a category is the share of clean scans with at least
one finding of that category above the threshold; the threshold is the one
that gives the wanted rate on the data at hand. The detection rate is the share
of a category's true instances hit by a finding of that category above the
threshold. A finding hits an instance when their IoU is at least `iou` or the
finding's centre lies inside the instance's box (threat boxes are often loose
or partly hidden, and an officer looks where the centre points).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from inference.boxes import hits


@dataclass
class ScanFindings:
    """One scan: what the model found and what is really there (boxes x0, y0, x1, y1)."""

    boxes: np.ndarray  # (N, 4) findings
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) category index
    gt_boxes: np.ndarray  # (M, 4)
    gt_labels: np.ndarray  # (M,)
    # (M,) how much matter the beam crossed where each instance sits: the median
    # high-energy attenuation (-ln T) over its box; None when not measured.
    gt_attenuation: np.ndarray | None = None
    # (M,) what each instance changes in the image (`synth`'s `contrast`, NaN unknown)
    # and where it is hidden ("" unknown); empty when the data set does not say.
    gt_contrast: np.ndarray | None = None
    gt_places: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return len(self.gt_labels) == 0


def threshold_at_far(clean_max_scores: np.ndarray, far: float) -> float:
    """Smallest threshold whose false-alarm rate is at most `far`.

    The false-alarm rate of a threshold is the share of clean scans with a
    score strictly above it.

    `clean_max_scores` holds, per clean scan, its highest score for the
    category (0 when it has no finding of it). With n clean scans at most
    floor(far * n) of them may exceed the threshold.
    """
    s = np.sort(np.asarray(clean_max_scores, np.float64))[::-1]
    if s.size == 0:
        raise ValueError("no clean scans: a false-alarm rate cannot be set")
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"false-alarm rate must be within [0, 1], got {far}")
    allowed = int(np.floor(far * s.size + 1e-9))
    return float(s[allowed]) if allowed < s.size else 0.0


def category_scores(scans: Sequence[ScanFindings], category: int) -> tuple[np.ndarray, np.ndarray]:
    """Per clean scan its top score for the category; per true instance the top score hitting it."""
    clean_max, instance_best = [], []
    for scan in scans:
        mine = scan.labels == category
        scores = scan.scores[mine]
        if scan.clean:
            clean_max.append(float(scores.max()) if scores.size else 0.0)
            continue
        gt = scan.gt_boxes[scan.gt_labels == category]
        if not len(gt):
            continue
        h = hits(scan.boxes[mine], gt)
        best = np.where(h, scores[:, None], 0.0).max(axis=0) if scores.size else np.zeros(len(gt))
        instance_best.extend(best.tolist())
    return np.array(clean_max), np.array(instance_best)


# Band edges of `detection_by_attenuation`, in -ln T at high energy. Under 3 a pixel
# keeps over 5 % of the air signal and detail shows plainly; from 7 on it keeps under
# 0.1 % (some 36 of the synthetic detector's 40,000 quanta), so a brick's contrast is
# a fraction of the pixel noise and shows only summed over the whole object.
ATTENUATION_EDGES = (3.0, 5.0, 7.0)


def band_names(edges: Sequence[float] = ATTENUATION_EDGES) -> list[str]:
    """Band labels: "<3", "3-5", "5-7" and ">=7" for edges (3, 5, 7)."""
    cuts = [f"{e:g}" for e in edges]
    return [f"<{cuts[0]}", *(f"{a}-{b}" for a, b in pairwise(cuts)), f">={cuts[-1]}"]


# Band edges of `detection_by_contrast`: how much a threat changes the high-energy
# -ln T where it lies, net of the cargo it displaced. Under 0.1 (a 10 % change in
# transmission) it is about as faint as the cargo's own texture; bank notes among
# paper of their own density change nothing at all.
CONTRAST_EDGES = (0.1, 0.3, 1.0)


def detection_by_group(
    scans: Sequence[ScanFindings],
    category: int | None,
    thresholds: dict[int, float],
    group_of: Callable[[ScanFindings, int], str | None],
    groups: Sequence[str] = (),
) -> dict[str, dict[str, float | int | None]]:
    """Detection rate at the given thresholds per group of instances, `group_of(scan, m)`
    naming instance m's group (None: leave it out); all categories when `category` is
    None. `groups` are listed even when empty, in that order; others follow as found.
    """
    found = {g: 0 for g in groups}
    count = {g: 0 for g in groups}
    for scan in scans:
        if scan.clean:
            continue
        for m, (box, label) in enumerate(zip(scan.gt_boxes, scan.gt_labels, strict=True)):
            if category is not None and label != category:
                continue
            group = group_of(scan, m)
            if group is None:
                continue
            above = (scan.labels == label) & (scan.scores > thresholds[int(label)])
            count[group] = count.get(group, 0) + 1
            found[group] = found.get(group, 0) + bool(hits(scan.boxes[above], box[None]).any())
    return {
        g: {
            "instances": count[g],
            "detected": found[g],
            "rate": found[g] / count[g] if count[g] else None,
        }
        for g in count
    }


def _detection_by_band(
    scans: Sequence[ScanFindings],
    category: int | None,
    thresholds: dict[int, float],
    edges: Sequence[float],
    values_of: Callable[[ScanFindings], np.ndarray | None],
) -> dict[str, dict[str, float | int | None]]:
    """`detection_by_group` over bands of a per-instance value (`band_names(edges)`);
    instances whose value is missing or NaN are left out."""
    names = band_names(edges)

    def band(scan: ScanFindings, m: int) -> str | None:
        values = values_of(scan)
        if values is None or not np.isfinite(values[m]):
            return None
        return names[int(np.searchsorted(edges, values[m], side="right"))]

    return detection_by_group(scans, category, thresholds, band, names)


def detection_by_attenuation(
    scans: Sequence[ScanFindings],
    category: int | None,
    thresholds: dict[int, float],
    edges: Sequence[float] = ATTENUATION_EDGES,
) -> dict[str, dict[str, float | int | None]]:
    """Detection rate at the given thresholds, per band of the attenuation where
    instances sit (`ScanFindings.gt_attenuation`); all categories when `category` is None.

    Why: deep in dense cargo a threat is a faint change under photon noise and
    cargo texture; this shows how much of what is missed lies there.
    """
    if any(s.gt_attenuation is None for s in scans if not s.clean):
        raise ValueError("scans without gt_attenuation: the bands cannot be told")
    return _detection_by_band(scans, category, thresholds, edges, lambda s: s.gt_attenuation)


def detection_by_contrast(
    scans: Sequence[ScanFindings],
    category: int | None,
    thresholds: dict[int, float],
    edges: Sequence[float] = CONTRAST_EDGES,
) -> dict[str, dict[str, float | int | None]]:
    """Detection rate per band of how much each instance changes the image (the size of
    `ScanFindings.gt_contrast`; instances without one are left out).

    Why: it tells a model that misses what it could see from one that misses what no
    transmission image shows, which no training can find.
    """
    return _detection_by_band(
        scans,
        category,
        thresholds,
        edges,
        lambda s: None if s.gt_contrast is None else np.abs(s.gt_contrast),
    )


def detection_by_concealment(
    scans: Sequence[ScanFindings], category: int | None, thresholds: dict[int, float]
) -> dict[str, dict[str, float | int | None]]:
    """Detection rate per hiding place (`ScanFindings.gt_places`; unknown ones left out).

    Why: a tyre or a floor cavity is a place an officer knows to look at, and a
    model blind to one of them fails there on every scan.
    """

    def place(scan: ScanFindings, m: int) -> str | None:
        return scan.gt_places[m] or None if m < len(scan.gt_places) else None

    result = detection_by_group(scans, category, thresholds, place)
    return dict(sorted(result.items(), key=lambda kv: -int(kv[1]["instances"] or 0)))


def detection_rate_at_far(
    scans: Sequence[ScanFindings], category: int, fars: Sequence[float]
) -> tuple[dict[float, float], dict[float, float]]:
    """Detection rate and threshold of one category at each false-alarm rate."""
    clean_max, instance_best = category_scores(scans, category)
    rates, thresholds = {}, {}
    for far in fars:
        t = threshold_at_far(clean_max, far)
        thresholds[far] = t
        rates[far] = float(np.mean(instance_best > t)) if instance_best.size else float("nan")
    return rates, thresholds
