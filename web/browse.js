// Snapshot browser: the snapshots (GET /snapshots), then a snapshot's
// directories (GET /snapshots/{id}/tree?path=), with downloads of a file
// or of a directory as zip or tar, each through a one-time URL
// (POST /downloads) the browser saves to disk itself.

import { download, get } from "./api.js";
import { bytes, h, short, table, when } from "./dom.js";

function link(id, path, ...text) {
  const q = new URLSearchParams({ path });
  return h("a", { href: `#/browse/${encodeURIComponent(id)}?${q}`, "data-path": path }, ...text);
}

function basename(path) {
  const parts = path.split("/").filter((p) => p !== "");
  return parts.length ? parts[parts.length - 1] : "snapshot";
}

function downloader(label, attrs, run) {
  const b = h("button", { type: "button", class: "small", ...attrs }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    const was = b.textContent;
    b.textContent = "Downloading…";
    try {
      await run();
      b.textContent = `${was} ✓`;
      b.title = "handed to the browser's downloads";
      b.dataset.done = "1";
    } catch (e) {
      b.textContent = was;
      b.title = e.message;
      b.dataset.error = e.message;
      b.classList.add("failed");
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** Buttons to download a directory as zip or tar; `where` is its `path` or `path_hex`. */
function archiveButtons(id, where, name) {
  return ["zip", "tar"].map((format) =>
    downloader(format, { "data-archive": where.path ?? where.path_hex, "data-format": format }, () =>
      download({ snapshot: id, ...where, format }, `${name}.${format}`),
    ),
  );
}

async function list(view) {
  const snaps = (await get("/snapshots")).reverse();
  view.replaceChildren(
    h("h1", {}, "Snapshots"),
    snaps.length === 0
      ? h("p", {}, "No snapshot yet.")
      : table(
          { id: "snapshots" },
          ["Time", "Id", "Host", "Paths", "Tags", "Replicas"],
          snaps.map((s) => [
            h("td", {}, link(s.id, "/", when(s.time))),
            h("td", {}, h("code", { "data-snapshot": s.id }, s.short_id ?? short(s.id))),
            s.host,
            s.paths.join(", "),
            s.tags.join(", "),
            h("td", {}, s.replicas.join(", "), s.missing?.length ? h("span", { class: "error" }, ` (missing on ${s.missing.join(", ")})`) : null, s.partial ? h("span", { class: "error" }, " partial") : null),
          ]),
        ),
  );
}

function crumbs(id, path) {
  const out = [link(id, "/", "/")];
  let at = "";
  for (const part of path.split("/").filter((p) => p !== "")) {
    at += `/${part}`;
    out.push(" ", link(id, at, part), " /");
  }
  return h("p", { class: "crumbs" }, h("a", { href: "#/browse" }, "Snapshots"), ` › ${short(id)} › `, out);
}

async function tree(view, id, path) {
  const t = await get(`/snapshots/${encodeURIComponent(id)}/tree`, { path });
  const rows = t.entries.map((e) => {
    let name = e.name;
    let actions = null;
    // A name that is not UTF-8 has no `path`, only `path_hex`: it is
    // downloaded by that, but not browsed into.
    const where = e.path == null ? { path_hex: e.path_hex } : { path: e.path };
    if (e.type === "dir") {
      if (e.path != null) name = link(id, e.path, e.name, "/");
      actions = archiveButtons(id, where, e.name);
    } else if (e.type === "file") {
      actions = downloader("download", { "data-download": e.path ?? e.path_hex }, () => download({ snapshot: id, ...where }, e.name));
    }
    return [
      h("td", { class: "name" }, name, e.type === "symlink" && e.target !== undefined ? h("span", { class: "muted" }, ` → ${e.target}`) : null),
      e.type,
      h("td", { class: "num" }, e.type === "file" ? bytes(e.size) : ""),
      when(e.mtime),
      h("td", {}, actions),
    ];
  });
  view.replaceChildren(
    h("h1", {}, "Snapshot ", h("code", {}, short(t.snapshot ?? id))),
    crumbs(id, path),
    h("p", {}, "This directory as ", archiveButtons(id, { path }, basename(path))),
    table({ id: "tree", "data-path": path }, ["Name", "Type", "Size", "Modified", ""], rows),
  );
}

export async function render(view, args, params) {
  if (args.length === 0) return list(view);
  return tree(view, args[0], params.get("path") || "/");
}
