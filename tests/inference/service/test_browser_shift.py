"""Issue 28, items 3 to 6, in a real browser (Playwright on Debian's chromium against
`cargoscan serve`): a shift worked with half the keys and clicks, the queue (CLEAR scans
released in bulk, thumbnails, top finding, waiting time, the review's verdict), the
single-energy material view, labels that neither overlap nor leave the pane nor cover the
overview map, the scan's header and whole image in view at 1280x720 and 1920x1080, the
quiet "new scans" counter, one time format, the loading indicator and the next scan's
tiles fetched ahead.

The scans are synthetic (``training.synth``) with hand-made results, stored before the
service starts (as in ``test_browser.py``). With ``CARGOSCAN_SCREENSHOTS=DIR`` the test
writes ``DIR/scan-1280x720.png`` and ``DIR/scan-1920x1080.png``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from inference.result import model_info
from inference.service.app import open_records
from inference.service.auth import hash_key, new_key
from inference.service.core import API
from inference.service.settings import Settings
from inference.service.storage import BlobStore
from station.server import free_port, serving
from tests.inference.service.service_helpers import scan_pngs, serve_env, store_scan
from tests.inference.service.test_browser import (
    PASSWORD,
    REPO,
    Page,
    _finding,
    _login,
    _screenshot,
    _settled,
    expect,
    pytestmark,  # noqa: F401  (slow; skipped without chromium or playwright)
)

OFFICER = "alice"
SMALL = {"width": 1280, "height": 720}
LARGE = {"width": 1920, "height": 1080}
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+$")


def _crowded(w: int, h: int) -> list[dict[str, Any]]:
    """13 findings as the issue met them: narcotics and currency on the identical box,
    stacked person boxes, 4x8 px anomaly boxes, "anomaly 1.00" on "person 0.72", and a
    box at the right edge."""
    out = [
        _finding("narcotics", 0.81, (700, 300, 780, 360)),
        _finding("currency", 0.77, (700, 300, 780, 360)),
        _finding("person", 0.72, (400, 250, 470, 420)),
        _finding("anomaly", 1.0, (402, 252, 468, 418), source="anomaly"),
        _finding("person", 0.69, (405, 262, 475, 430)),
        _finding("person", 0.61, (398, 270, 466, 436)),
        _finding("anomaly", 0.66, (w - 40, 200, w - 4, 260), source="anomaly"),
        _finding("firearm", 0.55, (w - 60, 300, w - 2, 340)),
    ]
    for k in range(5):
        out.append(
            _finding("anomaly", 0.51 + k / 100, (900 + 6 * k, 500, 904 + 6 * k, 508), "anomaly")
        )
    return out


SHIFT_FINDINGS = [2, 1, 3, 1, 2]  # the other non-CLEAR scans of the mini-shift
N_CLEAR = 3


@pytest.fixture(scope="module")
def shift_site(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Any]) -> Iterator[Any]:
    from station.client import scan_metadata
    from training.synth.scene import SynthConfig, generate_scan

    root = tmp_path_factory.mktemp("shift-browser")
    data = root / "data"
    settings = Settings(data_dir=data, database_url=None)
    card = json.loads(models["clear"].with_suffix(".json").read_text())
    records = open_records(settings)
    blobs = BlobStore(settings.data_dir / "blobs")
    info = model_info(card)
    key = new_key()
    gate = records.add_station("port-gate-3", hash_key(key))
    now = datetime.now(timezone.utc)
    cfg = SynthConfig()
    synth = generate_scan(0, 3, cfg)
    h, w = synth.high.shape
    ids: dict[str, Any] = {"shift": [], "clear": []}

    def store(name: str, minutes: int, risk: float, verdict: str, findings: list, low=True):
        meta = scan_metadata(synth, 0, 3, cfg, now - timedelta(minutes=minutes + 1))
        meta["station_scan_id"] = name
        return store_scan(
            records,
            blobs,
            station=gate,
            high=synth.high,
            low=synth.low if low else None,
            meta=meta,
            received_at=now - timedelta(minutes=minutes),
            model=info,
            risk=risk,
            verdict=verdict,
            findings=findings,
        )

    try:
        ids["crowded"] = store("crowded", 30, 0.97, "alarm", _crowded(w, h))
        ids["shift"].append(ids["crowded"])
        for k, n in enumerate(SHIFT_FINDINGS):
            found = [
                _finding("firearm", 0.6, (300 + 90 * j, 300, 360 + 90 * j, 360)) for j in range(n)
            ]
            ids["shift"].append(store(f"shift-{k}", 40 + k, 0.9 - 0.05 * k, "alarm", found))
        for k in range(N_CLEAR):
            ids["clear"].append(store(f"clear-{k}", 50 + k, 0.05, "clear", []))
        ids["single"] = store(
            "single", 60, 0.3, "review", [_finding("person", 0.4, (400, 250, 470, 420))], low=False
        )
    finally:
        records.engine.dispose()
    port = free_port()
    env = serve_env(data, models["clear"], port)
    cli = [sys.executable, "-m", "cargoscan", "user", "add", OFFICER, "--role", "officer"]
    added = subprocess.run(
        [*cli, "--password-stdin"],
        input=PASSWORD,
        text=True,
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    with serving(port, log=root / "serve.log", env=env, cwd=REPO, ready_timeout_s=90) as server:
        yield {"url": server.url, "key": key, "w": w, "h": h, **ids}


def _open(p: Any, site: dict[str, Any], scan_id: str) -> None:
    _login(p, site["url"])
    expect(p.locator("#queue-view")).to_be_visible()
    p.goto(f"{site['url']}/#/scan/{scan_id}")
    expect(p.locator("#scan-view")).to_be_visible()
    _settled(p)


def _rects(p: Any) -> dict[str, Any]:
    return p.evaluate(
        """() => {
            const r = (n) => { const b = n.getBoundingClientRect();
                return {l: b.left, t: b.top, r: b.right, b: b.bottom}; };
            const labels = [...document.querySelectorAll('#osd .box .label')]
                .filter((n) => getComputedStyle(n).visibility !== 'hidden'
                    && n.closest('.box').offsetParent !== null)
                .map((n) => ({...r(n), text: n.textContent}));
            return {osd: r(document.getElementById('osd')),
                    nav: r(window.cargoscanViewer.navigator.element), labels};
        }"""
    )


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["l"] < b["r"] - 0.5
        and b["l"] < a["r"] - 0.5
        and a["t"] < b["b"] - 0.5
        and b["t"] < a["b"] - 0.5
    )


def _labels_are_clear(p: Any, least: int) -> None:
    p.wait_for_timeout(150)  # the placement runs on the next animation frame
    got = _rects(p)
    labels, osd, nav = got["labels"], got["osd"], got["nav"]
    assert len(labels) >= least, labels
    for i, a in enumerate(labels):
        assert (
            osd["l"] <= a["l"] and a["r"] <= osd["r"] and osd["t"] <= a["t"] and a["b"] <= osd["b"]
        ), a
        assert not _overlap(a, nav), (a, nav)
        for b in labels[i + 1 :]:
            assert not _overlap(a, b), (a, b)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["1280x720", "1920x1080"])
def test_labels_header_and_image_stay_in_view(shift_site: Any, browser: Any, size: dict):
    tab = Page(browser, size)
    p = tab.page
    try:
        _open(p, shift_site, shift_site["crowded"])
        expect(p.locator("#finding-list li")).to_have_count(13)
        # The header and the whole image in view; nothing scrolled the page.
        for sel in (".scan-head .back", "#scan-verdict", "#scan-risk", "#next-scan"):
            expect(p.locator(sel)).to_be_in_viewport(ratio=1)
        osd = p.locator("#osd").bounding_box()
        assert osd and osd["y"] >= 0 and osd["y"] + osd["height"] <= size["height"] + 0.5
        assert osd["height"] >= size["height"] - 130, osd  # was 258 px at 1280x720
        scrolled = p.evaluate(
            "() => [document.scrollingElement.scrollTop, document.querySelector('main').scrollTop]"
        )
        assert scrolled == [0, 0]
        _labels_are_clear(p, least=6)
        _screenshot(p, f"scan-{size['width']}x{size['height']}")
        # The last finding: the panel scrolls, its header stays.
        p.keyboard.press("p")
        _settled(p)
        expect(p.locator("#finding-list li").last).to_be_in_viewport()
        expect(p.locator("#next-scan")).to_be_in_viewport(ratio=1)
        _labels_are_clear(p, least=1)
        # A relabelled anomaly at the right edge: its long label stays whole in the pane.
        p.locator("#finding-list li[data-finding-id='7'] select").select_option("firearm")
        p.keyboard.press("0")
        _settled(p)
        _labels_are_clear(p, least=6)
        assert any("anomaly → firearm" in lb["text"] for lb in _rects(p)["labels"])
        # A box under the overview map: the map stays on top.
        hit = p.evaluate(
            """() => {
                const v = window.cargoscanViewer;
                const nav = v.navigator.element.getBoundingClientRect();
                const box = document.querySelector('.box[data-finding-id="3"]')
                    .getBoundingClientRect();
                const d = v.viewport.deltaPointsFromPixels(new OpenSeadragon.Point(
                    (box.left + box.right) / 2 - (nav.left + nav.right) / 2,
                    (box.top + box.bottom) / 2 - (nav.top + nav.bottom) / 2), true);
                v.viewport.panBy(d, true);
                return [(nav.left + nav.right) / 2, (nav.top + nav.bottom) / 2];
            }"""
        )
        p.wait_for_timeout(300)
        under = p.evaluate(
            """([x, y]) => {
                const b = document.querySelector('.box[data-finding-id="3"]')
                    .getBoundingClientRect();
                const under = b.left < x && x < b.right && b.top < y && y < b.bottom;
                return [!!document.elementFromPoint(x, y).closest('.navigator'), under];
            }""",
            hit,
        )
        assert under == [True, True]
        _labels_are_clear(p, least=1)
        assert not tab.errors, tab.errors
    finally:
        tab.close()


def _before(findings: list[int]) -> int:
    """Keys and clicks a shift took before issue 28, per scan: open it (Enter in the queue
    or Shift+N from the last one), decide each finding (a or r), choose the verdict
    (Shift+R or Shift+I), save (Ctrl+Enter). CLEAR scans the same, with no finding."""
    return sum(1 + k + 2 for k in findings)


def test_a_shift_takes_at_most_half_the_keys_and_clicks(shift_site: Any, browser: Any):
    """The mini-shift (one crowded scan of 13 findings, five more with findings, three
    CLEAR) worked as an officer now would, every key and click counted: the CLEAR scans
    released from the queue in one go, each other scan decided with `x` (reject the rest,
    release) or `a` + `Shift X` (the threat accepted, the rest rejected, inspection) and
    saved with Ctrl+Enter, which opens the next scan (its tiles fetched ahead)."""
    tab = Page(browser, SMALL)
    p = tab.page
    p.add_init_script(
        """new MutationObserver(() => { const n = document.getElementById('osd-loading');
            if (n && !n.hidden) window.__loadingShown = true; })
          .observe(document, {attributes: true, subtree: true, attributeFilter: ['hidden']});"""
    )
    actions = 0
    url = shift_site["url"]
    try:
        _login(p, url)
        rows = p.locator("#queue-body tr")
        expect(rows).to_have_count(len(shift_site["shift"]) + N_CLEAR + 1)
        # The queue: thumbnails, the top finding, waiting time, one time format.
        crowded = p.locator(f"#queue-body tr[data-id='{shift_site['crowded']}']")
        expect(crowded).to_contain_text("anomaly 1.00")
        p.wait_for_function(
            """() => [...document.querySelectorAll('img.thumb')]
                .every(i => i.complete && i.naturalWidth === 160)"""
        )
        assert re.fullmatch(r"\d+ min", crowded.locator("td.waiting").inner_text()), (
            crowded.inner_text()
        )
        received = crowded.locator("td:nth-child(6)").inner_text()
        assert TIME.match(received), received
        p.locator("#clear-sample").select_option("0")  # a setting, kept: not counted
        # Every CLEAR scan released: one click and the confirmation.
        p.once("dialog", lambda d: d.accept())
        p.locator("#release-clear").click()
        actions += 2
        expect(p.locator("#toast")).to_contain_text(f"Released {N_CLEAR} CLEAR scans")
        expect(rows).to_have_count(len(shift_site["shift"]) + 1)

        p.keyboard.press("Enter")  # the riskiest: the crowded scan
        actions += 1
        for k, sid in enumerate(shift_site["shift"]):
            expect(p).to_have_url(re.compile(f"#/scan/{sid}$"))
            _settled(p)
            if k == 0:
                # the same time, in the same format, in the panel as in the queue
                expect(p.locator("#scan-facts")).to_contain_text(received)
            nxt = shift_site["shift"][k + 1] if k + 1 < len(shift_site["shift"]) else None
            if nxt:  # the next scan's tiles came before it was asked for
                p.wait_for_function(
                    """(id) => performance.getEntriesByType('resource').some(
                        e => e.name.includes(`/scans/${id}/tiles/`)
                            && e.name.includes('_files/'))""",
                    arg=nxt,
                )
            if k == 1:  # a real threat: accept it, reject the rest, inspection
                p.keyboard.press("a")
                p.keyboard.press("Shift+X")
                actions += 2
            else:
                p.keyboard.press("x")
                actions += 1
            p.keyboard.press("Control+Enter")
            actions += 1
            expect(p.locator("#toast")).to_contain_text("Review saved")
        expect(p.locator("#scan-facts")).to_contain_text("single")  # the last one left
        assert p.evaluate("() => window.__loadingShown === true")
        expect(p.locator("#osd-loading")).to_be_hidden()

        before = _before([13, *SHIFT_FINDINGS] + [0] * N_CLEAR)
        assert actions <= before / 2, (actions, before)
        # The same counts for a shift of 100, a third CLEAR (sampling every 10th), the
        # other 67 with the mini-shift's findings (13, 2, 1, 3, 1, 2 in turn), one in
        # six a real threat: written into docs/viewer.md.
        mix = [13, *SHIFT_FINDINGS]
        others = [mix[i % len(mix)] for i in range(67)]
        before_100 = _before(others + [0] * 33)
        threats = len(others) // 6
        kept = 33 // 10
        after_100 = 2 + 1 + 2 * (len(others) - threats) + 3 * threats + 2 * kept
        assert after_100 <= before_100 / 2, (after_100, before_100)
        print(f"mini-shift: {before} -> {actions}; shift of 100: {before_100} -> {after_100}")

        # Every review stored as done; the reviewed list shows the verdicts.
        verdicts = {}
        for sid in shift_site["shift"] + shift_site["clear"]:
            items = p.request.get(f"{url}{API}/scans/{sid}/reviews").json()["items"]
            assert len(items) == 1, sid
            verdicts[sid] = items[0]["verdict"]
        assert verdicts[shift_site["shift"][1]] == "inspect"
        assert sum(v == "release" for v in verdicts.values()) == len(verdicts) - 1
        p.keyboard.press("q")
        p.locator("#filter-status").select_option("reviewed")
        row = p.locator(f"#queue-body tr[data-id='{shift_site['shift'][1]}']")
        expect(row).to_contain_text("inspect")
        expect(p.locator(f"#queue-body tr[data-id='{shift_site['clear'][0]}']")).to_contain_text(
            "release"
        )
        assert not tab.errors, tab.errors
    finally:
        tab.close()


def test_single_energy_new_scans_counter_and_saved_message(shift_site: Any, browser: Any):
    tab = Page(browser, SMALL)
    p = tab.page
    try:
        _open(p, shift_site, shift_site["single"])
        button = p.locator("#view-buttons [data-view='material']")
        expect(button).to_be_disabled()
        expect(button).to_have_attribute("title", re.compile("Single-energy"))
        expect(p.locator("#view-note")).to_have_text(re.compile("single-energy"))
        p.keyboard.press("3")
        expect(p.locator("#toast")).to_contain_text("single-energy")
        assert p.locator("#osd").get_attribute("data-view") == "grey"

        # A scan arrives: a quiet counter in the top bar, no pop-up over the image.
        files = scan_pngs(h=200, w=600, seed=9)
        posted = httpx.post(
            f"{shift_site['url']}{API}/scans",
            files=files,
            data={"metadata": json.dumps({"station_scan_id": "late-1"})},
            headers={"Authorization": f"Bearer {shift_site['key']}"},
            timeout=60,
        )
        assert posted.status_code == 201, posted.text
        expect(p.locator("#new-count")).to_have_text("+1 new", timeout=15_000)
        expect(p.locator("#toast")).not_to_contain_text("new scan")
        p.locator("#next-on-save").uncheck()
        p.keyboard.press("x")
        p.keyboard.press("Control+Enter")
        expect(p.locator("#toast")).to_contain_text("Review saved: release")
        p.keyboard.press("q")
        expect(p.locator("#new-count")).to_have_text("")
        assert not tab.errors, tab.errors
    finally:
        tab.close()
