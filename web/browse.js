// Snapshot browser: the snapshots (GET /snapshots), then a snapshot's
// directories (GET /snapshots/{id}/tree?path=), with downloads of a file
// or of a directory as zip or tar, each through a one-time URL
// (POST /downloads) the browser saves to disk itself.

import { download, get } from "./api.js";
import { bytes, h, short, table, when } from "./dom.js";

// A path is named to the API as `{ path }`, or as `{ path_hex }` (its
// bytes in hex) when it is not UTF-8; `where` below is one of the two.
const key = (where) => where.path ?? where.path_hex;

function link(id, where, ...text) {
  const q = new URLSearchParams(where);
  return h("a", { href: `#/browse/${encodeURIComponent(id)}?${q}`, "data-path": key(where) }, ...text);
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
            h("td", {}, link(s.id, { path: "/" }, when(s.time))),
            h("td", {}, h("code", { "data-snapshot": s.id }, s.short_id ?? short(s.id))),
            s.host,
            s.paths.join(", "),
            s.tags.join(", "),
            h("td", {}, s.replicas.join(", "), s.missing?.length ? h("span", { class: "error" }, ` (missing on ${s.missing.join(", ")})`) : null, s.partial ? h("span", { class: "error" }, " partial") : null),
          ]),
        ),
  );
}

/**
 * Links to `/` and to each directory above the one shown. `shown` is the
 * listing's `path` (invalid bytes escaped), whose components line up with
 * those of a `path_hex`: a name holds no `/`.
 */
function crumbs(id, where, shown) {
  const out = [link(id, { path: "/" }, "/")];
  const texts = shown.split("/").filter((p) => p !== "");
  const prefixes = [];
  if (where.path !== undefined) {
    let at = "";
    for (const part of texts) prefixes.push({ path: (at += `/${part}`) });
  } else {
    let at = "";
    for (const byte of where.path_hex.match(/../g) ?? []) {
      if (byte.toLowerCase() === "2f" && at !== "") prefixes.push({ path_hex: at });
      at += byte;
    }
    if (at !== "" && at.toLowerCase() !== "2f") prefixes.push({ path_hex: at });
  }
  texts.forEach((part, i) => out.push(" ", prefixes[i] ? link(id, prefixes[i], part) : part, " /"));
  return h("p", { class: "crumbs" }, h("a", { href: "#/browse" }, "Snapshots"), ` › ${short(id)} › `, out);
}

async function tree(view, id, here) {
  const t = await get(`/snapshots/${encodeURIComponent(id)}/tree`, here);
  const rows = t.entries.map((e) => {
    let name = e.name;
    let actions = null;
    // A name that is not UTF-8 has no `path`, only `path_hex`.
    const where = e.path == null ? { path_hex: e.path_hex } : { path: e.path };
    if (e.type === "dir") {
      name = link(id, where, e.name, "/");
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
    crumbs(id, here, t.path),
    h("p", {}, "This directory as ", archiveButtons(id, here, basename(t.path))),
    table({ id: "tree", "data-path": key(here) }, ["Name", "Type", "Size", "Modified", ""], rows),
  );
}

export async function render(view, args, params) {
  if (args.length === 0) return list(view);
  const hex = params.get("path_hex");
  return tree(view, args[0], hex ? { path_hex: hex } : { path: params.get("path") || "/" });
}
