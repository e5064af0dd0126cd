// The ruler: drag between two points of the scan and read the distance in mm, from the
// pixel pitch the station sent with the scan (metadata.pixel_pitch_mm), with its two
// components along and across the vehicle. Without a pitch it says so and shows pixels.
//
// The line is drawn on an SVG layer over the image (not an OpenSeadragon overlay: those
// are rectangles), moved with the image on every viewport update. Points snap to whole
// scan pixels: the length of a drag between two pixels is pitch x their distance.

import { $, el } from "./util.js";

const SVG = "http://www.w3.org/2000/svg";

/** The pitch in mm when the station gave a usable one, else null. */
export function pitchOf(scan) {
  const pitch = scan?.scan?.metadata?.pixel_pitch_mm;
  return typeof pitch === "number" && Number.isFinite(pitch) && pitch > 0 ? pitch : null;
}

function mm(v) {
  return `${v.toFixed(v < 100 ? 1 : 0)} mm`;
}

function px(v) {
  return `${Number.isInteger(v) ? v : v.toFixed(1)} px`;
}

/** What the ruler says for a drag of (dx, dy) scan pixels: the length and a detail line. */
export function rulerText(dx, dy, pitch) {
  const length = Math.hypot(dx, dy);
  if (!pitch) {
    return {
      length: px(length),
      detail: `Δx ${px(dx)}, Δy ${px(dy)}; pixel pitch unknown, no mm`,
    };
  }
  return {
    length: mm(length * pitch),
    detail: `Δx ${mm(dx * pitch)}, Δy ${mm(dy * pitch)} (${px(length)} at ${pitch} mm/px)`,
  };
}

export class Ruler {
  /** `view`: the ScanView (its viewer, W and scan are read when needed). */
  constructor(view) {
    this.view = view;
    this.active = false; // the next drag measures
    this.line = null; // {a: {x, y}, b: {x, y}} in scan pixels, while one is shown
    this.dragging = false;
    this.layer = null;
  }

  /** Called once the viewer exists: the layer and its redraws on every frame. */
  attach(viewer) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("id", "ruler-layer");
    svg.setAttribute("aria-hidden", "true");
    for (const cls of ["halo", "line"]) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("class", cls);
      svg.append(line);
    }
    for (const end of ["a", "b"]) {
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("class", `end ${end}`);
      dot.setAttribute("r", "3.5");
      svg.append(dot);
    }
    const label = el("div", { id: "ruler-label", role: "status" });
    svg.style.display = "none";
    label.hidden = true;
    viewer.container.append(svg, label);
    this.layer = { svg, label };
    viewer.addHandler("update-viewport", () => this.draw());
  }

  setActive(on) {
    this.active = on;
    $("measure-button").setAttribute("aria-pressed", String(on));
    $("measure-hint").hidden = !on;
    $("osd").classList.toggle("measuring", on);
  }

  /** Escape: no ruler, no measuring. */
  clear() {
    this.dragging = false;
    this.line = null;
    this.setActive(false);
    this.show();
  }

  snap(point) {
    return { x: Math.round(point.x), y: Math.round(point.y) };
  }

  press(point) {
    const a = this.snap(point);
    this.dragging = true;
    this.line = { a, b: a };
    this.show();
  }

  move(point) {
    if (!this.dragging) return;
    this.line.b = this.snap(point);
    this.show();
  }

  /** The drag is over: the ruler stays until Escape (or the next measurement); the
   *  mouse pans again. */
  release(point) {
    this.move(point);
    this.dragging = false;
    const { a, b } = this.line;
    if (a.x === b.x && a.y === b.y) this.line = null; // a click: still measuring
    else this.setActive(false);
    this.show();
  }

  /** The readout (toolbar) and the line on the image. */
  show() {
    const readout = $("measure-readout");
    if (!this.line) {
      readout.hidden = true;
      readout.replaceChildren();
      this.draw();
      return;
    }
    const dx = Math.abs(this.line.b.x - this.line.a.x);
    const dy = Math.abs(this.line.b.y - this.line.a.y);
    const text = rulerText(dx, dy, pitchOf(this.view.scan));
    readout.hidden = false;
    readout.replaceChildren(
      el("strong", { class: "ruler-length" }, text.length),
      " ",
      el("span", { class: "ruler-detail" }, text.detail),
    );
    readout.dataset.dx = String(dx);
    readout.dataset.dy = String(dy);
    if (this.layer) this.layer.label.textContent = text.length;
    this.draw();
  }

  draw() {
    if (!this.layer) return;
    const { svg, label } = this.layer;
    const viewer = this.view.viewer;
    const W = this.view.W;
    if (!this.line || !viewer || !W) {
      svg.style.display = "none";
      label.hidden = true;
      return;
    }
    const at = (p) =>
      viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(p.x / W, p.y / W), true);
    const a = at(this.line.a);
    const b = at(this.line.b);
    for (const line of svg.querySelectorAll("line")) {
      line.setAttribute("x1", a.x);
      line.setAttribute("y1", a.y);
      line.setAttribute("x2", b.x);
      line.setAttribute("y2", b.y);
    }
    const [da, db] = svg.querySelectorAll("circle");
    da.setAttribute("cx", a.x);
    da.setAttribute("cy", a.y);
    db.setAttribute("cx", b.x);
    db.setAttribute("cy", b.y);
    svg.style.display = "";
    label.hidden = false;
    label.style.left = `${(a.x + b.x) / 2 + 8}px`;
    label.style.top = `${(a.y + b.y) / 2 + 8}px`;
  }
}
