// Scan monitor: live camera, progress with ETA, frames filling in, the mosaic growing, readouts, controls, faults.
import { api, EventStream, wsUrl, dziTileSource, attachScaleBar, attachImageScaleBar, jsonScript, el, showErrors, clearErrors } from "./common.js";

const cfg = jsonScript("monitor-config");
const $ = (id) => document.getElementById(id);
const TERMINAL = ["completed", "failed", "aborted"];
let status = cfg.status;
let lastReadout = cfg.last_readout;  // what the instrument read at this scan's newest frame (null: none yet)
const framesShown = () => document.querySelectorAll("#frame-grid a[data-index]").length;

// ---- connection state -----------------------------------------------------------------------------------------
function connection(name) {
  return (state, delay) => { $("conn-status").dataset[name] = state; showConnection(delay); };
}

function showConnection(delay) {
  const node = $("conn-status");
  const states = Object.values(node.dataset);
  // "Live" while the scan may still move; once it ended, what the page shows is simply current
  node.textContent = states.includes("retrying") ? `Reconnecting… (next try in ${Math.round((delay || 0) / 100) / 10} s)`
    : states.length && states.every((s) => s === "open") ? (TERMINAL.includes(status) ? "Up to date" : "Live")
      : "Connecting…";
  node.className = `conn conn-${states.includes("retrying") ? "retrying" : "open"}`;
}

// ---- progress, status, controls --------------------------------------------------------------------------------
function setProgress(done, total, etaS) {
  const bar = $("scan-progress");
  bar.max = total; bar.value = done; bar.textContent = `${done}/${total}`;
  $("progress-text").textContent = `${done} / ${total} frames (${total ? Math.round((100 * done) / total) : 0}%)`;
  if (etaS !== undefined) $("eta").textContent = etaS > 0 && done < total ? `about ${formatDuration(etaS)} left` : "";
}

