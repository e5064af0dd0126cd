// The review queue: scans waiting for review, highest risk first, with filters. It updates
// itself: every few seconds it asks for what arrived since the newest scan it has (the
// `since` filter) and merges that in; now and then it reloads the whole page of the list
// so scans that colleagues reviewed drop out.

import * as api from "./api.js";
import { $, el, longTime, riskCell, shortTime, toast, verdictBadge } from "./util.js";

const POLL_MS = 5000;
const FULL_RELOAD_MS = 30000;
const PAGE = 100;
const MAX_LIMIT = 200; // the most rows the queue endpoint gives in one answer

function order(a, b) {
  const ra = typeof a.risk === "number" ? a.risk : -1;
  const rb = typeof b.risk === "number" ? b.risk : -1;
  if (ra !== rb) return rb - ra;
  return String(b.received_at || "").localeCompare(String(a.received_at || ""));
}

export class QueueView {
  constructor({ open }) {
    this.open = open; // (scanId) => void
    this.items = [];
    this.total = 0;
    this.limit = PAGE;
    this.selected = 0;
    this.stations = new Set();
    this.timer = 0;
    this.lastFull = 0;
    this.loading = null;
    this.filters = { status: "pending", verdict: "", station: "" };

    $("filter-status").addEventListener("change", (e) => this.setFilter("status", e.target.value));
    $("filter-verdict").addEventListener("change", (e) =>
      this.setFilter("verdict", e.target.value),
    );
    let debounce = 0;
    $("filter-station").addEventListener("input", (e) => {
      clearTimeout(debounce);
      debounce = setTimeout(() => this.setFilter("station", e.target.value.trim()), 300);
    });
    $("queue-refresh").addEventListener("click", () => this.reload());
    $("queue-more").addEventListener("click", () => this.more());
  }

