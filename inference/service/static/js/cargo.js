// The cargo check of one scan (docs/cargo.md): the containers as boxes on the image, the
// declared-vs-observed table, each manifest discrepancy as a region with its explanation
// and confirm / reject buttons (decided like a finding: a / r / u, n / p), and the reasons
// behind the risk. The scan view (scan.js) owns the selection and the review; this module
// draws and lists.

import { $, el } from "./util.js";

export const DISCREPANCY_COLOUR = "#ff8c1a";
export const CONTAINER_COLOUR = "#7fd1ff";
export const DISCREPANCY_WORDS = { confirm: "confirmed", reject: "rejected" };

const kg = (v) => `${Math.round(Number(v)).toLocaleString("en-GB")} kg`;
const words = (kind) => String(kind || "").replaceAll("_", " ");

/** The declared lines of each found container (a line names its container by index or
 *  ISO id; a line naming none belongs to the only container, else to the whole load),
 *  as inference/cargo/manifest.py reads them. */
export function declaredByContainer(meta, count) {
  const per = Array.from({ length: count }, () => []);
  const loose = [];
  const ids = meta?.container_ids || [];
  for (const line of meta?.manifest || []) {
    let ref = line.container;
    if (typeof ref === "string") ref = ids.includes(ref) ? ids.indexOf(ref) : null;
    if (ref === null || ref === undefined) (count === 1 ? per[0] : loose).push(line);
    else if (count) per[Math.min(ref, count - 1)].push(line);
    else loose.push(line);
  }
  return { per, loose };
}

function declaredCells(lines, declared, looseToo) {
  if (!declared) return [el("td", { class: "muted" }, "no manifest"), el("td")];
  if (!lines.length) {
    const what = looseToo ? "see whole load" : "empty";
    return [
      el("td", { dataset: { field: "declared-goods" } }, el("em", {}, what)),
      el("td", { class: "num", dataset: { field: "declared-kg" } }, "—"),
    ];
  }
  const total = lines.reduce((s, l) => s + (Number(l.declared_weight_kg) || 0), 0);
  const goods = lines.map((l) => l.description || `HS ${l.hs_code}`).join("; ");
  return [
    el("td", { dataset: { field: "declared-goods" }, title: goods }, goods),
    el("td", { class: "num", dataset: { field: "declared-kg" } }, total ? kg(total) : "—"),
  ];
}

export class CargoPanel {
  constructor(view) {
    this.view = view; // the ScanView: scan, decisions, selection
  }

  get cargo() {
    return this.view.scan?.cargo || null;
  }

  /** Container boxes and discrepancy regions as overlay elements with their rectangles. */
  overlays() {
    const v = this.view;
    const out = [];
    (this.cargo?.containers || []).forEach((c, i) => {
      const node = el(
        "div",
        {
          class: "box container",
          dataset: { container: String(i) },
          title: `container ${i + 1}: ${c.empty ? "empty" : `about ${kg(c.mass_kg)}, ${c.kind}`}`,
        },
        el("span", { class: "label" }, `container ${i + 1}`),
      );
      node.style.setProperty("--c", CONTAINER_COLOUR);
      out.push({ node, box: c.box });
    });
    v.discrepancies.forEach((d, index) => {
      const decision = v.discDecisions.get(index);
      const classes = ["box", "discrepancy", decision || ""];
      if (v.isSelected("discrepancy", index)) classes.push("selected");
      const node = el(
        "div",
        {
          class: classes.join(" "),
          dataset: { kind: "discrepancy", index: String(index), score: String(d.score) },
          title: d.explanation || "",
          role: "img",
          "aria-label": `manifest discrepancy: ${words(d.kind)}. ${d.explanation || ""}`,
        },
        el("span", { class: "label" }, `manifest: ${words(d.kind)} ${Number(d.score).toFixed(2)}`),
      );
      node.style.setProperty("--c", DISCREPANCY_COLOUR);
      out.push({ node, box: d.box });
    });
    return out;
  }

  render() {
    const cargo = this.cargo;
    $("cargo-panel").hidden = !cargo;
    if (!cargo) return;
    const check = cargo.manifest_check || {};
    const status = {
      no_manifest: "no manifest: nothing checked",
      no_container: "no container found: nothing checked",
      consistent: "matches the manifest",
      discrepancies: `${(check.discrepancies || []).length} discrepanc${
        (check.discrepancies || []).length === 1 ? "y" : "ies"
      }`,
    }[check.status];
    $("cargo-status").textContent = status || check.status || "";
    this.renderTable();
    this.renderDiscrepancies();
    this.renderReasons();
  }

