// One scan: the deep-zoom image (OpenSeadragon on DZI tiles of the chosen view), finding
// boxes and the anomaly heat map as overlays, the declared manifest, the cargo check
// (containers and manifest discrepancies, cargo.js), and the review form.
//
// Coordinates: the service gives boxes in scan pixels; OpenSeadragon places overlays in
// viewport units, where the image spans x = 0..1 and y = 0..height/width. So a scan
// pixel p is the viewport point p / width, on both axes.

import * as api from "./api.js";
import { CargoPanel, DISCREPANCY_WORDS } from "./cargo.js";
import { Ruler } from "./measure.js";
import { RelatedScans } from "./related.js";
import { $, el, fmtRisk, longTime, shortTime, toast, verdictBadge } from "./util.js";

const VIEW_LABELS = {
  grey: "Grey",
  inverse: "Inverse",
  material: "Material",
  window: "Window",
  edge: "Edge",
};
const DECISION_WORDS = { accept: "accepted", reject: "rejected", relabel: "relabelled" };
const HEAT_STOPS = [
  [0.0, [40, 60, 255]],
  [0.35, [0, 220, 255]],
  [0.55, [255, 230, 0]],
  [0.75, [255, 120, 0]],
  [1.0, [255, 0, 0]],
];
const MIN_BOX_PX = 4; // a drawn box smaller than this (scan pixels) is a slip of the mouse
const PREFS_KEY = "cargoscan.viewer";

function loadPrefs() {
  try {
    return JSON.parse(localStorage.getItem(PREFS_KEY) || "{}");
  } catch {
    return {};
  }
}

function heatColour(p) {
  for (let i = 1; i < HEAT_STOPS.length; i++) {
    const [t1, c1] = HEAT_STOPS[i];
    const [t0, c0] = HEAT_STOPS[i - 1];
    if (p <= t1) {
      const f = (p - t0) / (t1 - t0);
      return c0.map((v, k) => Math.round(v + f * (c1[k] - v)));
    }
  }
  return HEAT_STOPS[HEAT_STOPS.length - 1][1];
}

export class ScanView {
  constructor({ queue, config }) {
    this.queue = queue;
    this.config = config; // {categories, colours, views}
    this.viewer = null;
    this.prefs = {
      view: null,
      boxes: true,
      heat: false,
      heatOpacity: 0.6,
      nextOnSave: true,
      ...loadPrefs(),
    };
    this.preloaded = new Map(); // scan id -> Promise of [scan, tiles], fetched ahead
    this.id = null;
    this.picker = null; // {resolve, categories} while the category picker is open
    this.drawMode = false;
    this.drag = null;
    this.generation = 0; // increases with every view switch (late loads are dropped)
    this.reset();
    this.bindControls();
    this.ruler = new Ruler(this);
    this.related = new RelatedScans(this);
    this.cargo = new CargoPanel(this);
  }

  reset() {
    this.scan = null;
    this.tiles = null;
    this.findings = [];
    this.decisions = new Map(); // finding id -> {decision, category}
    this.discrepancies = []; // the result's manifest discrepancies (cargo.manifest_check)
    this.discDecisions = new Map(); // discrepancy index -> "confirm" | "reject"
    this.added = []; // {category, box}
    this.selected = null; // {kind: "finding" | "discrepancy" | "added", index}
    this.verdict = null;
    this.dirty = false;
    this.heatCanvas = null;
    this.reviews = [];
  }

  /** The logged-in user ({name, role}): supervisors and admins may re-open scans. */
  setUser(user) {
    this.user = user;
  }

  setConfig(config) {
    this.config = config;
    this.buildViewButtons();
  }

  // ------------------------------------------------------------------ set-up

  bindControls() {
    $("toggle-boxes").addEventListener("click", () => this.toggleBoxes());
    $("toggle-heat").addEventListener("click", () => this.toggleHeat());
    $("heat-opacity").addEventListener("input", (e) => {
      this.prefs.heatOpacity = Number(e.target.value);
      if (this.heatCanvas) this.heatCanvas.style.opacity = String(this.prefs.heatOpacity);
      this.savePrefs();
    });
    $("zoom-in").addEventListener("click", () => this.zoomBy(1.5));
    $("zoom-out").addEventListener("click", () => this.zoomBy(1 / 1.5));
    $("zoom-fit").addEventListener("click", () => this.viewer?.viewport.goHome());
    $("draw-button").addEventListener("click", () => this.setDrawMode(!this.drawMode));
    $("measure-button").addEventListener("click", () => this.setMeasureMode(!this.ruler.active));
    $("window-level").addEventListener("change", () => this.windowFromSliders());
    $("window-width").addEventListener("change", () => this.windowFromSliders());
    $("window-auto").addEventListener("click", () => {
      if (!this.tiles) return;
      this.window = { ...this.tiles.auto_window };
      this.syncWindowSliders();
      this.showView("window");
    });
    for (const input of document.querySelectorAll('input[name="verdict"]')) {
      input.addEventListener("change", () => this.setVerdict(input.value));
    }
    $("review-comment").addEventListener("input", () => {
      this.dirty = true;
      this.renderReviewForm();
    });
    $("review-submit").addEventListener("click", () => this.submit());
    $("reject-rest").addEventListener("click", () => this.rejectRest("release"));
    $("next-on-save").checked = this.prefs.nextOnSave;
    $("next-on-save").addEventListener("change", (e) => {
      this.prefs.nextOnSave = e.target.checked;
      this.savePrefs();
    });
    $("next-scan").addEventListener("click", () => this.nextScan());
    $("reopen").addEventListener("click", () => this.reopen());
    this.buildViewButtons();
  }

  buildViewButtons() {
    const views = this.config?.views || Object.keys(VIEW_LABELS);
    $("view-buttons").replaceChildren(
      ...views.map((v, i) =>
        el(
          "button",
          {
            type: "button",
            role: "radio",
            "aria-checked": String(v === this.view),
            dataset: { view: v },
            title: `${VIEW_LABELS[v] || v} view (${i + 1})`,
            onclick: () => this.showView(v),
          },
          VIEW_LABELS[v] || v,
          el("kbd", {}, String(i + 1)),
        ),
      ),
    );
  }

