// Earlier scans of the same container or vehicle (GET /scans/{id}/related): a list in
// the side panel, newest first, each opening that scan; and a split view that shows one
// of them under the current scan, zoomed and panned together, to compare the loads.

import * as api from "./api.js";
import { $, el, fmtRisk, fmtTime, toast, verdictBadge } from "./util.js";

const KIND_WORDS = { container: "container", vehicle: "vehicle" };

/** Where the earlier scan's review stands, in the officer's words. */
export function reviewWords(item) {
  if (item.review_status === "reopened") return "re-opened";
  if (item.review_status !== "reviewed") return "not reviewed";
  return item.review_verdict === "inspect" ? "physical inspection" : "released";
}

export class RelatedScans {
  /** `view`: the ScanView (its viewer, current view and window are read when needed). */
  constructor(view) {
    this.view = view;
    this.id = null;
    this.items = [];
    this.comparing = null; // the item shown in the split view
    this.other = null; // the second OpenSeadragon viewer
    this.syncing = false;
    $("compare-close").addEventListener("click", () => this.close());
  }

  /** The list for scan `id` (the split view of the previous scan is closed). */
  async load(id) {
    this.close();
    this.id = id;
    this.items = [];
    $("related-count").textContent = "";
    $("related-list").replaceChildren(el("li", { class: "muted" }, "Looking…"));
    let answer;
    try {
      answer = await api.scans.related(id);
    } catch (err) {
      if (this.id === id) {
        $("related-list").replaceChildren(
          el("li", { class: "muted" }, `Unavailable: ${err.message}`),
        );
      }
      return;
    }
    if (this.id !== id) return;
    this.items = answer.items || [];
    this.render(answer);
  }

  render(answer) {
    const list = $("related-list");
    $("related-count").textContent = answer.total ? String(answer.total) : "";
    if (!answer.identifiers?.length) {
      list.replaceChildren(el("li", { class: "muted" }, "No container or vehicle id sent."));
      return;
    }
    if (!this.items.length) {
      const ids = answer.identifiers.map((i) => i.value).join(", ");
      list.replaceChildren(el("li", { class: "muted" }, `None before this one (${ids}).`));
      return;
    }
    list.replaceChildren(
      ...this.items.map((item) =>
        el(
          "li",
          { dataset: { scanId: item.scan_id } },
          el(
            "div",
            { class: "related-top" },
            el(
              "a",
              {
                class: "related-open",
                href: `#/scan/${encodeURIComponent(item.scan_id)}`,
                title: "Open this scan",
              },
              fmtTime(item.scan_time || item.received_at),
            ),
            el(
              "button",
              {
                type: "button",
                class: "ghost small related-compare",
                title: "Show it under this scan (v)",
                "aria-pressed": String(this.comparing?.scan_id === item.scan_id),
                onclick: () => this.compare(item),
              },
              "Compare",
            ),
          ),
          el(
            "div",
            { class: "related-what" },
            el("span", { class: "related-station" }, item.station),
            verdictBadge(item.verdict),
            el("span", { class: "risk" }, `risk ${fmtRisk(item.risk)}`),
            el("span", { class: `related-review ${item.review_verdict || ""}` }, reviewWords(item)),
          ),
          el(
            "div",
            { class: "muted related-match" },
            "same ",
            item.matched.map((m) => `${KIND_WORDS[m.kind] || m.kind} ${m.value}`).join(", "),
          ),
        ),
      ),
    );
  }

  /** `v`: the split view with the newest earlier scan, or closed again. */
  toggle() {
    if (this.comparing) this.close();
    else if (this.items.length) this.compare(this.items[0]);
    else toast("No earlier scan of this container or vehicle", { error: true });
  }

  /** Show `item` under the current scan, at the same place and zoom. */
  async compare(item) {
    if (this.comparing?.scan_id === item.scan_id) {
      this.close();
      return;
    }
    const id = this.id;
    let tiles;
    try {
      tiles = await api.scans.tiles(item.scan_id);
    } catch (err) {
      toast(`Could not open the earlier scan: ${err.message}`, { error: true });
      return;
    }
    if (this.id !== id) return;
    this.comparing = { ...item, tiles };
    $("scan-main").classList.add("comparing");
    $("compare").hidden = false;
    $("compare-title").replaceChildren(
      "Earlier: ",
      el(
        "a",
        { href: `#/scan/${encodeURIComponent(item.scan_id)}`, title: "Open this scan" },
        `${fmtTime(item.scan_time || item.received_at)}, ${item.station}`,
      ),
      " ",
      verdictBadge(item.verdict),
      ` ${reviewWords(item)}`,
    );
    const other = this.ensureViewer();
    other.open(this.dziUrl(this.view.view));
    this.mark();
  }

  close() {
    if (!this.comparing) return;
    this.comparing = null;
    $("scan-main").classList.remove("comparing");
    $("compare").hidden = true;
    this.other?.close();
    this.mark();
  }

  mark() {
    for (const b of $("related-list").querySelectorAll("li")) {
      const button = b.querySelector(".related-compare");
      if (button) button.setAttribute("aria-pressed", String(b.dataset.scanId === this.comparing?.scan_id));
    }
  }

  /** The earlier scan in the view the officer looks at (grey where it has none). */
  dziUrl(view) {
    const { tiles, scan_id: id } = this.comparing;
    if (view === "material" && !tiles.has_low) view = "grey";
    return api.scans.dziUrl(id, view, view === "window" ? tiles.auto_window : null);
  }

  /** The main viewer switched views: the earlier scan follows. */
  followView(view) {
    if (this.comparing && this.other) this.other.open(this.dziUrl(view));
  }

  ensureViewer() {
    if (this.other) return this.other;
    const other = OpenSeadragon({
      element: $("osd-compare"),
      prefixUrl: "/static/vendor/openseadragon/images/",
      showNavigationControl: false,
      drawer: "canvas",
      animationTime: 0.25,
      blendTime: 0,
      maxZoomPixelRatio: 6,
      minZoomImageRatio: 0.5,
      visibilityRatio: 0.2,
      zoomPerScroll: 1.25,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    });
    other.addHandler("canvas-key", (e) => {
      e.preventDefaultAction = true;
    });
    const main = this.view.viewer;
    other.addHandler("open", () => this.sync(main, other));
    main.addHandler("viewport-change", () => this.comparing && this.sync(main, other));
    other.addHandler("viewport-change", () => this.comparing && this.sync(other, main));
    this.other = other;
    window.cargoscanCompare = other; // for the browser tests
    return other;
  }

  /** The same zoom and centre (viewport units: x across the scan's width) in `to`. */
  sync(from, to) {
    if (this.syncing || !to.world.getItemCount()) return;
    this.syncing = true;
    try {
      to.viewport.zoomTo(from.viewport.getZoom(), null, true);
      to.viewport.panTo(from.viewport.getCenter(), true);
    } finally {
      this.syncing = false;
    }
  }
}
