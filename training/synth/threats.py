"""Threat objects projected physically into a scene.

Every threat adds its own mass thickness per material to the canvas (never an
alpha blend), so its contrast and its dual-energy signature come out of the
same Beer-Lambert integral as everything else. When it sits inside cargo it
also displaces the cargo it replaces, which is what makes real concealments
hard to see. Each draw function returns the recorded mass thickness of the
threat alone, from which the scene derives the exact box and mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synth.geometry import Canvas, rotate
from training.synth.vehicle import STEEL

CATEGORIES: tuple[str, ...] = ("firearm", "narcotics", "cigarettes", "currency", "person")


@dataclass
class Placement:
    """Where a threat goes: centre (mm), the space it may fill, and what it displaces."""

    cx: float
    cy: float
    max_w: float
    max_h: float
    depth_mm: float  # room along the beam
    host_material: str | None = None  # cargo it displaces
    host_density: float = 0.0
    where: str = "load"
    z_mm: float = 0.0  # centre of the room across the vehicle (0 = centre plane)


@dataclass
class DrawnThreat:
    category: str
    subtype: str
    mass: np.ndarray  # g/cm^2 the threat added (full canvas)
    mean_density: float  # g/cm^3, to turn mass back into displaced path
    where: str
    mass_kg: float = 0.0  # true mass, filled in by the scene from the canvas recording


def _pose(
    points: np.ndarray, rng: np.random.Generator, max_tilt_deg: float = 65.0
) -> tuple[np.ndarray, float]:
    """Random in-plane rotation and out-of-plane tilt (foreshortening) of a flat object.

    Returns the posed outline and the factor by which its path along the beam grows.
    """
    tilt = np.deg2rad(rng.uniform(0, max_tilt_deg)) if rng.random() < 0.6 else 0.0
    pts = points * np.array([np.cos(tilt), 1.0])
    if rng.random() < 0.5:
        pts = pts * np.array([-1.0, 1.0])
    pts = rotate(pts, rng.uniform(0, 2 * np.pi))
    return pts, 1.0 / max(np.cos(tilt), 0.35)


def _place_parts(
    c: Canvas,
    parts: list[tuple[str, np.ndarray, float, float]],
    centre: tuple[float, float],
    rng: np.random.Generator,
) -> None:
    """Draw a set of flat parts (material, outline, depth, density) with one shared pose."""
    everything = np.concatenate([p[1] for p in parts])
    origin = everything.mean(axis=0)
    tilt = np.deg2rad(rng.uniform(0, 65)) if rng.random() < 0.6 else 0.0
    flip = -1.0 if rng.random() < 0.5 else 1.0
    angle = rng.uniform(0, 2 * np.pi)
    grow = 1.0 / max(np.cos(tilt), 0.35)
    for material, outline, depth, density in parts:
        pts = (outline - origin) * np.array([np.cos(tilt) * flip, 1.0])
        pts = rotate(pts, angle) + np.asarray(centre)
        c.add_polygon(material, pts, depth * grow, density)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _ring(cx: float, cy: float, r_out: float, r_in: float, n: int = 24) -> np.ndarray:
    """A closed ring as one polygon (outer circle, then the inner one backwards)."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=True)
    outer = np.stack([cx + r_out * np.cos(a), cy + r_out * np.sin(a)], 1)
    inner = np.stack([cx + r_in * np.cos(a[::-1]), cy + r_in * np.sin(a[::-1])], 1)
    return np.concatenate([outer, inner])