function formatDuration(s) {
  s = Math.round(s);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`
    : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function setStatus(next, reason, times) {
  status = next;
  const badge = $("scan-status");
  badge.textContent = next; badge.className = `status status-${next}`;
  $("status-reason-sep").textContent = reason ? " · " : "";
  $("status-reason").textContent = reason || "";
  $("status-reason").className = `reason reason-${next}`;
  updateControls();
  showTimes(times);
  if (next === "paused") $("eta").textContent = "";  // no time is running out while it waits
  if (TERMINAL.includes(next)) { $("eta").textContent = ""; refreshMosaic(); }
  showFewCalibrationFrames();
  if (cfg.ending_states.includes(next)) { endLive(); showLastReadout(); showLastFrame(); }
  showConnection();
}

// When the scan started and finished, as the server writes them (H:i:s in its time zone), so that a page
// followed live reads as it would reloaded. State events carry the times; one from before they did is
// followed by asking the scan itself.
const CLOCK = { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
let clock;
try { clock = new Intl.DateTimeFormat("en-GB", { ...CLOCK, timeZone: cfg.time_zone }); }
catch { clock = new Intl.DateTimeFormat("en-GB", CLOCK); }  // a zone this browser does not know: its own

async function showTimes(times) {
  if (!times || !("finished_at" in times)) {
    try { times = await api(`/api/scans/${cfg.scan_id}/`); } catch { return; }
  }
  for (const [id, key, word] of [["scan-started", "started_at", "started"], ["scan-finished", "finished_at", "finished"]]) {
    $(id).textContent = times[key] ? ` · ${word} ${clock.format(new Date(times[key]))}` : "";
  }
}

function updateControls() {
  for (const button of document.querySelectorAll("[data-scan-action]")) {
    const action = button.dataset.scanAction;
    button.disabled = !cfg.can_operate || !cfg.actions[action].includes(status);
    if (!cfg.can_operate) button.title = "Only operators of this project can control scans.";
    else button.title = button.disabled ? `Cannot ${action} a ${status} scan.` : "";
  }
}

for (const button of document.querySelectorAll("[data-scan-action]")) {
  button.addEventListener("click", async () => {
    const action = button.dataset.scanAction;
    if (action === "abort" && !confirm("Abort this scan? Frames already saved are kept.")) return;
    const out = $("action-error");
    out.textContent = "";
    button.disabled = true;
    try {
      const scan = await api(`/api/scans/${cfg.scan_id}/${action}/`, { method: "POST" });
      $("requested").textContent = scan.requested_action ? `Requested: ${scan.requested_action}…` : "";
    } catch (err) {
      out.textContent = err.message;
    } finally { updateControls(); }
  });
}

// ---- frames --------------------------------------------------------------------------------------------------
function addFrame(ev) {
  const grid = $("frame-grid");
  let cell = grid.querySelector(`[data-index="${ev.index}"]`);
  if (!cell) {
    cell = el("a", { "data-index": ev.index });
    cell.style.gridRow = ev.row + 1; cell.style.gridColumn = ev.col + 1;
    grid.append(cell);
  }
  cell.href = `/scans/${cfg.scan_id}/frames/${ev.index}/`;  // the frame's page: picture, scale, where and how taken
  cell.title = `Frame ${ev.index + 1} (row ${ev.row + 1}, col ${ev.col + 1})`;  // counted from 1, as a lab member does
  cell.classList.remove("pending");
  cell.replaceChildren(el("img", { src: ev.thumbnail_url || `/api/frames/${ev.frame_id}/thumbnail/`, alt: `Frame ${ev.index + 1}` }));
  grid.querySelector(".muted")?.remove();
  lastReadout = { deflection_nm: ev.deflection_nm, focus_nm: ev.focus_nm };
  if (ev.measured_xyz_nm) [lastReadout.x_nm, lastReadout.y_nm, lastReadout.z_nm] = ev.measured_xyz_nm;
  showReadout(lastReadout);
  const calibration = $("calibration-line");  // a scan of bare silicon with frames can be the flat field
  if (calibration) calibration.hidden = false;
  showFewCalibrationFrames();
  if (ev.done !== undefined) setProgress(ev.done, ev.total);
  scheduleMosaic();
}

function showStage(x, y, z) {
  const known = (v) => v !== null && v !== undefined;
  const parts = [["x", x], ["y", y], ["z", z]].filter(([, v]) => known(v)).map(([axis, v]) => `${axis} ${(v / 1000).toFixed(3)}`);
  $("stage").textContent = parts.length ? `${parts.join("  ")} µm` : "—";
}

function addFault(reason, kind = "fault") {
  const item = el("li", { class: "error" }, el("time", { text: clock.format(new Date()) }), ` ${kind}: ${reason}`);
  $("faults").prepend(item);
  $("faults-empty")?.remove();
}

// ---- scan events ---------------------------------------------------------------------------------------------
function onScanEvent(ev) {
  switch (ev.type) {
    case "frame.saved": addFrame(ev); break;
    case "scan.progress": setProgress(ev.done, ev.total, ev.eta_s); break;
    case "scan.state":
      setStatus(ev.status, ev.reason, ev);
      // a pause is the scan's state (its reason shows beside it), not a fault; what made the engine pause came
      // as a scan.fault of its own
      if (ev.status === "failed" && ev.reason) addFault(ev.reason, ev.status);
      $("requested").textContent = "";
      break;
    case "scan.fault": addFault(ev.reason || "unknown fault"); break;
    case "scan.requested": $("requested").textContent = `Requested: ${ev.action}…`; break;
    case "mosaic.live": showLivePreview(ev); break;
    case "translation.live": showLiveTranslation(ev); break;
    default:
      if (ev.type.startsWith("mosaic") || ev.type.startsWith("translation")) scheduleMosaic(0);
  }
}

new EventStream(`/ws/scans/${cfg.scan_id}/`, { onEvent: onScanEvent, onState: connection("scan"), after: cfg.after_seq });

function showReadout(r) {
  if ("x_nm" in r) showStage(r.x_nm, r.y_nm, r.z_nm);
  if (typeof r.deflection_nm === "number") $("deflection").textContent = `${r.deflection_nm.toFixed(1)} nm`;
  // in mm to 0.1 µm, as the stage's controller shows it: autofocus moves it by µm, which "50.0 mm" hid
  if (typeof r.focus_nm === "number") $("focus").textContent = `${(r.focus_nm / 1e6).toFixed(4)} mm`;
}

// An ended scan's readouts are its own last frame's: the instrument's since belong to whatever it did next.
function showLastReadout() {
  $("readouts-title").textContent = "Readouts at the last frame";
  for (const id of ["deflection", "stage", "focus"]) $(id).textContent = "—";
  if (lastReadout) showReadout(lastReadout);
  $("readouts-none").hidden = Boolean(lastReadout);
}

if (cfg.last_readout) showReadout(cfg.last_readout);

// The instrument's live view and readouts, while this scan can still move (not once it has ended).
let instrumentStream = null;
let live = null;
if (cfg.instrument_id && !cfg.ended) {
  instrumentStream = new EventStream(`/ws/instruments/${cfg.instrument_id}/`, {
    onState: connection("instrument"),
    onEvent: (ev) => {
      if (ev.type !== "instrument.state") return;
      live?.heartbeat();
      showReadout(ev);
      if (ev.error) $("instrument-error").textContent = ev.error;
    },
  });
  live = startLive();
}

function endLive() {
  if (!instrumentStream) return;
  instrumentStream.close();
  delete $("conn-status").dataset.instrument;
  instrumentStream = null;
  live.stop();
}

// ---- live camera: newest frame only, ack after drawing ------------------------------------------------------------
// The worker beats every few seconds (instrument.state); after OFFLINE_AFTER_MS without one it is offline.
const OFFLINE_AFTER_MS = 15000;

function startLive() {
  const canvas = $("live-canvas");
  // the frame's width in sample pixels, however far the worker scaled its preview down
  const scaleBar = attachImageScaleBar(canvas, $("live-scalebar"), cfg.pixel_size_nm, () => cfg.camera_width_px);
  const ctx = canvas.getContext("2d");
  const info = $("live-info");
  let delay = 500;
  let count = 0;
  let ws = null;
  let stopped = false;
  let online = cfg.instrument_online;
  let lastBeat = online ? Date.now() : 0;
  // a viewer's page only watches: the camera streams while a scan runs or an operator's page has it on
  const idle = cfg.can_operate ? "Waiting for the camera…"
    : "Waiting for the camera: it streams while a scan runs or an operator has the live view open.";
  const waiting = () => { if (!count) info.textContent = online ? idle : info.dataset.offline; };
  const watchdog = setInterval(() => {
    if (online && Date.now() - lastBeat > OFFLINE_AFTER_MS) { online = false; waiting(); }
  }, 5000);
  const open = () => {
    ws = new WebSocket(wsUrl(`/ws/instruments/${cfg.instrument_id}/live/`));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { delay = 500; waiting(); };
    ws.onmessage = async (msg) => {
      if (stopped || !(msg.data instanceof ArrayBuffer) || msg.data.byteLength < 16) return;
      const view = new DataView(msg.data);
      const seq = Number(view.getBigUint64(0));
      const t = view.getFloat64(8);
      try {
        const bitmap = await createImageBitmap(new Blob([new Uint8Array(msg.data, 16)], { type: "image/jpeg" }));
        if (stopped) { bitmap.close(); return; }  // the scan ended while this one decoded
        if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
          canvas.width = bitmap.width; canvas.height = bitmap.height;
        }
        ctx.drawImage(bitmap, 0, 0);
        bitmap.close();
        canvas.hidden = false;
        scaleBar();
        count += 1;
        canvas.dataset.seq = String(seq);
        canvas.dataset.frames = String(count);
        // the camera's own count of the images it sent, not a frame of the scan
        info.textContent = `Camera image ${seq} · ${clock.format(new Date(t * 1000))}`;
      } catch (err) {
        info.textContent = `Could not decode a frame: ${err.message}`;
      }
      if (ws.readyState === WebSocket.OPEN) ws.send("ack");
    };
    ws.onclose = (e) => {
      if (stopped) return;
      if (e.code === 4401 || e.code === 4404) { info.textContent = "The live view is not available to you."; return; }
      info.textContent = `Live view disconnected; retrying in ${Math.round(delay / 1000)} s…`;
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 15000);
    };
  };
  open();
  return {
    heartbeat() {
      lastBeat = Date.now();
      if (!online) { online = true; canvas.hidden = false; waiting(); }
    },
    stop() {  // the scan has ended: stop following the instrument (showLastFrame puts the scan's own in its place)
      stopped = true;
      clearInterval(watchdog);
      ws?.close();
      canvas.hidden = true;
      info.textContent = "The scan has ended.";
    },
  };
}

// ---- the ended scan's last frame where the live camera was, as a reload draws it ---------------------------------
let stamp;  // Y-m-d H:i:s in the server's zone, as the page's template writes times
try { stamp = new Intl.DateTimeFormat("en-GB", { year: "numeric", month: "2-digit", day: "2-digit", ...CLOCK, timeZone: cfg.time_zone }); }
catch { stamp = new Intl.DateTimeFormat("en-GB", { year: "numeric", month: "2-digit", day: "2-digit", ...CLOCK }); }

function formatStamp(date) {
  const part = Object.fromEntries(stamp.formatToParts(date).map((p) => [p.type, p.value]));
  return `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute}:${part.second}`;
}

let lastFrameShown = cfg.ended;
async function showLastFrame() {
  const card = $("camera-card");
  if (!card || lastFrameShown) return;
  lastFrameShown = true;
  let frame;
  try { frame = (await api(`/api/frames/?scan=${cfg.scan_id}&ordering=-index&page_size=1`)).results[0]; }
  catch { lastFrameShown = false; return; }  // the live view's "The scan has ended." stays
  const heading = el("h2", { text: "Last frame" });
  if (!frame) { card.replaceChildren(heading, el("p", { class: "muted", text: "The scan ended before its first frame." })); return; }
  const number = frame.index + 1;  // counted from 1, as a lab member does
  card.replaceChildren(heading,
    el("a", { href: `/api/frames/${frame.id}/image/`, title: "The 16-bit frame (TIFF)" },
      el("img", { id: "last-frame", class: "last-frame", src: `/api/frames/${frame.id}/preview/`,
        alt: `Frame ${number}, the last this scan captured` })),
    el("p", { class: "muted", id: "last-frame-caption", text: `Frame ${number} (row ${frame.row + 1}, col ${frame.col + 1}), `
      + `captured ${formatStamp(new Date(frame.captured_at))}. The scan has ended, so the instrument's live view is not shown here.` }));
}