  ensureViewer() {
    if (this.viewer) return this.viewer;
    const viewer = OpenSeadragon({
      element: $("osd"),
      prefixUrl: "/static/vendor/openseadragon/images/",
      showNavigationControl: false,
      showNavigator: true,
      navigatorPosition: "BOTTOM_LEFT",
      navigatorAutoFade: false,
      navigatorSizeRatio: 0.18,
      drawer: "canvas",
      animationTime: 0.25,
      blendTime: 0,
      maxZoomPixelRatio: 6,
      minZoomImageRatio: 0.5,
      visibilityRatio: 0.2,
      zoomPerScroll: 1.25,
      imageLoaderLimit: 6,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
      gestureSettingsTouch: { clickToZoom: false },
    });
    // Our shortcuts, not OpenSeadragon's (its w/a/s/d and r/f would clash with them).
    viewer.addHandler("canvas-key", (e) => {
      e.preventDefaultAction = true;
    });
    viewer.addHandler("canvas-click", (e) => this.onClick(e));
    viewer.addHandler("canvas-press", (e) => this.onPress(e));
    viewer.addHandler("canvas-drag", (e) => this.onDrag(e));
    viewer.addHandler("canvas-drag-end", (e) => {
      if (this.drawMode || this.drag || this.ruler.active || this.ruler.dragging) {
        e.preventDefaultAction = true;
      }
    });
    viewer.addHandler("canvas-release", (e) => this.onRelease(e));
    viewer.addHandler("animation", () => this.showZoom());
    viewer.addHandler("resize", () => this.showZoom());
    viewer.addHandler("update-viewport", () => this.layoutLabels());
    viewer.addHandler("open", () => {
      this.renderOverlays();
      this.showZoom();
      const item = viewer.world.getItemAt(0);
      const loaded = () => {
        $("osd-loading").hidden = true;
        this.preloadNext();
      };
      if (!item || item.getFullyLoaded()) loaded();
      else item.addOnceHandler("fully-loaded-change", loaded);
    });
    this.viewer = viewer;
    this.ruler.attach(viewer);
    window.cargoscanViewer = viewer; // for the browser tests and the curious
    return viewer;
  }

  savePrefs() {
    const { view, boxes, heat, heatOpacity, nextOnSave } = this.prefs;
    localStorage.setItem(
      PREFS_KEY,
      JSON.stringify({ view, boxes, heat, heatOpacity, nextOnSave }),
    );
  }

  // ------------------------------------------------------------------ open a scan

  /** Show scan `id`: its result, tiles, manifest and review history. */
  async show(id) {
    this.setDrawMode(false);
    this.ruler.clear();
    this.closePicker(null);
    if (id !== this.id) this.reset();
    this.id = id;
    $("review-error").textContent = "";
    $("osd-loading").hidden = false;
    let scan;
    let tiles;
    try {
      const ahead = this.preloaded.get(id);
      this.preloaded.delete(id);
      [scan, tiles] = await (ahead || Promise.all([api.scans.get(id), api.scans.tiles(id)]));
    } catch (err) {
      $("osd-loading").hidden = true;
      if (this.id === id) this.failed(err);
      return;
    }
    if (this.id !== id) return; // another scan was opened meanwhile
    this.scan = scan;
    this.tiles = tiles;
    this.W = tiles.width;
    this.H = tiles.height;
    this.window = { ...tiles.auto_window };
    this.syncWindowSliders();
    this.findings = scan.findings || [];
    this.discrepancies = scan.cargo?.manifest_check?.discrepancies || [];
    let view = this.prefs.view || (tiles.has_low ? "material" : "grey");
    if (!(view in tiles.views) || (view === "material" && !tiles.has_low)) view = "grey";
    this.view = view;
    this.markViewButtons();

    const viewer = this.ensureViewer();
    this.heatCanvas = null;
    this.generation++;
    viewer.open(this.dziUrl(view));
    $("osd").dataset.view = view;
    this.applyToggles();
    if (this.prefs.heat) this.loadHeat();
    this.renderFacts();
    this.renderManifest();
    this.renderFindings();
    this.renderReviewForm();
    this.loadHistory();
    this.related.load(id);
    if (!this.selected) {
      if (this.findings.length) this.select({ kind: "finding", index: 0 }, false);
      else if (this.discrepancies.length) this.select({ kind: "discrepancy", index: 0 }, false);
    }
    $("osd").focus({ preventScroll: true });
  }

  failed(err) {
    const missing = err.status === 404;
    toast(
      missing ? "No such scan (or not yours to see)" : `Could not open the scan: ${err.message}`,
      {
        error: true,
        ms: 4000,
      },
    );
    location.hash = "#/queue";
  }

  dziUrl(view) {
    return api.scans.dziUrl(this.id, view, this.window);
  }

  // ------------------------------------------------------------------ views

  /** Switch to another view, keeping zoom and position; the old tiles stay until the
   *  new ones have loaded (no flash of black). */
  showView(view) {
    if (!this.tiles || !(view in this.tiles.views)) return;
    if (view === "material" && !this.tiles.has_low) {
      toast("No material view: this is a single-energy scan (no low-energy channel)", {
        error: true,
      });
      return;
    }
    this.view = view;
    this.prefs.view = view;
    this.savePrefs();
    this.markViewButtons();
    this.related.followView(view);
    const viewer = this.viewer;
    const gen = ++this.generation;
    const old = [];
    for (let i = 0; i < viewer.world.getItemCount(); i++) old.push(viewer.world.getItemAt(i));
    viewer.addTiledImage({
      tileSource: this.dziUrl(view),
      index: viewer.world.getItemCount(),
      success: (event) => {
        const item = event.item;
        let done = false;
        const drop = () => {
          if (done) return;
          done = true;
          for (const o of old) viewer.world.removeItem(o);
          if (gen !== this.generation) return;
          $("osd").dataset.view = view;
        };
        if (gen !== this.generation) {
          viewer.world.removeItem(item); // a newer switch won
          return;
        }
        if (item.getFullyLoaded()) drop();
        else {
          item.addOnceHandler("fully-loaded-change", drop);
          setTimeout(drop, 4000);
        }
      },
      error: (event) => toast(`Could not load the ${view} view: ${event.message}`, { error: true }),
    });
  }

  markViewButtons() {
    const single = this.tiles && !this.tiles.has_low;
    for (const b of $("view-buttons").children) {
      b.setAttribute("aria-checked", String(b.dataset.view === this.view));
      if (b.dataset.view === "material") {
        b.disabled = Boolean(single);
        b.title = single
          ? "Single-energy scan: no material information (it needs a dual-energy scan)"
          : "Material view (3)";
      }
    }
    $("view-note").hidden = !single;
    $("view-note").textContent = single ? "single-energy scan: no material view" : "";
    $("window-controls").hidden = this.view !== "window";
  }