def _pistol(rng: np.random.Generator) -> list[tuple[str, np.ndarray, float, float]]:
    s = rng.uniform(0.8, 1.15)
    polymer = rng.random() < 0.5
    slide_t, frame_t = rng.uniform(22, 30), rng.uniform(26, 32)
    parts = [
        ("steel", _rect(0, 95, 190, 130) * s, slide_t, STEEL),  # slide
        ("steel", _rect(5, 105, 185, 120) * s, 12, STEEL),  # barrel inside the slide
        (
            "plastic" if polymer else "steel",
            np.array([[25, 95], [70, 95], [55, 5], [10, 0]]) * s,
            frame_t,
            1.2 if polymer else STEEL * 0.6,
        ),
        (
            "steel",
            np.array([[30, 92], [62, 92], [50, 12], [17, 8]]) * s,
            20,
            STEEL * 0.5,
        ),  # magazine
        ("brass", _rect(28, 60, 58, 88) * s, 9, 8.5 * 0.6),  # cartridges at the top of the magazine
        (
            "plastic" if polymer else "steel",
            _ring(90 * s, 80 * s, 22 * s, 14 * s),
            10,
            1.2 if polymer else STEEL,
        ),  # trigger guard
    ]
    return parts


def _revolver(rng: np.random.Generator) -> list[tuple[str, np.ndarray, float, float]]:
    s = rng.uniform(0.85, 1.2)
    return [
        ("steel", _rect(60, 100, 230, 120) * s, 20, STEEL),  # barrel
        ("steel", _rect(15, 85, 75, 130) * s, 38, STEEL * 0.75),  # cylinder with chambers
        ("lead", _rect(20, 92, 70, 124) * s, 20, 11.35 * 0.35),  # rounds in the cylinder
        ("wood", np.array([[0, 90], [30, 90], [20, 0], [-15, 5]]) * s, 32, 0.7),  # grip
        (
            "steel",
            np.array([[0, 90], [25, 90], [14, 15], [-5, 18]]) * s,
            10,
            STEEL,
        ),  # frame in the grip
        ("steel", _ring(45 * s, 75 * s, 20 * s, 13 * s), 8, STEEL),
    ]


def _rifle(rng: np.random.Generator) -> list[tuple[str, np.ndarray, float, float]]:
    s = rng.uniform(0.85, 1.1)
    folded = rng.random() < 0.3
    stock_len = 60 if folded else 250
    parts = [
        ("steel", _rect(stock_len, 40, stock_len + 260, 95) * s, 35, STEEL * 0.6),  # receiver
        (
            "steel",
            _rect(stock_len + 260, 62, stock_len + 260 + rng.uniform(350, 500), 80) * s,
            20,
            STEEL,
        ),  # barrel
        ("steel", _rect(stock_len + 260, 80, stock_len + 500, 95) * s, 14, STEEL),  # gas tube
        ("plastic", _rect(stock_len + 260, 50, stock_len + 480, 100) * s, 45, 1.1),  # handguard
        (
            "steel",
            np.array(
                [
                    [stock_len + 90, 40],
                    [stock_len + 150, 40],
                    [stock_len + 190, -110],
                    [stock_len + 125, -120],
                ]
            )
            * s,
            24,
            STEEL * 0.45,
        ),  # magazine
        (
            "brass",
            np.array(
                [
                    [stock_len + 100, 35],
                    [stock_len + 140, 35],
                    [stock_len + 165, -60],
                    [stock_len + 125, -65],
                ]
            )
            * s,
            10,
            8.5 * 0.5,
        ),
        (
            "plastic",
            np.array(
                [
                    [stock_len + 20, 40],
                    [stock_len + 60, 40],
                    [stock_len + 45, -60],
                    [stock_len + 5, -55],
                ]
            )
            * s,
            30,
            1.2,
        ),  # grip
        (
            "wood" if rng.random() < 0.5 else "plastic",
            np.array([[0, 20], [stock_len, 45], [stock_len, 95], [0, 90]]) * s,
            40,
            0.7,
        ),  # stock
    ]
    return parts


def _part(rng: np.random.Generator) -> tuple[str, list[tuple[str, np.ndarray, float, float]]]:
    kind = str(rng.choice(["barrel", "slide", "bolt", "magazine"]))
    if kind == "barrel":
        L = rng.uniform(100, 550)
        return kind, [("steel", _rect(0, 0, L, 22), 20, STEEL)]
    if kind == "slide":
        return kind, [("steel", _rect(0, 0, 190, 34), 24, STEEL * 0.8)]
    if kind == "bolt":
        return kind, [("steel", _rect(0, 0, 180, 30), 30, STEEL * 0.9)]
    return kind, [
        ("steel", np.array([[0, 0], [40, 0], [70, -200], [28, -205]]), 24, STEEL * 0.45),
        ("brass", np.array([[8, -5], [36, -5], [60, -180], [32, -185]]), 10, 8.5 * 0.5),
    ]


