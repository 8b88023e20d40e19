// Restore form: POST /restore (snapshot, path, target, verify, and for a
// restore over an existing directory in_place, delete, dry_run), then the
// task followed to its end and its report shown.

import { get, post } from "./api.js";
import { h, short, when } from "./dom.js";
import { follow } from "./task.js";

function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", {}, label), input, hint ? h("small", {}, hint) : null);
}

function check(name, label, hint) {
  const box = h("input", { type: "checkbox", name, id: `restore-${name}` });
  return [box, h("label", { class: "check", for: `restore-${name}` }, box, ` ${label}`, hint ? h("small", {}, ` — ${hint}`) : null)];
}

function report(task) {
  if (task.state === "failed" || !task.report) {
    return h("p", { class: "error", role: "alert" }, task.error ?? "the restore failed");
  }
  return h("pre", { class: "report" }, JSON.stringify(task.report, null, 2));
}

export async function render(view) {
  const snaps = (await get("/snapshots")).reverse();
  const snapshot = h(
    "select",
    { name: "snapshot", id: "restore-snapshot" },
    h("option", { value: "latest" }, "latest"),
    snaps.map((s) => h("option", { value: s.id }, `${short(s.id)} — ${when(s.time)} — ${s.host} ${s.paths.join(" ")}`)),
  );
  const path = h("input", { name: "path", id: "restore-path", placeholder: "/srv/www (default: the whole snapshot)" });
  const target = h("input", { name: "target", id: "restore-target", required: true, placeholder: "/srv/restores/www" });
  const [verify, verifyLabel] = check("verify", "verify", "re-read the restored files and check them");
  const [inPlace, inPlaceLabel] = check("in_place", "in place", "over an existing directory: a safety snapshot first, rolled back on failure");
  const [del, delLabel] = check("delete", "delete", "remove files the snapshot lacks (in place only)");
  const [dryRun, dryRunLabel] = check("dry_run", "dry run", "only list what would change (in place only)");
  const sync = () => {
    del.disabled = !inPlace.checked;
    dryRun.disabled = !inPlace.checked;
    if (!inPlace.checked) {
      del.checked = false;
      dryRun.checked = false;
    }
  };
  inPlace.addEventListener("change", sync);
  sync();
  const out = h("div", { id: "restore-result" });
  const submit = h("button", { type: "submit" }, "Restore");
  const form = h(
    "form",
    { id: "restore-form", class: "form" },
    field("Snapshot", snapshot),
    field("Path in the snapshot", path),
    field("Target on the server", target, "an absolute directory under one of [api] restore_roots"),
    h("fieldset", {}, h("legend", {}, "Options"), verifyLabel, inPlaceLabel, delLabel, dryRunLabel),
    submit,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { snapshot: snapshot.value, target: target.value.trim(), verify: verify.checked };
    if (path.value.trim() !== "") body.path = path.value.trim();
    if (inPlace.checked) {
      body.in_place = true;
      if (del.checked) body.delete = true;
      if (dryRun.checked) body.dry_run = true;
    }
    submit.disabled = true;
    try {
      const { id } = await post("/restore", body);
      out.replaceChildren(
        follow(id, "restore", (task) => {
          submit.disabled = false;
          out.append(report(task));
        }),
      );
    } catch (err) {
      submit.disabled = false;
      out.replaceChildren(h("p", { class: "error", role: "alert" }, err.message));
    }
  });
  view.replaceChildren(h("h1", {}, "Restore"), form, out);
}
