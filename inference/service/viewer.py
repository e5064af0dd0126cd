"""The officer viewer: the single page at ``/``, its static files, and deep-zoom tiles.

The page (``static/index.html``, plain HTML, CSS and JavaScript, no build step) shows the
review queue and one scan at a time in OpenSeadragon (vendored in ``static/vendor/``).
A scan is 3000 px wide and more, and an officer switches views often, so the page never
loads a whole rendered picture: it asks for Deep Zoom (DZI) tiles of the view it shows,
512 px with 1 px overlap, and only those the screen needs at the zoom it is at.

Tiles are cut from the view rendered once per scan + view (+ contrast window) by
:func:`inference.render.render` at full resolution; each lower DZI level is that picture
shrunk with ``cv2.INTER_AREA`` (area averaging, no aliasing), made on first use. Rendered
views are kept in a small in-memory LRU bounded in bytes, with one rendering per key at
a time (the dozen tile requests of a fresh view wait for the same rendering instead of
each drawing it) and at most :data:`RENDER_SLOTS` renderings at once, so officers
switching views cannot starve the scanner stations' inference of CPU.

Who may read tiles is decided exactly as for the scan itself (``deps.owned_scan``): a station
its own scans, the admin and officers every scan.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from inference.annotate import CATEGORY_COLOURS
from inference.preprocess import attenuation
from inference.render import VIEWS, auto_window, render
from inference.scan import Scan
from inference.service.auth import AnyCaller
from inference.service.core import API, Service
from inference.service.db import ScanRecord
from inference.service.deps import View, get_service, owned_scan

STATIC_DIR = Path(__file__).with_name("static")
TILE_SIZE = 512
TILE_OVERLAP = 1
CACHE_BYTES = 384 * 2**20
"""Rendered views kept in memory: about 12 views of a 3000 x 1000 dual-energy scan."""
RENDER_SLOTS = 2
"""Renderings at once (each is one CPU core for ~0.1-0.5 s on a 3 Mpx scan)."""
GREY_VIEWS = frozenset({"grey", "inverse", "window", "edge"})
"""Views whose three channels are equal: kept and sent as one channel (a third the bytes)."""
TILE_CACHE_CONTROL = "private, max-age=3600"
PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]

router = APIRouter()
_K = TypeVar("_K")
_V = TypeVar("_V")


class _Revalidated(StaticFiles):
    """Static files the browser re-validates each time (ETag: a cheap 304), so an
    upgraded service never runs with last version's JavaScript."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def static_files() -> StaticFiles:
    """The page's assets, mounted at ``/static`` by the app."""
    return _Revalidated(directory=STATIC_DIR)


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The single-page viewer (it logs in, then uses the JSON API)."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


# --------------------------------------------------------------------------- DZI geometry


def max_level(width: int, height: int) -> int:
    """The DZI level of the full picture: level 0 is 1x1, each level doubles."""
    return max(0, math.ceil(math.log2(max(width, height, 1))))