// ---- the mosaic (and its translation) growing ---------------------------------------------------------------------
const viewers = {};
let mosaicTimer = null;
let watchedJob = null;

function scheduleMosaic(wait = 3000) {
  if (mosaicTimer) return;
  mosaicTimer = setTimeout(() => { mosaicTimer = null; refreshMosaic(); }, wait);
}

async function showLayer(key, containerId, dziUrl, version, pixelSizeNm) {
  const container = $(containerId);
  if (!window.OpenSeadragon || !container) return;
  const source = await dziTileSource(dziUrl, null, version);
  let viewer = viewers[key];
  if (!viewer) {
    container.closest(".viewer-box").hidden = false;  // OpenSeadragon sizes itself to a visible container
    container.replaceChildren();
    viewer = viewers[key] = OpenSeadragon({
      element: container, prefixUrl: "/static/openseadragon/images/", showNavigator: false,
      crossOriginPolicy: false, gestureSettingsMouse: { clickToZoom: false }, maxZoomPixelRatio: 4,
    });
    container.closest(".viewer-box")?.querySelector(".scalebar") &&
      (viewer.scaleUpdate = attachScaleBar(viewer, container.closest(".viewer-box").querySelector(".scalebar"), pixelSizeNm));
  }
  viewer.open(source);
  container.dataset.version = version;
}