def draw_firearm(c: Canvas, p: Placement, rng: np.random.Generator) -> DrawnThreat:
    kind = str(rng.choice(["pistol", "pistol", "revolver", "rifle", "part"]))
    if kind == "pistol":
        parts = _pistol(rng)
    elif kind == "revolver":
        parts = _revolver(rng)
    elif kind == "rifle":
        parts = _rifle(rng)
    else:
        sub, parts = _part(rng)
        kind = f"part:{sub}"
    c.start_recording()
    _place_parts(c, parts, (p.cx, p.cy), rng)
    return DrawnThreat("firearm", kind, c.stop_recording(), 4.5, p.where)


def draw_narcotics(c: Canvas, p: Placement, rng: np.random.Generator) -> DrawnThreat:
    """A stack of pressed, taped bricks: cocaine or heroin, 1 kg class bricks."""
    drug = "cocaine" if rng.random() < 0.65 else "heroin"
    density = rng.uniform(1.0, 1.3)
    bw, bh, bd = rng.uniform(180, 320), rng.uniform(40, 75), rng.uniform(110, 170)
    nx = int(np.clip(p.max_w // (bw + 5), 1, 4))
    ny = int(np.clip(p.max_h // (bh + 3), 1, 8))
    nx, ny = int(rng.integers(1, nx + 1)), int(rng.integers(1, ny + 1))
    nz = int(np.clip(p.depth_mm // bd, 1, 4))
    nz = int(rng.integers(1, nz + 1))
    if nx * ny * nz < 2 and rng.random() < 0.5:
        ny = min(ny + 1, 8)
    x0, y0 = p.cx - nx * (bw + 5) / 2, p.cy - ny * (bh + 3) / 2
    c.start_recording()
    for i in range(nx):
        for j in range(ny):
            bx, by = x0 + i * (bw + 5), y0 + j * (bh + 3)
            c.add_box(drug, bx, by, bx + bw, by + bh, bd * nz * rng.uniform(0.95, 1.05), density)
            c.add_box(
                "plastic", bx - 2, by - 1, bx + bw + 2, by + bh + 1, 2 * 0.4 * nz, 1.2
            )  # tape wrap
    return DrawnThreat("narcotics", drug, c.stop_recording(), density, p.where)


def draw_cigarettes(c: Canvas, p: Placement, rng: np.random.Generator) -> DrawnThreat:
    """Master cases of cigarettes: 50 cartons each, the regular pack texture shows."""
    cw, ch, cd = 580.0, 290.0, 360.0
    if rng.random() < 0.5:
        cw, ch = 360.0, 290.0
    nx = int(np.clip(p.max_w // cw, 1, 4))
    ny = int(np.clip(p.max_h // ch, 1, 6))
    nx, ny = int(rng.integers(1, nx + 1)), int(rng.integers(1, ny + 1))
    nz = int(rng.integers(1, int(np.clip(p.depth_mm // cd, 1, 5)) + 1))
    density = rng.uniform(0.22, 0.3)  # tobacco in cigarettes, paper and packs
    x0, y0 = p.cx - nx * cw / 2, p.cy - ny * ch / 2
    c.start_recording()
    for _ in c.slabs():
        win = c._window(*c.box_px(x0, y0 + ny * ch, x0 + nx * cw, y0))
        if win is not None:
            xx, yy = c._grid_mm(win)
            lx, ly = (xx - x0) % cw, (yy - y0) % ch
            inside = (xx >= x0) & (xx < x0 + nx * cw) & (yy >= y0) & (yy < y0 + ny * ch)
            # Packs (~55 mm) and cartons (5 per case row): denser filter rows and
            # board walls make a fine, very regular grid.
            pack = 1.0 + 0.12 * np.cos(2 * np.pi * lx / 55.0) * np.cos(2 * np.pi * ly / (ch / 3))
            walls = ((lx < 6) | (lx > cw - 6) | (ly < 6) | (ly > ch - 6)).astype(np.float64)
            path = np.where(inside, cd * nz * pack, 0.0)
            c.add_path("tobacco", win, path, density)
            c.add_path("paper", win, np.where(inside, walls * cd * nz * 0.5 + 2 * 5 * nz, 0.0), 0.7)
    return DrawnThreat("cigarettes", "master_cases", c.stop_recording(), density, p.where)


def draw_currency(c: Canvas, p: Placement, rng: np.random.Generator) -> DrawnThreat:
    """Bundles of banknotes (100 notes, ~11 mm each) packed in wrapped bricks."""
    note_w, note_h = rng.uniform(120, 160), rng.uniform(62, 82)
    per_brick = int(rng.integers(5, 11))
    brick_t = per_brick * 11.0
    landscape = rng.random() < 0.5
    bw, bh = (note_w, brick_t) if landscape else (brick_t, note_w)
    nx = int(rng.integers(1, int(np.clip(p.max_w // (bw + 4), 1, 6)) + 1))
    ny = int(rng.integers(1, int(np.clip(p.max_h // (bh + 4), 1, 6)) + 1))
    nz = int(rng.integers(1, int(np.clip(p.depth_mm // note_h, 1, 6)) + 1))
    density = rng.uniform(0.85, 1.0)
    x0, y0 = p.cx - nx * (bw + 4) / 2, p.cy - ny * (bh + 4) / 2
    c.start_recording()
    for i in range(nx):
        for j in range(ny):
            bx, by = x0 + i * (bw + 4), y0 + j * (bh + 4)
            c.add_box("paper", bx, by, bx + bw, by + bh, note_h * nz, density)
            for k in range(per_brick + 1):  # paper straps between bundles: fine layers
                o = k * 11.0
                if landscape:
                    c.add_box("paper", bx, by + o - 0.5, bx + bw, by + o + 0.5, note_h * nz, 0.4)
                else:
                    c.add_box("paper", bx + o - 0.5, by, bx + o + 0.5, by + bh, note_h * nz, 0.4)
            c.add_box("plastic", bx - 2, by - 2, bx + bw + 2, by + bh + 2, 2 * 0.3 * nz, 0.95)
    return DrawnThreat("currency", "bundles", c.stop_recording(), density, p.where)


def draw_person(c: Canvas, p: Placement, rng: np.random.Generator) -> DrawnThreat:
    """A person hidden in the load: soft tissue ellipsoids with a skeleton inside.

    Poses: crouching, sitting, lying, standing; the beam crosses the body
    sideways or front to back.
    """
    pose = str(rng.choice(["crouching", "sitting", "lying", "standing"]))
    s = rng.uniform(0.85, 1.08)
    sideways = rng.random() < 0.5
    depth_torso = (360 if sideways else 230) * s
    face = 1.0 if rng.random() < 0.5 else -1.0
    # Joint layout in a local frame (mm), pelvis at the origin.
    if pose == "standing":
        torso_a, thigh_a, shin_a = 90, -90, -90
    elif pose == "sitting":
        torso_a, thigh_a, shin_a = 85, 0, -90
    elif pose == "crouching":
        torso_a, thigh_a, shin_a = 60, 45, -100
    else:
        torso_a, thigh_a, shin_a = 0, 180, 180
    torso_a += rng.uniform(-12, 12)
    thigh_a += rng.uniform(-15, 15)
    shin_a += rng.uniform(-15, 15)

    def seg(start: np.ndarray, angle_deg: float, length: float) -> np.ndarray:
        a = np.deg2rad(angle_deg)
        return start + length * np.array([np.cos(a) * face, np.sin(a)])

    pelvis = np.zeros(2)
    neck = seg(pelvis, torso_a, 520 * s)
    head = seg(pelvis, torso_a, 680 * s)
    knee = seg(pelvis, thigh_a, 430 * s)
    ankle = seg(knee, shin_a, 420 * s)
    elbow = seg(neck, torso_a - 150 + rng.uniform(-40, 40), 300 * s)
    wrist = seg(elbow, torso_a - 90 + rng.uniform(-60, 60), 260 * s)
    joints = np.stack([pelvis, neck, head, knee, ankle, elbow, wrist])
    # Centre the body on the placement.
    lo, hi = joints.min(0) - 120 * s, joints.max(0) + 120 * s
    shift = np.array([p.cx, p.cy]) - (lo + hi) / 2
    pelvis, neck, head, knee, ankle, elbow, wrist = (j + shift for j in joints)

    def limb(
        a: np.ndarray, b: np.ndarray, r_soft: float, r_bone: float, depth: float, n: int = 5
    ) -> None:
        for t in np.linspace(0.1, 0.9, n):
            q = a + t * (b - a)
            L = float(np.linalg.norm(b - a)) / n
            c.add_ellipsoid(
                "tissue", q[0], q[1], max(r_soft, L * 0.6), max(r_soft, L * 0.6), depth / 2, 1.03
            )
            c.add_ellipsoid("bone", q[0], q[1], r_bone * 1.4, r_bone * 1.4, r_bone, 1.85)

    c.start_recording()
    mid = (pelvis + neck) / 2
    along = neck - pelvis
    a = np.arctan2(along[1], along[0])
    half_len = float(np.linalg.norm(along)) / 2 + 60 * s
    rw = 150 * s
    rx = abs(half_len * np.cos(a)) + abs(rw * np.sin(a))
    ry = abs(half_len * np.sin(a)) + abs(rw * np.cos(a))
    c.add_ellipsoid("tissue", mid[0], mid[1], rx * 0.9, ry * 0.9, depth_torso / 2, 1.03)
    c.add_ellipsoid(
        "tissue", mid[0], mid[1], rx * 0.6, ry * 0.6, depth_torso / 2, -0.35
    )  # lungs: air in the chest
    for t in np.linspace(0.05, 0.95, 14):  # vertebrae
        q = pelvis + t * along
        c.add_ellipsoid("bone", q[0], q[1], 22 * s, 22 * s, 30 * s, 1.85)
    c.add_ellipsoid("bone", mid[0], mid[1], rx * 0.6, ry * 0.6, depth_torso / 2, 0.15)  # ribcage
    c.add_ellipsoid(
        "bone", pelvis[0], pelvis[1], 110 * s, 90 * s, 0.5 * depth_torso * 0.7, 0.5
    )  # pelvis
    c.add_ellipsoid("tissue", head[0], head[1], 85 * s, 105 * s, 80 * s, 1.03)
    c.add_ellipsoid("bone", head[0], head[1], 85 * s, 105 * s, 80 * s, 0.35)  # skull
    limb(pelvis, knee, 80 * s, 16 * s, 2 * 150 * s if sideways else 170 * s)
    limb(knee, ankle, 55 * s, 13 * s, 2 * 110 * s if sideways else 120 * s)
    limb(neck, elbow, 50 * s, 12 * s, 2 * 90 * s if not sideways else 95 * s, n=4)
    limb(elbow, wrist, 40 * s, 10 * s, 2 * 70 * s if not sideways else 75 * s, n=4)
    mass = c.stop_recording()
    return DrawnThreat("person", pose, np.clip(mass, 0, None), 1.05, p.where)


DRAW = {
    "firearm": draw_firearm,
    "narcotics": draw_narcotics,
    "cigarettes": draw_cigarettes,
    "currency": draw_currency,
    "person": draw_person,
}
# Room each category needs (w, h, depth in mm) before it can be placed.
MIN_ROOM = {
    "firearm": (250, 250, 60),
    "narcotics": (250, 120, 130),
    "cigarettes": (400, 320, 380),
    "currency": (180, 180, 80),
    "person": (900, 900, 400),
}