  syncWindowSliders() {
    if (!this.window) return;
    $("window-level").value = String(this.window.level);
    $("window-width").value = String(this.window.width);
  }

  windowFromSliders() {
    this.window = {
      level: Number($("window-level").value),
      width: Math.max(0.05, Number($("window-width").value)),
    };
    this.showView("window");
  }

  /** [ ] move the window level, { } narrow or widen it (in the window view). */
  nudgeWindow(dLevel, widthFactor) {
    if (!this.window) return;
    this.window = {
      level: Math.max(0, Math.min(12, this.window.level + dLevel * this.window.width)),
      width: Math.max(0.05, Math.min(12, this.window.width * widthFactor)),
    };
    this.syncWindowSliders();
    clearTimeout(this.nudgeTimer);
    this.nudgeTimer = setTimeout(() => this.showView("window"), 200);
  }

  // ------------------------------------------------------------------ zoom

  zoomBy(factor) {
    if (!this.viewer) return;
    this.viewer.viewport.zoomBy(factor);
    this.viewer.viewport.applyConstraints();
  }

  panBy(dx, dy) {
    const vp = this.viewer?.viewport;
    if (!vp) return;
    const b = vp.getBounds();
    vp.panBy(new OpenSeadragon.Point(dx * b.width, dy * b.height));
    vp.applyConstraints();
  }

  /** Screen pixels per scan pixel. */
  imageZoom() {
    const vp = this.viewer?.viewport;
    if (!vp || !this.W) return 0;
    return (vp.getZoom(true) * vp.getContainerSize().x) / this.W;
  }

  showZoom() {
    const z = this.imageZoom();
    $("zoom-level").textContent = z ? `${z >= 1 ? z.toFixed(1) : z.toFixed(2)}×` : "";
    $("osd").dataset.zoom = z.toFixed(4);
  }

  zoomToBox(box) {
    if (!this.viewer) return;
    const [x0, y0, x1, y1] = box;
    const w = Math.max(x1 - x0, 48);
    const h = Math.max(y1 - y0, 48);
    const cx = (x0 + x1) / 2;
    const cy = (y0 + y1) / 2;
    const r = new OpenSeadragon.Rect(
      (cx - 1.5 * w) / this.W,
      (cy - 1.5 * h) / this.W,
      (3 * w) / this.W,
      (3 * h) / this.W,
    );
    this.viewer.viewport.fitBoundsWithConstraints(r);
  }

  // ------------------------------------------------------------------ overlays

  rect(box) {
    const [x0, y0, x1, y1] = box;
    return new OpenSeadragon.Rect(x0 / this.W, y0 / this.W, (x1 - x0) / this.W, (y1 - y0) / this.W);
  }

  colour(category) {
    return this.config?.colours?.[category] || "#ffffff";
  }

  renderOverlays() {
    const viewer = this.viewer;
    if (!viewer || !this.W) return;
    viewer.clearOverlays();
    if (this.heatCanvas) {
      viewer.addOverlay({
        element: this.heatCanvas,
        location: new OpenSeadragon.Rect(0, 0, 1, this.H / this.W),
      });
    }
    // Containers and manifest discrepancies first: the findings inside them stay on top.
    for (const { node, box } of this.cargo.overlays()) {
      viewer.addOverlay({ element: node, location: this.rect(box) });
    }
    this.findings.forEach((f, index) => {
      const d = this.decisions.get(f.id);
      const category = d?.decision === "relabel" ? d.category : f.category;
      const classes = ["box", f.source === "anomaly" ? "anomaly" : "", d ? d.decision : ""];
      if (this.isSelected("finding", index)) classes.push("selected");
      const label = d?.decision === "relabel" ? `${f.category} → ${category}` : category;
      const node = el(
        "div",
        {
          class: classes.join(" "),
          dataset: {
            kind: "finding",
            index: String(index),
            findingId: String(f.id),
            score: String(f.score),
          },
          style: { "--c": this.colour(category) },
          title: f.explanation || "",
        },
        el("span", { class: "label" }, `${label} ${Number(f.score).toFixed(2)}`),
      );
      node.style.setProperty("--c", this.colour(category));
      viewer.addOverlay({ element: node, location: this.rect(f.box) });
    });
    this.added.forEach((a, index) => {
      const classes = ["box", "added"];
      if (this.isSelected("added", index)) classes.push("selected");
      const node = el(
        "div",
        { class: classes.join(" "), dataset: { kind: "added", index: String(index) } },
        el("span", { class: "label" }, a.category || "category?"),
      );
      node.style.setProperty("--c", a.category ? this.colour(a.category) : "#ffffff");
      viewer.addOverlay({ element: node, location: this.rect(a.box) });
    });
    this.layoutLabels();
  }

  /** Place the box labels so that none covers another, none runs out of the pane and
   *  none lies on the overview map: each goes above its box if there is room, else below
   *  or inside it, moved along until it is free (the selected box's and the highest
   *  scores' first). Runs after OpenSeadragon has placed the boxes on this frame. */
  layoutLabels() {
    if (this.labelFrame) return;
    this.labelFrame = requestAnimationFrame(() => {
      this.labelFrame = 0;
      placeLabels($("osd"), this.viewer?.navigator?.element);
    });
  }

  applyToggles() {
    $("osd").classList.toggle("hide-boxes", !this.prefs.boxes);
    $("toggle-boxes").setAttribute("aria-pressed", String(this.prefs.boxes));
    $("toggle-heat").setAttribute("aria-pressed", String(this.prefs.heat));
    $("heat-opacity").value = String(this.prefs.heatOpacity);
    $("heat-opacity").hidden = !this.prefs.heat;
    if (this.heatCanvas) this.heatCanvas.hidden = !this.prefs.heat;
  }

  toggleBoxes() {
    this.prefs.boxes = !this.prefs.boxes;
    this.savePrefs();
    this.applyToggles();
  }

  toggleHeat() {
    this.prefs.heat = !this.prefs.heat;
    this.savePrefs();
    this.applyToggles();
    if (this.prefs.heat && !this.heatCanvas) this.loadHeat();
  }