def level_size(width: int, height: int, level: int) -> tuple[int, int]:
    """(width, height) of DZI ``level`` (rounded up, as OpenSeadragon does)."""
    scale = 0.5 ** (max_level(width, height) - level)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def tile_bounds(level_w: int, level_h: int, col: int, row: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of tile ``col, row`` in its level, with the DZI overlap on the
    sides that have a neighbour. Raises ``IndexError`` for a tile outside the level."""
    if col < 0 or row < 0 or col * TILE_SIZE >= level_w or row * TILE_SIZE >= level_h:
        raise IndexError(f"no tile {col}_{row}")
    x0 = col * TILE_SIZE - (TILE_OVERLAP if col else 0)
    y0 = row * TILE_SIZE - (TILE_OVERLAP if row else 0)
    x1 = min((col + 1) * TILE_SIZE + TILE_OVERLAP, level_w)
    y1 = min((row + 1) * TILE_SIZE + TILE_OVERLAP, level_h)
    return x0, y0, x1, y1


def dzi_xml(width: int, height: int) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
        f'Format="png" Overlap="{TILE_OVERLAP}" TileSize="{TILE_SIZE}">'
        f'<Size Width="{width}" Height="{height}"/></Image>\n'
    )


# --------------------------------------------------------------------------- caches


class Pyramid:
    """One rendered view at full resolution and its DZI levels, each made on first use."""

    def __init__(self, full: np.ndarray) -> None:
        self.full = full
        self.height, self.width = full.shape[:2]
        self.top = max_level(self.width, self.height)
        self._levels: dict[int, np.ndarray] = {self.top: full}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes once every level is made (the levels below add a third at most)."""
        return self.full.nbytes * 4 // 3

    def level(self, level: int) -> np.ndarray:
        if not 0 <= level <= self.top:
            raise IndexError(f"no level {level} (0..{self.top})")
        with self._lock:
            img = self._levels.get(level)
            if img is None:
                w, h = level_size(self.width, self.height, level)
                img = cv2.resize(self.full, (w, h), interpolation=cv2.INTER_AREA)
                self._levels[level] = img
            return img

    def tile(self, level: int, col: int, row: int) -> np.ndarray:
        img = self.level(level)
        x0, y0, x1, y1 = tile_bounds(img.shape[1], img.shape[0], col, row)
        return img[y0:y1, x0:x1]


class RenderCache:
    """A byte-bounded LRU with one build per key at a time (thread-safe)."""

    def __init__(self, max_bytes: int = CACHE_BYTES, slots: int = RENDER_SLOTS) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._flights: dict[Any, threading.Lock] = {}
        self._slots = threading.BoundedSemaphore(slots)
        self.builds = 0
        self.hits = 0

    def _hit(self, key: Any) -> Any | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found[0]

    def get(self, key: _K, build: Callable[[], _V], size: Callable[[_V], int]) -> _V:
        """The cached value of ``key``, built (once, whatever the concurrency) if missing."""
        with self._lock:
            hit = self._hit(key)
            if hit is not None:
                return hit
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:
            with self._lock:
                hit = self._hit(key)
                if hit is not None:
                    return hit
            try:
                with self._slots:
                    value = build()
                self._put(key, value, size(value))
            finally:
                with self._lock:
                    self._flights.pop(key, None)
            return value

    def _put(self, key: Any, value: Any, nbytes: int) -> None:
        with self._lock:
            self.builds += 1
            if nbytes > self.max_bytes:
                return  # larger than the whole cache: used once, not kept
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    @property
    def nbytes(self) -> int:
        return self._bytes


def _cache(service: Service) -> RenderCache:
    cache = getattr(service, "tile_cache", None)
    if cache is None:
        cache = service.tile_cache = RenderCache()  # type: ignore[attr-defined]
    return cache


def _scan(service: Service, rec: ScanRecord) -> Scan:
    return _cache(service).get(
        ("scan", rec.id),
        lambda: service.load_scan(rec),
        lambda s: s.high.nbytes + (s.low.nbytes if s.low is not None else 0),
    )


def _window(level: float | None, width: float | None) -> tuple[float, float] | None:
    if (level is None) != (width is None):
        raise HTTPException(422, "window: give both level and width, or neither")
    if level is None or width is None:
        return None
    if not (math.isfinite(level) and math.isfinite(width)):
        raise HTTPException(422, "window: level and width must be finite numbers")
    # Rounded: a slider cannot fill the cache with views one rounding error apart.
    return (round(level, 3), round(width, 3))


def pyramid(
    service: Service, rec: ScanRecord, view: str, window: tuple[float, float] | None
) -> Pyramid:
    """The rendered view of a scan (cached); ``window`` only counts for the window view."""
    window = window if view == "window" else None

    def build() -> Pyramid:
        rgb = render(_scan(service, rec), view, window=window)
        full = np.ascontiguousarray(rgb[:, :, 0]) if view in GREY_VIEWS else rgb
        return Pyramid(full)

    return _cache(service).get(("view", rec.id, view, window), build, lambda p: p.nbytes)


def encode_png(img: np.ndarray) -> bytes:
    """8-bit grey or RGB -> PNG (fast compression: tiles are made on demand)."""
    bgr = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", bgr, PNG_FAST)
    if not ok:  # pragma: no cover - OpenCV encodes any 8-bit picture
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _auto(service: Service, rec: ScanRecord) -> tuple[float, float]:
    return _cache(service).get(
        ("auto-window", rec.id),
        lambda: auto_window(attenuation(_scan(service, rec).high)),
        lambda _: 64,
    )


# --------------------------------------------------------------------------- endpoints

Level = Annotated[float | None, Query(description="window view: attenuation level")]
Width = Annotated[float | None, Query(gt=0, description="window view: width")]


@router.get(f"{API}/viewer/config", tags=["viewer"])
def viewer_config(request: Request, _who: AnyCaller) -> dict[str, Any]:
    """What the page needs besides the scans: the serving model's categories (the only
    ones a review may re-label to or draw; empty while no model is loaded), a colour per
    category (as in ``cargoscan analyze`` pictures; ``anomaly`` included), the views."""
    model = get_service(request).models.current
    categories = list(model.engine.categories) if model is not None else []
    colours = {
        c: "#{:02x}{:02x}{:02x}".format(*CATEGORY_COLOURS.get(c, (255, 255, 255)))
        for c in [*CATEGORY_COLOURS, *categories]
    }
    return {
        "categories": categories,
        "colours": colours,
        "views": list(VIEWS),
        "model": model.version if model is not None else None,
        "tile_size": TILE_SIZE,
    }


@router.get(f"{API}/scans/{{scan_id}}/tiles", tags=["viewer"])
async def tiles_info(request: Request, who: AnyCaller, scan_id: str) -> dict[str, Any]:
    """The scan's size, its DZI levels and views, and the automatic contrast window
    (where the window view's sliders start)."""
    service = get_service(request)
    rec, _ = await run_in_threadpool(owned_scan, service, who, scan_id)
    level, width = await run_in_threadpool(_auto, service, rec)
    base = f"{API}/scans/{rec.id}/tiles"
    return {
        "width": rec.width,
        "height": rec.height,
        "tile_size": TILE_SIZE,
        "overlap": TILE_OVERLAP,
        "max_level": max_level(rec.width, rec.height),
        "has_low": rec.low_sha256 is not None,
        "views": {v: f"{base}/{v}.dzi" for v in VIEWS},
        "auto_window": {"level": round(level, 4), "width": round(width, 4)},
    }


@router.get(
    f"{API}/scans/{{scan_id}}/tiles/{{view}}.dzi",
    tags=["viewer"],
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
async def dzi(
    request: Request,
    who: AnyCaller,
    scan_id: str,
    view: View,
    level: Level = None,
    width: Width = None,
) -> Response:
    """The Deep Zoom descriptor of a view (the window view takes ``level`` and ``width``,
    which the tile URLs then carry too)."""
    _window(level, width)
    rec, _ = await run_in_threadpool(owned_scan, get_service(request), who, scan_id)
    return Response(
        dzi_xml(rec.width, rec.height),
        media_type="application/xml",
        headers={"Cache-Control": TILE_CACHE_CONTROL},
    )


@router.get(
    f"{API}/scans/{{scan_id}}/tiles/{{view}}_files/{{level}}/{{col}}_{{row}}.png",
    tags=["viewer"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def tile(
    request: Request,
    who: AnyCaller,
    scan_id: str,
    view: View,
    level: int,
    col: int,
    row: int,
    window_level: Annotated[float | None, Query(alias="level", description="window view")] = None,
    window_width: Annotated[float | None, Query(alias="width", gt=0, description="window")] = None,
) -> Response:
    """One DZI tile (PNG, at most 514 x 514 with the overlap)."""
    window = _window(window_level, window_width)
    service = get_service(request)
    rec, _ = await run_in_threadpool(owned_scan, service, who, scan_id)
    top = max_level(rec.width, rec.height)
    if not 0 <= level <= top:
        raise HTTPException(404, f"no level {level}: this scan has levels 0 to {top}")
    lw, lh = level_size(rec.width, rec.height, level)
    try:
        tile_bounds(lw, lh, col, row)
    except IndexError:
        raise HTTPException(404, f"no tile {col}_{row} at level {level}") from None

    def cut() -> bytes:
        return encode_png(pyramid(service, rec, view, window).tile(level, col, row))

    png = await run_in_threadpool(cut)
    return Response(png, media_type="image/png", headers={"Cache-Control": TILE_CACHE_CONTROL})


THUMB_WIDTH = 160
"""Width (px) of a queue row's thumbnail: the load's outline, not its detail."""


def thumbnail_png(scan: Scan) -> bytes:
    """A small grey picture of ``scan``: the raw channel shrunk first (area average), then
    drawn, so a thumbnail costs a fraction of a full rendering."""
    h, w = scan.high.shape
    tw = min(THUMB_WIDTH, w)
    th = max(1, round(h * tw / w))
    small = cv2.resize(scan.high, (tw, th), interpolation=cv2.INTER_AREA)
    return encode_png(render(Scan.from_arrays(small), "grey")[:, :, 0])


@router.get(
    f"{API}/scans/{{scan_id}}/thumbnail.png",
    tags=["viewer"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def thumbnail(request: Request, who: AnyCaller, scan_id: str) -> Response:
    """The queue row's thumbnail: the grey view, 160 px wide (PNG; cached)."""
    service = get_service(request)
    rec, _ = await run_in_threadpool(owned_scan, service, who, scan_id)

    def build() -> bytes:
        # Not through the scan cache: a queue page of thumbnails would push out the
        # rendered views officers are looking at.
        return _cache(service).get(
            ("thumb", rec.id), lambda: thumbnail_png(service.load_scan(rec)), len
        )

    png = await run_in_threadpool(build)
    return Response(png, media_type="image/png", headers={"Cache-Control": TILE_CACHE_CONTROL})
