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
let cutBacks = 0;  // times a resumed run dropped samples this page showed: their indices come back with new pictures

function formatEta(s) {
  if (!Number.isFinite(s)) return "";
  if (s < 90) return `about ${Math.round(s)} s left`;
  if (s < 5400) return `about ${Math.round(s / 60)} min left`;
  return `about ${(s / 3600).toFixed(1)} h left`;
}

// One sample at a time, chosen by epoch (a run of 600 one-pair epochs made a page of 600 pictures), following the
// latest unless the reader moved away from it, and a strip of a few spread over the run to compare at a glance.
const STRIP = 8;
const samples = { count: 0, epoch: 0, follow: true };

function sampleUrl(epoch) {
  const again = cutBacks ? `?after_cut_back=${cutBacks}` : "";  // not the picture this page showed there before
  return `/api/training-runs/${cfg.id}/samples/${epoch - 1}/${again}`;
}

/** `count` epochs spread from the first to the last (all of them when there are few). */
function spread(count) {
  if (count <= STRIP) return Array.from({ length: count }, (_, i) => i + 1);
  return [...new Set(Array.from({ length: STRIP }, (_, i) => 1 + Math.round((i * (count - 1)) / (STRIP - 1))))];
}

function drawSamples() {
  const { count, epoch } = samples;
  $("samples-empty").hidden = count > 0;
  $("sample-viewer").hidden = count === 0;
  if (!count) return;
  $("sample-controls").hidden = $("sample-strip").hidden = count < 2;  // one sample: nothing to choose between
  const slider = $("sample-epoch");
  slider.max = String(count); slider.value = String(epoch);
  $("sample-prev").disabled = epoch <= 1; $("sample-next").disabled = epoch >= count;
  $("sample-follow").checked = samples.follow;
  $("sample-image").src = sampleUrl(epoch);
  $("sample-image").alt = `Sample after epoch ${epoch}`;
  $("sample-caption").textContent = `Epoch ${epoch} of ${count}`;
  $("sample-strip").replaceChildren(...spread(count).map((e) => el("li", {}, el("button", {
    type: "button", "aria-current": String(e === epoch), "data-epoch": String(e) },
  el("img", { src: sampleUrl(e), alt: `Sample after epoch ${e}`, loading: "lazy" }), `Epoch ${e}`))));
}

function chooseEpoch(epoch) {
  samples.epoch = Math.min(Math.max(1, epoch), samples.count);
  samples.follow = samples.epoch === samples.count;
  drawSamples();
}

/** The run has `count` samples now (fewer after a resume's cut-back). */
function setSampleCount(count) {
  if (count === samples.count) return;
  samples.count = count;
  if (samples.follow || samples.epoch > count || !samples.epoch) samples.epoch = count;
  drawSamples();
}

function showSample(index) { if (index + 1 > samples.count) setSampleCount(index + 1); }

/** Keep the first `count` samples: a resumed run dropped those made after its checkpoint. */
function trimSamples(count) {
  if (count >= samples.count) return;
  cutBacks += 1;
  setSampleCount(count);
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
    $("samples-empty").textContent = $("samples-empty").dataset.ended;  // ended before an epoch: none is coming
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
$("sample-epoch").addEventListener("input", (e) => chooseEpoch(Number(e.target.value)));
$("sample-prev").addEventListener("click", () => chooseEpoch(samples.epoch - 1));
$("sample-next").addEventListener("click", () => chooseEpoch(samples.epoch + 1));
$("sample-strip").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-epoch]");
  if (button) chooseEpoch(Number(button.dataset.epoch));
});
$("sample-follow").addEventListener("change", (e) => { samples.follow = e.target.checked; if (samples.follow) chooseEpoch(samples.count); });
$("loss-log").addEventListener("change", (e) => { plot.logScale = e.target.checked; plot.draw(); });
$("resume-run").addEventListener("click", () => act("resume"));
setSampleCount(cfg.samples || 0);
setStatus(status);
new EventStream(`/ws/training-runs/${cfg.id}/`, {
  onEvent,
  onState: (state, delay) => { $("conn-status").textContent = state === "open" ? "live" : state === "retrying" ? `reconnecting in ${Math.round(delay / 1000)} s…` : ""; },
});
window.addEventListener("resize", () => plot.draw());
// Events published before the socket opened are replayed from seq 0; the detail catches anything older.
refresh().catch(() => {});
