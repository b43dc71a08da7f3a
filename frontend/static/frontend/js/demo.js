// "Run the demo": ask the server to drive scan → mosaic → SEM → registration → pairs → training → translation,
// then show each step's status by polling what the server answers. Degrades to a clear message when absent.
import { api, ApiError, el } from "./common.js";

const button = document.getElementById("run-demo");
const out = document.getElementById("demo-status");
const list = document.getElementById("demo-steps");

function render(state) {
  const steps = state.steps || [];
  list.replaceChildren(...steps.map((s) => el("li", {},
    el("span", { class: `status status-${s.status}`, text: s.status }), ` ${s.label || s.name}`,
    s.message ? el("span", { class: "muted", text: ` · ${s.message}` }) : "",
    s.url ? el("a", { href: s.url, text: "open" }) : "")));
  out.textContent = state.message || "";
  return ["succeeded", "failed", "cancelled"].includes(state.status);
}

// The project's scan list (and each sample's scan count) is server-rendered: when a step changes, fetch this
// page again and swap them in, so the demo's scans appear (with their progress and thumbnails) without a reload.
const LIVE_PARTS = ["project-scans", "project-samples"];
let stepsSeen = "";
async function refreshScans(state, { drawn = false } = {}) {
  const steps = (state.steps || []).map((s) => `${s.name}:${s.status}`).join(",");
  if (!document.getElementById(LIVE_PARTS[0]) || steps === stepsSeen) return;
  stepsSeen = steps;
  if (drawn) return;  // the page was just drawn with these steps' scans
  try {
    const response = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const id of LIVE_PARTS) {
      const part = fresh.getElementById(id);
      if (part) document.getElementById(id)?.replaceChildren(...part.childNodes);
    }
  } catch { /* the next step change tries again */ }
}

async function poll(url, { first = false } = {}) {
  try {
    const state = await api(url);
    refreshScans(state, { drawn: first });
    const ended = render(state);
    if (button) button.disabled = !ended;  // one demo at a time: the button waits for the one running
    if (!ended) setTimeout(() => poll(url), 2000);
  } catch (err) { out.textContent = err.message; if (button) button.disabled = false; }
}

// A reload (or another member's page) follows the latest demo: its steps and links stay within reach.
if (list?.dataset.statusUrl) poll(list.dataset.statusUrl, { first: true });

button?.addEventListener("click", async () => {
  button.disabled = true;
  out.textContent = "Starting the demo…";
  try {
    const state = await api("/api/demo/run/", { method: "POST", body: { project: Number(button.dataset.project) } });
    if (!render(state) && state.status_url) poll(state.status_url);
    else button.disabled = false;
  } catch (err) {
    out.textContent = err instanceof ApiError && err.status === 404
      ? "The demo runner is not available on this server yet. You can still plan a scan on a sample by hand."
      : err.message;
    button.disabled = false;
  }
});