  /** The anomaly map (one grey pixel per model cell) coloured into a heat overlay that
   *  the viewer stretches over the scan. */
  async loadHeat() {
    const id = this.id;
    const img = new Image();
    img.src = api.scans.anomalyMapUrl(id);
    try {
      await img.decode();
    } catch {
      if (this.id === id) toast("This scan has no anomaly map", { error: true });
      return;
    }
    if (this.id !== id) return;
    const canvas = el("canvas", {
      class: "heat",
      width: img.naturalWidth,
      height: img.naturalHeight,
    });
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      const p = px[i] / 255;
      const [r, g, b] = heatColour(p);
      px[i] = r;
      px[i + 1] = g;
      px[i + 2] = b;
      px[i + 3] = Math.round(255 * Math.max(0, Math.min(1, (p - 0.1) / 0.5)));
    }
    ctx.putImageData(data, 0, 0);
    canvas.style.opacity = String(this.prefs.heatOpacity);
    canvas.hidden = !this.prefs.heat;
    this.heatCanvas = canvas;
    this.renderOverlays();
  }

  // ------------------------------------------------------------------ mouse

  imagePoint(position) {
    const vp = this.viewer.viewport.pointFromPixel(position, true);
    return {
      x: Math.max(0, Math.min(this.W, vp.x * this.W)),
      y: Math.max(0, Math.min(this.H, vp.y * this.W)),
    };
  }

  onClick(e) {
    if (this.drawMode || this.ruler.active || !e.quick) return;
    const target = e.originalEvent?.target;
    const box = target instanceof Element ? target.closest(".box") : null;
    if (!box || !box.dataset.kind) return;
    e.preventDefaultAction = true;
    this.select({ kind: box.dataset.kind, index: Number(box.dataset.index) }, false);
  }

  onPress(e) {
    if (this.ruler.active) {
      e.preventDefaultAction = true;
      this.ruler.press(this.imagePoint(e.position));
      return;
    }
    if (!this.drawMode) return;
    e.preventDefaultAction = true;
    const start = this.imagePoint(e.position);
    const node = el("div", { class: "box rubber" });
    this.drag = { start, end: start, node };
    this.viewer.addOverlay({
      element: node,
      location: this.rect([start.x, start.y, start.x, start.y]),
    });
  }

  onDrag(e) {
    if (this.ruler.dragging) {
      e.preventDefaultAction = true;
      this.ruler.move(this.imagePoint(e.position));
      return;
    }
    if (!this.drag) return;
    e.preventDefaultAction = true;
    this.drag.end = this.imagePoint(e.position);
    this.viewer.updateOverlay(this.drag.node, this.rect(this.dragBox()));
  }

  dragBox() {
    const { start, end } = this.drag;
    return [
      Math.min(start.x, end.x),
      Math.min(start.y, end.y),
      Math.max(start.x, end.x),
      Math.max(start.y, end.y),
    ];
  }

  async onRelease(e) {
    if (this.ruler.dragging) {
      e.preventDefaultAction = true;
      this.ruler.release(this.imagePoint(e.position));
      return;
    }
    if (!this.drag) return;
    e.preventDefaultAction = true;
    this.drag.end = this.imagePoint(e.position);
    const box = this.dragBox().map((v) => Math.round(v));
    this.viewer.removeOverlay(this.drag.node);
    this.drag = null;
    this.setDrawMode(false);
    if (box[2] - box[0] < MIN_BOX_PX || box[3] - box[1] < MIN_BOX_PX) {
      toast("Box too small: drag across the threat", { error: true });
      return;
    }
    this.added.push({ category: null, box });
    const index = this.added.length - 1;
    this.select({ kind: "added", index }, false);
    this.changed();
    const id = this.id;
    const category = await this.pick("Category of the missed threat", null);
    if (this.id !== id) return;
    if (category === null) {
      this.removeAdded(index);
      return;
    }
    this.added[index].category = category;
    this.changed();
  }

  /** The ruler (m): the next drag measures instead of panning; never with drawing. */
  setMeasureMode(on) {
    if (on) this.setDrawMode(false);
    this.ruler.setActive(on);
  }

  setDrawMode(on) {
    if (on) this.ruler.setActive(false);
    this.drawMode = on;
    $("draw-button").setAttribute("aria-pressed", String(on));
    $("draw-hint").hidden = !on;
    $("osd").classList.toggle("drawing", on);
    if (!on && this.drag) {
      this.viewer.removeOverlay(this.drag.node);
      this.drag = null;
    }
  }

  // ------------------------------------------------------------------ findings

  isSelected(kind, index) {
    return this.selected?.kind === kind && this.selected.index === index;
  }

  /** Select a finding or drawn box; `zoom`: bring it to the middle of the screen. */
  select(sel, zoom = true) {
    this.selected = sel;
    const item = this.itemOf(sel);
    if (zoom && item) this.zoomToBox(item.box);
    this.renderOverlays();
    this.renderFindings();
    const list = { added: "added", discrepancy: "discrepancy" }[sel?.kind] || "finding";
    const li = document.querySelector(`#${list}-list li.selected`);
    if (li) scrollSideTo(li);
  }

  /** The finding, manifest discrepancy or drawn box a selection names. */
  itemOf(sel) {
    if (sel?.kind === "finding") return this.findings[sel.index];
    if (sel?.kind === "discrepancy") return this.discrepancies[sel.index];
    return this.added[sel?.index];
  }

  /** All selectable things in order: findings, manifest discrepancies, drawn boxes. */
  selectables() {
    return [
      ...this.findings.map((_, index) => ({ kind: "finding", index })),
      ...this.discrepancies.map((_, index) => ({ kind: "discrepancy", index })),
      ...this.added.map((_, index) => ({ kind: "added", index })),
    ];
  }

  step(delta) {
    const all = this.selectables();
    if (!all.length) return;
    let i = all.findIndex((s) => this.isSelected(s.kind, s.index));
    i = i < 0 ? (delta > 0 ? 0 : all.length - 1) : (i + delta + all.length) % all.length;
    this.select(all[i]);
  }

  /** After a decision: the next finding or manifest discrepancy still undecided, if any. */
  advance() {
    const all = this.selectables().filter((s) => s.kind !== "added");
    const start = all.findIndex((s) => this.isSelected(s.kind, s.index));
    for (let k = 1; k <= all.length; k++) {
      const s = all[(start + k + all.length) % all.length];
      const open =
        s.kind === "finding"
          ? !this.decisions.has(this.findings[s.index].id)
          : !this.discDecisions.has(s.index);
      if (open) {
        this.select(s);
        return;
      }
    }
    this.renderOverlays();
    this.renderFindings();
  }

  /** Confirm ("accept"), reject or undo (null) the selected manifest discrepancy. */
  decideDiscrepancy(decision) {
    const index = this.selected.index;
    if (decision === null) this.discDecisions.delete(index);
    else this.discDecisions.set(index, decision === "accept" ? "confirm" : "reject");
    this.changed();
    if (decision) this.advance();
  }

  decide(index, decision, category = null) {
    const f = this.findings[index];
    if (!f) return;
    if (decision === null) this.decisions.delete(f.id);
    else if (decision === "relabel" && category === f.category) {
      this.decisions.set(f.id, { decision: "accept", category: null });
    } else
      this.decisions.set(f.id, { decision, category: decision === "relabel" ? category : null });
    this.changed();
  }

  async decideSelected(decision) {
    if (this.selected?.kind === "discrepancy" && this.discrepancies[this.selected.index]) {
      this.decideDiscrepancy(decision);
      return;
    }
    if (this.selected?.kind !== "finding") {
      toast("Select a finding first (n / p, or click its box)", { error: true });
      return;
    }
    const index = this.selected.index;
    const f = this.findings[index];
    if (decision === "accept" && this.decisions.get(f.id)?.decision === "relabel") {
      // Accept what the officer sees: the category they gave it, not the model's.
      this.advance();
      return;
    }
    const categories = this.config?.categories || [];
    if (decision === "accept" && categories.length && !categories.includes(f.category)) {
      // An anomaly region is not a category the model learns: ask what it is.
      const id = this.id;
      const what = await this.pick(`What is it? (Esc: leave it "${f.category}")`, null);
      if (this.id !== id) return; // another scan was opened meanwhile
      if (what !== null) decision = "relabel";
      this.decide(index, decision, what);
      this.advance();
      return;
    }
    this.decide(index, decision);
    if (decision) this.advance();
    else {
      this.renderOverlays();
      this.renderFindings();
    }
  }

  /** Reject every finding not yet decided and choose the verdict: the officer's one key
   *  for a scan whose findings are false alarms (decided ones are kept). */
  rejectRest(verdict) {
    if (!this.scan) return;
    for (const f of this.findings) {
      if (!this.decisions.has(f.id)) this.decisions.set(f.id, { decision: "reject", category: null });
    }
    this.discrepancies.forEach((_, i) => {
      if (!this.discDecisions.has(i)) this.discDecisions.set(i, "reject");
    });
    this.verdict = verdict;
    this.changed();
  }

  async relabelSelected() {
    const sel = this.selected;
    if (!sel || sel.kind === "discrepancy") {
      toast("Select a finding first (n / p, or click its box)", { error: true });
      return;
    }
    const id = this.id;
    if (sel.kind === "added") {
      const category = await this.pick(
        "Category of the drawn box",
        this.added[sel.index]?.category,
      );
      if (this.id === id && category !== null && this.added[sel.index]) {
        this.added[sel.index].category = category;
        this.changed();
      }
      return;
    }
    const f = this.findings[sel.index];
    const d = this.decisions.get(f.id);
    const current = d?.decision === "relabel" ? d.category : f.category;
    const category = await this.pick(`Category of finding ${f.id} (${f.category})`, current);
    if (category === null || this.id !== id) return;
    this.decide(sel.index, "relabel", category);
    this.advance();
  }

  removeAdded(index) {
    this.added.splice(index, 1);
    if (this.selected?.kind === "added") {
      this.selected = this.added.length
        ? { kind: "added", index: Math.min(index, this.added.length - 1) }
        : null;
    }
    this.changed();
  }

  changed() {
    this.dirty = true;
    this.renderOverlays();
    this.renderFindings();
    this.renderReviewForm();
  }

  // ------------------------------------------------------------------ category picker

  /** Ask for a category (digits, click, arrows + Enter); resolves null when cancelled. */
  pick(title, current) {
    this.closePicker(null);
    const categories = this.config?.categories || [];
    $("picker-title").textContent = title;
    $("picker-list").replaceChildren(
      ...categories.map((c, i) =>
        el(
          "li",
          {},
          el(
            "button",
            {
              type: "button",
              dataset: { category: c },
              "aria-current": c === current ? "true" : null,
              onclick: () => this.closePicker(c),
            },
            el("kbd", {}, String(i + 1)),
            el("span", { class: "swatch", style: { background: this.colour(c) } }),
            c,
          ),
        ),
      ),
    );
    $("category-picker").hidden = false;
    const focus = Math.max(0, categories.indexOf(current));
    $("picker-list").querySelectorAll("button")[focus]?.focus();
    return new Promise((resolve) => {
      this.picker = { resolve, categories };
    });
  }

  closePicker(value) {
    if (!this.picker) return;
    const { resolve } = this.picker;
    this.picker = null;
    $("category-picker").hidden = true;
    resolve(value);
    $("osd").focus({ preventScroll: true });
  }

  pickerKey(e) {
    const { categories } = this.picker;
    if (e.key === "Escape") {
      this.closePicker(null);
      return true;
    }
    const n = Number(e.key);
    if (Number.isInteger(n) && n >= 1 && n <= categories.length) {
      this.closePicker(categories[n - 1]);
      return true;
    }
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      const buttons = [...$("picker-list").querySelectorAll("button")];
      const i = buttons.indexOf(document.activeElement);
      const j = (i + (e.key === "ArrowDown" ? 1 : -1) + buttons.length) % buttons.length;
      buttons[j]?.focus();
      return true;
    }
    return false; // Enter on the focused button clicks it
  }

  // ------------------------------------------------------------------ side panel

  renderFacts() {
    const s = this.scan.scan || {};
    const meta = s.metadata || {};
    const facts = [
      ["Station", s.station],
      ["Station id", s.station_scan_id],
      ["Scanned", s.scan_time ? longTime(s.scan_time) : null],
      ["Received", longTime(s.received_at)],
      ["Vehicle", meta.vehicle_id],
      ["Containers", (meta.container_ids || []).join(", ")],
      ["Size", `${s.width} × ${s.height} px, ${(s.channels || []).join(" + ")}`],
      ["Model", this.scan.model?.version],
      ["Review", this.scan.review_status || s.review_status],
    ];
    $("scan-facts").replaceChildren(
      ...facts.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
    );
    $("scan-verdict").replaceWith(
      Object.assign(verdictBadge(this.scan.verdict), { id: "scan-verdict" }),
    );
    $("scan-risk").textContent = `risk ${fmtRisk(this.scan.risk)}`;
    document.title = `CargoScan: ${s.station || ""} ${s.station_scan_id || s.id || ""}`.trim();
  }

  renderManifest() {
    const lines = this.scan.scan?.metadata?.manifest || [];
    if (!lines.length) {
      $("manifest").replaceChildren(el("p", { class: "muted" }, "Nothing declared (empty)."));
      return;
    }
    const total = lines.reduce((s, l) => s + (Number(l.declared_weight_kg) || 0), 0);
    $("manifest").replaceChildren(
      el(
        "table",
        { class: "manifest" },
        el("tr", {}, el("th", {}, "HS"), el("th", {}, "Goods"), el("th", { class: "num" }, "kg")),
        ...lines.map((l) =>
          el(
            "tr",
            {},
            el("td", {}, l.hs_code || "—"),
            el(
              "td",
              {},
              l.description || "—",
              l.quantity ? el("span", { class: "muted" }, ` × ${l.quantity}`) : null,
            ),
            el(
              "td",
              { class: "num" },
              l.declared_weight_kg != null ? Number(l.declared_weight_kg).toLocaleString() : "—",
            ),
          ),
        ),
        lines.length > 1
          ? el(
              "tr",
              {},
              el("td"),
              el("td", { class: "muted" }, "total"),
              el("td", { class: "num" }, total.toLocaleString()),
            )
          : null,
      ),
    );
  }

  /** A category list showing `value`; with none yet, an empty "choose" entry, so that
   * the list never shows a category the box does not have (choosing the one already
   * shown fires no change). */
  categorySelect(value, onchange) {
    const options = [...new Set([value, ...(this.config?.categories || [])])]
      .filter(Boolean)
      .map((c) => {
        const option = el("option", { value: c }, c);
        option.selected = c === value;
        return option;
      });
    if (!value) {
      const placeholder = el("option", { value: "", disabled: true }, "choose…");
      placeholder.selected = true;
      options.unshift(placeholder);
    }
    return el(
      "select",
      {
        onchange: (e) => e.target.value && onchange(e.target.value),
        onclick: (e) => e.stopPropagation(),
        "aria-label": "category",
      },
      ...options,
    );
  }

  renderFindings() {
    const list = $("finding-list");
    if (!this.findings.length) {
      list.replaceChildren(el("li", { class: "muted" }, "The model found nothing."));
    } else {
      list.replaceChildren(
        ...this.findings.map((f, index) => {
          const d = this.decisions.get(f.id);
          const category = d?.decision === "relabel" ? d.category : f.category;
          const state = d ? DECISION_WORDS[d.decision] : "to decide";
          return el(
            "li",
            {
              class: [
                this.isSelected("finding", index) ? "selected" : "",
                d ? d.decision : "",
              ].join(" "),
              dataset: { findingId: String(f.id) },
              onclick: () => this.select({ kind: "finding", index }),
            },
            el("span", { class: "swatch", style: { background: this.colour(category) } }),
            el(
              "span",
              { class: "what", title: f.explanation || "" },
              `${f.category} ${Number(f.score).toFixed(2)} `,
              el("small", {}, `#${f.id} ${f.source || ""}`),
            ),
            el(
              "span",
              { class: "decide" },
              el(
                "button",
                {
                  type: "button",
                  class: "accept",
                  title: "Accept (a)",
                  "aria-pressed": String(d?.decision === "accept" || d?.decision === "relabel"),
                  onclick: (e) => {
                    e.stopPropagation();
                    this.selected = { kind: "finding", index };
                    this.decideSelected("accept");
                  },
                },
                "✓",
              ),
              el(
                "button",
                {
                  type: "button",
                  class: "reject",
                  title: "Reject (r)",
                  "aria-pressed": String(d?.decision === "reject"),
                  onclick: (e) => {
                    e.stopPropagation();
                    this.selected = { kind: "finding", index };
                    this.decideSelected("reject");
                  },
                },
                "✗",
              ),
            ),
            el(
              "span",
              { class: "state" },
              state,
              d?.decision === "reject"
                ? null
                : this.categorySelect(category, (c) => {
                    this.selected = { kind: "finding", index };
                    this.decide(index, "relabel", c);
                  }),
            ),
          );
        }),
      );
    }
    this.cargo.render();
    const decided = this.findings.filter((f) => this.decisions.has(f.id)).length;
    $("findings-progress").textContent = this.findings.length
      ? `${decided} / ${this.findings.length} decided`
      : "";

    $("added-title").hidden = !this.added.length;
    $("added-list").replaceChildren(
      ...this.added.map((a, index) =>
        el(
          "li",
          {
            class: this.isSelected("added", index) ? "selected" : "",
            onclick: () => this.select({ kind: "added", index }),
          },
          el("span", {
            class: "swatch",
            style: { background: a.category ? this.colour(a.category) : "#fff" },
          }),
          el(
            "span",
            { class: "what" },
            a.category || "category?",
            " ",
            el("small", {}, a.box.join(", ")),
          ),
          el(
            "span",
            { class: "decide" },
            el(
              "button",
              {
                type: "button",
                title: "Remove (Delete)",
                onclick: (e) => {
                  e.stopPropagation();
                  this.removeAdded(index);
                },
              },
              "Remove",
            ),
          ),
          el(
            "span",
            { class: "state" },
            "missed threat",
            this.categorySelect(a.category, (c) => {
              a.category = c;
              // The picker still asking for this box is answered by the list.
              if (this.picker && this.isSelected("added", index)) this.closePicker(c);
              else this.changed();
            }),
          ),
        ),
      ),
    );
  }

  setVerdict(verdict) {
    this.verdict = verdict;
    this.changed();
  }

  /** What still stops the review from being saved (empty: ready). */
  missing() {
    const out = [];
    const open = this.findings.filter((f) => !this.decisions.has(f.id)).length;
    if (open) out.push(`decide ${open} more finding${open > 1 ? "s" : ""}`);
    const openDisc = this.discrepancies.length - this.discDecisions.size;
    if (openDisc > 0) {
      out.push(`decide ${openDisc} more manifest discrepanc${openDisc > 1 ? "ies" : "y"}`);
    }
    if (this.added.some((a) => !a.category)) out.push("give each drawn box a category");
    if (!this.verdict) out.push("choose a verdict");
    return out;
  }

  renderReviewForm() {
    for (const input of document.querySelectorAll('input[name="verdict"]')) {
      input.checked = input.value === this.verdict;
    }
    if (!this.dirty) $("review-comment").value = "";
    const missing = this.missing();
    $("review-submit").disabled = missing.length > 0 || !this.dirty;
    $("review-hint").textContent = missing.length
      ? `To save: ${missing.join(", ")}.`
      : this.dirty
        ? "Ready to save."
        : this.reviews.length
          ? "Saved. Change something to add another review."
          : "";
    const supervisor = ["supervisor", "admin"].includes(this.user?.role);
    $("reopen").hidden = !(supervisor && this.scan?.review_status === "reviewed");
  }

  async loadHistory() {
    const id = this.id;
    let reviews = [];
    try {
      reviews = (await api.scans.reviews(id)).items || [];
    } catch (err) {
      if (this.id === id)
        $("history").replaceChildren(
          el("li", { class: "muted" }, `History unavailable: ${err.message}`),
        );
      return;
    }
    if (this.id !== id) return;
    this.reviews = reviews;
    this.renderHistory();
    this.renderReviewForm();
  }

  renderHistory() {
    if (!this.reviews.length) {
      $("history").replaceChildren(el("li", { class: "muted" }, "Not reviewed yet."));
      return;
    }
    const newestFirst = this.reviews.slice().reverse();
    $("history").replaceChildren(
      ...newestFirst.map((r) => {
        const officer = typeof r.officer === "object" && r.officer ? r.officer.name : r.officer;
        const counts = {};
        for (const f of r.findings || []) counts[f.decision] = (counts[f.decision] || 0) + 1;
        const summary = Object.entries(counts).map(([k, n]) => `${n} ${DECISION_WORDS[k] || k}`);
        for (const word of ["confirm", "reject"]) {
          const n = (r.discrepancies || []).filter((d) => d.decision === word).length;
          if (n) summary.push(`${n} discrepanc${n > 1 ? "ies" : "y"} ${DISCREPANCY_WORDS[word]}`);
        }
        if ((r.added || []).length) summary.push(`${r.added.length} drawn`);
        return el(
          "li",
          { dataset: { reviewId: String(r.id) } },
          el(
            "div",
            {},
            verdictWord(r.verdict),
            " ",
            el("span", { class: "who" }, `by ${officer || "?"}, ${shortTime(r.created_at)}`),
          ),
          el(
            "div",
            { class: "muted", title: longTime(r.created_at) },
            `model ${r.model_version || "?"}`,
          ),
          summary.length ? el("div", {}, summary.join(", ")) : null,
          r.comment ? el("div", {}, `“${r.comment}”`) : null,
        );
      }),
    );
  }

  async submit() {
    if (!this.scan) return;
    const missing = this.missing();
    if (missing.length) {
      $("review-error").textContent = `Not yet: ${missing.join(", ")}.`;
      return;
    }
    const body = {
      findings: this.findings.map((f) => {
        const d = this.decisions.get(f.id);
        return {
          finding_id: f.id,
          decision: d.decision,
          category: d.decision === "relabel" ? d.category : null,
        };
      }),
      discrepancies: this.discrepancies.map((_, index) => ({
        index,
        decision: this.discDecisions.get(index),
      })),
      added: this.added.map((a) => ({
        category: a.category,
        box: a.box.map((v) => Math.round(v)),
      })),
      verdict: this.verdict,
      comment: $("review-comment").value.trim(),
    };
    const id = this.id;
    $("review-submit").disabled = true;
    $("review-error").textContent = "";
    try {
      await api.scans.review(id, body);
    } catch (err) {
      $("review-error").textContent = `Not saved: ${err.message}`;
      this.renderReviewForm();
      return;
    }
    if (this.id !== id) return;
    this.dirty = false;
    const next = this.prefs.nextOnSave ? this.queue.nextAfter(id) : null;
    const saved = `Review saved: ${this.verdict === "release" ? "release" : "physical inspection"}`;
    toast(next ? `${saved}. Next scan.` : saved);
    this.queue.reviewed(id);
    if (next) {
      location.hash = `#/scan/${next}`;
      return;
    }
    this.scan.review_status = "reviewed";
    this.renderFacts();
    await this.loadHistory();
    $("review-comment").value = body.comment;
  }

  /** A supervisor sends a reviewed scan back to the queue (the reviews stay). */
  async reopen() {
    const id = this.id;
    const reason = window.prompt("Why should this scan be reviewed again?", "");
    if (reason === null || this.id !== id) return;
    try {
      await api.scans.reopen(id, reason.trim());
    } catch (err) {
      $("review-error").textContent = `Not re-opened: ${err.message}`;
      return;
    }
    toast("Re-opened: the scan is back in the queue");
    this.scan.review_status = "reopened";
    this.renderFacts();
    this.renderReviewForm();
    this.queue.reload();
  }

  /** Fetch the next scan's result and the tiles its first view needs at the whole-scan
   *  zoom, so that "next" (or saving) shows it at once: the browser keeps the tiles
   *  (Cache-Control) and the service has the view rendered. */
  async preloadNext() {
    const next = this.queue.nextAfter(this.id);
    if (!next || this.preloaded.has(next) || !this.viewer) return;
    const ahead = Promise.all([api.scans.get(next), api.scans.tiles(next)]);
    this.preloaded.set(next, ahead);
    let tiles;
    try {
      [, tiles] = await ahead;
    } catch {
      this.preloaded.delete(next);
      return;
    }
    let view = this.prefs.view || (tiles.has_low ? "material" : "grey");
    if (!(view in tiles.views) || (view === "material" && !tiles.has_low) || view === "window") {
      view = tiles.has_low ? "material" : "grey";
    }
    const pane = this.viewer.viewport.getContainerSize();
    const need = Math.max(pane.x, (pane.y * tiles.width) / tiles.height) * window.devicePixelRatio;
    const top = tiles.max_level;
    const want = Math.min(top, top - Math.floor(Math.log2(Math.max(1, tiles.width / need))));
    const base = api.scans.dziUrl(next, view, null).replace(/\.dzi$/, "_files");
    const size = tiles.tile_size;
    for (let level = Math.max(0, want - 3); level <= want; level++) {
      const scale = 2 ** (level - top);
      const cols = Math.ceil(Math.ceil(tiles.width * scale) / size);
      const rows = Math.ceil(Math.ceil(tiles.height * scale) / size);
      for (let c = 0; c < cols; c++) {
        for (let r = 0; r < rows; r++) new Image().src = `${base}/${level}/${c}_${r}.png`;
      }
    }
  }

  nextScan() {
    const next = this.queue.nextAfter(this.id);
    if (next) location.hash = `#/scan/${next}`;
    else toast("No other scan in the queue");
  }

  // ------------------------------------------------------------------ keys

  /** Keyboard shortcuts of the scan view; true when the key was used. */
  key(e) {
    if (this.picker) return this.pickerKey(e);
    const k = e.key;
    if ((e.ctrlKey || e.metaKey) && k === "Enter") {
      this.submit();
      return true;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return false;
    const views = this.config?.views || Object.keys(VIEW_LABELS);
    const n = Number(k);
    if (Number.isInteger(n) && n >= 1 && n <= views.length) {
      this.showView(views[n - 1]);
      return true;
    }
    const sel = this.selected;
    switch (k) {
      case "Escape":
        if (this.drawMode) this.setDrawMode(false);
        else if (this.ruler.active || this.ruler.line) this.ruler.clear();
        else if (document.activeElement === $("review-comment")) $("osd").focus();
        else if (sel) {
          this.selected = null;
          this.renderOverlays();
          this.renderFindings();
        }
        return true;
      case "q":
        location.hash = "#/queue";
        return true;
      case "N":
        this.nextScan();
        return true;
      case "+":
      case "=":
        this.zoomBy(1.5);
        return true;
      case "-":
      case "_":
        this.zoomBy(1 / 1.5);
        return true;
      case "0":
        this.viewer?.viewport.goHome();
        return true;
      case "ArrowLeft":
        this.panBy(-0.15, 0);
        return true;
      case "ArrowRight":
        this.panBy(0.15, 0);
        return true;
      case "ArrowUp":
        this.panBy(0, -0.15);
        return true;
      case "ArrowDown":
        this.panBy(0, 0.15);
        return true;
      case "b":
        this.toggleBoxes();
        return true;
      case "h":
        this.toggleHeat();
        return true;
      case "[":
        this.nudgeWindow(-0.1, 1);
        return true;
      case "]":
        this.nudgeWindow(0.1, 1);
        return true;
      case "{":
        this.nudgeWindow(0, 1 / 1.25);
        return true;
      case "}":
        this.nudgeWindow(0, 1.25);
        return true;
      case "n":
      case "j":
        this.step(1);
        return true;
      case "p":
      case "k":
        this.step(-1);
        return true;
      case "z": {
        const item = this.itemOf(sel);
        if (item) this.zoomToBox(item.box);
        return true;
      }
      case "a":
        this.decideSelected("accept");
        return true;
      case "r":
        this.decideSelected("reject");
        return true;
      case "u":
        this.decideSelected(null);
        return true;
      case "x":
        this.rejectRest("release");
        return true;
      case "X":
        this.rejectRest("inspect");
        return true;
      case "c":
        this.relabelSelected();
        return true;
      case "d":
        this.setDrawMode(!this.drawMode);
        return true;
      case "m":
        this.setMeasureMode(!this.ruler.active);
        return true;
      case "v":
        this.related.toggle();
        return true;
      case "Delete":
      case "Backspace":
        if (sel?.kind === "added") this.removeAdded(sel.index);
        return true;
      case "R":
        this.setVerdict("release");
        return true;
      case "I":
        this.setVerdict("inspect");
        return true;
      case "C":
        $("review-comment").focus();
        return true;
      default:
        return false;
    }
  }
}