  /** Start polling (after login). */
  start() {
    this.stop();
    this.reload();
    this.timer = setInterval(() => this.tick(), POLL_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = 0;
  }

  setFilter(name, value) {
    this.filters[name] = value;
    this.limit = PAGE;
    this.selected = 0;
    this.reload();
  }

  params(extra = {}) {
    return {
      status: this.filters.status,
      verdict: this.filters.verdict,
      station: this.filters.station,
      limit: this.limit,
      ...extra,
    };
  }

  /** The next page, appended (the periodic reload keeps up to MAX_LIMIT rows). */
  async more() {
    try {
      const page = await api.queue(this.params({ offset: this.items.length, limit: PAGE }));
      const known = new Set(this.items.map((it) => it.id));
      this.items = this.items.concat(page.items.filter((it) => !known.has(it.id))).sort(order);
      this.total = page.total;
      this.limit = Math.min(MAX_LIMIT, Math.max(PAGE, this.items.length));
      this.render();
    } catch (err) {
      this.live(false, err);
    }
  }

  /** The whole list again (filters changed, or the periodic full reload). */
  async reload() {
    const selectedId = this.items[this.selected]?.id;
    const want = JSON.stringify(this.params());
    try {
      const page = await api.queue(this.params());
      if (want !== JSON.stringify(this.params())) return; // filters changed meanwhile
      this.items = page.items.slice().sort(order);
      this.total = page.total;
      this.lastFull = Date.now();
      const keep = this.items.findIndex((it) => it.id === selectedId);
      this.selected =
        keep >= 0 ? keep : Math.min(this.selected, Math.max(0, this.items.length - 1));
      this.live(true);
      this.render();
    } catch (err) {
      this.live(false, err);
    }
  }

  newest() {
    let best = null;
    for (const it of this.items) {
      if (it.received_at && (best === null || it.received_at > best)) best = it.received_at;
    }
    return best;
  }

  async tick() {
    if (document.visibilityState === "hidden") return;
    if (Date.now() - this.lastFull > FULL_RELOAD_MS || this.items.length === 0) {
      await this.reload();
      return;
    }
    const since = this.newest();
    try {
      const page = await api.queue(this.params({ since, offset: 0 }));
      const known = new Set(this.items.map((it) => it.id));
      const fresh = page.items.filter((it) => !known.has(it.id));
      this.live(true);
      if (!fresh.length) return;
      const selectedId = this.items[this.selected]?.id;
      this.items = this.items.concat(fresh).sort(order);
      this.total += fresh.length;
      const keep = this.items.findIndex((it) => it.id === selectedId);
      this.selected = Math.max(0, keep);
      this.render(new Set(fresh.map((it) => it.id)));
      if (!$("queue-view").hidden) return;
      toast(`${fresh.length} new scan${fresh.length > 1 ? "s" : ""} in the queue`);
    } catch (err) {
      this.live(false, err);
    }
  }

  live(ok, err) {
    const status = $("live-status");
    status.textContent = ok ? `live · ${shortTime(new Date().toISOString())}` : "offline";
    status.title = ok ? "The queue updates itself every few seconds" : String(err?.message || err);
  }

  render(fresh = new Set()) {
    const body = $("queue-body");
    const rows = this.items.map((it, i) => {
      if (it.station) this.stations.add(it.station);
      const status = it.review_status || "pending";
      return el(
        "tr",
        {
          class: [i === this.selected ? "selected" : "", fresh.has(it.id) ? "new" : ""].join(" "),
          dataset: { id: it.id },
          onclick: () => this.open(it.id),
        },
        el("td", { class: "num" }, riskCell(it.risk)),
        el("td", {}, verdictBadge(it.verdict)),
        el("td", {}, it.station || "—"),
        el("td", { title: longTime(it.received_at) }, shortTime(it.received_at)),
        el("td", { title: longTime(it.scan_time) }, shortTime(it.scan_time)),
        el("td", { class: "declared", title: it.declared || "" }, it.declared || "—"),
        el("td", { class: "num" }, String(it.findings ?? 0)),
        el("td", { class: `status-${status}` }, status),
      );
    });
    body.replaceChildren(...rows);
    $("queue-empty").hidden = this.items.length > 0;
    $("queue-total").textContent = `${this.items.length} of ${this.total}`;
    $("queue-more").hidden = this.items.length >= this.total;
    $("pending-count").textContent =
      this.filters.status === "pending" && this.total ? String(this.total) : "";
    $("station-names").replaceChildren(
      ...[...this.stations].sort().map((s) => el("option", { value: s })),
    );
  }

  select(i) {
    if (!this.items.length) return;
    this.selected = Math.max(0, Math.min(this.items.length - 1, i));
    const rows = $("queue-body").children;
    for (let k = 0; k < rows.length; k++) rows[k].classList.toggle("selected", k === this.selected);
    rows[this.selected]?.scrollIntoView({ block: "nearest" });
  }

  /** The scan after `scanId` in queue order (for "next scan"), or the first one. */
  nextAfter(scanId) {
    const i = this.items.findIndex((it) => it.id === scanId);
    const rest = this.items.slice(i + 1).concat(this.items.slice(0, Math.max(0, i)));
    const pending = rest.find((it) => it.id !== scanId && it.review_status !== "reviewed");
    return (pending || rest.find((it) => it.id !== scanId))?.id || null;
  }

  /** A scan was reviewed here: in the pending list it is done. */
  reviewed(scanId) {
    const it = this.items.find((x) => x.id === scanId);
    if (!it) return;
    it.review_status = "reviewed";
    if (this.filters.status === "pending") {
      this.items = this.items.filter((x) => x.id !== scanId);
      this.total = Math.max(0, this.total - 1);
      this.selected = Math.min(this.selected, Math.max(0, this.items.length - 1));
    }
    this.render();
  }

  /** Keyboard shortcuts of the queue; true when the key was used. */
  key(e) {
    switch (e.key) {
      case "j":
      case "ArrowDown":
        this.select(this.selected + 1);
        return true;
      case "k":
      case "ArrowUp":
        this.select(this.selected - 1);
        return true;
      case "Enter":
      case "o":
        if (this.items[this.selected]) this.open(this.items[this.selected].id);
        return true;
      case "g":
        this.reload();
        return true;
      default:
        return false;
    }
  }
}
