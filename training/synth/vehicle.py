"""Tractor unit, trailer chassis, wheels and ISO containers as ray-sum primitives.

Dimensions follow ISO 668 / ISO 1496 containers (20 ft: 6058 mm long, 40 ft:
12192 mm; 2591 mm high, 2896 mm high-cube; 2438 mm wide) and common European
semi-trailers. What makes a container look like one in a transmission image is
the structure seen edge-on: end walls, corner posts, roof and floor run along
the beam and show as dark lines; side walls are crossed at right angles and
barely show, but their corrugation leaves fine vertical stripes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from training.synth.geometry import HALF_WIDTH, Canvas

STEEL = 7.85  # g/cm^3
RUBBER = 1.15
WOOD = 0.65
ALU = 2.70

CONTAINER_WIDTH = 2438.0
INNER_WIDTH = 2352.0


def sides(c: Canvas, z: float) -> Iterator[float]:
    """Run the loop body for the near side (-z) and then the far side (+z).

    Side walls, rails and wheels exist once per side; under the fan beam the
    two sides project at different magnifications, so each is drawn at its own z.
    """
    for side_z in (-z, z):
        with c.at_z(side_z):
            yield side_z


@dataclass
class ContainerBox:
    """Where a container sits (mm) and its usable interior, for loads and threats."""

    x0: float
    x1: float
    y0: float  # bottom (deck) height
    y1: float  # roof height
    inner_x0: float
    inner_x1: float
    floor_y: float
    ceiling_y: float
    length_ft: int
    reefer: bool
    tank: bool = False


def draw_wheel(
    c: Canvas, cx: float, radius: float, rng: np.random.Generator, dual: bool = True
) -> None:
    """A wheel set on one axle seen from the side: both sides of the vehicle, duals or singles.

    Tyres are hollow: the rays cross their sidewalls, and run the full tread
    width through the tread and the steel belt, which gives the dark outer ring
    of real scans. Rim barrel, disc, brake drum, hub and axle are steel.
    """
    per_side = 2 if dual else 1
    cy = radius
    tread_w = rng.uniform(260, 320)
    rim = radius * 0.56
    for _ in sides(c, HALF_WIDTH - 250):
        c.add_annulus_z("rubber", cx, cy, rim, radius - 22, 2 * 18 * per_side, RUBBER)
        # The shoulders curve round to the tread: rays near the rim of the tyre
        # cross them obliquely, so the outer third of the ring is darker.
        shoulder = radius - 22 - (radius - 22 - rim) * 0.3
        c.add_annulus_z("rubber", cx, cy, shoulder, radius - 22, 2 * 70 * per_side, RUBBER)
        # Radial tyres carry steel cord plies in both sidewalls.
        c.add_annulus_z("steel", cx, cy, rim, radius - 22, 2 * 1.2 * per_side, STEEL)
        c.add_annulus_z("rubber", cx, cy, radius - 22, radius, tread_w * per_side * 0.9, RUBBER)
        c.add_annulus_z("steel", cx, cy, radius - 30, radius - 24, tread_w * per_side * 0.25, STEEL)
        c.add_annulus_z("steel", cx, cy, rim - 9, rim, 230 * per_side * 0.8, STEEL)
        c.add_annulus_z("steel", cx, cy, rim * 0.45, rim - 9, 12 * per_side, STEEL)
        c.add_annulus_z("steel", cx, cy, rim * 0.62, rim * 0.78, 150, STEEL)  # brake drum
        c.add_cylinder_z("steel", cx, cy, rim * 0.32, 260, STEEL)  # hub
        for k in range(10):  # wheel studs: small dense dots on a circle
            a = 2 * np.pi * k / 10
            sx, sy = cx + 0.27 * rim * np.cos(a), cy + 0.27 * rim * np.sin(a)
            c.add_cylinder_z("steel", sx, sy, 11, 2 * 60, STEEL)
    c.add_cylinder_z("steel", cx, cy, 65, 1750, STEEL)  # axle beam across the vehicle


def draw_corner_casting(c: Canvas, x0: float, y0: float, rng: np.random.Generator) -> None:
    """ISO 1161 corner casting, 178 x 118 mm from the side and 162 mm deep along the beam.

    It is a hollow steel box: its top, bottom and end walls run along the beam
    (a dark frame, the full 162 mm of steel), inside it the beam crosses only
    the inner and outer faces, and the outer face's oval aperture lets it
    through one wall. Real scans show a dark square with a bright spot; a solid
    block here taught the model that such a spot on a dark square is unusual.
    """
    w, h, depth = 178.0, 118.0, 162.0
    wall = rng.uniform(22, 30)
    x1, y1 = x0 + w, y0 + h
    c.add_box("steel", x0, y0, x1, y0 + wall, depth, STEEL)
    c.add_box("steel", x0, y1 - wall, x1, y1, depth, STEEL)
    c.add_box("steel", x0, y0 + wall, x0 + wall, y1 - wall, depth, STEEL)
    c.add_box("steel", x1 - wall, y0 + wall, x1, y1 - wall, depth, STEEL)
    # Inside the frame: the outer face and the thinner inner face.
    c.add_box("steel", x0 + wall, y0 + wall, x1 - wall, y1 - wall, wall + rng.uniform(8, 14), STEEL)
    # Side aperture (about 78 x 64 mm) through the outer face: a negative path.
    half_w, half_h = rng.uniform(34, 42), rng.uniform(28, 34)
    c.add_rounded_block(
        "steel", (x0 + x1) / 2, (y0 + y1) / 2, half_w, half_h, -wall, STEEL, roundness=2.0
    )


def draw_post_fittings(
    c: Canvas, xa: float, xb: float, y_low: float, y_high: float, rng: np.random.Generator
) -> None:
    """What sits on a corner post between the castings: placard holders, brackets,
    cable clamps, the end of a door-header or a logistic rail, sometimes with a bolt hole.

    Small dark rectangles on a post are ordinary steelwork, not threats.
    """
    for _ in range(int(rng.integers(0, 3))):
        fy = rng.uniform(y_low, y_high)
        fw = rng.uniform(60, 220)
        fh = rng.uniform(40, 180)
        fx = rng.uniform(xa - fw * 0.3, xb - fw * 0.7)
        depth = rng.uniform(15, 90)
        c.add_box("steel", fx, fy, fx + fw, fy + fh, depth, STEEL)
        if rng.random() < 0.4:
            c.add_cylinder_z(
                "steel", fx + fw / 2, fy + fh / 2, min(fw, fh) * 0.2, -depth * 0.6, STEEL
            )


def draw_tractor(c: Canvas, x_rear: float, rng: np.random.Generator) -> tuple[float, float]:
    """Tractor unit whose rear end is at `x_rear`, cab to the left (lower x).

    Returns (fifth-wheel x, fifth-wheel height) for coupling the trailer.
    """
    wheel_r = rng.uniform(490, 530)
    wheelbase = rng.uniform(3500, 3900)
    rear_axle = x_rear - rng.uniform(700, 1000)
    front_axle = rear_axle - wheelbase
    rail_top = rng.uniform(1050, 1150)
    # Chassis rails: two C-channels along the vehicle; webs crossed at right
    # angles, flanges seen edge-on (dark lines).
    x_front = front_axle - 1400
    for _ in sides(c, 430):
        c.add_box("steel", x_front, rail_top - 280, x_rear, rail_top, 8, STEEL)
        c.add_box("steel", x_front, rail_top - 10, x_rear, rail_top, 80, STEEL)
        c.add_box("steel", x_front, rail_top - 280, x_rear, rail_top - 270, 80, STEEL)
    with c.at_z(-430, 430):
        for xm in np.arange(x_front + 300, x_rear, rng.uniform(700, 1100)):  # cross-members
            c.add_box("steel", xm, rail_top - 250, xm + 8, rail_top - 20, 860, STEEL)
    draw_wheel(c, front_axle, wheel_r, rng, dual=False)
    draw_wheel(c, rear_axle, wheel_r, rng, dual=True)
    # Cab-over-engine layout (European and South American tractors): the
    # engine block sits under the cab, between the front axle and the cab's
    # rear wall, and is the densest part of the tractor.
    eng_x0 = front_axle - 250
    c.add_box("steel", eng_x0, 600, eng_x0 + 1100, 1350, 650, 0.85 * STEEL)
    for k in range(6):  # cylinder liners and pistons: denser bands in the block
        cx = eng_x0 + 140 + k * 150
        c.add_box("steel", cx, 950, cx + 35, 1330, 350, STEEL)
    c.add_box("aluminium", eng_x0 + 1100, 650, eng_x0 + 1700, 1150, 450, ALU)  # gearbox
    c.add_cylinder_x("steel", eng_x0 + 1700, rear_axle, 800, 45, STEEL, wall_mm=6)  # prop shaft
    c.add_box(
        "steel", x_front - 60, 450, x_front + 250, 1350, 1000, 0.3 * STEEL
    )  # radiator, bumper
    c.add_clutter(rng, x_front, 450, eng_x0 + 1700, rail_top + 200, 35, size_mm=(40, 350))
    # Cab: steel shell (panels along the beam show as dark lines), doors with
    # their mechanisms, glass, seats, dashboard, bunk and a lot of small parts.
    cab_x0, cab_x1 = x_front - 50, x_front + rng.uniform(2200, 2450)
    cab_y0, cab_y1 = rail_top + 250, rail_top + rng.uniform(2300, 2850)
    door_x0 = cab_x0 + rng.uniform(250, 450)
    for _ in sides(c, HALF_WIDTH):
        c.add_box("steel", cab_x0, cab_y0, cab_x1, cab_y1, 1.5, STEEL)  # side panels
        c.add_box("steel", door_x0, cab_y0 + 80, door_x0 + 1000, cab_y0 + 1100, 6, STEEL)
    c.add_box("steel", cab_x0, cab_y0, cab_x0 + 25, cab_y1 - 150, 2400 * 0.08, STEEL)  # front
    c.add_box("steel", cab_x1 - 25, cab_y0, cab_x1, cab_y1, 2400 * 0.1, STEEL)  # rear wall
    c.add_box("steel", cab_x0 + 100, cab_y1 - 25, cab_x1, cab_y1, 2400 * 0.08, STEEL)  # roof
    c.add_box("steel", cab_x0, cab_y0, cab_x1, cab_y0 + 70, 2400 * 0.08, STEEL)  # floor
    c.add_box("glass", cab_x0 + 30, cab_y1 - 1000, cab_x0 + 70, cab_y1 - 250, 2300 * 0.3, 2.5)
    for seat_x in (cab_x0 + 700, cab_x0 + 1250):  # two seats: foam over steel frames
        c.add_box("plastic", seat_x, cab_y0 + 400, seat_x + 500, cab_y0 + 1350, 2 * 500, 0.06)
        c.add_box("steel", seat_x, cab_y0 + 100, seat_x + 500, cab_y0 + 400, 2 * 400, 0.2 * STEEL)
    c.add_box("plastic", cab_x0 + 60, cab_y0 + 700, cab_x0 + 550, cab_y0 + 1150, 2200, 0.25)
    c.add_polygon(
        "steel",
        np.array(
            [
                [cab_x0 + 450, cab_y0 + 1100],
                [cab_x0 + 480, cab_y0 + 1120],
                [cab_x0 + 700, cab_y0 + 600],
                [cab_x0 + 670, cab_y0 + 580],
            ]
        ),
        60,
        STEEL,
    )  # steering column
    c.add_box("plastic", cab_x1 - 800, cab_y0 + 900, cab_x1 - 40, cab_y0 + 1050, 2300, 0.08)  # bunk
    c.add_clutter(
        rng,
        cab_x0,
        cab_y0,
        cab_x1,
        cab_y0 + 1400,
        18,
        materials=("plastic", "steel", "rubber"),
        size_mm=(50, 400),
        depth_mm=(20, 300),
    )
    # Fuel tank (aluminium shell, diesel) and air tanks along the chassis.
    tank_x0 = rear_axle - wheel_r - rng.uniform(1400, 1700)
    with c.at_z(-1150, -550):  # hung on the near side of the frame
        c.add_cylinder_x("aluminium", tank_x0, tank_x0 + 1200, rail_top - 450, 300, ALU, wall_mm=3)
        c.add_cylinder_x("plastic", tank_x0, tank_x0 + 1200, rail_top - 500, 290, 0.84 * 0.5)
        c.add_cylinder_x(
            "steel", tank_x0 + 1250, tank_x0 + 1900, rail_top - 420, 140, STEEL, wall_mm=4
        )
    # Fifth wheel: a thick steel plate over the rear axle.
    fw_x = rear_axle - rng.uniform(200, 400)
    fw_h = rail_top + 180
    c.add_box("steel", fw_x - 450, rail_top, fw_x + 450, fw_h, 900 * 0.35, STEEL)
    return fw_x, fw_h


def draw_trailer_chassis(
    c: Canvas, x_front: float, x_rear: float, deck_y: float, n_axles: int, rng: np.random.Generator
) -> None:
    """Container chassis: two I-beams, gooseneck, landing gear, axle bogie; skeletal or flatbed."""
    beam_h = rng.uniform(380, 480)
    goose = x_front + rng.uniform(2800, 3400)
    holes, hole_pitch = rng.random() < 0.4, rng.uniform(500, 900)
    for _ in sides(c, 500):
        for x0, x1, top, h in ((x_front, goose, deck_y, 180), (goose, x_rear, deck_y, beam_h)):
            c.add_box("steel", x0, top - h, x1, top, 5, STEEL)  # web
            if holes:  # lightening holes in the webs of some chassis
                for xh in np.arange(x0 + 300, x1 - 200, hole_pitch):
                    c.add_cylinder_z("steel", xh, top - h / 2, h * 0.15, -5, STEEL)
            c.add_box("steel", x0, top - 14, x1, top, 150, STEEL)  # top flange
            c.add_box("steel", x0, top - h, x1, top - h + 14, 150, STEEL)  # bottom flange
    if rng.random() < 0.55:
        # Flatbed / platform chassis (common on South American roads): outer side
        # rails and close-set I-beam cross-members under the whole deck, which
        # scans as a dark comb under the container.
        rail_h = rng.uniform(220, 320)
        for _ in sides(c, HALF_WIDTH - 20):
            c.add_box("steel", x_front, deck_y - rail_h, x_rear, deck_y, 5, STEEL)
            c.add_box("steel", x_front, deck_y - 8, x_rear, deck_y, 70, STEEL)
            c.add_box("steel", x_front, deck_y - rail_h, x_rear, deck_y - rail_h + 8, 70, STEEL)
        cm_h = rail_h * rng.uniform(0.6, 0.9)
        for xm in np.arange(x_front + 150, x_rear - 100, rng.uniform(330, 550)):
            c.add_box("steel", xm, deck_y - cm_h, xm + 6, deck_y - 10, 2 * HALF_WIDTH, STEEL)
            c.add_box("steel", xm - 35, deck_y - 18, xm + 41, deck_y - 10, 2 * HALF_WIDTH, STEEL)
            c.add_box(
                "steel", xm - 35, deck_y - cm_h, xm + 41, deck_y - cm_h + 8, 2 * HALF_WIDTH, STEEL
            )
        # Its own stream, spawned without drawing from `rng`, so every other part of
        # the scene comes out as it did before stanchion boxes existed.
        extras = rng.spawn(1)[0]
        if extras.random() < 0.6:
            draw_stanchion_boxes(c, x_front, x_rear, deck_y, rail_h, extras)
    else:  # skeletal chassis: a few light cross-members between the main beams
        for xm in np.arange(x_front + 200, x_rear - 100, rng.uniform(900, 1400)):
            c.add_box("steel", xm, deck_y - 160, xm + 10, deck_y - 10, 2200, STEEL)
    # Twist locks and bolsters at the ends.
    for xb in (x_front, x_rear - 150):
        c.add_box("steel", xb, deck_y - 200, xb + 150, deck_y, 2300 * 0.3, STEEL)
    # Landing gear: two legs with crank box.
    lx = x_front + rng.uniform(1800, 2400)
    c.add_box("steel", lx, 250, lx + 110, deck_y - 180, 2 * 110 * 0.25, STEEL)
    c.add_box("steel", lx - 40, 200, lx + 150, 260, 2 * 250, 0.5 * STEEL)
    c.add_box("steel", lx - 20, deck_y - 600, lx + 140, deck_y - 400, 2 * 200 * 0.3, STEEL)
    # Axle bogie with suspension and mudguards.
    wheel_r = rng.uniform(480, 520)
    spacing = rng.uniform(1280, 1380)
    last = x_rear - rng.uniform(900, 1600)
    for k in range(n_axles):
        ax = last - k * spacing
        draw_wheel(c, ax, wheel_r, rng, dual=rng.random() < 0.6)
        c.add_box(
            "steel", ax - 600, wheel_r + 180, ax + 600, wheel_r + 230, 2 * 100, STEEL
        )  # springs
        c.add_box(
            "plastic",
            ax - wheel_r - 60,
            wheel_r * 2 + 40,
            ax + wheel_r + 60,
            wheel_r * 2 + 60,
            2 * 600,
            1.0,
        )
    # Under-chassis equipment: air tanks, brake pipes, valves, braces, toolbox.
    for _ in range(int(rng.integers(1, 4))):
        tx = rng.uniform(x_front + 1000, x_rear - 2500)
        c.add_cylinder_x(
            "steel",
            tx,
            tx + rng.uniform(500, 900),
            deck_y - rng.uniform(350, 550),
            rng.uniform(90, 140),
            STEEL,
            wall_mm=3,
        )
    for _ in range(int(rng.integers(2, 5))):
        py = deck_y - rng.uniform(100, 500)
        c.add_cylinder_x(
            "steel",
            x_front + rng.uniform(0, 2000),
            x_rear - rng.uniform(0, 2000),
            py,
            rng.uniform(6, 12),
            STEEL,
            wall_mm=1.5,
        )
    for _ in range(int(rng.integers(2, 6))):  # diagonal braces between the beams
        bx = rng.uniform(x_front + 500, x_rear - 500)
        brace = np.array(
            [
                [bx, deck_y - 40],
                [bx + 40, deck_y - 40],
                [bx + 640, deck_y - beam_h + 20],
                [bx + 600, deck_y - beam_h + 20],
            ]
        )
        c.add_polygon("steel", brace, 1500, STEEL * 0.02)
    if rng.random() < 0.5:
        bx = rng.uniform(x_front + 3500, x_rear - 2500)
        c.add_box(
            "steel", bx, deck_y - 650, bx + 700, deck_y - 200, 2 * 1.5 + 500 * 0.02, STEEL
        )  # toolbox
        c.add_clutter(rng, bx, deck_y - 650, bx + 700, deck_y - 200, 6, size_mm=(40, 200))
    c.add_clutter(
        rng,
        x_front,
        deck_y - beam_h - 150,
        x_rear,
        deck_y - 20,
        int(rng.integers(15, 40)),
        size_mm=(30, 250),
        depth_mm=(10, 300),
    )
    # Rear bumper and light bar.
    c.add_box("steel", x_rear - 120, deck_y - 700, x_rear - 20, deck_y - 550, 2300 * 0.25, STEEL)
    # Spare wheel carrier sometimes carries a spare.
    if rng.random() < 0.5:  # carried flat under the chassis: a low, wide band
        sx = x_front + rng.uniform(3500, 5000)
        c.add_cylinder_y("rubber", sx, deck_y - 800, deck_y - 520, 500, RUBBER, wall_mm=25)
        c.add_cylinder_y("steel", sx, deck_y - 700, deck_y - 620, 280, STEEL, wall_mm=8)


def draw_stanchion_boxes(
    c: Canvas, x_front: float, x_rear: float, deck_y: float, rail_h: float, rng: np.random.Generator
) -> None:
    """Stanchion boxes of a flatbed trailer: three to five tall sheet-steel boxes
    bolted to the side rails at even spacing, reaching above the deck.

    Common on the South American platform trailers of the real reference scans,
    where each shows as a dark rectangle with posts at its edges and inside; a
    model that never saw them took them for cigarette master cases.
    """
    n = int(rng.integers(3, 6))
    width = rng.uniform(500, 800)
    bottom = deck_y - rail_h - rng.uniform(150, 450)
    top = deck_y + rng.uniform(150, 400)
    # Steel met across the face (two sheets, stiffeners, what the box holds): the
    # reference scans show the faces about as dark as 12-35 mm of steel.
    face = rng.uniform(12, 35)
    post_w, post_depth = rng.uniform(50, 90), rng.uniform(30, 60)
    inner_posts = int(rng.integers(0, 3))
    strap = rng.random() < 0.5
    centres = np.linspace(x_front + 1500, x_rear - 1500, n) + rng.uniform(-150, 150, n)
    for _ in sides(c, HALF_WIDTH + 30):
        for xc in centres:
            x0, x1 = xc - width / 2, xc + width / 2
            c.add_box("steel", x0, bottom, x1, top, face, STEEL)
            for xp in (x0, x1 - post_w):  # edge posts: U-channels seen edge-on
                c.add_box("steel", xp, bottom, xp + post_w, top, post_depth, STEEL)
            for k in range(inner_posts):
                xp = x0 + (k + 1) * width / (inner_posts + 1) - post_w / 4
                c.add_box("steel", xp, bottom, xp + post_w / 2, top, post_depth / 2, STEEL)
            if strap:  # a lashing strap or chain hanging across the box
                c.add_box("steel", x0, bottom + 150, x1, bottom + 180, 12, STEEL)


def draw_container(
    c: Canvas,
    x0: float,
    deck_y: float,
    length_ft: int,
    high_cube: bool,
    reefer: bool,
    rng: np.random.Generator,
) -> ContainerBox:
    """ISO container with its corrugated walls, roof, floor, cross-members, doors and castings.

    The door end is at the high-x end (the rear of the vehicle).
    """
    length = 6058.0 if length_ft == 20 else 12192.0
    height = 2896.0 if high_cube else 2591.0
    x1, y0, y1 = x0 + length, deck_y, deck_y + height
    t_side = rng.uniform(1.6, 2.0)
    # Side walls: two sheets crossed at right angles; the trapezoidal
    # corrugation doubles the path on its sloping faces -> fine vertical stripes.
    pitch = 278.0 if not reefer else 95.0
    phase = rng.uniform(0, pitch)

    def corrugation(xs: np.ndarray) -> np.ndarray:
        # Trapezoidal profile, softened: the sloping faces add ~15 % path.
        u = np.mod(xs - phase, pitch / 2) / (pitch / 2)
        slope = np.clip(1.0 - np.abs(u - 0.5) * 4.0 + 0.5, 0, 1)
        return t_side * (1.0 + 0.15 * slope)

    track = rng.random() < 0.45
    yr = y0 + (y1 - y0) * rng.uniform(0.55, 0.72)
    ring_step = rng.uniform(900, 1200)
    for _ in sides(c, HALF_WIDTH - 30):
        c.add_box_profile("steel", x0 + 150, y0 + 160, x1 - 150, y1 - 60, corrugation, STEEL)
        if track:  # logistic track / mid-height reinforcement seen edge-on
            c.add_box("steel", x0 + 150, yr, x1 - 150, yr + 25, 35, STEEL)
        for xl in np.arange(x0 + 500, x1 - 400, ring_step):  # lashing rings on the rails
            for yl in (y0 + 175, y1 - 85):
                c.add_box("steel", xl, yl, xl + 30, yl + 25, 25, STEEL)
        if reefer:  # insulated walls: foam between aluminium/steel skins
            c.add_box("plastic", x0, y0 + 160, x1, y1 - 60, 90, 0.04)
            c.add_box("aluminium", x0, y0 + 160, x1, y1 - 60, 1.0, ALU)
        # Top side rail (square tube) and bottom side rail (C-section).
        c.add_box("steel", x0, y1 - 60, x1, y1, 6, STEEL)
        c.add_box("steel", x0, y1 - 6, x1, y1, 60, STEEL)
        c.add_box("steel", x0, y1 - 60, x1, y1 - 54, 60, STEEL)
        c.add_box("steel", x0, y0, x1, y0 + 162, 4.5, STEEL)
        c.add_box("steel", x0, y0 + 158, x1, y0 + 162, 48, STEEL)
        c.add_box("steel", x0, y0, x1, y0 + 5, 48, STEEL)
    if rng.random() < 0.5:  # dents and patches on one side: local extra sheet
        with c.at_z(float(rng.choice([-1.0, 1.0])) * (HALF_WIDTH - 30)):
            for _ in range(int(rng.integers(1, 4))):
                dx = rng.uniform(x0 + 300, x1 - 900)
                dy = rng.uniform(y0 + 400, y1 - 700)
                c.add_rounded_block(
                    "steel", dx, dy, rng.uniform(100, 400), rng.uniform(80, 300), 3, STEEL
                )
    # Roof: a corrugated sheet seen edge-on over its whole width.
    c.add_box("steel", x0, y1 - 40, x1, y1 - 15, INNER_WIDTH * 2.0 / 25.0, STEEL)
    # Floor: 28 mm plywood seen edge-on across the whole width, on cross-members
    # every ~300 mm whose webs run along the beam (dark ticks under the floor).
    floor_top = y0 + 162
    c.add_box("wood", x0 + 100, floor_top - 28, x1 - 100, floor_top, INNER_WIDTH, WOOD)
    spacing = rng.uniform(280, 320)
    for xm in np.arange(x0 + 150, x1 - 150, spacing):
        c.add_box("steel", xm, y0 + 15, xm + 4.5, floor_top - 28, INNER_WIDTH * 0.9, STEEL)
        c.add_box(
            "steel", xm - 20, floor_top - 33, xm + 25, floor_top - 28, INNER_WIDTH * 0.9, STEEL
        )
    # Front (end) wall: vertical corrugation seen edge-on -> two dark lines and
    # a grey band between them.
    depth_c = 36.0
    c.add_box("steel", x0 + 10, y0 + 160, x0 + 12, y1 - 60, INNER_WIDTH * 0.45, STEEL)
    c.add_box(
        "steel", x0 + 10 + depth_c, y0 + 160, x0 + 12 + depth_c, y1 - 60, INNER_WIDTH * 0.45, STEEL
    )
    c.add_box("steel", x0 + 12, y0 + 160, x0 + 10 + depth_c, y1 - 60, 80, STEEL)
    # Doors: two leaves with frames and four vertical locking bars with cams.
    c.add_box("steel", x1 - 60, y0 + 160, x1 - 56, y1 - 60, INNER_WIDTH * 0.5, STEEL)
    c.add_box("steel", x1 - 56, y0 + 160, x1 - 20, y1 - 60, 120, STEEL)
    c.add_box("steel", x1 - 20, y0 + 170, x1 + 10, y1 - 70, 4 * 27 * 0.8, STEEL)  # locking bars
    for yc in (y0 + 420, y0 + 1200, y1 - 420):  # hinges, handles, cams
        c.add_box("steel", x1 - 25, yc - 40, x1 + 25, yc + 40, 4 * 60, STEEL)
    # Door header and sill; front header/sill.
    c.add_box("steel", x1 - 200, y1 - 180, x1, y1 - 60, INNER_WIDTH * 0.06, STEEL)
    c.add_box("steel", x1 - 200, y0, x1, y0 + 160, INNER_WIDTH * 0.08, STEEL)
    c.add_box("steel", x0, y1 - 120, x0 + 150, y1 - 60, INNER_WIDTH * 0.05, STEEL)
    # Corner posts (both sides) with what is bolted or welded to them, and corner castings.
    for _ in sides(c, HALF_WIDTH - 80):
        for xa, xb in ((x0, x0 + 150), (x1 - 150, x1)):
            c.add_box("steel", xa, y0, xb, y1, 6 * 2.2, STEEL)
            draw_post_fittings(c, xa, xb, y0 + 300, y1 - 300, rng)
            for ya in (y0, y1 - 118):
                draw_corner_casting(c, xa if xa == x0 else xb - 178, ya, rng)
    # Forklift pockets on some 20 ft boxes.
    if length_ft == 20 and rng.random() < 0.4:
        for xp in (x0 + length / 2 - 1100, x0 + length / 2 + 750):
            for _ in sides(c, HALF_WIDTH):
                c.add_box("steel", xp, y0, xp + 360, y0 + 120, 4, STEEL)
            c.add_box("steel", xp, y0 + 110, xp + 360, y0 + 120, INNER_WIDTH, STEEL)
    inner_x0 = x0 + 60
    if reefer:
        # Refrigeration unit built into the front wall: compressor, coils, fans.
        c.add_box("steel", x0 - 30, y0 + 200, x0 + 420, y1 - 80, 2 * 2, STEEL)
        c.add_box("steel", x0 + 40, y0 + 300, x0 + 330, y0 + 800, 500, 0.5 * STEEL)  # compressor
        c.add_box("copper", x0 + 30, y0 + 1000, x0 + 380, y1 - 350, 2200 * 0.01, 8.96)  # coils
        c.add_box("aluminium", x0 + 30, y0 + 1000, x0 + 380, y1 - 350, 2200 * 0.05, ALU)  # fins
        c.add_cylinder_z("steel", x0 + 210, y1 - 600, 180, 120, 0.6 * STEEL)  # evaporator fan
        c.add_box("plastic", x0 + 20, y0 + 200, x0 + 440, y1 - 80, 2000, 0.03)
        inner_x0 = x0 + 450
        # T-bar floor of reefers: aluminium extrusions edge-on.
        c.add_box(
            "aluminium", x0 + 100, floor_top, x1 - 100, floor_top + 60, INNER_WIDTH * 0.25, ALU
        )
        floor_top += 60
    return ContainerBox(
        x0=x0,
        x1=x1,
        y0=y0,
        y1=y1,
        inner_x0=inner_x0,
        inner_x1=x1 - 70,
        floor_y=floor_top,
        ceiling_y=y1 - 70,
        length_ft=length_ft,
        reefer=reefer,
    )


def draw_tank_frame(c: Canvas, x0: float, deck_y: float, rng: np.random.Generator) -> ContainerBox:
    """20 ft ISO tank container: only the frame here (end frames, rails, castings).

    The vessel and its liquid are the load (`cargo._tank`), so the manifest
    weight and threat placement treat them like any other cargo.
    """
    length, height = 6058.0, 2591.0
    x1, y0, y1 = x0 + length, deck_y, deck_y + height
    for xa in (x0, x1 - 160):  # end frames: beams across the top and bottom
        c.add_box("steel", xa, y1 - 160, xa + 160, y1, INNER_WIDTH * 0.08, STEEL)
        c.add_box("steel", xa, y0, xa + 160, y0 + 160, INNER_WIDTH * 0.08, STEEL)
    for _ in sides(c, HALF_WIDTH - 80):
        for xa in (x0, x1 - 160):  # corner posts and castings
            c.add_box("steel", xa, y0, xa + 160, y1, 8 * 2.5, STEEL)
            for ya in (y0, y1 - 118):
                draw_corner_casting(c, xa, ya, rng)
        c.add_box("steel", x0, y0, x1, y0 + 150, 6, STEEL)  # bottom side rail
        c.add_box("steel", x0, y0 + 140, x1, y0 + 150, 60, STEEL)
        c.add_box("steel", x0, y1 - 100, x1, y1, 5, STEEL)  # top side rail
        c.add_box("steel", x0, y1 - 10, x1, y1, 60, STEEL)
    c.add_box("aluminium", x0 + 300, y1 - 40, x1 - 300, y1 - 10, 700 * 0.3, ALU)  # walkway
    return ContainerBox(
        x0=x0,
        x1=x1,
        y0=y0,
        y1=y1,
        inner_x0=x0 + 180,
        inner_x1=x1 - 180,
        floor_y=y0 + 160,
        ceiling_y=y1 - 60,
        length_ft=20,
        reefer=False,
        tank=True,
    )