// The growing mosaic during a scan arrives as a small preview image; the tiled pyramid replaces it when stitched.
let liveMosaicWidthPx = 0;  // the live mosaic's width in sample pixels; its preview is scaled down from it
const liveMosaicScaleBar = $("mosaic-live") && attachImageScaleBar($("mosaic-live"), $("mosaic-live-scalebar"),
  cfg.pixel_size_nm, () => liveMosaicWidthPx);

function showLivePreview(ev) {
  const img = $("mosaic-live");
  if (!img || $("mosaic-view").dataset.version) return;
  liveMosaicWidthPx = ev.width;
  img.onload = liveMosaicScaleBar;
  img.src = ev.url; img.hidden = false;
  img.alt = `Live mosaic from ${ev.frames} frames`;
  img.dataset.frames = String(ev.frames);
  $("mosaic-status").textContent = `Live mosaic: ${ev.frames} frame${ev.frames === 1 ? "" : "s"} placed (${ev.width}×${ev.height} px).`;
  // Frames whose overlaps matched nothing stand where the stage put them, which can be pixels off: say so now,
  // not only after the final stitch.
  const unmatched = ev.unmatched_frames || [];
  const box = $("stitch-report");
  if (box && unmatched.length) {
    const one = unmatched.length === 1;
    const numbers = unmatched.map((k) => k + 1);
    const names = one ? `Frame ${numbers[0]} matched none of its overlaps` : `Frames ${listWords(numbers)} matched none of their overlaps`;
    const them = one ? "it" : "them";
    box.replaceChildren(el("p", { class: "warning", text: `${names} (outlined below): the live mosaic shows `
      + `${them} where the stage put ${them}, which can be pixels off. `
      + "The final stitch places every frame from all its overlaps together." }));
    box.hidden = false;
  } else if (box) box.hidden = true;
  markFrames(unmatched, "matched none of its overlaps: placed by the stage for now");
  scheduleMosaic();
}

