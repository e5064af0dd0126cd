"""Ray-sum rasterisation of 3-D primitives into per-material mass-thickness maps.

A transmission scanner measures, per detector pixel, the line integral of the
attenuation along the ray from the source. We model the vehicle as simple 3-D
primitives (boxes, cylinders, ellipsoids, extruded polygons) and add, for each
pixel, the path length through each primitive times its density: the mass
thickness in g/cm^2, kept per material so the spectral Beer-Lambert integral in
`physics` can weigh each material by its own mu/rho(E).

World coordinates are millimetres: x along the vehicle (scan direction, image
columns), y height above the ground (image rows, top row highest), z across the
vehicle along the beam (0 = the vehicle's centre plane, negative = near the
source).

Fan beam: a portal's source is a point a few metres to the side, low down, and
its rays fan out vertically. An object at depth z is therefore magnified
vertically about the source height by S / (S + z) (S: source to centre plane),
while x is set by the vehicle's motion and is not magnified. The near side
wall's top rail lands well above the far side's (the second horizontal line a
third of the way down real container scans), and plates that span the
vehicle (floor, roof) smear into bands. `Fan` holds the geometry; the z extent
of what is being drawn is set with `Canvas.at_z`, and wide objects are drawn
as several slabs, each at its own magnification. Rays are taken as straight
along z within a slab (their inclination is a few degrees).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cv2
import numpy as np

# Polygons are rasterised at this many sub-pixels per pixel and area-averaged,
# so thin steel parts (a trigger guard, a wire) keep their true mass.
_SUPERSAMPLE = 4
_CLUTTER_DENSITY = {"steel": 7.85, "plastic": 1.0, "rubber": 1.15, "aluminium": 2.7, "copper": 8.96}


# Wide objects are cut into slabs at most this thick along the beam, each
# drawn at its own fan-beam magnification.
_SLAB_MM = 600.0
_MAX_SLABS = 4
HALF_WIDTH = 1219.0  # half the width of an ISO container (2438 mm)

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Fan:
    """Fan-beam geometry: source height and distance from the vehicle's centre plane."""

    source_y_mm: float = 600.0
    source_dist_mm: float = 11000.0
    # The vehicle never drives exactly square to the beam: with a small yaw,
    # parts at different depths shift along x (near and far corner posts part,
    # cross-members crossed obliquely scan as grey bars, not hairlines).
    yaw_rad: float = 0.0

    def scale(self, z_mm: float) -> float:
        """Vertical magnification at depth z, relative to the centre plane."""
        return self.source_dist_mm / (self.source_dist_mm + z_mm)

    def project(self, y_mm: float, z_mm: float) -> float:
        """Apparent height (centre-plane units) of a point at height y and depth z."""
        return self.source_y_mm + (y_mm - self.source_y_mm) * self.scale(z_mm)


def fanned(method: _F) -> _F:
    """Draw a primitive once per slab of the current z range, at that slab's magnification.

    The primitive's mass is shared evenly between the slabs, so the total
    mass is unchanged; nested calls (a primitive drawing primitives) draw once.
    """

    @functools.wraps(method)
    def wrapper(self: Canvas, *args: Any, **kwargs: Any) -> Any:
        if self._in_slab:
            return method(self, *args, **kwargs)
        result = None
        for _ in self.slabs():
            result = method(self, *args, **kwargs)
        return result

    return wrapper  # type: ignore[return-value]


