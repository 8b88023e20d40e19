// Charts: each replica's repository size and each backup's duration over
// time, from the run history (GET /history), drawn as inline SVG.

import { get } from "./api.js";
import { bytes, duration, h, s, secondsBetween, when } from "./dom.js";

const BACKUP_KINDS = new Set(["backup", "command", "sqlite"]);
const COLOURS = ["#2f7ed8", "#d8642f", "#3a9d4f", "#9b59b6", "#c0392b", "#16a085", "#7f8c8d", "#d4a017"];
const W = 760;
const H = 260;
const M = { left: 80, right: 20, top: 16, bottom: 40 };

/** Series by replica name: points {t (ms), v}, oldest first. */
function series(runs, value) {
  const by = new Map();
  for (const run of runs) {
    for (const r of run.replicas ?? []) {
      const v = value(run, r);
      if (v === null || v === undefined) continue;
      if (!by.has(r.name)) by.set(r.name, []);
      by.get(r.name).push({ t: new Date(run.finished).getTime(), v, run });
    }
  }
  for (const pts of by.values()) pts.sort((a, b) => a.t - b.t);
  return by;
}

function ticks(lo, hi, n) {
  if (hi <= lo) return [lo];
  return Array.from({ length: n + 1 }, (_, i) => lo + ((hi - lo) * i) / n);
}

function chart(id, title, by, fmt) {
  const all = [...by.values()].flat();
  if (all.length === 0) {
    return h("figure", { id }, h("figcaption", {}, title), h("p", { class: "empty" }, "No runs recorded yet."));
  }
  let t0 = Math.min(...all.map((p) => p.t));
  let t1 = Math.max(...all.map((p) => p.t));
  if (t1 === t0) {
    t0 -= 3_600_000;
    t1 += 3_600_000;
  }
  const vmax = Math.max(...all.map((p) => p.v)) * 1.1 || 1;
  const x = (t) => M.left + ((t - t0) / (t1 - t0)) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - (v / vmax) * (H - M.top - M.bottom);
  const grid = ticks(0, vmax, 4).map((v) =>
    s("g", {}, s("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), class: "grid" }), s("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v))),
  );
  const label = (t) => new Date(t).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const xt = ticks(t0, t1, 3);
  const anchor = (i) => (i === 0 ? "start" : i === xt.length - 1 ? "end" : "middle");
  const xs = xt.map((t, i) => s("text", { x: x(t), y: H - M.bottom + 18, "text-anchor": anchor(i) }, label(t)));
  const lines = [...by.entries()].map(([name, pts], i) => {
    const colour = COLOURS[i % COLOURS.length];
    return s(
      "g",
      { "data-series": name },
      s("polyline", { points: pts.map((p) => `${x(p.t)},${y(p.v)}`).join(" "), fill: "none", stroke: colour, "stroke-width": 2 }),
      pts.map((p) => s("circle", { cx: x(p.t), cy: y(p.v), r: 3.5, fill: colour }, s("title", {}, `${name}: ${fmt(p.v)} — ${p.run.job}, ${when(p.run.finished)}`))),
    );
  });
  const legend = h(
    "p",
    { class: "legend" },
    [...by.keys()].map((name, i) => h("span", { class: "swatch-label" }, h("span", { class: "swatch", "data-colour": i % COLOURS.length }), name)),
  );
  for (const [i, sw] of [...legend.querySelectorAll(".swatch")].entries()) sw.style.background = COLOURS[i % COLOURS.length];
  return h(
    "figure",
    { id },
    h("figcaption", {}, title),
    s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title }, grid, s("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "axis" }), xs, lines),
    legend,
  );
}

export async function render(view) {
  const runs = await get("/history", { limit: 1000 });
  const backups = runs.filter((r) => BACKUP_KINDS.has(r.kind));
  const size = series(runs, (_, r) => (r.ok ? r.repo_bytes : null));
  const time = series(backups, (run, r) => (r.ok ? secondsBetween(run.started, run.finished) : null));
  view.replaceChildren(
    h("h1", {}, "Charts"),
    h("p", {}, `From the last ${runs.length} runs in the history. Repository size is recorded by backups from this version on.`),
    chart("chart-size", "Repository size per replica", size, bytes),
    chart("chart-duration", "Backup duration per replica", time, duration),
  );
}