// A scan started with a model: its SEM-like translation grows beside the live mosaic, tile by tile; the final
// whole-mosaic translation (queued after the final stitch) replaces it with its deep-zoom pyramid.
function showLiveTranslation(ev) {
  const box = $("translation-live-box");
  if (!box || $("translation-view").dataset.version) return;
  const img = $("translation-live");
  img.src = ev.url; box.hidden = false;
  img.alt = `SEM-like translation: ${ev.tiles_done} of ${ev.tiles_total} tiles`;
  $("translation-live-status").textContent = ev.tiles_done >= ev.tiles_total
    ? `SEM-like translation: up to date (${ev.tiles_total} tiles).`
    : `SEM-like translation: ${ev.tiles_done} of ${ev.tiles_total} tiles — catching up with the scan.`;
}

// Stitch (again), with the flat field estimated from the frames, from a scan of bare silicon, or none.
$("stitch-form")?.addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const [flatfield, calibration] = form.elements.flatfield.value.split(":");
  const body = { scan: cfg.scan_id, flatfield, ...(calibration ? { calibration_scan: Number(calibration) } : {}) };
  $("stitch").disabled = true;
  try { await api("/api/mosaics/", { method: "POST", body }); clearErrors(form); scheduleMosaic(0); }
  catch (err) {
    // the calibration scan is chosen in the same list as the flat field: its errors are shown there
    for (const item of err.body?.errors || []) if (item.field === "calibration_scan") item.field = "flatfield";
    showErrors(form, err);
    $("stitch").disabled = false;
  }
});

// The flat fields the stitch form offers, asked for again whenever the form shows (and when the page comes back
// into view): the page was drawn before this scan had frames, or before the instrument was calibrated, so it may
// lack the calibration a reload offers, and "Stitch again" would quietly swap it for the estimate.
let flatfieldChosen = false;  // the user picked one: a refresh keeps it where it is still offered
$("stitch-flatfield")?.addEventListener("change", () => { flatfieldChosen = true; });

async function refreshFlatfieldChoices() {
  const select = $("stitch-flatfield");
  if (!select) return;
  let choices;
  try { ({ choices } = await api(`/api/scans/${cfg.scan_id}/flatfield-choices/`)); } catch { return; }
  // the user's pick stays picked, even one no longer offered (a calibration deleted meanwhile): the stitch then
  // says why beside the list, where a quiet switch to another flat field would stitch with one they did not choose
  const picked = flatfieldChosen ? select.selectedOptions[0] : null;
  const gone = picked && !choices.some((c) => c.value === picked.value) ? [picked] : [];
  select.replaceChildren(...choices.map((c) => el("option", { value: c.value, text: c.label })), ...gone);
  select.value = picked ? picked.value : (choices.find((c) => c.selected) || choices[0]).value;
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && $("stitch-form") && !$("stitch-form").hidden) refreshFlatfieldChoices();
});

// A flat field of fewer frames than advised keeps the wafer's dust: say so once the scan will not get more (its plan
// has fewer, or it no longer runs), as the page does drawn by the server.
function showFewCalibrationFrames() {
  const warning = $("calibration-few");
  if (!warning) return;
  const frames = framesShown(), advised = cfg.calibration_frames_advised;
  warning.hidden = !frames || frames >= advised || (cfg.frames_total >= advised && ["planned", "running"].includes(status));
}

// A scan of bare silicon made (or no longer) its instrument's flat-field calibration.
$("calibration-toggle")?.addEventListener("click", async (e) => {
  const button = e.target;
  const on = !button.dataset.on;
  button.disabled = true;
  try {
    await api(`/api/instruments/${button.dataset.instrument}/flatfield-calibration/`,
      { method: "POST", body: { scan: on ? Number(button.dataset.scan) : null } });
    button.dataset.on = on ? "1" : "";
    // both wordings come from the page (data-on / data-off), which shows one of them to begin with
    button.textContent = on ? button.dataset.buttonOn : button.dataset.buttonOff;
    const state = $("calibration-state");
    state.textContent = on ? state.dataset.on : state.dataset.off;
  } catch (err) { $("calibration-state").textContent = err.body?.errors?.[0]?.message || err.message; }
  button.disabled = false;
});

