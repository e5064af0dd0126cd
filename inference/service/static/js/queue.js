// The review queue: scans waiting for review, highest risk first, with filters. It updates
// itself: every few seconds it asks for what arrived since the newest scan it has (the
// `since` filter) and merges that in; now and then it reloads the whole page of the list
// so scans that colleagues reviewed drop out.

import * as api from "./api.js";
import { $, el, fmtTime, riskCell, toast, verdictBadge, waited } from "./util.js";

const POLL_MS = 5000;
const FULL_RELOAD_MS = 30000;
const PAGE = 100;
const MAX_LIMIT = 200; // the most rows the queue endpoint gives in one answer
const SAMPLE_KEY = "cargoscan.clearSample";

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
    this.unseen = 0; // scans that arrived while the officer was not looking at the queue
    const sample = localStorage.getItem(SAMPLE_KEY);
    if (sample !== null) $("clear-sample").value = sample;
    $("clear-sample").addEventListener("change", (e) =>
      localStorage.setItem(SAMPLE_KEY, e.target.value),
    );
    $("release-clear").addEventListener("click", () => this.releaseClear());
  }

  /** Pending CLEAR scans listed with no finding and no manifest discrepancy: what
   *  "Release CLEAR" releases. */
  clearIds() {
    return this.items
      .filter(
        (it) =>
          it.verdict === "clear" &&
          it.review_status === "pending" &&
          !it.findings &&
          !it.discrepancies,
      )
      .map((it) => it.id);
  }

  /** Release the listed CLEAR scans in one request (each an audited review); every Nth
   *  stays in the queue for a full review when sampling is on. */
  async releaseClear() {
    const ids = this.clearIds();
    if (!ids.length) return;
    const every = Number($("clear-sample").value) || null;
    const kept = every ? Math.floor(ids.length / every) : 0;
    const ask = `Release ${ids.length - kept} CLEAR scan${ids.length - kept === 1 ? "" : "s"}${
      kept ? ` and keep ${kept} (every ${every}th) for review` : ""
    }?`;
    if (!window.confirm(ask)) return;
    try {
      const out = await api.releaseClear(ids, every);
      const skipped = out.skipped.length ? `, ${out.skipped.length} skipped` : "";
      toast(
        `Released ${out.released.length} CLEAR scans; ${out.kept_for_review.length} kept for review${skipped}`,
      );
    } catch (err) {
      toast(`Not released: ${err.message}`, { error: true, ms: 5000 });
    }
    await this.reload();
  }

  /** The officer looks at the queue: the "new" counter starts again. */
  seen() {
    this.unseen = 0;
    this.showUnseen();
  }

  showUnseen() {
    $("new-count").textContent = this.unseen ? `+${this.unseen} new` : "";
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
    for (const td of document.querySelectorAll("#queue-body td.waiting")) {
      if (td.textContent !== "—") td.textContent = waited(td.dataset.since);
    }
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
      // A quiet counter in the top bar, never a pop-up over the scan (nor in place of
      // the "Review saved" confirmation).
      if ($("queue-view").hidden) this.unseen += fresh.length;
      this.showUnseen();
    } catch (err) {
      this.live(false, err);
    }
  }

  live(ok, err) {
    const status = $("live-status");
    status.textContent = ok ? `live · ${fmtTime(new Date().toISOString())}` : "offline";
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
        el(
          "td",
          { class: "thumb-col" },
          el("img", {
            class: "thumb",
            loading: "lazy",
            alt: "",
            src: api.scans.thumbnailUrl(it.id),
          }),
        ),
        el("td", { class: "num" }, riskCell(it.risk)),
        el("td", {}, verdictBadge(it.verdict)),
        el("td", { class: "top-finding" }, topFinding(it.top_finding, it.discrepancies)),
        el("td", {}, it.station || "—"),
        el("td", { title: `scanned ${fmtTime(it.scan_time)}` }, fmtTime(it.received_at)),
        el("td", { class: "num waiting", dataset: { since: it.received_at || "" } }, waitCell(it)),
        el("td", { class: "declared", title: it.declared || "" }, it.declared || "—"),
        el("td", { class: "num" }, String(it.findings ?? 0)),
        el("td", { class: `status-${status}` }, status, reviewVerdict(it)),
      );
    });
    body.replaceChildren(...rows);
    $("queue-empty").hidden = this.items.length > 0;
    $("queue-total").textContent = `${this.items.length} of ${this.total}`;
    $("queue-more").hidden = this.items.length >= this.total;
    $("pending-count").textContent =
      this.filters.status === "pending" && this.total ? String(this.total) : "";
    const clear = this.clearIds().length;
    $("clear-actions").hidden = !clear;
    $("release-clear").textContent = `Release ${clear} CLEAR`;
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
      case "L":
        this.releaseClear();
        return true;
      default:
        return false;
    }
  }
}

function topFinding(top, discrepancies) {
  const manifest = discrepancies
    ? el("span", { class: "manifest-flag", title: "manifest discrepancies to decide" }, [
        top ? " · " : "",
        `manifest ×${discrepancies}`,
      ])
    : null;
  if (!top) return manifest || el("span", { class: "muted" }, "—");
  const text = `${top.category} ${typeof top.score === "number" ? top.score.toFixed(2) : ""}`;
  return manifest ? el("span", {}, text.trim(), manifest) : text.trim();
}

/** Waiting time of a scan still to review (a reviewed one no longer waits). */
function waitCell(it) {
  return it.review_status === "reviewed" ? "—" : waited(it.received_at);
}

/** The verdict of the latest review, in the reviewed list: release or inspect. */
function reviewVerdict(it) {
  if (it.review_status !== "reviewed" || !it.review_verdict) return null;
  const word = it.review_verdict === "inspect" ? "inspect" : "release";
  return el("span", { class: `review-verdict ${word}` }, ` · ${word}`);
}
