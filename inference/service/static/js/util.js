// Small DOM and formatting helpers shared by the queue and the scan view.

/** document.getElementById, failing loudly on a typo. */
export function $(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`no element #${id}`);
  return node;
}

/**
 * A new element: el("td", {class: "num", title: "x"}, "text", child, ...).
 * Text is always set as text (never parsed as HTML): scan metadata comes from stations.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style") Object.assign(node.style, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const pad = (n) => String(n).padStart(2, "0");

/** The viewer's one time format, local time with its zone: "2026-06-12 23:16:36 CEST". */
export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const zone =
    new Intl.DateTimeFormat("en-GB", { timeZoneName: "short" })
      .formatToParts(d)
      .find((part) => part.type === "timeZoneName")?.value || "";
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return `${date} ${time} ${zone}`.trim();
}

/** Kept for the callers: every time on the page is in the one format. */
export const shortTime = fmtTime;
export const longTime = (iso) => (iso ? fmtTime(iso) : "");

/** How long a scan has waited since `iso`: "45 s", "12 min", "2 h 05 min", "3 d 4 h". */
export function waited(iso, now = Date.now()) {
  const t = new Date(iso).getTime();
  if (!iso || Number.isNaN(t)) return "—";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${pad(m % 60)} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function fmtRisk(risk) {
  return typeof risk === "number" ? risk.toFixed(2) : "—";
}

export function riskCell(risk) {
  const share = typeof risk === "number" ? Math.max(0, Math.min(1, risk)) : 0;
  return [
    el("span", { class: "riskbar" }, el("i", { style: { width: `${share * 100}%` } })),
    fmtRisk(risk),
  ];
}

export function verdictBadge(verdict) {
  return el("span", { class: `badge ${verdict || ""}` }, verdict || "none");
}

let toastTimer = 0;

/** A short message at the bottom of the screen. */
export function toast(message, { error = false, ms = 2500 } = {}) {
  const box = $("toast");
  box.textContent = message;
  box.classList.toggle("error", error);
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, ms);
}

/** True when a key press belongs to a text field (shortcuts must not fire there). */
export function typingIn(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  if (tag !== "INPUT") return false;
  const type = (target.getAttribute("type") || "text").toLowerCase();
  return !["radio", "checkbox", "range", "button", "submit"].includes(type);
}