async function refreshMosaic() {
  let list;
  try { list = await api(`/api/mosaics/?scan=${cfg.scan_id}&ordering=-created_at`); } catch { return; }
  const mosaics = list.results || list;
  const ready = mosaics.find((m) => m.dzi_url);
  const pending = mosaics.find((m) => ["queued", "running"].includes(m.status));
  const note = $("mosaic-status");
  const latest = mosaics[0];
  showStitchCancel(TERMINAL.includes(status) ? pending : null);
  if (pending) note.textContent = `Stitching… ${Math.round((pending.progress || 0) * 100)}% ${pending.message || ""}`;
  else if (latest?.status === "cancelled" && framesShown() && !cfg.reference) {
    note.textContent = `The last stitch was cancelled${ready ? "; the mosaic below is from the one before it." : "."}`;
  }
  else if (!ready && cfg.reference) {
    note.textContent = framesShown() ? "Bare silicon is not stitched: its frames are a flat field for the instrument's scans (see below)."
      : TERMINAL.includes(status) ? "Bare silicon is not stitched, and this scan has no frames to serve as a flat field."
      : "Bare silicon is not stitched: its frames will be a flat field for the instrument's scans.";
  } else if (!ready && TERMINAL.includes(status)) {
    note.textContent = framesShown() ? "No mosaic yet." : "The scan has no frames, so there is nothing to stitch.";
    const translateNote = $("translate-needs-mosaic");
    if (translateNote && !framesShown()) translateNote.textContent = "The scan ended without frames: there is no mosaic to translate.";
  } else if (!ready) note.textContent = "The mosaic appears after the first frames are stitched.";
  else note.textContent = "";
  if (pending && watchedJob !== pending.id) {
    watchedJob = pending.id;
    const stream = new EventStream(`/ws/mosaics/${pending.id}/`, {
      onEvent: (ev) => {
        if (ev.type === "job.progress") note.textContent = `Stitching… ${Math.round((ev.progress || 0) * 100)}% ${ev.message || ""}`;
        if (ev.type === "job.status" && !["queued", "running"].includes(ev.status)) { stream.close(); scheduleMosaic(0); }
      },
    });
  }
  const stitchForm = $("stitch-form");
  if (stitchForm) {
    const wasHidden = stitchForm.hidden;
    stitchForm.hidden = cfg.reference || !framesShown() || !TERMINAL.includes(status) || Boolean(pending);
    if (wasHidden && !stitchForm.hidden) refreshFlatfieldChoices();
    $("stitch").textContent = ready ? "Stitch again" : "Stitch the mosaic";
    $("stitch").disabled = Boolean(pending);
  }
  if (ready) {
    $("mosaic-live").hidden = true;
    const version = `${ready.id}-${ready.finished_at || ready.progress}`;
    if ($("mosaic-view").dataset.version !== version) {
      await showLayer("mosaic", "mosaic-view", ready.dzi_url, version, ready.pixel_size_nm).catch((e) => { note.textContent = e.message; });
      const link = $("open-viewer");
      link.href = `/viewer/?mosaic=${ready.id}`;
      link.hidden = false;
      $("mosaic-view").dataset.mosaicId = String(ready.id);
    }
    if (cfg.translate_with) refreshTranslation(ready.id);
    if (ready.status === "succeeded") {  // the final stitch is done (a live one is "running")
      offerTranslation(ready);
      showStitchReport(ready.report, ready.id, ready.options || {});
    }
  }
  if (!TERMINAL.includes(status) || pending) scheduleMosaic(10000);
}

// An operator may call off the ended scan's stitch (the final one, or one asked for again); while the scan runs, its
// live mosaic grows with it and is not offered.
function showStitchCancel(job) {
  const button = $("stitch-cancel");
  if (!button) return;
  button.hidden = !job;
  if (!job) return;
  button.dataset.mosaic = String(job.id);
  button.disabled = Boolean(job.cancel_requested);
  button.textContent = job.cancel_requested ? "Cancelling…" : "Cancel the stitch";
}

$("stitch-cancel")?.addEventListener("click", async (e) => {
  const button = e.target;
  $("stitch-cancel-error").textContent = "";
  button.disabled = true;
  try {
    const job = await api(`/api/mosaics/${button.dataset.mosaic}/cancel/`, { method: "POST" });
    showStitchCancel(["queued", "running"].includes(job.status) ? job : null);
  } catch (err) {
    $("stitch-cancel-error").textContent = err.message;
    button.disabled = false;
  }
  refreshMosaic();
});

