"""One synthetic scan: vehicle, container(s), load, manifest, threats, physics, labels.

`generate_scan(index, seed, config)` is a pure function of its arguments: it
seeds its own generator from (seed, index), so a data set comes out byte for
byte the same whatever the number of worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.synth.cargo import COMMODITIES, LoadedItem, load_container
from training.synth.geometry import HALF_WIDTH, Canvas, Fan
from training.synth.physics import (
    DetectorModel,
    Spectrum,
    linac_spectrum,
    polychromatic_transmission,
)
from training.synth.threats import CATEGORIES, DRAW, MIN_ROOM, DrawnThreat, Placement
from training.synth.vehicle import (
    ContainerBox,
    draw_container,
    draw_tank_frame,
    draw_tractor,
    draw_trailer_chassis,
)

DETECTOR_HEIGHT_MM = 4000.0  # detector column height: 800 px at 5 mm
CATEGORY_WEIGHTS = {
    "firearm": 0.24,
    "narcotics": 0.26,
    "cigarettes": 0.17,
    "currency": 0.17,
    "person": 0.16,
}
# Minimum mass thickness (g/cm^2) that counts as part of a threat's mask.
MASK_THRESHOLD = 0.05
CONTAINER_PLACES = frozenset({"load", "floor", "floor_cavity", "front_wall"})
"""Hiding places inside a container's box: a threat there is goods its declaration
leaves out (the cab, the tyres and a reefer's machinery are not the cargo space)."""
MANIFEST_MIXES = ("default", "acv")
DISCREPANCY_KINDS = (
    "declared_empty_but_loaded",
    "declared_loaded_but_empty",
    "undeclared_goods",
    "false_description",
    "weight_mismatch",
)
# The "acv" mix: per 30 scans, 15 with a true manifest (10 empty vehicles, 5 loaded: the
# two thirds empty of real traffic) and 3 of each discrepancy kind, so that a set of
# 150 scans measures empties, the consistent scans' flag rate and every kind (15 each).
ACV_SHARES = {
    "consistent_empty": 10,
    "consistent_loaded": 5,
    **{kind: 3 for kind in DISCREPANCY_KINDS},
}


def _interleave(shares: dict[str, int]) -> tuple[str, ...]:
    """One cycle of plans, each spread evenly over it (any prefix keeps the shares)."""
    slots = [((k + 0.5) / n, i, plan) for i, (plan, n) in enumerate(shares.items())
             for k in range(n)]  # fmt: skip
    return tuple(plan for _, _, plan in sorted(slots))


ACV_PLANS = _interleave(ACV_SHARES)


@dataclass(frozen=True)
class SynthConfig:
    """Scanner and data-set settings (all recorded in the annotations)."""

    pitch_mm: float = 5.0
    high_mv: float = 6.0
    low_mv: float = 4.0
    clean_fraction: float = 1 / 3
    max_threats: int = 4
    detector: DetectorModel = field(default_factory=DetectorModel)
    low_quanta_scale: float = 0.6  # the low-energy pulse carries less dose
    # How loads and manifest discrepancies are drawn: "default" (the detector-training
    # mix: 7 % empty boxes, a quarter of manifests wrong) or "acv" (ACV_PLANS: each
    # scan's load and manifest planned by its index, to measure contents verification).
    manifest_mix: str = "default"

    def __post_init__(self) -> None:
        if self.manifest_mix not in MANIFEST_MIXES:
            raise ValueError(
                f"manifest_mix must be one of {', '.join(MANIFEST_MIXES)}, "
                f"not {self.manifest_mix!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = self.detector
        out = {
            "pitch_mm": self.pitch_mm,
            "high_mv": self.high_mv,
            "low_mv": self.low_mv,
            "clean_fraction": self.clean_fraction,
            "max_threats": self.max_threats,
            "detector": {k: getattr(d, k) for k in d.__dataclass_fields__},
            "low_quanta_scale": self.low_quanta_scale,
        }
        if self.manifest_mix != "default":  # the default set's bytes stay as they were
            out["manifest_mix"] = self.manifest_mix
        return out


@dataclass
class ThreatLabel:
    category: str
    subtype: str
    where: str
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels (COCO)
    mask: np.ndarray  # bool (H, W)
    mass_kg: float
    # What the threat changes in the high-energy image, noise-free (`threat_contrast`).
    contrast: float = float("nan")
    contrast_to_noise: float = float("nan")


@dataclass
class SynthScan:
    high: np.ndarray  # uint16
    low: np.ndarray  # uint16
    threats: list[ThreatLabel]
    cargo_region: tuple[int, int, int, int]  # x0, y0, x1, y1 pixels
    info: dict[str, Any]  # manifests, load, vehicle, scanner


@dataclass
class _Layout:
    canvas: Canvas
    containers: list[ContainerBox]
    cab: tuple[float, float, float, float] | None


def _build_vehicle(rng: np.random.Generator, cfg: SynthConfig) -> tuple[_Layout, dict[str, Any]]:
    """Decide the layout in mm, size the canvas to it, and draw tractor, chassis and boxes."""
    r = rng.random()
    arrangement = (
        "20ft" if r < 0.46 else ("40ft" if r < 0.78 else ("2x20ft" if r < 0.9 else "tank"))
    )
    high_cube = arrangement == "40ft" and rng.random() < 0.35
    lengths = {"20ft": [20], "40ft": [40], "2x20ft": [20, 20], "tank": [20]}[arrangement]
    reefers = [arrangement != "tank" and bool(rng.random() < 0.12) for _ in lengths]
    deck_y = rng.uniform(1250, 1400)
    kingpin_setback = rng.uniform(700, 1100)
    tractor_rear_overhang = rng.uniform(300, 700)
    # Tractor: rear at x_t; its fifth wheel lies under the trailer front.
    tractor_len = 6200.0
    gap = 50.0
    box_lengths = [6058.0 if n == 20 else 12192.0 for n in lengths]
    trailer_len = sum(box_lengths) + gap * (len(lengths) - 1) + rng.uniform(100, 600)
    # Where the scan starts: whole truck (gantry, driver out) or cab-avoidance
    # portals that start the high dose behind the cab.
    whole_truck = rng.random() < 0.15
    x_tractor_front = 0.0
    x_tractor_rear = x_tractor_front + tractor_len
    # Trailer front overhangs the tractor's rear by the kingpin setback region.
    trailer_front = x_tractor_rear - tractor_rear_overhang - 1500 + kingpin_setback
    if whole_truck:
        start = x_tractor_front - rng.uniform(200, 900)
    else:
        start = trailer_front - rng.uniform(300, 1600)
    trailer_rear = trailer_front + trailer_len
    end = trailer_rear + rng.uniform(100, 800)
    pitch = cfg.pitch_mm
    width_px = round((end - start) / pitch)
    height_px = round(DETECTOR_HEIGHT_MM / pitch)
    # Fan beam: the source sits low, some metres to the side. The image spans
    # the detector column; its top is set just above where the near side's
    # top rail projects, as a portal's detector arm is placed for the tallest box.
    yaw = np.deg2rad(float(np.clip(rng.normal(0.0, 0.4), -1.0, 1.0)))
    fan = Fan(rng.uniform(400, 900), rng.uniform(9000, 13000), yaw_rad=yaw)
    box_top = deck_y + (2896.0 if high_cube else 2591.0)
    top = fan.project(box_top, -HALF_WIDTH) + rng.uniform(80, 300)
    c = Canvas(width_px, height_px, pitch, top_mm=top, fan=fan)
    # Shift the world so x = 0 is the first column.
    dx = -start
    draw_tractor(c, x_tractor_rear + dx, rng)
    n_axles = 3 if trailer_len > 9000 else int(rng.integers(1, 3))
    draw_trailer_chassis(c, trailer_front + dx, trailer_rear + dx, deck_y, n_axles, rng)
    boxes = []
    x = trailer_front + dx + rng.uniform(0, 150)
    for n, reefer in zip(lengths, reefers, strict=True):
        if arrangement == "tank":
            boxes.append(draw_tank_frame(c, x, deck_y, rng))
        else:
            boxes.append(draw_container(c, x, deck_y, n, high_cube, reefer, rng))
        x = boxes[-1].x1 + gap
    cab = None
    if start < x_tractor_front + 2400:
        cab = (x_tractor_front + dx, deck_y - 200, x_tractor_front + 2400 + dx, deck_y + 2300)
    layout = _Layout(c, boxes, cab)
    vehicle = {
        "arrangement": arrangement,
        "high_cube": high_cube,
        "reefer": reefers,
        "whole_truck": whole_truck,
        "axles": n_axles,
        "length_mm": round(end - start),
        "source_height_mm": round(fan.source_y_mm),
        "source_distance_mm": round(fan.source_dist_mm),
        "yaw_deg": round(float(np.rad2deg(fan.yaw_rad)), 3),
    }
    return layout, vehicle


def acv_plan(index: int) -> str:
    """What the "acv" mix makes scan `index`: a consistent empty or loaded vehicle, or
    one discrepancy kind (ACV_SHARES, cycled by index: the same for every seed)."""
    return ACV_PLANS[index % len(ACV_PLANS)]


def _want(plan: str) -> str:
    """The load a plan needs in every box (load_container's `want`)."""
    if plan in ("consistent_empty", "declared_loaded_but_empty"):
        return "empty"
    return "multi" if plan == "undeclared_goods" else "loaded"


def make_manifests(
    items: list[list[LoadedItem]], rng: np.random.Generator, plan: str | None = None
) -> tuple[list[dict], list[dict], str | None]:
    """True manifest from what was loaded; a declared one that is usually right.

    With a `plan` (the "acv" mix), the declared manifest is wrong in the planned way
    (each kind made exactly as the default mix makes it), or right for a consistent plan;
    a plan the load cannot carry (undeclared goods in a load of one line) stays right."""
    true_lines = []
    for k, box_items in enumerate(items):
        for it in box_items:
            true_lines.append(
                {
                    "container": k,
                    "hs_code": it.commodity.hs_code,
                    "description": it.commodity.description,
                    "declared_weight_kg": round(it.mass_kg, 1),
                    "quantity": it.packages,
                }
            )
    declared = [dict(line) for line in true_lines]
    for line in declared:  # shippers round and estimate
        line["declared_weight_kg"] = float(
            round(line["declared_weight_kg"] * rng.uniform(0.97, 1.03), -1)
        )
    if plan is not None:
        return true_lines, *_planned(declared, plan, rng)
    discrepancy: str | None = None
    r = rng.random()
    if not true_lines:
        if r < 0.08:
            com = COMMODITIES[int(rng.integers(len(COMMODITIES)))]
            declared = [
                {
                    "container": 0,
                    "hs_code": com.hs_code,
                    "description": com.description,
                    "declared_weight_kg": float(rng.integers(2, 20) * 1000),
                    "quantity": int(rng.integers(10, 200)),
                }
            ]
            discrepancy = "declared_loaded_but_empty"
    elif r < 0.05:
        declared = []
        discrepancy = "declared_empty_but_loaded"
    elif r < 0.14 and len(declared) >= 2:
        declared.pop(int(rng.integers(len(declared))))
        discrepancy = "undeclared_goods"
    elif r < 0.23:
        _describe_falsely(declared[int(rng.integers(len(declared)))], rng)
        discrepancy = "false_description"
    elif r < 0.28:
        _under_declare(declared[int(rng.integers(len(declared)))], rng)
        discrepancy = "weight_mismatch"
    return true_lines, declared, discrepancy


def _planned(
    declared: list[dict], plan: str, rng: np.random.Generator
) -> tuple[list[dict], str | None]:
    """The declared manifest of an "acv" plan: the same lies as make_manifests tells."""
    if plan == "declared_loaded_but_empty" and not declared:
        com = COMMODITIES[int(rng.integers(len(COMMODITIES)))]
        line = {
            "container": 0,
            "hs_code": com.hs_code,
            "description": com.description,
            "declared_weight_kg": float(rng.integers(2, 20) * 1000),
            "quantity": int(rng.integers(10, 200)),
        }
        return [line], plan
    if not declared or plan.startswith("consistent") or plan == "declared_loaded_but_empty":
        return declared, None
    k = int(rng.integers(len(declared)))
    if plan == "declared_empty_but_loaded":
        return [], plan
    if plan == "undeclared_goods":
        if len(declared) < 2:
            return declared, None
        declared.pop(k)
    elif plan == "false_description":
        _describe_falsely(declared[k], rng)
    elif plan == "weight_mismatch":
        _under_declare(declared[k], rng)
    return declared, plan


def _describe_falsely(line: dict, rng: np.random.Generator) -> None:
    """A manifest line renamed to a commodity of another material (false_description)."""
    others = [
        c
        for c in COMMODITIES
        if c.description != line["description"] and c.material != _material_of(line["description"])
    ]
    com = others[int(rng.integers(len(others)))]
    line.update(hs_code=com.hs_code, description=com.description)


def _under_declare(line: dict, rng: np.random.Generator) -> None:
    """A manifest line declared at 35-65 % of its weight (weight_mismatch)."""
    line["declared_weight_kg"] = float(
        round(line["declared_weight_kg"] * rng.uniform(0.35, 0.65), -1)
    )


def _material_of(description: str) -> str | None:
    return next((c.material for c in COMMODITIES if c.description == description), None)


def _spots(
    layout: _Layout, items: list[list[LoadedItem]], rng: np.random.Generator
) -> list[tuple[Placement, tuple[str, ...]]]:
    """Places threats can go, with the categories that make sense there."""
    spots: list[tuple[Placement, tuple[str, ...]]] = []
    for box, box_items in zip(layout.containers, items, strict=True):
        for it in box_items:
            for b in it.blocks:
                spots.append(
                    (
                        Placement(
                            (b.x0 + b.x1) / 2,
                            (b.y0 + b.y1) / 2,
                            b.x1 - b.x0,
                            b.y1 - b.y0,
                            b.depth_mm,
                            b.material,
                            b.bulk_density,
                            "load",
                        ),
                        CATEGORIES,
                    )
                )
        # Free floor space: an empty box, or the door end of a part load.
        used_x1 = max((b.x1 for it in box_items for b in it.blocks), default=box.inner_x0)
        if box.inner_x1 - used_x1 > 700:
            w = box.inner_x1 - used_x1 - 100
            spots.append(
                (
                    Placement(
                        used_x1 + 50 + w / 2, box.floor_y + 500, w, 1000, 2000, None, 0.0, "floor"
                    ),
                    CATEGORIES,
                )
            )
        # Concealments in the container structure: under the floor and behind
        # a false front wall.
        L = box.x1 - box.x0
        spots.append(
            (
                Placement(
                    box.x0 + L * rng.uniform(0.2, 0.8),
                    box.y0 + 85,
                    L * 0.5,
                    110,
                    2000,
                    None,
                    0.0,
                    "floor_cavity",
                ),
                ("narcotics", "currency"),
            )
        )
        spots.append(
            (
                Placement(
                    box.inner_x0 + 110,
                    (box.floor_y + box.ceiling_y) / 2,
                    220,
                    box.ceiling_y - box.floor_y - 100,
                    2200,
                    None,
                    0.0,
                    "front_wall",
                ),
                ("narcotics", "currency", "cigarettes", "firearm"),
            )
        )
        if box.reefer:
            spots.append(
                (
                    Placement(
                        box.x0 + 220, box.y0 + 1000, 340, 900, 1500, None, 0.0, "reefer_unit"
                    ),
                    ("narcotics", "currency"),
                )
            )
    c = layout.canvas
    if layout.cab is not None:
        x0, y0, x1, y1 = layout.cab
        spots.append(
            (
                Placement(
                    (x0 + x1) / 2 + 300, (y0 + y1) / 2 + 500, 1200, 1200, 1800, None, 0.0, "cab"
                ),
                ("firearm", "currency", "narcotics", "cigarettes"),
            )
        )
    # Trailer tyres: bricks in the tyre cavity, seen inside the wheel ring.
    rubber = c.maps.get("rubber")
    if rubber is not None:
        cols = np.flatnonzero(rubber[int(c.height_px * 0.8) :].max(axis=0) > 5)
        if cols.size:
            xc = float(cols[int(rng.integers(cols.size))]) * c.pitch_mm
            # In the upper part of the tyre cavity, in the near or the far wheels.
            side = float(rng.choice([-1.0, 1.0])) * (HALF_WIDTH - 250)
            place = Placement(xc, 780, 300, 160, 250, None, 0.0, "tyre", z_mm=side)
            spots.append((place, ("narcotics",)))
    return spots


def _place_threats(
    layout: _Layout, items: list[list[LoadedItem]], n: int, rng: np.random.Generator
) -> list[DrawnThreat]:
    c = layout.canvas
    spots = _spots(layout, items, rng)
    drawn: list[DrawnThreat] = []
    taken: list[tuple[float, float, float, float]] = []
    names = list(CATEGORY_WEIGHTS)
    probs = np.array([CATEGORY_WEIGHTS[k] for k in names])
    for _ in range(n):
        for _attempt in range(20):
            cat = names[int(rng.choice(len(names), p=probs / probs.sum()))]
            mw, mh, md = MIN_ROOM[cat]
            fits = [
                s
                for s in spots
                if cat in s[1]
                and s[0].max_w >= mw * 0.6
                and s[0].max_h >= mh * 0.4
                and s[0].depth_mm >= md * 0.5
            ]
            if not fits:
                continue
            spot, _ = fits[int(rng.integers(len(fits)))]
            # A random point inside the spot that leaves room for the object.
            hw, hh = max(spot.max_w / 2 - mw / 2, 0), max(spot.max_h / 2 - mh / 2, 0)
            cx, cy = spot.cx + rng.uniform(-hw, hw), spot.cy + rng.uniform(-hh, hh)
            if spot.where == "floor":
                cy = spot.cy - spot.max_h / 2 + mh / 2 + 20
            if any(
                abs(cx - tx) < (mw + tw) / 2 and abs(cy - ty) < (mh + th) / 2
                for tx, ty, tw, th in taken
            ):
                continue
            # Somewhere across the load: the fan beam magnifies it by its depth.
            half_room = max(spot.depth_mm / 2 - md / 2, 0.0)
            z = spot.z_mm + rng.uniform(-half_room, half_room)
            place = Placement(
                cx,
                cy,
                min(spot.max_w, mw * 2.5),
                min(spot.max_h, mh * 2.5),
                spot.depth_mm,
                spot.host_material,
                spot.host_density,
                spot.where,
            )
            with c.at_z(z - md / 2, z + md / 2):
                threat = DRAW[cat](c, place, rng)
            threat.mass_kg = c.last_recorded_kg
            if place.host_material is not None and place.host_density > 0:
                # The threat takes the place of cargo: remove what it displaces.
                displaced = threat.mass / threat.mean_density * place.host_density
                c.remove_path(place.host_material, (0, 0, c.width_px, c.height_px), displaced)
            drawn.append(threat)
            taken.append((cx, cy, mw, mh))
            break
    return drawn


def _label(threat: DrawnThreat) -> ThreatLabel | None:
    mask = threat.mass > MASK_THRESHOLD
    if mask.sum() < 12:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
    return ThreatLabel(threat.category, threat.subtype, threat.where, bbox, mask, threat.mass_kg)


def threat_contrast(
    unloaded: dict[str, np.ndarray],
    loaded: dict[str, np.ndarray],
    label: ThreatLabel,
    spectrum: Spectrum,
    detector: DetectorModel,
    margin_px: int = 96,
) -> tuple[float, float]:
    """How visible a threat is: the median, over its mask, of the change it makes to
    the high-energy attenuation (-ln T), noise-free, after blur and scatter, net of
    the cargo it displaced; and that change over the photon noise of a pixel there.

    Why: a threat that displaces as much attenuation as it adds (bank notes packed
    among paper of the same density) changes nothing a transmission scanner can
    see, and evaluation should say how much of what is missed is like that. The
    margin holds the scatter haze's reach (3 of its sigmas); other threats in the
    window count as part of this one's change (they rarely overlap).
    """
    x, y, w, h = label.bbox
    height, width = label.mask.shape
    rows = slice(max(y - margin_px, 0), min(y + h + margin_px, height))
    cols = slice(max(x - margin_px, 0), min(x + w + margin_px, width))
    mask = label.mask[rows, cols]

    def seen(maps: dict[str, np.ndarray]) -> np.ndarray:
        window = {k: v[rows, cols] for k, v in maps.items()}
        return np.maximum(detector.optics(polychromatic_transmission(window, spectrum)), 1e-9)

    t_without, t_with = seen(unloaded), seen(loaded)
    change = (np.log(t_without) - np.log(t_with))[mask]
    noise = 1.0 / np.sqrt(detector.air_quanta * t_with[mask])  # Poisson, in -ln T
    return float(np.median(change)), float(np.median(change / noise))


def _seen_box(c: Canvas, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """A box (mm) as it appears in the image: near side's top, lowest of the two bottoms."""
    top_seen = max(c.apparent_y(y1, z) for z in (-HALF_WIDTH, HALF_WIDTH))
    bottom_seen = min(c.apparent_y(y0, z) for z in (-HALF_WIDTH, HALF_WIDTH))
    col0, row0, col1, row1 = c.box_px(x0, bottom_seen, x1, top_seen)
    return (
        max(int(col0), 0),
        max(int(row0), 0),
        min(int(np.ceil(col1)), c.width_px),
        min(int(np.ceil(row1)), c.height_px),
    )


def generate_scan(index: int, seed: int, cfg: SynthConfig) -> SynthScan:
    """Generate scan number `index` of the data set with this seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    plan = acv_plan(index) if cfg.manifest_mix == "acv" else None
    layout, vehicle = _build_vehicle(rng, cfg)
    while plan == "undeclared_goods" and layout.containers[0].tank:
        layout, vehicle = _build_vehicle(rng, cfg)  # a tank holds one line: nothing to drop
    c = layout.canvas
    load_kinds, items = [], []
    for box in layout.containers:
        kind, box_items = load_container(c, box, rng, None if plan is None else _want(plan))
        load_kinds.append(kind)
        items.append(box_items)
    true_manifest, declared_manifest, discrepancy = make_manifests(items, rng, plan)
    # Clean scans are spread evenly over the indices, so any prefix of a data
    # set holds the intended share of them.
    clean = int((index + 1) * cfg.clean_fraction) > int(index * cfg.clean_fraction)
    n_threats = 0 if clean else int(min(rng.geometric(0.55), cfg.max_threats))
    # The load as it was before the threats went in, to measure what each one changes.
    unloaded = {k: v.copy() for k, v in c.maps.items()} if n_threats else {}
    drawn = _place_threats(layout, items, n_threats, rng)
    labels = [lab for t in drawn if (lab := _label(t)) is not None]

    high_spec = linac_spectrum(cfg.high_mv)
    low_spec = linac_spectrum(cfg.low_mv)
    for lab in labels:
        lab.contrast, lab.contrast_to_noise = threat_contrast(
            unloaded, c.maps, lab, high_spec, cfg.detector
        )
    t_high = polychromatic_transmission(c.maps, high_spec)
    t_low = polychromatic_transmission(c.maps, low_spec)
    det = cfg.detector
    row_gain = 1.0 + det.row_gain_sigma * rng.standard_normal(c.height_px)
    high = det.expose(t_high, rng, row_gain=row_gain)
    low = det.expose(
        t_low,
        rng,
        row_gain=row_gain * (1 + 0.3 * det.row_gain_sigma * rng.standard_normal(c.height_px)),
        quanta_scale=cfg.low_quanta_scale,
    )

    x0 = min(b.x0 for b in layout.containers)
    x1 = max(b.x1 for b in layout.containers)
    y1 = max(b.y1 for b in layout.containers)
    y0 = min(b.y0 for b in layout.containers)
    cargo_region = _seen_box(c, x0, y0, x1, y1)
    info = {
        "vehicle": vehicle,
        "load": load_kinds,
        "true_manifest": true_manifest,
        "declared_manifest": declared_manifest,
        "manifest_discrepancy": discrepancy,
        # Each container as it appears (x0, y0, x1, y1 px) and the true mass of its load,
        # to measure container finding and the mass estimate (inference.cargo).
        "containers": [
            {
                "box": list(_seen_box(c, b.x0, b.y0, b.x1, b.y1)),
                "tank": b.tank,
                "load": kind,
                "mass_kg": round(sum(it.mass_kg for it in box_items), 1),
                "hidden_kg": round(_hidden_kg(c, b, drawn), 1),
            }
            for b, kind, box_items in zip(layout.containers, load_kinds, items, strict=True)
        ],
        "clean": not labels,
        **({"manifest_mix": cfg.manifest_mix} if plan is not None else {}),
        "scanner": {
            "kind": "portal",
            "high_mv": cfg.high_mv,
            "low_mv": cfg.low_mv,
            "pixel_pitch_mm": cfg.pitch_mm,
        },
    }
    return SynthScan(high, low, labels, cargo_region, info)


def _hidden_kg(c: Canvas, box: ContainerBox, drawn: list[DrawnThreat]) -> float:
    """The threats' mass hidden in this container's cargo space (CONTAINER_PLACES, the
    threat's mass centre within the box's length): undeclared goods the manifest truth
    does not list, so a scan holding them is not "consistent" with its declaration."""
    col0, _, col1, _ = c.box_px(box.x0, box.y0, box.x1, box.y1)
    lo, hi = sorted((col0, col1))
    total = 0.0
    for t in drawn:
        if t.where not in CONTAINER_PLACES:
            continue
        cols = t.mass.sum(axis=0)
        if cols.sum() <= 0:
            continue
        centre = float((cols * np.arange(cols.size)).sum() / cols.sum())
        if lo <= centre <= hi:
            total += t.mass_kg
    return total


def generate_small_load_scan(
    index: int, seed: int, cfg: SynthConfig, where: str, mass_kg: float
) -> SynthScan:
    """An empty container with `mass_kg` of packed goods hidden in it, as smugglers use an
    empty box: `where` is "front_wall" (a 200 mm stack behind the front wall, 1.2 m high)
    or "floor_cavity" (in the floor, half the box's length). Measures whether contents
    verification lets a small load pass as empty (docs/cargo.md)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 26]))
    layout, vehicle = _build_vehicle(rng, cfg)
    while layout.containers[0].tank:  # a tank's frame has no front wall or floor cavity
        layout, vehicle = _build_vehicle(rng, cfg)
    c = layout.canvas
    box = layout.containers[0]
    depth = 2000.0
    if where == "front_wall":
        x0, x1, y0, y1 = box.inner_x0, box.inner_x0 + 200.0, box.floor_y, box.floor_y + 1200.0
    elif where == "floor_cavity":
        mid = box.x0 + (box.x1 - box.x0) * rng.uniform(0.3, 0.7)
        half = (box.x1 - box.x0) * 0.25
        x0, x1, y0, y1 = mid - half, mid + half, box.y0 + 40.0, box.y0 + 130.0
    else:
        raise ValueError(f"where: front_wall or floor_cavity, not {where!r}")
    density = mass_kg * 1e3 / ((x1 - x0) * (y1 - y0) * depth / 1e3)  # g/cm^3
    c.add_box("food", x0, y0, x1, y1, depth, density)
    det = cfg.detector
    row_gain = 1.0 + det.row_gain_sigma * rng.standard_normal(c.height_px)
    high = det.expose(polychromatic_transmission(c.maps, linac_spectrum(cfg.high_mv)), rng,
                      row_gain=row_gain)  # fmt: skip
    low = det.expose(
        polychromatic_transmission(c.maps, linac_spectrum(cfg.low_mv)),
        rng,
        row_gain=row_gain,
        quanta_scale=cfg.low_quanta_scale,
    )
    seen = list(_seen_box(c, box.x0, box.y0, box.x1, box.y1))
    info = {
        "vehicle": vehicle,
        "hidden": {"where": where, "mass_kg": mass_kg, "box_mm": [x0, y0, x1, y1]},
        "containers": [{"box": seen, "tank": False, "load": "empty", "mass_kg": mass_kg}],
    }
    return SynthScan(high, low, [], tuple(seen), info)  # type: ignore[arg-type]
