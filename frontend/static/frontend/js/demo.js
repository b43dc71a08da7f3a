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

async function poll(url) {
  try {
    const state = await api(url);
    if (!render(state)) setTimeout(() => poll(url), 2000);
    else button.disabled = false;
  } catch (err) { out.textContent = err.message; button.disabled = false; }
}

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