function verdictWord(verdict) {
  const text =
    verdict === "release" ? "Release" : verdict === "inspect" ? "Physical inspection" : verdict;
  return el(
    "strong",
    { class: verdict === "inspect" ? "status-reopened" : "status-reviewed" },
    text,
  );
}

/** Scroll the side panel (only it, never the page) so that `node` is in view below the
 *  panel's sticky head. */
function scrollSideTo(node) {
  const side = $("scan-side");
  const head = side.querySelector(".scan-head");
  const top = head ? head.offsetHeight : 0;
  const box = node.getBoundingClientRect();
  const pane = side.getBoundingClientRect();
  if (box.top < pane.top + top) side.scrollTop -= pane.top + top - box.top + 4;
  else if (box.bottom > pane.bottom) side.scrollTop += box.bottom - pane.bottom + 4;
}

function overlaps(a, b) {
  return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
}

/** The label placement of `layoutLabels` (screen pixels; each label is moved by a
 *  transform from its place in the style sheet, above its box's top left corner). */
function placeLabels(osd, navigator) {
  const pane = osd.getBoundingClientRect();
  const taken = [];
  if (navigator && navigator.offsetParent !== null) {
    const r = navigator.getBoundingClientRect();
    taken.push({ left: r.left - 2, top: r.top - 2, right: r.right + 2, bottom: r.bottom + 2 });
  }
  const boxes = [...osd.querySelectorAll(".box:not(.rubber)")].filter(
    (b) => b.querySelector(".label") && b.offsetParent !== null,
  );
  const rank = (b) =>
    (b.classList.contains("selected") ? 10 : 0) + (Number(b.dataset.score) || 0);
  boxes.sort((a, b) => rank(b) - rank(a));
  for (const box of boxes) {
    const label = box.querySelector(".label");
    label.style.transform = "";
    label.style.visibility = "";
    const b = box.getBoundingClientRect();
    const l = label.getBoundingClientRect();
    const w = l.width;
    const h = l.height;
    if (!overlaps(b, pane)) {
      label.style.visibility = "hidden";
      continue;
    }
    const clampX = (x) => Math.max(pane.left + 2, Math.min(pane.right - w - 2, x));
    const clampY = (y) => Math.max(pane.top + 2, Math.min(pane.bottom - h - 2, y));
    const x = clampX(b.left);
    const starts = [b.top - h - 2, b.bottom + 2, b.top + 2].map(clampY);
    let spot = null;
    for (const y0 of starts) {
      for (let k = 0; k < 12 && !spot; k++) {
        for (const dir of k ? [1, -1] : [1]) {
          const y = y0 + dir * k * (h + 2);
          if (y < pane.top + 2 || y + h > pane.bottom - 2) continue;
          const r = { left: x, top: y, right: x + w, bottom: y + h };
          if (!taken.some((t) => overlaps(t, r))) {
            spot = r;
            break;
          }
        }
      }
      if (spot) break;
    }
    if (!spot) {
      label.style.visibility = "hidden"; // no free place on screen: the list has it
      continue;
    }
    taken.push(spot);
    label.style.transform = `translate(${spot.left - l.left}px, ${spot.top - l.top}px)`;
  }
}