// What the final stitch measured, in words: how well the frames agree, and which ones it could not place surely
// (their thumbnails are outlined too), so nobody trains on a seam that is several pixels off without knowing.
function showStitchReport(report, mosaicId, options = {}) {
  const box = $("stitch-report");
  if (!box || !report || !report.links) return;
  const index = report.frame_index || report.positions_px.map((_, k) => k);
  const frames = index.length;
  const used = report.links.filter((l) => !l.dropped).length;
  const lines = [el("p", { text: frames === 1 ? "One frame: there are no overlaps to place it by."
    : !used ? `None of the ${report.links.length} overlaps could be measured; the ${frames} frames sit where the stage put them.`
    : `${frames} frames placed from ${used} of ${report.links.length} overlap${report.links.length === 1 ? "" : "s"}; `
      + `they agree to ${report.mean_residual_px.toFixed(2)} px on average (${report.max_residual_px.toFixed(2)} px at worst).` }),
    el("p", { class: "muted", text: { calibration: "Shading corrected with a flat field calibrated on bare silicon.",
      estimated: "Shading corrected with a flat field estimated from the frames themselves.",
      overlaps: "Shading corrected with a flat field fitted to where the frames overlap (the same spot seen at different places in the field).",
      none: "Shading not corrected." }[report.flatfield] || "" })];
  // the sphere's image blurs towards its rim, oppositely in the two frames of an overlap (imaging/fieldblur.py)
  const edge = report.edge_blur_px || 0;
  const edgeWords = edge > 0 ? `${edge.toFixed(1)} px (${Math.round(edge * report.pixel_size_nm)} nm)` : "";
  const blurText = { estimated: `The image was ${edgeWords} blurrier (Gaussian σ) at the edge of the field than at its centre; each overlap was matched for that before the final placement.`,
    given: `Each overlap was matched for the field's given blur, ${edgeWords} more at its edge than at its centre, before the final placement.`,
    inconsistent: "The overlaps disagree about how much blurrier the field's edge is (layers out of focus, differently in each frame), so none was matched for it.",
    unbounded: "The overlaps differ by more than the field's blur towards its edge (layers out of focus, differently in each frame), so none was matched for it." }[report.edge_blur];
  if (blurText) lines.push(el("p", { class: "muted", text: blurText }));
  // a repeatable stage placed the frames, mapped by the rotation and scale the overlaps measured (imaging/repeatable_stage.py)
  const stage = report.stage_calibration;
  const stageWords = stage && `${stage.links_agreeing} of ${stage.links_measured} overlaps`;
  if (stage?.believed) {
    const percent = (v) => `${v >= 1 ? "+" : "−"}${Math.abs(100 * (v - 1)).toFixed(2)} %`;
    const scaleWords = stage.scale ? `, its x axis ${percent(stage.scale[0])} and its y axis ${percent(stage.scale[1])} against the pixel size` : "";
    lines.push(el("p", { class: "muted", text: `Placed where the stage put them (it repeats within `
      + `${report.stage_repeatability_nm} nm), turned by ${stage.rotation_deg.toFixed(2)}° — the camera against the scanner`
      + `${scaleWords}, as ${stageWords} measured it`
      + `${stage.median_residual_px == null ? "" : ` (they sit ${stage.median_residual_px.toFixed(2)} px from it, median)`}.` }));
  } else if (stage) {
    lines.push(el("p", { class: "warning", text: `The instrument's stage is said to repeat within ${report.stage_repeatability_nm} nm, `
      + `but only ${stageWords} agree with where it put the frames, so the overlaps placed them instead. Check the `
      + "instrument's stage repeatability, and its pixel size (more than half a percent off, the frames land a pixel or more away from the stage's places)." }));
  }
  const gains = report.frame_gain || [];
  const spread = gains.length ? Math.max(...gains.map((g) => Math.abs(g - 1))) : 0;
  if (spread >= 0.005) {
    lines.push(el("p", { class: "muted", text: `Brightness evened out between the frames where they overlap: one was ${(100 * spread).toFixed(1)} % brighter or darker than the rest (a flickering lamp, a drifting exposure).` }));
  }
  if (options.calibration_skipped) {
    lines.push(el("p", { class: "warning", text: `The instrument's flat-field calibration was not used: ${options.calibration_skipped}` }));
  }
  // the scan's frames as a lab member counts them, from 1; a frame none of whose overlaps matched was placed by
  // the stage alone (placed_by_stage), which is not the same as overlaps that disagree
  // (on a repeatable stage that placed them, being placed by the stage is no doubt about a frame)
  const byStage = stage?.believed ? [] : (report.placed_by_stage || []).map((k) => index[k]);
  const unsure = (report.uncertain_frames || []).map((k) => index[k]).filter((k) => !byStage.includes(k));
  const sentences = [];
  if (byStage.length) {
    const one = byStage.length === 1;
    sentences.push(`${one ? "Frame" : "Frames"} ${listWords(byStage.map((k) => k + 1))} ${one ? "was" : "were"} placed by the `
      + `stage alone (outlined below): none of ${one ? "its" : "their"} overlaps matched, so ${one ? "it sits" : "they sit"} `
      + `where the stage put ${one ? "it" : "them"} and ${one ? "its" : "their"} seams may be several pixels off.`);
  }
  if (unsure.length) {
    const one = unsure.length === 1;
    sentences.push(`${one ? "Frame" : "Frames"} ${listWords(unsure.map((k) => k + 1))} ${one ? "is" : "are"} placed with low `
      + `confidence (outlined below): ${one ? "its" : "their"} overlaps do not agree on one offset — defocused layers, `
      + `repeating patterns or too little structure — so ${one ? "its" : "their"} seams may be several pixels off.`);
  }
  if (sentences.length) {
    lines.push(el("p", { class: "warning", text: `${sentences.join(" ")} ${uncertainAdvice()} ` },
      el("a", { href: `/viewer/?mosaic=${mosaicId}&frames=1`, text: "See them on the mosaic" })));
  }
  box.replaceChildren(...lines);
  box.hidden = false;
  markFrames([...byStage, ...unsure], (k) => byStage.includes(k)
    ? "placed by the stage alone: none of its overlaps matched" : "placed with low confidence");
}