  renderTable() {
    const meta = this.view.scan?.scan?.metadata || {};
    const containers = this.cargo.containers || [];
    const declared = Array.isArray(meta.manifest);
    const { per, loose } = declaredByContainer(meta, containers.length);
    const ids = meta.container_ids || [];
    const rows = containers.map((c, i) =>
      el(
        "tr",
        { dataset: { container: String(i) } },
        el("th", { scope: "row", title: ids[i] || "" }, String(i + 1)),
        ...declaredCells(per[i], declared, loose.length > 0),
        el(
          "td",
          { dataset: { field: "observed-empty" }, class: c.empty ? "" : "loaded" },
          c.empty ? "empty" : "loaded",
          el("small", { class: "muted" }, ` ${Number(c.score).toFixed(2)}`),
        ),
        el(
          "td",
          { class: "num", dataset: { field: "observed-mass" } },
          c.empty ? "—" : kg(c.mass_kg),
        ),
        el("td", { dataset: { field: "observed-kind" } }, c.empty ? "—" : c.kind),
        el(
          "td",
          { class: "num", dataset: { field: "observed-fill" } },
          c.empty ? "—" : `${Math.round(100 * Number(c.fill))} %`,
        ),
      ),
    );
    if (loose.length) {
      const seen = containers.reduce((s, c) => s + (c.empty ? 0 : Number(c.mass_kg)), 0);
      rows.push(
        el(
          "tr",
          { dataset: { container: "all" } },
          el("th", { scope: "row", title: "lines that name no container" }, "all"),
          ...declaredCells(loose, true, false),
          el("td", {}, "—"),
          el("td", { class: "num", dataset: { field: "observed-mass" } }, kg(seen)),
          el("td", {}, "—"),
          el("td", {}, "—"),
        ),
      );
    }
    $("cargo-table").replaceChildren(
      el("caption", { class: "muted" }, "Declared against what the image shows"),
      el(
        "thead",
        {},
        el(
          "tr",
          { class: "groups" },
          el("td"),
          el("th", { scope: "colgroup", colspan: "2" }, "Declared"),
          el("th", { scope: "colgroup", colspan: "4" }, "Seen in the image"),
        ),
        el(
          "tr",
          {},
          el("th", { scope: "col", title: "container" }, "#"),
          el("th", { scope: "col" }, "goods"),
          el("th", { scope: "col", class: "num", title: "declared weight" }, "kg"),
          el("th", { scope: "col", title: "empty or loaded, and how sure" }, "load"),
          el("th", { scope: "col", class: "num", title: "estimated mass of the load" }, "kg"),
          el("th", { scope: "col" }, "kind"),
          el("th", { scope: "col", class: "num", title: "share of the box it fills" }, "fill"),
        ),
      ),
      el(
        "tbody",
        {},
        rows.length
          ? rows
          : el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No container found.")),
      ),
    );
  }

  renderDiscrepancies() {
    const v = this.view;
    const list = $("discrepancy-list");
    const found = v.discrepancies;
    $("discrepancy-title").hidden = !found.length;
    list.hidden = !found.length;
    const decided = found.filter((_, i) => v.discDecisions.has(i)).length;
    $("discrepancy-progress").textContent = found.length
      ? `${decided} / ${found.length} decided`
      : "";
    list.replaceChildren(
      ...found.map((d, index) => {
        const decision = v.discDecisions.get(index);
        const button = (which, label, key, title) =>
          el(
            "button",
            {
              type: "button",
              class: which === "confirm" ? "accept" : "reject",
              title: `${title} (${key})`,
              "aria-label": `${title} discrepancy ${index + 1}`,
              "aria-pressed": String(decision === which),
              onclick: (e) => {
                e.stopPropagation();
                v.selected = { kind: "discrepancy", index };
                v.decideSelected(which === "confirm" ? "accept" : "reject");
              },
            },
            label,
          );
        const where =
          d.container === null || d.container === undefined
            ? "whole load"
            : `container ${d.container + 1}`;
        return el(
          "li",
          {
            class: [v.isSelected("discrepancy", index) ? "selected" : "", decision || ""].join(" "),
            dataset: { discrepancyIndex: String(index) },
            onclick: () => v.select({ kind: "discrepancy", index }),
          },
          el("span", { class: "swatch", style: { background: DISCREPANCY_COLOUR } }),
          el(
            "span",
            { class: "what" },
            `${words(d.kind)} ${Number(d.score).toFixed(2)} `,
            el("small", {}, `#${index + 1} ${where}`),
          ),
          el(
            "span",
            { class: "decide" },
            button("confirm", "✓", "a", "Confirm"),
            button("reject", "✗", "r", "Reject"),
          ),
          el("span", { class: "state" }, decision ? DISCREPANCY_WORDS[decision] : "to decide"),
          el("span", { class: "explanation" }, d.explanation || ""),
        );
      }),
    );
  }

  renderReasons() {
    const reasons = this.view.scan?.risk_reasons || [];
    $("risk-reasons-title").hidden = !reasons.length;
    $("risk-reasons").replaceChildren(
      ...reasons.map((r) => {
        const score = Number(r.score).toFixed(2);
        const finding = r.ref === null ? "finding (not shown)" : `finding #${r.ref}`;
        const what =
          r.source === "manifest"
            ? `manifest: ${words(r.kind)}, weight ${Number(r.weight).toFixed(2)} × ${score}`
            : `${finding}: ${r.kind} ${score}`;
        return el(
          "li",
          {
            class: r.decides ? "decides" : "",
            dataset: { source: r.source, kind: r.kind },
            title: r.explanation || "",
          },
          el("span", { class: "what" }, what),
          el(
            "span",
            { class: "num", title: "0.5: review, 1: alarm" },
            `= ${Number(r.contribution).toFixed(2)}`,
          ),
          r.decides ? el("span", { class: "badge decides" }, "sets the risk") : null,
          el("span", { class: "explanation" }, r.explanation || ""),
        );
      }),
    );
  }
}
