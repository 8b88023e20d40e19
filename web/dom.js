// Building the page. Every piece of data goes in as a text node or an
// attribute value, never as markup: names come from snapshots and may be
// hostile.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.setAttribute("class", v);
    } else if (k in el && !(el instanceof SVGElement) && typeof v !== "string") {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: `h("a", {href: "#"}, "text", child, …)`. */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function bytes(n) {
  if (n === undefined || n === null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}

export function duration(secs) {
  if (secs === undefined || secs === null || Number.isNaN(secs)) return "—";
  if (secs < 60) return `${secs.toFixed(secs < 1 ? 2 : secs < 10 ? 1 : 0)} s`;
  const m = Math.floor(secs / 60);
  if (m < 60) return `${m} min ${Math.round(secs % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function secondsBetween(a, b) {
  return (new Date(b).getTime() - new Date(a).getTime()) / 1000;
}

export function short(id) {
  return String(id ?? "").slice(0, 8);
}

/** A table with a header row and `rows` (arrays of cells or <tr>s). */
export function table(attrs, head, rows) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      rows.map((r) => (r instanceof Node ? r : h("tr", {}, r.map((c) => (c instanceof Node && (c.tagName === "TD" || c.tagName === "TH") ? c : h("td", {}, c)))))),
    ),
  );
}

export function status(text, state) {
  return h("span", { class: `badge ${state}` }, text);
}
