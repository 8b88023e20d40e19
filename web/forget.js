// Forget preview: POST /forget with {} (a dry run) gives the plan: for
// each snapshot, what each replica's retention policy does with it and
// why. Nothing is removed from here.

import { post } from "./api.js";
import { h, short, table, when } from "./dom.js";

function policyText(p) {
  if (!p) return "no policy: keeps everything";
  return Object.entries(p)
    .filter(([, v]) => v !== null && v !== undefined && v !== false && !(Array.isArray(v) && v.length === 0))
    .map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(",") : typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
}

function verdict(v) {
  const why = v.reasons.length ? v.reasons.map(String).join(", ") : v.held ? "no rule keeps it" : "";
  const wait = v.waiting_for?.length ? ` (waiting for ${v.waiting_for.join(", ")})` : "";
  return h("td", { class: `verdict ${v.action}`, "data-action": v.action }, h("strong", {}, v.action), why ? ` — ${why}` : "", wait);
}

export async function render(view) {
  const plan = await post("/forget", {});
  const names = plan.replicas.map((r) => r.replica);
  view.replaceChildren(
    h("h1", {}, "Forget preview"),
    h("p", {}, "What cairn forget would do now by the configured retention policies. This page changes nothing."),
    table(
      { id: "forget-replicas" },
      ["Replica", "Policy", "Keeps", "Forgets", "Copies", "Missing", "Deferred"],
      plan.replicas.map((r) => [
        h("th", { scope: "row" }, r.replica, r.error ? h("div", { class: "error" }, r.error) : null),
        policyText(r.policy),
        r.kept,
        r.forgotten,
        r.copied,
        r.missing,
        r.deferred,
      ]),
    ),
    h("h2", {}, "Snapshots"),
    table(
      { id: "forget-plan" },
      ["Time", "Id", "Host", "Paths", ...names],
      [...plan.snapshots].reverse().map((snap) => [
        when(snap.time),
        h("td", {}, h("code", {}, short(snap.id))),
        snap.host,
        snap.paths.join(", "),
        ...names.map((n) => {
          const v = snap.replicas.find((x) => x.replica === n);
          return v ? verdict(v) : h("td", {}, "—");
        }),
      ]),
    ),
  );
}
