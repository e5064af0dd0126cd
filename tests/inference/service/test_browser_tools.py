"""Issue 28, item 7, in a real browser (Playwright on Debian's chromium against
`cargoscan serve`): the ruler (a drag of known scan pixels reads pitch x pixels in mm, with
its two components; pixels where the pitch is unknown; Escape clears it; it neither draws
boxes nor stops panning) and the earlier scans of the same container or vehicle (listed
beside the scan with date, station, verdict and review outcome; one opens; one shows
under the current scan, zoomed with it).

The scans are synthetic (``training.synth``) with hand-made results, stored before the
service starts (as in ``test_browser.py``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from inference.result import model_info
from inference.service.app import open_records
from inference.service.auth import hash_key, hash_password, new_key
from inference.service.db import Review
from inference.service.settings import Settings
from inference.service.storage import BlobStore
from station.server import free_port, serving
from tests.inference.service.service_helpers import serve_env, store_scan
from tests.inference.service.test_browser import (
    LAPTOP,
    PASSWORD,
    REPO,
    Page,
    _finding,
    _login,
    _screen_point,
    _settled,
    _zoom,
    expect,
    pytestmark,  # noqa: F401  (slow; skipped without chromium or playwright)
)

OFFICER = "alice"
PITCH = 2.5  # mm per pixel of the scans that have one
CONTAINER = "MSCU1234565"


@pytest.fixture(scope="module")
def tools_site(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Any]) -> Iterator[Any]:
    """Four scans: the current one (container MSCU 123456-5, pitch 2.5 mm), an earlier scan
    of the same container (reviewed: physical inspection), one of another container and
    vehicle, and one with no pitch."""
    from station.client import scan_metadata
    from training.synth.scene import SynthConfig, generate_scan

    root = tmp_path_factory.mktemp("tools-browser")
    data = root / "data"
    settings = Settings(data_dir=data, database_url=None)
    card = json.loads(models["clear"].with_suffix(".json").read_text())
    records = open_records(settings)
    blobs = BlobStore(settings.data_dir / "blobs")
    info = model_info(card)
    gate = records.add_station("port-gate-3", hash_key(new_key()))
    rail = records.add_station("rail-2", hash_key(new_key()))
    officer = records.add_user(OFFICER, "officer", hash_password(PASSWORD))
    now = datetime.now(timezone.utc)
    cfg = SynthConfig()
    synth = generate_scan(0, 3, cfg)
    h, w = synth.high.shape

    def store(name: str, station: Any, minutes: int, risk: float, verdict: str, **meta: Any):
        m = scan_metadata(synth, 0, 3, cfg, now - timedelta(minutes=minutes + 1))
        m.update(station_scan_id=name, **meta)
        findings = [_finding("firearm", 0.6, (300, 300, 360, 360))] if verdict != "clear" else []
        return store_scan(
            records,
            blobs,
            station=station,
            high=synth.high,
            low=synth.low,
            meta=m,
            received_at=now - timedelta(minutes=minutes),
            model=info,
            risk=risk,
            verdict=verdict,
            findings=findings,
        )

    try:
        ids = {
            "earlier": store(
                "earlier", rail, 90, 0.41, "review", container_ids=[CONTAINER], vehicle_id="AB-1"
            ),
            "other": store(
                "other", gate, 30, 0.5, "review", container_ids=["TGHU7654321"], vehicle_id="ZZ-9"
            ),
            "nopitch": store(
                "nopitch", gate, 10, 0.3, "review", pixel_pitch_mm=None, container_ids=[]
            ),
            "current": store(
                "current",
                gate,
                5,
                0.9,
                "alarm",
                pixel_pitch_mm=PITCH,
                container_ids=["MSCU 123456-5"],
                vehicle_id="QQ-1",
            ),
        }
        earlier_result = records.get_scan(ids["earlier"], None)[1]
        records.add_review(
            Review(
                scan_id=ids["earlier"],
                result_id=earlier_result.id,
                user_id=officer.id,
                user_role="officer",
                model_version=earlier_result.model_version,
                verdict="inspect",
                comment="false wall behind the reefer unit",
                findings=[],
                added=[],
            )
        )
    finally:
        records.engine.dispose()
    port = free_port()
    env = serve_env(data, models["clear"], port)
    with serving(port, log=root / "serve.log", env=env, cwd=REPO, ready_timeout_s=90) as server:
        yield {"url": server.url, "w": w, "h": h, **ids}


def _open(p: Any, site: dict[str, Any], scan_id: str, login: bool = True) -> None:
    if login:
        _login(p, site["url"])
        expect(p.locator("#queue-view")).to_be_visible()
    p.goto(f"{site['url']}/#/scan/{scan_id}")
    expect(p.locator("#scan-view")).to_be_visible()
    _shows(p, scan_id)


def _shows(p: Any, scan_id: str) -> None:
    """Wait until the viewer shows ``scan_id`` (not the scan before it), settled."""
    p.wait_for_function(
        """(id) => {
            const item = window.cargoscanViewer?.world.getItemAt(0);
            return Boolean(item && String(item.source.tilesUrl || "").includes(id));
        }""",
        arg=scan_id,
        timeout=30_000,
    )
    _settled(p)


def _centre(p: Any) -> tuple[int, int]:
    """The scan pixel at the middle of the pane, rounded."""
    x, y = p.evaluate(
        """() => {
            const v = window.cargoscanViewer;
            const w = v.world.getItemAt(0).getContentSize().x;
            const c = v.viewport.getCenter(true);
            return [c.x * w, c.y * w];
        }"""
    )
    return round(x), round(y)


def _drag(p: Any, a: tuple[float, float], b: tuple[float, float]) -> None:
    p.mouse.move(*a)
    p.mouse.down()
    p.mouse.move(*b, steps=12)
    p.mouse.up()


def _drag_pixels(p: Any, a: tuple[int, int], b: tuple[int, int]) -> None:
    """A mouse drag from scan pixel ``a`` to scan pixel ``b``."""
    _drag(p, _screen_point(p, *a), _screen_point(p, *b))


def test_the_ruler_reads_pitch_times_pixels(tools_site: Any, browser: Any):
    tab = Page(browser, LAPTOP)
    p = tab.page
    try:
        _open(p, tools_site, tools_site["current"])
        for _ in range(3):  # past 1 screen pixel per scan pixel: each pixel can be hit
            p.keyboard.press("+")
        _settled(p)
        assert _zoom(p) >= 1.0
        cx, cy = _centre(p)
        a, b = (cx - 45, cy - 60), (cx + 45, cy + 60)  # 90 x 120 px: 150 px long

        p.keyboard.press("m")
        expect(p.locator("#measure-button")).to_have_attribute("aria-pressed", "true")
        _drag_pixels(p, a, b)
        readout = p.locator("#measure-readout")
        expect(readout).to_be_visible()
        length, dx, dy = 150 * PITCH, 90 * PITCH, 120 * PITCH  # 375, 225, 300 mm
        expect(readout.locator(".ruler-length")).to_have_text(f"{length:.0f} mm")
        expect(readout).to_contain_text(f"Δx {dx:.0f} mm, Δy {dy:.0f} mm")
        assert readout.get_attribute("data-dx") == "90"
        assert readout.get_attribute("data-dy") == "120"
        label = p.locator("#ruler-label")
        expect(label).to_have_text(f"{length:.0f} mm")
        # The line lies on the two points.
        ends = p.evaluate(
            """() => [...document.querySelectorAll('#ruler-layer circle')].map((c) => {
                const r = c.getBoundingClientRect();
                return [r.left + r.width / 2, r.top + r.height / 2];
            })"""
        )
        for got, want in zip(ends, (_screen_point(p, *a), _screen_point(p, *b)), strict=True):
            assert math.dist(got, want) < 1.5, (got, want)
        # A measurement is no drawn box, and measuring ends with the drag.
        expect(p.locator("#added-list li")).to_have_count(0)
        expect(p.locator("#measure-button")).to_have_attribute("aria-pressed", "false")

        # Panning still works, and the ruler moves with the image.
        before = label.bounding_box()
        centre = _centre(p)
        start = _screen_point(p, cx + 200, cy)
        _drag(p, start, (start[0] - 150, start[1] - 40))
        _settled(p)
        assert math.dist(_centre(p), centre) > 50, "the drag did not pan"
        after = label.bounding_box()
        assert before and after and abs(after["x"] - before["x"]) > 50
        expect(readout.locator(".ruler-length")).to_have_text(f"{length:.0f} mm")

        # Escape clears it.
        p.keyboard.press("Escape")
        expect(readout).to_be_hidden()
        expect(label).to_be_hidden()

        # Drawing and measuring exclude each other; a drawn box still comes.
        p.keyboard.press("m")
        p.keyboard.press("d")
        expect(p.locator("#measure-button")).to_have_attribute("aria-pressed", "false")
        expect(p.locator("#draw-button")).to_have_attribute("aria-pressed", "true")
        cx, cy = _centre(p)
        _drag_pixels(p, (cx - 30, cy - 30), (cx + 30, cy + 30))
        expect(p.locator("#category-picker")).to_be_visible()
        p.keyboard.press("1")
        expect(p.locator("#added-list li")).to_have_count(1)
        expect(readout).to_be_hidden()
        p.keyboard.press("d")
        p.keyboard.press("m")
        expect(p.locator("#draw-button")).to_have_attribute("aria-pressed", "false")
        expect(p.locator("#measure-button")).to_have_attribute("aria-pressed", "true")
        p.keyboard.press("Escape")
        expect(p.locator("#measure-button")).to_have_attribute("aria-pressed", "false")

        # No pitch: pixels, and a word why.
        _open(p, tools_site, tools_site["nopitch"], login=False)
        p.click("#measure-button")
        cx, cy = _centre(p)
        _drag_pixels(p, (cx - 45, cy - 60), (cx + 45, cy + 60))
        pixels = re.compile(r"^1(49|50|51)(\.\d)? px$")
        expect(readout.locator(".ruler-length")).to_have_text(pixels)
        expect(readout).to_contain_text("pixel pitch unknown")
        assert "mm" not in readout.locator(".ruler-length").inner_text()
        assert not tab.errors, tab.errors
    finally:
        tab.close()


def test_earlier_scans_of_the_container_are_listed_compared_and_opened(
    tools_site: Any, browser: Any
):
    tab = Page(browser, LAPTOP)
    p = tab.page
    try:
        _open(p, tools_site, tools_site["current"])
        items = p.locator("#related-list li")
        expect(items).to_have_count(1)
        item = items.first
        assert item.get_attribute("data-scan-id") == tools_site["earlier"]
        expect(item).to_contain_text("rail-2")
        expect(item).to_contain_text("review")  # its verdict
        expect(item).to_contain_text("risk 0.41")
        expect(item).to_contain_text("physical inspection")  # its review
        expect(item).to_contain_text(f"same container {CONTAINER}")
        expect(item.locator(".related-open")).to_have_text(
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+$")
        )
        expect(p.locator("#related-count")).to_have_text("1")

        # v: the earlier scan under this one, zoomed and panned with it.
        p.keyboard.press("v")
        expect(p.locator("#compare")).to_be_visible()
        expect(p.locator("#compare-title")).to_contain_text("rail-2")
        p.wait_for_function(
            "() => window.cargoscanCompare && window.cargoscanCompare.world.getItemCount() === 1"
            " && window.cargoscanCompare.world.getItemAt(0).getFullyLoaded()",
            timeout=30_000,
        )
        src = p.evaluate("() => window.cargoscanCompare.world.getItemAt(0).source.tilesUrl")
        assert tools_site["earlier"] in src
        osd, compare = p.locator("#osd").bounding_box(), p.locator("#osd-compare").bounding_box()
        assert osd and compare and osd["height"] > 150 and compare["height"] > 150
        assert compare["y"] >= osd["y"] + osd["height"] - 1  # under it, not over it
        for _ in range(2):
            p.keyboard.press("+")
        _settled(p)
        p.wait_for_function(
            """() => {
                const a = window.cargoscanViewer.viewport, b = window.cargoscanCompare.viewport;
                return Math.abs(a.getZoom(true) / b.getZoom(true) - 1) < 0.01
                    && a.getCenter(true).distanceTo(b.getCenter(true)) < 0.01;
            }""",
            timeout=10_000,
        )
        p.keyboard.press("v")
        expect(p.locator("#compare")).to_be_hidden()

        # Open it: the earlier scan is shown, and it has nothing before it.
        item.locator(".related-open").click()
        expect(p).to_have_url(re.compile(f"#/scan/{tools_site['earlier']}$"))
        _shows(p, tools_site["earlier"])
        expect(p.locator("#scan-facts")).to_contain_text("earlier")
        expect(p.locator("#related-list li")).to_have_count(1)
        expect(p.locator("#related-list")).to_contain_text("None before this one")
        assert not tab.errors, tab.errors
    finally:
        tab.close()
