"""Benign look-alikes for threat projection: decoys (issue 24).

`cargoscan tip` adds threats to real scans. If threats were the only thing ever added,
"something was added here" would itself mark a threat, and a detector could learn that
instead of what a threat looks like; on other trucks it then fires on their own
toolboxes, sacks and cartons. A decoy is drawn with the generator's primitives and
projected with the same physics, noise and encoding as a threat, but it is left
unlabelled: a negative. Each kind takes a threat category's room and hiding places
(`LIKE`) so that it appears where that threat would, at its scale:

- tools (as a firearm): wrenches, hammers, pipes, drills, pliers, in steel;
- sacks (as narcotics): filled bags of food or textile, soft-edged, not taped bricks;
- cartons (as cigarettes): cardboard cases of mixed goods, no regular pack grid;
- books (as currency): stacks of books or paper reams, no banknote straps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.synth.geometry import Canvas
from training.synth.threats import DrawnThreat, Placement, _place_parts, _rect, _ring
from training.synth.vehicle import STEEL

Part = tuple[str, np.ndarray, float, float]  # material, outline (mm), depth (mm), density


def _tool(rng: np.random.Generator, ox: float, oy: float) -> list[Part]:
    kind = str(rng.choice(["wrench", "hammer", "pipe", "drill", "pliers"]))
    if kind == "wrench":
        length = rng.uniform(150, 400)
        return [
            ("steel", _rect(ox, oy, ox + length, oy + 18), 8, STEEL),
            ("steel", _ring(ox + length, oy + 9, 22, 12), 10, STEEL),
        ]
    if kind == "hammer":
        return [
            ("wood", _rect(ox, oy, ox + rng.uniform(250, 350), oy + 28), 25, 0.7),
            ("steel", _rect(ox - 20, oy - 40, ox + 15, oy + 70), 30, STEEL),
        ]
    if kind == "pipe":  # seen from the side: two walls and a little of both faces
        length, d = rng.uniform(200, 600), rng.uniform(25, 60)
        return [
            ("steel", _rect(ox, oy, ox + length, oy + 4), d, STEEL),
            ("steel", _rect(ox, oy + d - 4, ox + length, oy + d), d, STEEL),
            ("steel", _rect(ox, oy + 4, ox + length, oy + d - 4), 6, STEEL),
        ]
    if kind == "drill":
        return [
            ("plastic", _rect(ox, oy, ox + 200, oy + 65), 60, 1.2),
            ("plastic", _rect(ox + 60, oy + 65, ox + 110, oy + 190), 45, 1.2),
            ("steel", _rect(ox + 40, oy + 15, ox + 130, oy + 50), 35, STEEL * 0.5),
            ("steel", _rect(ox - 50, oy + 22, ox, oy + 42), 20, STEEL),
        ]
    length = rng.uniform(150, 250)  # pliers: two crossed jaws
    jaw = np.array([[0, 0], [length, 30], [length, 42], [0, 12]], dtype=np.float64)
    other = np.array([[0, 42], [length, 12], [length, 0], [0, 30]], dtype=np.float64)
    shift = np.array([ox, oy])
    return [("steel", jaw + shift, 10, STEEL), ("steel", other + shift, 10, STEEL)]


def draw_tools(c: Canvas, p: Placement, rng: np.random.Generator) -> DrawnThreat:
    """One to four hand tools, loose or in a box."""
    parts: list[Part] = []
    for _ in range(int(rng.integers(1, 5))):
        parts += _tool(rng, rng.uniform(-120, 120), rng.uniform(-80, 80))
    if rng.random() < 0.4:  # a steel toolbox around them
        everything = np.concatenate([q[1] for q in parts])
        (x0, y0), (x1, y1) = everything.min(axis=0) - 30, everything.max(axis=0) + 30
        parts += [
            ("steel", _rect(x0, y0, x1, y1), 2.0, STEEL),
            ("steel", _rect(x0, y0, x0 + 2, y1), 200.0, STEEL),
            ("steel", _rect(x1 - 2, y0, x1, y1), 200.0, STEEL),
        ]
    c.start_recording()
    _place_parts(c, parts, (p.cx, p.cy), rng)
    return DrawnThreat("decoy", "tools", c.stop_recording(), STEEL, p.where)


def draw_sacks(c: Canvas, p: Placement, rng: np.random.Generator) -> DrawnThreat:
    """One to three filled bags (flour, sugar, rice, clothes): soft edges, no tape."""
    material = str(rng.choice(["food", "food", "textile"]))
    density = rng.uniform(0.5, 0.9) if material == "food" else rng.uniform(0.15, 0.4)
    n = int(rng.integers(1, 4))
    half_w = min(rng.uniform(150, 300), max(p.max_w / 2, 80.0))
    half_h = min(rng.uniform(60, 150), max(p.max_h / (2 * n), 40.0))
    depth = min(rng.uniform(250, 450), max(p.depth_mm, 100.0))
    c.start_recording()
    y = p.cy - (n - 1) * half_h
    for _ in range(n):
        c.add_rounded_block(
            material, p.cx + rng.uniform(-30, 30), y, half_w * rng.uniform(0.85, 1.0),
            half_h * rng.uniform(0.85, 1.0), depth, density, roundness=rng.uniform(2.0, 4.0),
        )  # fmt: skip
        y += 2 * half_h
    return DrawnThreat("decoy", f"sacks:{material}", c.stop_recording(), density, p.where)


def draw_cartons(c: Canvas, p: Placement, rng: np.random.Generator) -> DrawnThreat:
    """Cardboard cases of mixed goods: board walls around contents of their own."""
    cw, ch = rng.uniform(300, 600), rng.uniform(200, 400)
    cd = min(rng.uniform(300, 500), max(p.depth_mm, 150.0))
    nx = int(rng.integers(1, int(np.clip(p.max_w // cw, 1, 3)) + 1))
    ny = int(rng.integers(1, int(np.clip(p.max_h // ch, 1, 3)) + 1))
    x0, y0 = p.cx - nx * cw / 2, p.cy - ny * ch / 2
    c.start_recording()
    for i in range(nx):
        for j in range(ny):
            bx, by = x0 + i * cw, y0 + j * ch
            c.add_box("paper", bx, by, bx + cw, by + ch, 2 * 6.0, 0.7)  # front and back
            c.add_box("paper", bx, by, bx + 6, by + ch, cd, 0.7)  # side walls
            c.add_box("paper", bx + cw - 6, by, bx + cw, by + ch, cd, 0.7)
            contents = str(rng.choice(["textile", "plastic", "glass", "food"]))
            if contents == "textile":  # folded clothes: layers of varying fill
                for k in range(int(rng.integers(3, 8))):
                    ly = by + 8 + k * (ch - 16) / 8
                    c.add_box("textile", bx + 8, ly, bx + cw - 8, ly + (ch - 16) / 8,
                              cd * rng.uniform(0.6, 0.95), rng.uniform(0.2, 0.4))  # fmt: skip
            elif contents == "glass":  # bottles standing in rows
                step = rng.uniform(60, 90)
                for k in range(int((cw - 16) // step)):
                    bxk = bx + 8 + k * step
                    c.add_box("glass", bxk, by + 10, bxk + 6, by + ch - 40, cd * 0.8, 2.5)
                    c.add_box("glass", bxk + step - 16, by + 10, bxk + step - 10, by + ch - 40,
                              cd * 0.8, 2.5)  # fmt: skip
                    c.add_box(
                        "water", bxk + 6, by + 40, bxk + step - 16, by + ch - 40, cd * 0.8, 1.0
                    )
            else:  # boxed items at random
                material = "plastic" if contents == "plastic" else "food"
                for _ in range(int(rng.integers(2, 7))):
                    w, h = rng.uniform(40, cw / 2), rng.uniform(30, ch / 2)
                    ix, iy = (
                        bx + 8 + rng.uniform(0, cw - 16 - w),
                        by + 8 + rng.uniform(0, ch - 16 - h),
                    )
                    c.add_box(material, ix, iy, ix + w, iy + h, cd * rng.uniform(0.3, 0.9),
                              rng.uniform(0.3, 1.0))  # fmt: skip
    return DrawnThreat("decoy", "cartons", c.stop_recording(), 0.4, p.where)


def draw_books(c: Canvas, p: Placement, rng: np.random.Generator) -> DrawnThreat:
    """Stacks of books or paper reams: paper blocks of uneven thickness, no straps."""
    density = rng.uniform(0.7, 1.1)
    bw = rng.uniform(150, 300)
    depth = min(rng.uniform(150, 300), max(p.depth_mm, 80.0))
    stacks = int(rng.integers(1, int(np.clip(p.max_w // (bw + 10), 1, 3)) + 1))
    c.start_recording()
    for s in range(stacks):
        x = p.cx - stacks * (bw + 10) / 2 + s * (bw + 10)
        y = p.cy + min(p.max_h, 300.0) / 2
        for _ in range(int(rng.integers(2, 9))):
            t = rng.uniform(15, 60)
            w = bw * rng.uniform(0.8, 1.0)
            c.add_box("paper", x, y - t, x + w, y, depth * rng.uniform(0.7, 1.0), density)
            y -= t
    return DrawnThreat("decoy", "books", c.stop_recording(), density, p.where)


DECOYS: dict[str, Callable[[Canvas, Placement, np.random.Generator], DrawnThreat]] = {
    "tools": draw_tools,
    "sacks": draw_sacks,
    "cartons": draw_cartons,
    "books": draw_books,
}
LIKE = {"tools": "firearm", "sacks": "narcotics", "cartons": "cigarettes", "books": "currency"}
"""The threat category whose room and hiding places each decoy kind takes."""
