// Overview: the replica × recent-snapshot matrix of GET /status, each
// cell complete, missing or behind, with each replica's size and last
// successful write.

import { get } from "./api.js";
import { bytes, h, short, when } from "./dom.js";

const RECENT = 12;

const CELLS = {
  complete: ["✓", "complete", "complete"],
  missing: ["✗", "missing", "missing"],
  incomplete: ["…", "behind", "behind: packs missing"],
  damaged: ["!", "damaged", "damaged: data on no replica"],
  unreachable: ["?", "unreachable", "unreachable"],
};

function cell(presence) {
  const [mark, cls, label] = CELLS[presence?.state] ?? ["?", "unreachable", String(presence?.state)];
  const title = presence?.packs ? `${label} (${presence.packs} packs)` : label;
  return h("td", { class: `cell ${cls}`, title, "data-state": cls }, mark);
}

export async function render(view) {
  const st = await get("/status");
  const snaps = st.snapshots.slice(-RECENT).reverse();
  const head = h(
    "tr",
    {},
    h("th", { scope: "col" }, "Replica"),
    h("th", { scope: "col" }, "Size"),
    h("th", { scope: "col" }, "Last successful write"),
    h("th", { scope: "col" }, "Behind"),
    snaps.map((s) =>
      h("th", { scope: "col", class: "snap", title: `${s.id}\n${s.host} ${s.paths.join(" ")}` }, short(s.id), h("br"), h("small", {}, when(s.time))),
    ),
  );
  const rows = st.replicas.map((r, i) =>
    h(
      "tr",
      { "data-replica": r.name },
      h("th", { scope: "row" }, r.name, r.error ? h("div", { class: "error" }, r.error) : null),
      h("td", { class: "num" }, bytes(r.pack_bytes)),
      h("td", {}, when(r.last_write ?? r.latest)),
      h("td", {}, r.behind_snapshots ? `${r.behind_snapshots} snapshots, ${bytes(r.behind_bytes)}` : "—"),
      snaps.map((s) => cell(s.replicas[i])),
    ),
  );
  const legend = h(
    "p",
    { class: "legend" },
    Object.values(CELLS).map(([mark, cls, label]) => h("span", { class: `cell ${cls}` }, `${mark} ${label}`)),
  );
  view.replaceChildren(
    h("h1", {}, "Overview"),
    h("p", {}, `${st.snapshots.length} snapshots on ${st.replicas.length} replicas; the ${snaps.length} most recent, newest first.`),
    h("div", { class: "scroll" }, h("table", { id: "matrix", class: "matrix" }, h("thead", {}, head), h("tbody", {}, rows))),
    legend,
  );
}
