// A training run live: loss curves seeded from loss_history and extended by each job.progress event, per-epoch
// sample images, ETA, cancel and resume for operators. A resumed run cuts its curves and samples back to the
// checkpoint it goes on from (training.resumed), so the steps it trains again are not drawn twice.
import { api, el, EventStream, jsonScript } from "./common.js";
import { FINAL } from "./jobs.js";
import { LossPlot } from "./lossplot.js";

const cfg = jsonScript("run-config");
const $ = (id) => document.getElementById(id);
const plot = new LossPlot($("loss-canvas"));
plot.set(cfg.loss_history || []);
window.ssumLossPlot = plot;  // for tests and the console
let status = cfg.status;
let samplesShown = 0;
let cutBacks = 0;  // times a resumed run dropped samples this page showed: their indices come back with new pictures

function formatEta(s) {
  if (!Number.isFinite(s)) return "";
  if (s < 90) return `about ${Math.round(s)} s left`;
  if (s < 5400) return `about ${Math.round(s / 60)} min left`;
  return `about ${(s / 3600).toFixed(1)} h left`;
}

function showSample(index) {
  for (; samplesShown <= index; samplesShown++) {
    $("samples-empty")?.remove();
    const again = cutBacks ? `?after_cut_back=${cutBacks}` : "";  // not the picture this page showed there before
    $("samples").append(el("figure", {}, el("img", { src: `/api/training-runs/${cfg.id}/samples/${samplesShown}/${again}`, alt: `Sample after epoch ${samplesShown + 1}`, loading: "lazy" }),
      el("figcaption", { class: "muted", text: `Epoch ${samplesShown + 1}` })));
  }
}

/** Keep the first `count` samples: a resumed run dropped those made after its checkpoint. */
function trimSamples(count) {
  if (count >= samplesShown) return;
  cutBacks += 1;
  for (const figure of [...$("samples").querySelectorAll("figure")].slice(count)) figure.remove();
  samplesShown = count;
  if (count === 0 && !$("samples-empty")) {
    $("samples").append(el("p", { class: "muted", id: "samples-empty", "data-ended": "The run ended before its first epoch: it made no samples.",
                                  text: "No samples yet: one appears after each epoch." }));
  }
}

function showResumed(note) {
  $("run-resumed").textContent = note || "";
  $("run-resumed").hidden = !note;
}

function setStatus(value, obj = {}) {
  status = value;
  $("run-status").textContent = value;
  $("run-status").className = `status status-${value}`;
  $("cancel-run").hidden = FINAL.includes(value);
  $("resume-run").hidden = !["failed", "cancelled"].includes(value);
  if (value === "failed") $("run-failure").textContent = obj.failure_reason || obj.reason || $("run-failure").textContent;
  if (value === "succeeded") $("model-link").hidden = false;
  if (FINAL.includes(value)) {
    $("run-eta").textContent = ""; $("run-message").textContent = "";  // no stale "Evaluating…"
    const empty = $("samples-empty");  // ended before an epoch: no sample is coming
    if (empty) empty.textContent = empty.dataset.ended;
  }
}

function showProgress(step, total, progress) {
  $("run-steps").textContent = `${step} / ${total || cfg.total_steps} steps`;
  if (progress != null) $("run-progress").value = progress;
}

function onEvent(e) {
  if (e.type === "job.progress") {
    if (e.losses) plot.add(e.losses);
    if (e.step != null) showProgress(e.step, cfg.total_steps || cfg.config_steps, e.progress);
    else if (e.progress != null) $("run-progress").value = e.progress;
    $("run-eta").textContent = formatEta(e.eta_s);
    $("run-message").textContent = e.message || "";
    if (e.losses) $("loss-latest").textContent = `Step ${e.losses.step}: G total ${e.losses.g_total?.toFixed(3)}, D ${e.losses.d_a?.toFixed(3)} / ${e.losses.d_b?.toFixed(3)}`;
    if (Number.isInteger(e.sample_index)) showSample(e.sample_index);
  } else if (e.type === "training.resumed") {  // also replayed, after the events of the steps it drops
    plot.set(plot.history.filter((entry) => entry.step <= e.step));
    trimSamples(e.samples);
    showProgress(e.step, cfg.total_steps);
    $("loss-latest").textContent = "";
    showResumed(e.note);
  } else if (e.type === "job.status") {
    setStatus(e.status, e);
    if (e.progress != null) $("run-progress").value = e.progress;
    if (FINAL.includes(e.status)) refresh();
  }
}

async function refresh() {
  const run = await api(`/api/training-runs/${cfg.id}/`);
  cfg.total_steps = run.total_steps;
  plot.set(run.loss_history || []);
  showProgress(run.step, run.total_steps, run.progress);
  trimSamples(run.samples.length);
  if (run.samples.length) showSample(run.samples.length - 1);
  showResumed(run.resume_note);
  setStatus(run.status, run);
}

async function act(name) {
  $("run-action-error").textContent = "";
  try { const run = await api(`/api/training-runs/${cfg.id}/${name}/`, { method: "POST" }); setStatus(run.status, run); }
  catch (err) { $("run-action-error").textContent = err.message; }
}

$("cancel-run").addEventListener("click", () => act("cancel"));
$("resume-run").addEventListener("click", () => act("resume"));
if (cfg.samples) showSample(cfg.samples - 1);
setStatus(status);
new EventStream(`/ws/training-runs/${cfg.id}/`, {
  onEvent,
  onState: (state, delay) => { $("conn-status").textContent = state === "open" ? "live" : state === "retrying" ? `reconnecting in ${Math.round(delay / 1000)} s…` : ""; },
});
window.addEventListener("resize", () => plot.draw());
// Events published before the socket opened are replayed from seq 0; the detail catches anything older.
refresh().catch(() => {});
