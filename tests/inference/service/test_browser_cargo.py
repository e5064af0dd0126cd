"""The cargo check in a real browser (Playwright on Debian's chromium against `cargoscan
serve` with the shipped model and ``CARGOSCAN_CARGO_ANALYSIS=1``): a synthetic scan from
the generator whose declared manifest calls its loaded container empty (``cargo_helpers``)
is posted by a station; the officer sees the container and the discrepancy as boxes on
the image, the declared-vs-observed table and the reasons behind the risk, confirms the
discrepancy from the keyboard as a finding is accepted, sends the truck to inspection and
saves; the stored review carries the decision (docs/cargo.md, "Risk and review"). With
``CARGOSCAN_SCREENSHOTS=DIR`` it also writes ``DIR/scan-cargo.png`` (docs/viewer.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inference.service.app import open_records
from inference.service.auth import hash_key, hash_password, new_key
from inference.service.settings import Settings
from station.server import free_port, serving
from tests.inference.service.cargo_helpers import SHIPPED_MODEL, contradicted_scan, files_of
from tests.inference.service.service_helpers import serve_env
from tests.inference.service.test_browser import (
    LAPTOP,
    PASSWORD,
    REPO,
    Page,
    _login,
    _screen_point,
    _screenshot,
    _settled,
    expect,
    pytestmark,  # noqa: F401  (slow; skipped without chromium or playwright)
)

API = "/api/v1"
OFFICER = "alice"


@pytest.fixture(scope="module")
def cargo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    scan = contradicted_scan()
    root = tmp_path_factory.mktemp("cargo-browser")
    data = root / "data"
    records = open_records(Settings(data_dir=data, database_url=None))
    key = new_key()
    try:
        records.add_station("port-gate-3", hash_key(key))
        records.add_user(OFFICER, "officer", hash_password(PASSWORD))
    finally:
        records.engine.dispose()
    port = free_port()
    env = {**serve_env(data, SHIPPED_MODEL, port), "CARGOSCAN_CARGO_ANALYSIS": "1"}
    with serving(port, log=root / "serve.log", env=env, cwd=REPO, ready_timeout_s=90) as server:
        meta = {**scan.declared, "station_scan_id": "PG3-cargo-1"}
        r = httpx.post(
            f"{server.url}{API}/scans",
            files=files_of(scan),
            data={"metadata": json.dumps(meta)},
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        assert r.status_code == 201, r.text
        yield {"url": server.url, "result": r.json()}


def _rect(p: Any, selector: str) -> dict[str, float]:
    return p.locator(selector).first.evaluate(
        "n => { const r = n.getBoundingClientRect(); "
        "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; }"
    )


def test_an_officer_sees_the_cargo_check_and_confirms_the_discrepancy(
    cargo_site: dict[str, Any], browser: Any
):
    result = cargo_site["result"]
    sid = result["scan_id"]
    (container,) = result["cargo"]["containers"]
    (found,) = result["cargo"]["manifest_check"]["discrepancies"]
    assert found["kind"] == "declared_empty_but_loaded"
    assert result["findings"] == []  # a clean scan: only the manifest raised its risk
    tab = Page(browser, LAPTOP)
    p = tab.page
    try:
        _login(p, cargo_site["url"], name=OFFICER)
        expect(p.locator("#queue-view")).to_be_visible()
        expect(p.locator(f'#queue-body tr[data-id="{sid}"] .top-finding')).to_contain_text(
            "manifest ×1"
        )
        p.goto(f"{cargo_site['url']}/#/scan/{sid}")
        expect(p.locator("#scan-view")).to_be_visible()
        _settled(p)

        # the declared-vs-observed table: declared empty, seen loaded, mass, kind, fill
        expect(p.locator("#cargo-panel")).to_be_visible()
        expect(p.locator("#cargo-status")).to_have_text("1 discrepancy")
        row = p.locator('#cargo-table tbody tr[data-container="0"]')
        expect(row.locator('[data-field="declared-goods"]')).to_have_text("empty")
        expect(row.locator('[data-field="observed-empty"]')).to_contain_text("loaded")
        mass = f"{round(container['mass_kg']):,} kg"
        expect(row.locator('[data-field="observed-mass"]')).to_have_text(mass)
        expect(row.locator('[data-field="observed-kind"]')).to_have_text(container["kind"])
        fill = f"{round(100 * container['fill'])} %"
        expect(row.locator('[data-field="observed-fill"]')).to_have_text(fill)
        expect(p.locator("#cargo-table th[scope=col]")).to_have_count(7)

        # the container and the discrepancy as boxes where the result puts them
        expect(p.locator(".box.container")).to_have_count(1)
        expect(p.locator(".box.container .label")).to_have_text("container 1")
        region = p.locator(".box.discrepancy")
        expect(region).to_have_count(1)
        expect(region).to_be_visible()
        expect(region.locator(".label")).to_contain_text("declared empty but loaded")
        expect(region).to_have_attribute("title", found["explanation"])
        for selector, box in (
            (".box.discrepancy", found["box"]),
            (".box.container", container["box"]),
        ):
            shown = _rect(p, selector)
            x0, y0 = _screen_point(p, box[0], box[1])
            x1, y1 = _screen_point(p, box[2], box[3])
            assert abs(shown["left"] - x0) < 4 and abs(shown["right"] - x1) < 4, (shown, box)
            assert abs(shown["top"] - y0) < 4 and abs(shown["bottom"] - y1) < 4, (shown, box)

        # the discrepancy in the list with its explanation, the reason behind the risk
        item = p.locator("#discrepancy-list li").first
        expect(item.locator(".explanation")).to_have_text(found["explanation"])
        expect(item).to_have_class(re.compile("selected"))  # no finding: selected first
        expect(item.locator(".state")).to_have_text("to decide")
        reason = p.locator("#risk-reasons li.decides")
        expect(reason).to_have_attribute("data-source", "manifest")
        expect(reason).to_contain_text("weight 1.25")
        expect(p.locator("#scan-verdict")).to_have_text(result["verdict"])
        expect(p.locator("#review-hint")).to_contain_text("decide 1 more manifest discrepancy")

        # confirm from the keyboard (a, as for a finding), inspection, save
        p.locator("#osd").focus()
        p.keyboard.press("a")
        expect(item.locator(".state")).to_have_text("confirmed")
        expect(item.locator("button.accept")).to_have_attribute("aria-pressed", "true")
        expect(item.locator("button.accept")).to_have_attribute(
            "aria-label", "Confirm discrepancy 1"
        )
        expect(region).to_have_class(re.compile(r"\bconfirm\b"))
        expect(p.locator("#discrepancy-progress")).to_have_text("1 / 1 decided")
        p.keyboard.press("u")  # undo, then the button does the same
        expect(item.locator(".state")).to_have_text("to decide")
        item.locator("button.accept").click()
        expect(item.locator(".state")).to_have_text("confirmed")
        _screenshot(p, "scan-cargo")  # docs/viewer.md (CARGOSCAN_SCREENSHOTS=docs/screenshots)
        p.keyboard.press("Shift+I")
        expect(p.locator("#review-submit")).to_be_enabled()
        p.keyboard.press("Control+Enter")
        expect(p.locator("#toast")).to_contain_text("Review saved")
        expect(p.locator("#history li").first).to_contain_text("1 discrepancy confirmed")

        url = f"{cargo_site['url']}{API}/scans/{sid}/reviews"
        (review,) = p.request.get(url).json()["items"]
        assert review["verdict"] == "inspect" and review["officer"] == OFFICER
        (decided,) = review["discrepancies"]
        assert (decided["index"], decided["decision"], decided["kind"]) == (
            0,
            "confirm",
            "declared_empty_but_loaded",
        )
        assert decided["box"] == found["box"]
        assert not tab.errors, tab.errors
    finally:
        tab.close()
