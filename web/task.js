// Following a task (a job run, a restore) until it ends, by polling
// GET /jobs/{id}: EventSource cannot send the Authorization header.

import { get } from "./api.js";
import { h } from "./dom.js";

const EVERY_MS = 500;

/** A line that follows task `id` until it is done or failed; `then(task)` after. */
export function follow(id, what, then) {
  const state = h("span", { class: "state" }, "queued");
  const detail = h("span", { class: "detail" });
  const line = h("p", { id: "task-state", class: "task", "data-state": "queued", "data-task": id }, `Task ${id} (${what}): `, state, " ", detail);
  const tick = async () => {
    if (!line.isConnected && line.dataset.started) return;
    line.dataset.started = "1";
    let t;
    try {
      t = await get(`/jobs/${id}`);
    } catch (e) {
      detail.textContent = e.message;
      setTimeout(tick, EVERY_MS * 4);
      return;
    }
    state.textContent = t.state;
    line.dataset.state = t.state;
    if (t.state === "done" || t.state === "failed") {
      const status = t.report?.status ?? t.report?.outcome;
      detail.textContent = [status, t.error].filter(Boolean).join(": ");
      if (status) line.dataset.status = status;
      then?.(t);
      return;
    }
    detail.textContent = progressText(t.progress);
    setTimeout(tick, EVERY_MS);
  };
  setTimeout(tick, 0);
  return line;
}

function progressText(p) {
  if (!p) return "";
  const parts = [];
  if (p.phase) parts.push(p.phase);
  if (p.files !== undefined) parts.push(`${p.files}/${p.total_files ?? "?"} files`);
  if (p.elapsed_secs !== undefined) parts.push(`${p.elapsed_secs} s`);
  return parts.join(", ");
}