// What a rescan could change: a Z-stack where there was none, else more overlap than this scan had.
function uncertainAdvice() {
  const overlap = `${Math.round(100 * cfg.overlap)} %`;
  return cfg.z_planes > 1
    ? `This scan already fused ${cfg.z_planes} planes per frame: rescanning with more overlap than its ${overlap} helps.`
    : `A Z-stack helps on deep chips (planes about 1 µm of focus travel apart, spanning the chip's depth), and so does more overlap than this scan's ${overlap}.`;
}

// Outline the thumbnails of the frames in `indices` (the scan's frame indices), saying why in their titles (`why`:
// the words, or a function of the frame index giving them).
function markFrames(indices, why) {
  for (const a of document.querySelectorAll("#frame-grid a[data-index]")) {
    const k = Number(a.dataset.index);
    const marked = indices.includes(k);
    a.classList.toggle("uncertain", marked);
    a.title = a.title.replace(/ — .*$/, "") + (marked ? ` — ${typeof why === "function" ? why(k) : why}` : "");
  }
}

function listWords(items) {
  return items.length < 2 ? `${items[0]}` : `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

// A page opened before the final stitch learns of the mosaic here: it joins the "Translate" form's choices.
function offerTranslation(mosaic) {
  const select = $("translate-mosaic");
  if (!select) { const needs = $("translate-needs-mosaic"); if (needs) needs.hidden = true; return; }  // no model (or bare silicon)
  if (![...select.options].some((o) => o.value === String(mosaic.id))) {
    select.prepend(el("option", { value: String(mosaic.id), text: mosaic.label }));  // as the server names it
    select.value = String(mosaic.id);
  }
  $("translate-needs-mosaic").hidden = true;
  $("translate-form").hidden = false;
}

async function refreshTranslation(mosaicId) {
  let list;
  try { list = await api(`/api/translations/?mosaic=${mosaicId}&ordering=-created_at`); } catch { return; }
  const t = (list.results || list).find((x) => x.dzi_url);
  const box = $("translation-box");
  if (!t || !box) return;
  box.hidden = false;
  const liveBox = $("translation-live-box");  // the final translation replaces the live one
  if (liveBox) liveBox.hidden = true;
  const version = `${t.id}-${t.finished_at || t.progress}`;
  if ($("translation-view").dataset.version !== version) {
    await showLayer("translation", "translation-view", t.dzi_url, version, null).catch(() => {});
    $("open-viewer").href = `/viewer/?mosaic=${mosaicId}&translation=${t.id}`;
  }
}

setProgress(cfg.frames_done, cfg.frames_total);
updateControls();
refreshMosaic();
