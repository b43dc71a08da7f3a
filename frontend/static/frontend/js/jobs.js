// Follow a job (registration, pair set, training run, translation): its events over the websocket as they happen,
// and a slow poll of its detail as a safety net, until it reaches a final status.
import { api, EventStream } from "./common.js";

export const FINAL = ["succeeded", "failed", "cancelled"];

/**
 * watchJob("registrations", 12, "/api/registrations/12/", { onEvent(event), onUpdate(object) }) → { stop() }.
 * onUpdate gets the fresh detail object whenever the status changes and once at the end; it returns nothing.
 */
export function watchJob(kind, id, detailUrl, { onEvent = () => {}, onUpdate = () => {}, onState = () => {}, pollMs = 2500 } = {}) {
  let stopped = false, timer = null, lastStatus = null;
  const refresh = async () => {
    if (stopped) return;
    try {
      const obj = await api(detailUrl);
      if (obj.status !== lastStatus || FINAL.includes(obj.status)) { lastStatus = obj.status; onUpdate(obj); }
      if (FINAL.includes(obj.status)) { stop(); return; }
    } catch { /* network blip: the next poll tries again */ }
    timer = setTimeout(refresh, pollMs);
  };
  const stream = new EventStream(`/ws/${kind}/${id}/`, {
    onState,
    onEvent: (event) => {
      onEvent(event);
      if (event.type === "job.status" && event.status !== lastStatus) { clearTimeout(timer); refresh(); }
    },
  });
  function stop() { stopped = true; clearTimeout(timer); stream.close(); }
  refresh();
  return { stop };
}

/** A job's progress as "42% · message". */
export function progressText(obj) {
  const pct = Math.round(100 * (obj.progress || 0));
  return `${pct}%${obj.message ? ` · ${obj.message}` : ""}`;
}
