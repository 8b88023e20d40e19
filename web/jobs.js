// Jobs of cairn.toml (GET /jobs) with "run now" (POST /jobs/{name}/run,
// then the task followed to its end), and the run history (GET /history).

import { post, get } from "./api.js";
import { bytes, duration, h, secondsBetween, short, status, table, when } from "./dom.js";
import { follow } from "./task.js";

function historyTable(runs) {
  return table(
    { id: "history" },
    ["Started", "Job", "Kind", "Trigger", "Status", "Duration", "Snapshot", "Replicas", "Error"],
    runs.map((r) => [
      when(r.started),
      r.job,
      r.kind,
      r.actor ? `${r.trigger} (${r.actor})` : r.trigger,
      h("td", {}, status(r.status, r.status)),
      duration(secondsBetween(r.started, r.finished)),
      h("td", {}, r.snapshot ? h("code", {}, short(r.snapshot)) : "—"),
      h("td", {}, (r.replicas ?? []).map((p) => h("div", { class: p.ok ? "" : "error" }, `${p.name}: ${p.ok ? "ok" : "failed"}, ${bytes(p.bytes)} written`, p.repo_bytes !== undefined ? `, ${bytes(p.repo_bytes)} in all` : ""))),
      h("td", { class: "error" }, r.error ?? ""),
    ]),
  );
}

export async function render(view) {
  const [jobs, runs] = await Promise.all([get("/jobs"), get("/history", { limit: 50 })]);
  const tasks = h("div", { id: "tasks" });
  const history = h("div", {}, historyTable(runs));
  const refresh = async () => history.replaceChildren(historyTable(await get("/history", { limit: 50 })));
  const rows = jobs.map((j) => {
    const run = h("button", { type: "button", "data-run": j.name }, "Run now");
    run.addEventListener("click", async () => {
      run.disabled = true;
      try {
        const { id } = await post(`/jobs/${encodeURIComponent(j.name)}/run`);
        tasks.replaceChildren(follow(id, j.name, () => {
          run.disabled = false;
          refresh().catch(() => {});
        }));
      } catch (e) {
        run.disabled = false;
        tasks.replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
      }
    });
    const last = j.last_run;
    return [
      h("th", { scope: "row" }, j.name),
      j.kind,
      j.schedule ?? "—",
      (j.backends ?? ["all"]).join(", "),
      h("td", {}, last ? [status(last.status, last.status), " ", when(last.started)] : "never"),
      when(j.last_success),
      h("td", {}, run),
    ];
  });
  view.replaceChildren(
    h("h1", {}, "Jobs"),
    jobs.length === 0 ? h("p", {}, "No [jobs] in cairn.toml.") : table({ id: "jobs" }, ["Job", "Kind", "Schedule", "Backends", "Last run", "Last success", ""], rows),
    tasks,
    h("h2", {}, "History"),
    history,
  );
}