@dataclass
class Canvas:
    """Per-material mass thickness (g/cm^2) on the detector grid."""

    width_px: int
    height_px: int
    pitch_mm: float
    top_mm: float  # apparent height (centre-plane units) of the top edge of row 0
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    fan: Fan | None = None  # None: parallel rays
    # Depth range (mm along the beam) of what is drawn next; see `at_z`.
    z_range: tuple[float, float] = (-HALF_WIDTH, HALF_WIDTH)
    # While an object is being drawn, its own mass thickness is also summed
    # here: that gives its exact mask and box for the labels.
    _recording: np.ndarray | None = None
    last_recorded_kg: float = 0.0  # true mass of what the last recording drew
    _scale: float = 1.0  # vertical magnification of the slab being drawn
    _weight: float = 1.0  # share of the mass that slab carries
    _smear: float = 0.0  # relative spread of magnification across that slab
    _shift_mm: float = 0.0  # x shift of that slab from the vehicle's yaw
    _in_slab: bool = False

    # -- fan beam -----------------------------------------------------------
    @contextmanager
    def at_z(self, z0: float, z1: float | None = None) -> Iterator[None]:
        """Draw what follows at depth z0 (thin) or spread over [z0, z1]."""
        previous = self.z_range
        self.z_range = (z0, z0 if z1 is None else z1)
        try:
            yield
        finally:
            self.z_range = previous

    def slabs(self) -> Iterator[float]:
        """Set up each slab of the current z range in turn; yields its depth z."""
        z0, z1 = self.z_range
        if self.fan is None:
            n, zs = 1, [0.0]
        else:
            n = int(np.clip(np.ceil(abs(z1 - z0) / _SLAB_MM), 1, _MAX_SLABS))
            zs = [z0 + (k + 0.5) * (z1 - z0) / n for k in range(n)]
        self._in_slab, self._weight = True, 1.0 / n
        half = abs(z1 - z0) / (2 * n)
        try:
            for z in zs:
                if self.fan is not None:
                    self._scale = self.fan.scale(z)
                    self._shift_mm = z * float(np.tan(self.fan.yaw_rad))
                    spread = self.fan.scale(z - half) - self.fan.scale(z + half)
                    self._smear = spread / self._scale
                yield z
        finally:
            self._in_slab, self._weight, self._scale, self._smear = False, 1.0, 1.0, 0.0
            self._shift_mm = 0.0

    def apparent_y(self, y_mm: float, z_mm: float = 0.0) -> float:
        """Where a world height at depth z appears (centre-plane units)."""
        return y_mm if self.fan is None else self.fan.project(y_mm, z_mm)

    # -- coordinate helpers -------------------------------------------------
    def col(self, x_mm: float | np.ndarray) -> float | np.ndarray:
        """Image column of a world x, shifted by the yaw for the slab being drawn."""
        return (x_mm + self._shift_mm) / self.pitch_mm

    def row(self, y_mm: float | np.ndarray) -> float | np.ndarray:
        """Image row of a world height, at the magnification of the slab being drawn."""
        h = 0.0 if self.fan is None else self.fan.source_y_mm
        return (self.top_mm - (h + (y_mm - h) * self._scale)) / self.pitch_mm

    def box_px(
        self, x0: float, y0: float, x1: float, y1: float
    ) -> tuple[float, float, float, float]:
        """World rectangle (mm) -> pixel box (col0, row0, col1, row1), rows top-down."""
        return (
            self.col(min(x0, x1)),
            self.row(max(y0, y1)),
            self.col(max(x0, x1)),
            self.row(min(y0, y1)),
        )

    def _map(self, material: str) -> np.ndarray:
        m = self.maps.get(material)
        if m is None:
            m = np.zeros((self.height_px, self.width_px), np.float32)
            self.maps[material] = m
        return m

    def _window(
        self, c0: float, r0: float, c1: float, r1: float
    ) -> tuple[int, int, int, int] | None:
        """Integer pixel window covering a pixel-space box, clipped; None if outside."""
        ic0, ir0 = max(int(np.floor(c0)), 0), max(int(np.floor(r0)), 0)
        ic1, ir1 = min(int(np.ceil(c1)), self.width_px), min(int(np.ceil(r1)), self.height_px)
        if ic1 <= ic0 or ir1 <= ir0:
            return None
        return ic0, ir0, ic1, ir1

    # -- primitives ---------------------------------------------------------
    def add_path(
        self, material: str, window: tuple[int, int, int, int], path_mm: np.ndarray, density: float
    ) -> None:
        """Add a path-length patch (mm) of a material with a given density (g/cm^3)."""
        patch = path_mm.astype(np.float32) * np.float32(density / 10.0 * self._weight)
        if self._smear > 0:
            patch, window = self._smear_rows(patch, window)
        c0, r0, c1, r1 = window
        self._map(material)[r0:r1, c0:c1] += patch
        if self._recording is not None:
            self._recording[r0:r1, c0:c1] += patch
            # True mass: the image plane sees each slab magnified by its scale.
            area_cm2 = (self.pitch_mm / 10.0) ** 2
            self.last_recorded_kg += (
                float(patch.sum(dtype=np.float64)) * area_cm2 / 1000 / self._scale
            )

    def _smear_rows(
        self, patch: np.ndarray, window: tuple[int, int, int, int]
    ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Spread a slab's patch vertically by its fan-beam smear, row by row.

        Within a slab, matter at different depths lands at slightly different
        heights, the more so the further from the source height: a plate seen
        edge-on (floor, roof) becomes a band, not a stack of thin lines.
        """
        assert self.fan is not None
        c0, r0, c1, r1 = window
        h = self.fan.source_y_mm
        rows_all = np.arange(self.height_px)
        apparent = self.top_mm - (rows_all + 0.5) * self.pitch_mm
        half_len = np.floor(np.abs(apparent - h) * self._smear / self.pitch_mm / 2).astype(np.intp)
        pad = int(half_len[r0:r1].max(initial=0))
        if pad == 0:
            return patch, window
        p0, p1 = max(r0 - pad, 0), min(r1 + pad, self.height_px)
        # Scatter each source row evenly over its own span (a difference array,
        # then a cumulative sum): mass is conserved exactly, even where the span
        # changes from row to row.
        k = half_len[r0:r1]
        share = patch / (2 * k + 1)[:, None].astype(np.float32)
        src = np.arange(r0, r1)
        lo = np.clip(src - k, p0, p1) - p0
        hi = np.clip(src + k + 1, p0, p1) - p0
        diff = np.zeros((p1 - p0 + 1, c1 - c0), np.float64)
        np.add.at(diff, lo, share)
        np.add.at(diff, hi, -share)
        out = np.cumsum(diff[:-1], axis=0)
        return out.astype(np.float32), (c0, p0, c1, p1)

    def remove_path(
        self, material: str, window: tuple[int, int, int, int], mass_g_cm2: np.ndarray
    ) -> None:
        """Take away material displaced by an object put inside it (never below zero)."""
        m = self.maps.get(material)
        if m is None:
            return
        c0, r0, c1, r1 = window
        m[r0:r1, c0:c1] = np.maximum(m[r0:r1, c0:c1] - mass_g_cm2.astype(np.float32), 0)

    def start_recording(self) -> None:
        self._recording = np.zeros((self.height_px, self.width_px), np.float32)
        self.last_recorded_kg = 0.0

    def stop_recording(self) -> np.ndarray:
        """Mass thickness (g/cm^2) that the primitives since `start_recording` added."""
        rec = self._recording
        self._recording = None
        if rec is None:
            raise RuntimeError("stop_recording without start_recording")
        return rec

    @fanned
    def add_box(
        self,
        material: str,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        depth_mm: float,
        density: float,
    ) -> None:
        """Axis-aligned cuboid whose extent along the beam is `depth_mm`.

        Edge pixels get the covered fraction, so sub-pixel walls (2 mm steel at
        5 mm pitch) keep their true mass.
        """
        if depth_mm <= 0:
            return
        self.add_box_profile(
            material, x0, y0, x1, y1, lambda xs: np.full(xs.shape, depth_mm), density
        )

    @fanned
    def add_box_profile(
        self,
        material: str,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        depth_of_x: Callable[[np.ndarray], np.ndarray],
        density: float,
    ) -> None:
        """A box whose path along the beam varies along x (corrugated sheets)."""
        c0, r0, c1, r1 = self.box_px(x0, y0, x1, y1)
        win = self._window(c0, r0, c1, r1)
        if win is None:
            return
        wc0, wr0, wc1, wr1 = win
        cols = np.arange(wc0, wc1, dtype=np.float64)
        rows = np.arange(wr0, wr1, dtype=np.float64)
        fx = np.clip(np.minimum(cols + 1, c1) - np.maximum(cols, c0), 0, 1)
        fy = np.clip(np.minimum(rows + 1, r1) - np.maximum(rows, r0), 0, 1)
        depth = depth_of_x((cols + 0.5) * self.pitch_mm)
        self.add_path(material, win, np.outer(fy, fx * depth), density)

    @fanned
    def add_rounded_block(
        self,
        material: str,
        cx: float,
        cy: float,
        half_w: float,
        half_h: float,
        depth_mm: float,
        density: float,
        roundness: float = 4.0,
    ) -> None:
        """A soft-edged block (sacks, big bags, bales): a superellipsoid seen from the side.

        The path along the beam falls off smoothly towards the edges, as it does
        through a filled bag, instead of stopping at a sharp rectangle.
        """
        c0, r0, c1, r1 = self.box_px(cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        win = self._window(c0, r0, c1, r1)
        if win is None:
            return
        xx, yy = self._grid_mm(win)
        q = 1.0 - np.abs((xx - cx) / half_w) ** roundness - np.abs((yy - cy) / half_h) ** roundness
        self.add_path(material, win, depth_mm * np.clip(q, 0, None) ** (1.0 / roundness), density)

    def add_clutter(
        self,
        rng: np.random.Generator,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        count: int,
        materials: tuple[str, ...] = ("steel", "plastic", "rubber", "aluminium"),
        size_mm: tuple[float, float] = (40.0, 300.0),
        depth_mm: tuple[float, float] = (20.0, 400.0),
    ) -> None:
        """Small irregular parts (brackets, pipes, boxes, cables) scattered in a region.

        Real vehicles are full of them; without them cabs and chassis look like
        drawings rather than scans.
        """
        for _ in range(count):
            material = materials[int(rng.integers(len(materials)))]
            size = rng.uniform(*size_mm)
            kind = rng.integers(0, 3)
            if kind == 0:  # bar, bracket, pipe run: long and thin
                half = np.array([size / 2, size / rng.uniform(6, 20)])
                outline = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
            elif kind == 1:  # plate or housing
                half = np.array([size / 2, size / rng.uniform(1.2, 3) / 2])
                outline = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
            else:  # disc, drum, valve body
                a = np.linspace(0, 2 * np.pi, 20, endpoint=False)
                outline = np.stack([np.cos(a), rng.uniform(0.6, 1.0) * np.sin(a)], 1) * size / 2
            centre = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
            pts = rotate(outline, rng.uniform(0, np.pi)) + centre
            # Parts are rarely solid: steel sections and housings are mostly hollow.
            fill = rng.uniform(0.08, 0.4) if material == "steel" else rng.uniform(0.3, 1.0)
            density = _CLUTTER_DENSITY.get(material, 1.0) * fill
            self.add_polygon(material, pts, rng.uniform(*depth_mm), density)

    @fanned
    def add_ellipsoid(
        self,
        material: str,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        rz: float,
        density: float,
        half: int = 0,
        fill_to_y: float | None = None,
    ) -> None:
        """Ellipsoid with semi-axes rx, ry (image plane) and rz (along the beam).

        `half` = -1 or +1 keeps only the half below or above cx (the dished
        head of a tank); `fill_to_y` keeps only what lies below a height.
        """
        c0, r0, c1, r1 = self.box_px(cx - rx, cy - ry, cx + rx, cy + ry)
        win = self._window(c0, r0, c1, r1)
        if win is None:
            return
        xx, yy = self._grid_mm(win)
        q = 1.0 - ((xx - cx) / rx) ** 2 - ((yy - cy) / ry) ** 2
        path = 2.0 * rz * np.sqrt(np.clip(q, 0, None))
        if half:
            path = path * np.clip(half * (xx - cx) / self.pitch_mm + 0.5, 0, 1)
        if fill_to_y is not None:
            path = path * np.clip((fill_to_y - yy) / self.pitch_mm + 0.5, 0, 1)
        self.add_path(material, win, path, density)

    @fanned
    def add_cylinder_z(
        self, material: str, cx: float, cy: float, radius: float, length_mm: float, density: float
    ) -> None:
        """Cylinder with its axis along the beam (axles, wheel hubs): a uniform disc."""
        c0, r0, c1, r1 = self.box_px(cx - radius, cy - radius, cx + radius, cy + radius)
        win = self._window(c0, r0, c1, r1)
        if win is None:
            return
        xx, yy = self._grid_mm(win)
        d = np.hypot(xx - cx, yy - cy)
        cover = np.clip(radius - d + 0.5 * self.pitch_mm, 0, self.pitch_mm) / self.pitch_mm
        self.add_path(material, win, cover * length_mm, density)

    @fanned
    def add_annulus_z(
        self,
        material: str,
        cx: float,
        cy: float,
        r_in: float,
        r_out: float,
        length_mm: float,
        density: float,
    ) -> None:
        """Ring with its axis along the beam: a tyre or a rim seen from the side."""
        c0, r0, c1, r1 = self.box_px(cx - r_out, cy - r_out, cx + r_out, cy + r_out)
        win = self._window(c0, r0, c1, r1)
        if win is None:
            return
        xx, yy = self._grid_mm(win)
        d = np.hypot(xx - cx, yy - cy)
        half = 0.5 * self.pitch_mm
        cover = (
            np.clip(r_out - d + half, 0, self.pitch_mm) - np.clip(r_in - d + half, 0, self.pitch_mm)
        ) / self.pitch_mm
        self.add_path(material, win, np.clip(cover, 0, 1) * length_mm, density)

    @fanned
    def add_cylinder_x(
        self,
        material: str,
        x0: float,
        x1: float,
        cy: float,
        radius: float,
        density: float,
        wall_mm: float | None = None,
        fill_to_y: float | None = None,
    ) -> None:
        """Cylinder lying along the vehicle (pipes, fuel tanks): chord length varies with y.

        With `wall_mm` it is a hollow tube: only the shell is material. With
        `fill_to_y` only the part below that height is drawn (liquid in a tank).
        """
        c0, r0, c1, r1 = self.box_px(x0, cy - radius, x1, cy + radius)
        win = self._window(c0, r0, c1, r1)
        if win is None:
            return
        _, yy = self._grid_mm(win)
        chord = _chord(yy - cy, radius)
        if wall_mm is not None:
            chord = chord - _chord(yy - cy, max(radius - wall_mm, 0.0))
        if fill_to_y is not None:
            chord = chord * np.clip((fill_to_y - yy) / self.pitch_mm + 0.5, 0, 1)
        cols = np.arange(win[0], win[2], dtype=np.float64)
        fx = np.clip(np.minimum(cols + 1, c1) - np.maximum(cols, c0), 0, 1)
        self.add_path(material, win, chord * fx[None, :], density)

    @fanned
    def add_cylinder_y(
        self,
        material: str,
        cx: float,
        y0: float,
        y1: float,
        radius: float,
        density: float,
        wall_mm: float | None = None,
    ) -> None:
        """Upright cylinder (drums, barrels, gas bottles): chord length varies with x."""
        c0, r0, c1, r1 = self.box_px(cx - radius, y0, cx + radius, y1)
        win = self._window(c0, r0, c1, r1)
        if win is None:
            return
        xx, _ = self._grid_mm(win)
        chord = _chord(xx - cx, radius)
        if wall_mm is not None:
            chord = chord - _chord(xx - cx, max(radius - wall_mm, 0.0))
        rows = np.arange(win[1], win[3], dtype=np.float64)
        fy = np.clip(np.minimum(rows + 1, r1) - np.maximum(rows, r0), 0, 1)
        self.add_path(material, win, chord * fy[:, None], density)

    @fanned
    def add_polygon(
        self, material: str, points_mm: np.ndarray, depth_mm: float, density: float
    ) -> np.ndarray | None:
        """Extruded polygon (a flat part of thickness `depth_mm` along the beam).

        Returns the pixel coverage patch (for masks) or None when outside.
        """
        pts = np.asarray(points_mm, dtype=np.float64)
        cols, rows = self.col(pts[:, 0]), self.row(pts[:, 1])
        win = self._window(cols.min(), rows.min(), cols.max(), rows.max())
        if win is None:
            return None
        coverage = self.polygon_coverage(np.stack([cols, rows], axis=1), win)
        self.add_path(material, win, coverage * depth_mm, density)
        return coverage

    def polygon_coverage(self, points_px: np.ndarray, win: tuple[int, int, int, int]) -> np.ndarray:
        """Fraction of each pixel in `win` covered by a polygon given in pixel coordinates."""
        c0, r0, c1, r1 = win
        s = _SUPERSAMPLE
        local = (points_px - np.array([c0, r0])) * s
        hi = np.zeros(((r1 - r0) * s, (c1 - c0) * s), np.uint8)
        # 4 fractional bits so vertices land between sub-pixels, not snapped.
        cv2.fillPoly(hi, [np.round(local * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)
        return cv2.resize(
            hi.astype(np.float32) / 255.0, (c1 - c0, r1 - r0), interpolation=cv2.INTER_AREA
        )

    def _grid_mm(self, win: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """World coordinates (mm) of the pixel centres in a window."""
        c0, r0, c1, r1 = win
        xs = (np.arange(c0, c1) + 0.5) * self.pitch_mm - self._shift_mm
        ys = self.top_mm - (np.arange(r0, r1) + 0.5) * self.pitch_mm
        if self._scale != 1.0 and self.fan is not None:  # back to world heights
            h = self.fan.source_y_mm
            ys = h + (ys - h) / self._scale
        return np.meshgrid(xs, ys)

    # -- bookkeeping --------------------------------------------------------
    def total_mass_kg(self, material: str | None = None) -> float:
        """Mass (kg) of one or all materials: sum of g/cm^2 times pixel area."""
        area_cm2 = (self.pitch_mm / 10.0) ** 2
        if material is not None:
            m = self.maps.get(material)
            return 0.0 if m is None else float(m.sum(dtype=np.float64) * area_cm2 / 1000.0)
        return sum(self.total_mass_kg(name) for name in self.maps)


def _chord(offset: np.ndarray, radius: float) -> np.ndarray:
    """Chord length through a circle of `radius` at a perpendicular `offset`."""
    return 2.0 * np.sqrt(np.clip(radius * radius - offset * offset, 0, None))


def rotate(
    points: np.ndarray, angle_rad: float, centre: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Rotate 2-D points about a centre (poses of threats)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    p = np.asarray(points, dtype=np.float64) - centre
    return p @ np.array([[c, s], [-s, c]]) + centre
