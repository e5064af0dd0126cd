"""Container loads and their manifests.

Each load style packs a stretch of the container the way real cargo is packed
(pallets of cartons, bulk with a slope, crates of machinery, tyre stacks, IBC
totes and drums, bales, paper rolls) and reports what it put there: the
commodity with its HS code and true weight (measured from the mass it added to
the scan), and the blocks threats can be hidden in, with their bulk density so
a hidden object displaces the cargo it replaces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from training.synth.geometry import Canvas
from training.synth.vehicle import INNER_WIDTH, STEEL, WOOD, ContainerBox

# Corrugated board is mostly air: ~0.12 g/cm^3 averaged over its thickness.
BOARD = 0.12


@dataclass(frozen=True)
class Commodity:
    hs_code: str
    description: str
    material: str
    bulk_density: tuple[float, float]  # g/cm^3 averaged over the package volume
    style: str  # how it is packed: which load function draws it


# A small catalogue across the styles; weights are measured, not listed.
COMMODITIES: tuple[Commodity, ...] = (
    Commodity("2106.90", "food preparations in cartons", "food", (0.2, 0.45), "cartons"),
    Commodity("1905.90", "biscuits and bakery products", "food", (0.15, 0.3), "cartons"),
    Commodity("2009.89", "fruit juice in bottles", "water", (0.4, 0.6), "cartons"),
    Commodity("6109.10", "cotton T-shirts", "textile", (0.12, 0.25), "cartons"),
    Commodity("6403.99", "footwear", "rubber", (0.12, 0.22), "cartons"),
    Commodity("3924.10", "plastic household articles", "plastic", (0.06, 0.15), "cartons"),
    Commodity("8516.60", "household appliances", "steel", (0.02, 0.05), "cartons"),
    Commodity("6907.21", "ceramic tiles", "ceramic", (0.5, 0.9), "cartons"),
    Commodity("7010.90", "glass bottles", "glass", (0.2, 0.35), "cartons"),
    Commodity("4819.10", "flattened cardboard boxes", "paper", (0.2, 0.4), "cartons"),
    Commodity("1001.99", "wheat in bulk", "food", (0.72, 0.8), "bulk"),
    Commodity("3102.30", "ammonium nitrate fertiliser in bags", "food", (0.8, 0.95), "bulk"),
    Commodity("2523.29", "cement in bags", "glass", (1.1, 1.4), "bulk"),
    Commodity("8429.52", "machinery parts", "steel", (0.15, 0.4), "machinery"),
    Commodity("8483.40", "gearboxes and transmission parts", "steel", (0.3, 0.6), "machinery"),
    Commodity("8501.52", "electric motors", "steel", (0.25, 0.5), "machinery"),
    Commodity("4011.20", "new tyres for trucks", "rubber", (1.0, 1.0), "tyres"),
    Commodity("4011.10", "new tyres for cars", "rubber", (1.0, 1.0), "tyres"),
    Commodity("3824.99", "chemical preparations in IBC totes", "water", (1.0, 1.25), "ibc"),
    Commodity("2710.19", "lubricating oil in drums", "plastic", (0.85, 0.9), "drums"),
    Commodity("2204.21", "wine in drums", "water", (0.99, 1.0), "drums"),
    Commodity("5201.00", "raw cotton in bales", "textile", (0.25, 0.45), "bales"),
    Commodity("6309.00", "worn clothing in bales", "textile", (0.18, 0.35), "bales"),
    Commodity("4802.55", "paper in rolls", "paper", (0.65, 0.85), "rolls"),
    Commodity("4407.11", "sawn timber", "wood", (0.45, 0.6), "timber"),
    Commodity("7208.51", "steel plates", "steel", (7.85, 7.85), "plates"),
    Commodity("3102.10", "urea fertiliser in bags", "food", (0.7, 0.8), "bags"),
    Commodity("1006.30", "rice in bags", "food", (0.75, 0.85), "bags"),
    Commodity("0901.11", "green coffee in jute bags", "food", (0.55, 0.7), "bags"),
    Commodity("3901.10", "polyethylene granules in big bags", "plastic", (0.5, 0.6), "big_bags"),
    Commodity("2836.20", "soda ash in big bags", "glass", (0.9, 1.1), "big_bags"),
    Commodity("1507.10", "crude soybean oil in bulk", "plastic", (0.92, 0.92), "tank"),
    Commodity("2811.19", "inorganic acid solution", "water", (1.1, 1.35), "tank"),
)


@dataclass
class Block:
    """A packed region (mm) where a threat could be hidden, and what fills it."""

    x0: float
    y0: float
    x1: float
    y1: float
    material: str
    bulk_density: float  # g/cm^3 of the fill, averaged along the beam
    depth_mm: float


# What a load style returns: packages placed and the blocks threats can hide in.
Packed = tuple[int, list[Block]]


class Room(NamedTuple):
    """The stretch of container a load style fills (mm)."""

    x0: float
    x1: float
    floor: float
    ceil: float


@dataclass
class LoadedItem:
    """One manifest line as it truly is."""

    commodity: Commodity
    packages: int
    mass_kg: float
    blocks: list[Block]


def _carton_contents(
    c: Canvas,
    com: Commodity,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    depth: float,
    density: float,
    rng: np.random.Generator,
) -> None:
    """What is inside one column of cartons: a few items with gaps, bottles or a dense core.

    Each carton is packed a little differently, which gives general cargo its
    blocky, busy texture instead of a flat slab.
    """
    d = density * rng.uniform(0.75, 1.25)
    if com.material == "glass" or "juice" in com.description:
        # Bottles standing in rows: upright cylinders (glass or liquid). Rows
        # deeper in the carton are staggered, so only part of the pattern
        # survives the sum along the beam; the rest is an even fill.
        r = rng.uniform(30, 45)
        n = max(int((x1 - x0) // (2 * r + 6)), 1)
        per_z = max(depth / (2 * r + 6), 1)
        material, rho, wall = (
            ("glass", 2.5, 3.0) if com.material == "glass" else ("water", 0.9, None)
        )
        top = y0 + (y1 - y0) * rng.uniform(0.85, 0.95)
        for k in range(n):
            cx = x0 + (k + 0.5) * (x1 - x0) / n
            c.add_cylinder_y(material, cx, y0, top, r, rho * per_z * 0.4, wall_mm=wall)
        # The even part: 60 % of the bottles' mass spread over the carton.
        shell = (1 - (1 - 3 / r) ** 2) if wall else 1.0
        mean_path = np.pi * r / 2 * shell * per_z * n * 2 * r / (x1 - x0)
        c.add_box(material, x0, y0, x1, top, mean_path * 0.6, rho)
        return
    if com.material == "steel":
        # Appliances: a light housing with a compact dense part (motor, compressor).
        c.add_box("plastic", x0, y0, x1, y1, depth, 0.03)
        w, h = (x1 - x0) * rng.uniform(0.25, 0.5), (y1 - y0) * rng.uniform(0.2, 0.4)
        px = x0 + rng.uniform(0, x1 - x0 - w)
        c.add_box(
            "steel", px, y0 + 10, px + w, y0 + 10 + h, depth * 0.5, STEEL * rng.uniform(0.04, 0.1)
        )
        c.add_box("steel", x0, y0, x1, y1, 2 * 0.8 * max(depth / 600, 1), STEEL)
        return
    nx, ny = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    gx, gy = (x1 - x0) / nx, (y1 - y0) / ny
    for i in range(nx):
        for j in range(ny):
            # Items inside do not line up through the whole depth: no gaps, just
            # a different fill per item.
            ix0, iy0 = x0 + i * gx, y0 + j * gy
            c.add_box(
                com.material, ix0, iy0, ix0 + gx, iy0 + gy, depth, d * rng.uniform(0.85, 1.15)
            )


def _cartons(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """Pallets of cartons two deep across the container: the grid texture of general cargo."""
    x0, x1, floor, ceil = room
    blocks: list[Block] = []
    packages = 0
    pallet_len = float(rng.choice([800.0, 1000.0, 1200.0]))
    # One or two pallets across the container, not always full.
    z_depth = rng.uniform(1000, 1250) if rng.random() < 0.25 else rng.uniform(1700, 2300)
    density = rng.uniform(*com.bulk_density)
    cw, ch = rng.uniform(250, 600), rng.uniform(200, 450)
    x = x0 + rng.uniform(0, 80)
    full_h = ceil - floor - 144
    stack_frac = rng.uniform(0.45, 0.98)
    while x + pallet_len <= x1:
        # Pallet: top deck boards, blocks and bottom boards, edge-on in places.
        c.add_box("wood", x, floor + 122, x + pallet_len, floor + 144, z_depth * 0.75, WOOD)
        for bx in (x, x + pallet_len / 2 - 50, x + pallet_len - 100):
            c.add_box("wood", bx, floor + 22, bx + 100, floor + 122, 3 * 100 * 2, WOOD)
        c.add_box("wood", x, floor, x + pallet_len, floor + 22, z_depth * 0.4, WOOD)
        h = full_h * float(np.clip(stack_frac + rng.normal(0, 0.06), 0.2, 0.98))
        n_cols = max(round(pallet_len / cw), 1)
        n_rows = max(int(h // ch), 1)
        w, hh = pallet_len / n_cols, h / n_rows
        y_base = floor + 144
        for i in range(n_cols):
            for j in range(n_rows):
                cx0, cy0 = x + i * w, y_base + j * hh
                _carton_contents(
                    c, com, cx0 + 1, cy0 + 1, cx0 + w - 1, cy0 + hh - 1, z_depth, density, rng
                )
        # Carton walls along the beam show as lines; across it, as a light veil.
        for i in range(n_cols + 1):
            c.add_box("paper", x + i * w - 4, y_base, x + i * w + 4, y_base + h, z_depth, BOARD)
        for j in range(n_rows + 1):
            c.add_box(
                "paper", x, y_base + j * hh - 4, x + pallet_len, y_base + j * hh + 4, z_depth, BOARD
            )
        c.add_box(
            "paper", x, y_base, x + pallet_len, y_base + h, 2 * 5 * max(z_depth / 400, 2), BOARD
        )
        if rng.random() < 0.3:  # stretch wrap / strapping
            c.add_box(
                "steel",
                x + pallet_len * 0.3,
                y_base,
                x + pallet_len * 0.3 + 15,
                y_base + h,
                2 * 0.8,
                STEEL,
            )
        blocks.append(Block(x, y_base, x + pallet_len, y_base + h, com.material, density, z_depth))
        packages += n_cols * n_rows * max(int(z_depth // 400), 1)
        x += pallet_len + rng.uniform(10, 120)
    return packages, blocks


def _bulk(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """Loose or bagged bulk: full width, a rounded top that slopes to the ends."""
    x0, x1, floor, ceil = room
    density = rng.uniform(*com.bulk_density)
    peak = rng.uniform(0.45, 0.95) * (ceil - floor)
    skew = rng.uniform(0.3, 0.7)
    spread = rng.uniform(0.55, 0.9)
    # Low-frequency density variation (settling, bag boundaries) on a coarse grid.
    noise = rng.standard_normal((16, max(int((x1 - x0) // 400), 2))).astype(np.float32)
    for _ in c.slabs():  # bulk spans the whole width: one pass per fan-beam slab
        win = c._window(*c.box_px(x0, ceil, x1, floor))
        if win is None:
            break
        xx, yy = c._grid_mm(win)
        t = (xx - x0) / max(x1 - x0, 1.0)
        profile = floor + peak * np.clip(1 - ((t - skew) / spread) ** 2, 0.05, 1) ** 0.5
        edge = np.clip((profile - yy) / c.pitch_mm + 0.5, 0, 1)
        size = (win[2] - win[0], win[3] - win[1])
        path = (
            edge * INNER_WIDTH * (1 + 0.04 * cv2.resize(noise, size, interpolation=cv2.INTER_CUBIC))
        )
        if com.description.endswith("bags"):
            # Bag rows: slightly lighter seams every 450 mm in height, 700 mm along.
            seam = (np.abs(((yy - floor) % 450) - 225) > 210) | (
                np.abs(((xx - x0) % 700) - 350) > 335
            )
            path = path * np.where(seam, 0.9, 1.0)
        c.add_path(com.material, win, np.clip(path, 0, None), density)
    return int((x1 - x0) // 500) * 20, [
        Block(x0, floor, x1, floor + peak * 0.8, com.material, density, INNER_WIDTH)
    ]


def _machinery(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """Crated machines: wooden crates around dense, irregular steel parts."""
    x0, x1, floor, ceil = room
    blocks: list[Block] = []
    x, n = x0, 0
    while x < x1 - 600:
        L = min(rng.uniform(800, 2200), x1 - x)
        H = rng.uniform(600, min(2000, ceil - floor - 100))
        D = rng.uniform(900, 2200)
        # Crate: skids, posts and boards (boards along the beam edge-on at the ends).
        c.add_box("wood", x, floor, x + L, floor + 100, D * 0.5, WOOD)
        c.add_box("wood", x, floor, x + 25, floor + H, D, WOOD)
        c.add_box("wood", x + L - 25, floor, x + L, floor + H, D, WOOD)
        c.add_box("wood", x, floor + H - 25, x + L, floor + H, D, WOOD)
        c.add_box("wood", x, floor, x + L, floor + H, 2 * 20, WOOD)
        base = floor + 100
        for _ in range(rng.integers(2, 6)):
            kind = rng.integers(0, 4)
            px = x + rng.uniform(60, max(L - 400, 61))
            pw = rng.uniform(150, min(900, L - 80))
            ph = rng.uniform(150, H - 150)
            if kind == 0:  # cast housing: a shell with thick walls
                wall = rng.uniform(15, 40)
                c.add_box("steel", px, base, px + pw, base + ph, 2 * wall, STEEL)
                c.add_box("steel", px, base, px + wall, base + ph, D * 0.4, STEEL)
                c.add_box("steel", px + pw - wall, base, px + pw, base + ph, D * 0.4, STEEL)
            elif kind == 1:  # motor: steel cylinder with copper windings
                r = min(pw, ph) / 2
                c.add_cylinder_x("steel", px, px + pw, base + r, r, STEEL, wall_mm=12)
                c.add_cylinder_x(
                    "copper", px + pw * 0.15, px + pw * 0.85, base + r, r * 0.7, 8.96 * 0.35
                )
                c.add_cylinder_x("steel", px - 80, px + pw + 80, base + r, 25, STEEL)
            elif kind == 2:  # gear or flange: disc facing the beam
                r = min(pw, ph) / 2
                c.add_cylinder_z("steel", px + r, base + r, r, rng.uniform(30, 120), STEEL)
                c.add_cylinder_z("steel", px + r, base + r, r * 0.25, 200, STEEL)
            else:  # frame of beams and plates
                c.add_box("steel", px, base, px + pw, base + 20, D * 0.6, STEEL)
                c.add_box("steel", px, base, px + 15, base + ph, D * 0.3, STEEL)
                c.add_box("aluminium", px, base + ph * 0.5, px + pw, base + ph, D * 0.2, 2.7)
        blocks.append(Block(x, floor, x + L, floor + H, "wood", 0.05, D))
        n += 1
        x += L + rng.uniform(50, 400)
    return n, blocks


def _tyres(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """Stacks of new tyres lying flat, two or three stacks across the container."""
    x0, x1, floor, ceil = room
    truck = "truck" in com.description
    r_out = rng.uniform(480, 540) if truck else rng.uniform(300, 350)
    r_in = r_out * (0.55 if truck else 0.62)
    t_h = rng.uniform(280, 320) if truck else rng.uniform(190, 230)
    across = 2 if truck else 3
    x, n, blocks = x0 + r_out, 0, []
    while x + r_out <= x1:
        k = int((ceil - floor - 50) // t_h * rng.uniform(0.6, 1.0))
        for j in range(max(k, 1)):
            y = floor + j * t_h
            c.add_cylinder_y("rubber", x, y, y + t_h, r_out, 1.15 * across, wall_mm=22)
            for ys in (y, y + t_h - 15):
                c.add_cylinder_y(
                    "rubber", x, ys, ys + 15, r_out - 22, 1.15 * across, wall_mm=r_out - 22 - r_in
                )
            c.add_cylinder_y(
                "steel",
                x,
                y + t_h * 0.5 - 20,
                y + t_h * 0.5 + 20,
                r_out - 25,
                STEEL * across,
                wall_mm=1.5,
            )
            n += across
        blocks.append(
            Block(x - r_out, floor, x + r_out, floor + max(k, 1) * t_h, "rubber", 0.3, INNER_WIDTH)
        )
        x += 2 * r_out + rng.uniform(10, 60)
    return n, blocks


def _ibc(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """1000 l IBC totes: HDPE bottle in a steel tube cage on a pallet, two across."""
    x0, x1, floor, _ceil = room
    density = rng.uniform(*com.bulk_density)
    x, n, blocks = x0 + 20, 0, []
    while x + 1200 <= x1:
        fill = rng.uniform(0.6, 0.95)
        base = floor + 150
        c.add_box("steel", x, floor, x + 1200, base, 2 * 1000 * 0.15, STEEL)  # steel/plastic pallet
        c.add_box(
            com.material, x + 30, base + 10, x + 1170, base + 10 + 1000 * fill, 2 * 960, density
        )
        c.add_box("plastic", x + 25, base, x + 1175, base + 1000, 2 * 2 * 2.0, 0.95)
        c.add_box("plastic", x + 25, base, x + 32, base + 1000, 2 * 960, 0.95)
        c.add_box("plastic", x + 1168, base, x + 1175, base + 1000, 2 * 960, 0.95)
        for bx in np.arange(x + 10, x + 1200, 200):  # vertical cage bars, four per column
            c.add_cylinder_y("steel", bx, base, base + 1010, 10, 4 * STEEL, wall_mm=1.8)
        for by in np.arange(base + 100, base + 1010, 220):  # horizontal bars
            c.add_cylinder_x("steel", x, x + 1200, by, 10, 4 * STEEL, wall_mm=1.8)
        for bx in (x, x + 1180):  # bars along the beam at the cage ends
            c.add_box("steel", bx, base, bx + 20, base + 1010, 2 * 1000 * 0.08, STEEL)
        blocks.append(Block(x, base, x + 1200, base + 1000 * fill, com.material, density, 1920))
        n += 2
        x += 1200 + rng.uniform(20, 150)
    return n, blocks


def _drums(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """200 l steel drums, two by two on pallets, sometimes double stacked."""
    x0, x1, floor, ceil = room
    density = rng.uniform(*com.bulk_density)
    two_high = rng.random() < 0.4 and ceil - floor > 2200
    x, n, blocks = x0 + 20, 0, []
    r, h = 286.0, 880.0
    while x + 1200 <= x1:
        for level in range(2 if two_high else 1):
            base = floor + level * (h + 150)
            c.add_box("wood", x, base, x + 1200, base + 144, 2 * 1000 * 0.5, WOOD)
            for k in range(2):
                cx = x + 300 + k * 600
                fill = rng.uniform(0.85, 0.97)
                c.add_cylinder_y("steel", cx, base + 144, base + 144 + h, r, 2 * STEEL, wall_mm=1.2)
                c.add_cylinder_y(
                    com.material, cx, base + 150, base + 150 + h * fill, r - 2, 2 * density
                )
                for yh in (base + 144 + h / 3, base + 144 + 2 * h / 3):  # rolling hoops
                    c.add_cylinder_y("steel", cx, yh - 10, yh + 10, r + 8, 2 * STEEL, wall_mm=4)
                c.add_box("steel", cx - r, base + 144, cx + r, base + 150, 2 * 2 * r, STEEL * 0.2)
                n += 2
        blocks.append(
            Block(x, floor + 144, x + 1200, floor + 144 + h, com.material, density * 0.78, 2 * 572)
        )
        x += 1200 + rng.uniform(20, 150)
    return n, blocks


def _bales(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """Pressed bales with steel straps, stacked two or three high."""
    x0, x1, floor, ceil = room
    density = rng.uniform(*com.bulk_density)
    L, H, D = rng.uniform(900, 1400), rng.uniform(500, 900), rng.uniform(700, 1100)
    across = max(int(INNER_WIDTH // D), 1)
    levels = max(int((ceil - floor - 100) // H), 1)
    x, n, blocks = x0, 0, []
    while x + L <= x1:
        top = levels if rng.random() < 0.7 else max(levels - 1, 1)
        for j in range(top):
            y = floor + j * H
            bulge = rng.uniform(0.9, 1.1)
            c.add_box(
                com.material, x + 10, y + 10, x + L - 10, y + H - 10, D * across, density * bulge
            )
            for s in np.linspace(x + L * 0.1, x + L * 0.9, 5):
                c.add_box("steel", s, y, s + 20, y + H, 2 * across * 0.9, STEEL)
                c.add_box("steel", s, y, s + 20, y + 3, D * across, STEEL * 0.3)
                c.add_box("steel", s, y + H - 3, s + 20, y + H, D * across, STEEL * 0.3)
            n += across
        blocks.append(Block(x, floor, x + L, floor + top * H, com.material, density, D * across))
        x += L + rng.uniform(10, 80)
    return n, blocks


def _rolls(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """Paper rolls standing upright, two across: tall round-topped dark columns."""
    x0, x1, floor, ceil = room
    density = rng.uniform(*com.bulk_density)
    r = rng.uniform(450, 620)
    across = max(int(INNER_WIDTH // (2 * r)), 1)
    x, n, blocks = x0 + r, 0, []
    while x + r <= x1:
        h = min(rng.uniform(1000, 2400), ceil - floor - 50)
        c.add_cylinder_y(com.material, x, floor, floor + h, r, density * across, wall_mm=r - 55)
        c.add_cylinder_y("paper", x, floor, floor + h, 55, 0.7 * across, wall_mm=12)
        blocks.append(
            Block(x - r, floor, x + r, floor + h, com.material, density * 0.78, across * 2 * r)
        )
        n += across
        x += 2 * r + rng.uniform(5, 60)
    return n, blocks


def _timber(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """Packs of sawn timber lying along the container on bearers."""
    x0, x1, floor, ceil = room
    density = rng.uniform(*com.bulk_density)
    packs = rng.integers(1, 4)
    h = rng.uniform(500, 800)
    n, blocks = 0, []
    for j in range(packs):
        y = floor + j * (h + 80)
        if y + h > ceil:
            break
        c.add_box("wood", x0, y, x1, y + 80, 3 * 100, WOOD)  # bearers, edge-on lines
        for yb in np.arange(y + 80, y + 80 + h, rng.uniform(25, 50)):  # board layers
            c.add_box("wood", x0, yb, x1, yb + 20, INNER_WIDTH * 0.9, density * 1.3)
        blocks.append(Block(x0, y + 80, x1, y + 80 + h, "wood", density, INNER_WIDTH * 0.9))
        n += 1
    return n, blocks


def _plates(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """A few stacks of steel plate on timber: very dense, low, spread along the floor."""
    x0, x1, floor, _ceil = room
    n, x = 0, x0
    while x < x1 - 1500:
        L = min(rng.uniform(1500, 3000), x1 - x)
        c.add_box("wood", x, floor, x + L, floor + 100, 2 * 100, WOOD)
        c.add_box(
            "steel",
            x,
            floor + 100,
            x + L,
            floor + 100 + rng.uniform(30, 120),
            rng.uniform(800, 1500),
            STEEL,
        )
        n += 1
        x += L + rng.uniform(200, 800)
    return n, []


def _bags(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """Sacks (25-60 kg) stacked in layers: rows of soft, rounded shapes."""
    x0, x1, floor, ceil = room
    density = rng.uniform(*com.bulk_density)
    bw, bh = rng.uniform(600, 900), rng.uniform(140, 220)
    depth = INNER_WIDTH * rng.uniform(0.85, 0.98)
    top = floor + (ceil - floor) * rng.uniform(0.45, 0.9)
    n, layer, y = 0, 0, floor
    while y + bh <= top:
        offset = (bw / 2) * (layer % 2)  # bonded stacking: alternate layers offset
        x = x0 + offset * rng.uniform(0.6, 1.0)
        while x + bw <= x1:
            w = bw * rng.uniform(0.9, 1.05)
            c.add_rounded_block(
                com.material,
                x + w / 2,
                y + bh / 2,
                w / 2,
                bh / 2 * 1.08,
                depth,
                density * rng.uniform(0.9, 1.1),
                roundness=2.5,
            )
            n += max(int(depth // 500), 1)
            x += w
        y += bh * rng.uniform(0.9, 0.98)
        layer += 1
    return n, [Block(x0, floor, x1, y, com.material, density * 0.8, depth)]


def _big_bags(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """1 m^3 FIBC big bags, two across, sometimes two high: rounded, sagging tops."""
    x0, x1, floor, ceil = room
    density = rng.uniform(*com.bulk_density)
    two_high = rng.random() < 0.4 and ceil - floor > 2100
    x, n, blocks = x0, 0, []
    while x + 1000 <= x1:
        for level in range(2 if two_high else 1):
            w, h = rng.uniform(900, 1050), rng.uniform(900, 1150)
            base = floor + level * 1050 + 150
            c.add_box("wood", x, base - 150, x + 1100, base - 6, 2 * 1100 * 0.45, WOOD)
            c.add_rounded_block(
                com.material,
                x + w / 2 + 30,
                base + h / 2,
                w / 2,
                h / 2,
                2 * 980,
                density,
                roundness=3.0,
            )
            c.add_box(
                "plastic",
                x + w / 2 - 200,
                base + h - 30,
                x + w / 2 + 200,
                base + h + 120,
                2 * 40,
                0.9,
            )  # lifting loops
            n += 2
        blocks.append(
            Block(x + 100, floor + 200, x + 950, floor + 1000, com.material, density * 0.8, 1960)
        )
        x += 1100 + rng.uniform(10, 80)
    return n, blocks


def _tank(c: Canvas, room: Room, com: Commodity, rng: np.random.Generator) -> Packed:
    """The vessel of a tank container with its liquid: a lying cylinder, part filled."""
    x0, x1, floor, ceil = room
    density = rng.uniform(*com.bulk_density)
    r = min((ceil - floor) / 2, 1150.0)
    cy = floor + r
    fill_y = floor + 2 * r * rng.uniform(0.75, 0.97)
    head = rng.uniform(250, 400)  # depth of the dished heads at both ends
    bx0, bx1 = x0 + 150 + head, x1 - 150 - head
    c.add_cylinder_x("steel", bx0, bx1, cy, r, STEEL, wall_mm=5)
    c.add_cylinder_x("aluminium", bx0 - 30, bx1 + 30, cy, r + 60, 2.7, wall_mm=1.2)  # cladding
    c.add_cylinder_x("plastic", bx0 - 30, bx1 + 30, cy, r + 58, 0.04, wall_mm=55)  # insulation
    c.add_cylinder_x(com.material, bx0, bx1, cy, r - 5, density, fill_to_y=fill_y)
    for xe, side in ((bx0, -1), (bx1, 1)):
        c.add_ellipsoid("steel", xe, cy, head, r, r, STEEL, half=side)
        c.add_ellipsoid("steel", xe, cy, head - 5, r - 5, r - 5, -STEEL, half=side)
        c.add_ellipsoid(
            com.material, xe, cy, head - 5, r - 5, r - 5, density, half=side, fill_to_y=fill_y
        )
    c.add_cylinder_y("steel", (x0 + x1) / 2, cy + r, cy + r + 120, 250, STEEL, wall_mm=12)  # manlid
    return 1, [
        Block(
            x0 + 500,
            cy - r * 0.6,
            x1 - 500,
            min(fill_y, cy + r * 0.5),
            com.material,
            density,
            2 * r * 0.8,
        )
    ]


LOAD_STYLES: dict[str, Callable[[Canvas, Room, Commodity, np.random.Generator], Packed]] = {
    "cartons": _cartons,
    "bulk": _bulk,
    "machinery": _machinery,
    "tyres": _tyres,
    "ibc": _ibc,
    "drums": _drums,
    "bales": _bales,
    "rolls": _rolls,
    "timber": _timber,
    "plates": _plates,
    "bags": _bags,
    "big_bags": _big_bags,
    "tank": _tank,
}

# How often each kind of load turns up (by style of the first segment).
LOAD_KINDS = (
    "cartons",
    "mixed",
    "bulk",
    "machinery",
    "tyres",
    "liquids",
    "textiles",
    "rolls",
    "empty",
)
LOAD_KIND_WEIGHTS = (0.28, 0.16, 0.09, 0.1, 0.07, 0.09, 0.09, 0.05, 0.07)


def load_container(
    c: Canvas, box: ContainerBox, rng: np.random.Generator, want: str | None = None
) -> tuple[str, list[LoadedItem]]:
    """Fill a container with one kind of load (or a mix) and return the true manifest.

    `want` is set by a manifest mix that plans each scan (scene.ACV_PLANS): "empty",
    "loaded" (a kind drawn from the loaded ones, in their usual proportions) or "multi"
    (a mixed load of two or three segments, each a manifest line, so that one can go
    undeclared). None draws the kind as the detector-training data always has."""
    if want is None:
        kind = str(rng.choice(LOAD_KINDS, p=np.array(LOAD_KIND_WEIGHTS) / sum(LOAD_KIND_WEIGHTS)))
        if box.tank:
            kind = "tank" if rng.random() < 0.9 else "empty"
    elif want == "empty":
        kind = "empty"
    elif box.tank:
        kind = "tank"
    elif want == "multi":
        kind = "mixed"
    else:
        loaded = [k for k in LOAD_KINDS if k != "empty"]
        weights = np.array(
            [w for k, w in zip(LOAD_KINDS, LOAD_KIND_WEIGHTS, strict=True) if k != "empty"]
        )
        kind = str(rng.choice(loaded, p=weights / weights.sum()))
    if kind == "empty":
        return kind, []
    style_for_kind = {
        "cartons": ["cartons"],
        "bulk": ["bulk"],
        "machinery": ["machinery", "plates"],
        "tyres": ["tyres"],
        "liquids": ["ibc", "drums"],
        "textiles": ["bales", "cartons"],
        "rolls": ["rolls", "timber"],
        "bags": ["bags", "big_bags"],
        "tank": ["tank"],
    }
    length = box.inner_x1 - box.inner_x0
    if kind == "mixed":
        if want == "multi":  # segments long enough for every style to pack something
            n_seg = int(rng.integers(2, 4))
            cuts = np.arange(1, n_seg) / n_seg + rng.uniform(-0.06, 0.06, n_seg - 1)
        else:
            n_seg = int(rng.integers(2, 5))
            cuts = np.sort(rng.uniform(0.15, 0.85, n_seg - 1))
        bounds = np.concatenate([[0.0], cuts, [1.0]])
        styles = [
            str(s)
            for s in rng.choice(
                [
                    "cartons",
                    "machinery",
                    "drums",
                    "bales",
                    "tyres",
                    "rolls",
                    "ibc",
                    "bags",
                    "big_bags",
                ],
                n_seg,
            )
        ]
    else:
        # Most loads fill the box; some leave the door end empty.
        fill = 1.0 if rng.random() < 0.6 or box.tank else rng.uniform(0.4, 0.95)
        bounds = np.array([0.0, fill])
        styles = [str(rng.choice(style_for_kind[kind]))]
    items: list[LoadedItem] = []
    for s, style in enumerate(styles):
        x0 = box.inner_x0 + bounds[s] * length + (0 if s == 0 else 30)
        x1 = box.inner_x0 + bounds[s + 1] * length
        if x1 - x0 < 700:
            continue
        if kind == "textiles" and style == "cartons":
            choices = [
                cm for cm in COMMODITIES if cm.material == "textile" and cm.style == "cartons"
            ]
        else:
            choices = [cm for cm in COMMODITIES if cm.style == style]
        com = choices[int(rng.integers(len(choices)))]
        c.start_recording()
        packages, blocks = LOAD_STYLES[style](c, Room(x0, x1, box.floor_y, box.ceiling_y), com, rng)
        c.stop_recording()
        mass = c.last_recorded_kg
        if packages > 0:
            items.append(LoadedItem(com, packages, mass, blocks))
    return kind, items
