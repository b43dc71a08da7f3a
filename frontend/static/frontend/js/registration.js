// A registration: follow its job, show residual and confidence, a checkerboard / blend of the SEM mapped through
// mosaic_to_sem onto the mosaic (drawn from one small pyramid level of each, never the whole image), accept or
// redo; then cut training pairs and preview them coloured by split.
import { api, clearErrors, dziTileSource, el, formValues, jsonScript, showErrors } from "./common.js";
import { FINAL, progressText, watchJob } from "./jobs.js";

const cfg = jsonScript("registration-config");
const $ = (id) => document.getElementById(id);

// ---- the job and its result ----------------------------------------------------------------------------------------
function showStatus(obj) {
  $("reg-status").textContent = obj.status;
  $("reg-status").className = `status status-${obj.status}`;
  $("reg-progress").value = obj.progress || 0;
  $("reg-progress-text").textContent = progressText(obj);
  $("reg-progress-box").hidden = FINAL.includes(obj.status);
  // the reason is a whole sentence ("Registration failed: …"), as the page renders it on load
  $("reg-failure").textContent = obj.status === "failed" ? obj.failure_reason || "Registration failed." : "";
  $("reg-retry").hidden = !["failed", "cancelled"].includes(obj.status);
  $("reg-accepted").hidden = !obj.accepted;
  if (obj.status === "succeeded") showResult(obj);
}

let shown = false;
function showResult(obj) {
  $("reg-result").hidden = false;
  $("pairs-section").hidden = false;
  $("reg-residual").textContent = obj.residual_px == null ? "—" : `${Number(obj.residual_px).toFixed(2)} px`;
  $("reg-confidence").textContent = obj.confidence == null ? "—" : `${(100 * obj.confidence).toFixed(0)} % (${confidenceBasis(obj)})`;
  $("reg-checked").textContent = checkedText(obj.details || {});
  $("reg-matrix").textContent = (obj.mosaic_to_sem || []).map((r) => `[${r.map((v) => Number(v).toPrecision(4)).join(", ")}]`).join(" ");
  $("open-viewer").href = cfg.viewer_url;
  $("accept").hidden = obj.accepted;
  suggestTile(obj);
  if (!shown && obj.mosaic_to_sem) { shown = true; drawOverlay(obj.mosaic_to_sem).catch((err) => { $("accept-error").textContent = err.message; }); }
}

// The tile size comes from the overlap, known once the job has a transform: a page opened before then learns it
// here, unless the user has already typed a size of their own.
let tileTyped = false;
$("tile_px").addEventListener("input", () => { tileTyped = true; });
function suggestTile(obj) {
  if (!obj.overlap_px || !obj.suggested_tile_px) return;
  const [w, h] = obj.overlap_px, tile = obj.suggested_tile_px;
  if (!tileTyped) $("tile_px").value = tile;
  const fit = Math.floor(w / tile) * Math.floor(h / tile);
  $("tile-help").textContent = `The registered overlap is about ${w} × ${h} mosaic px: ${fit} tiles of ${tile} px fit it `
    + "side by side (at the mosaic's pixel size).";
  $("tile-help").hidden = false;
}

// What the confidence measures differs by how the transform was found: say so beside it (a landmark fit's 100 % and
// an automatic registration's 52 % are not on one scale).
function confidenceBasis(obj) {
  const details = obj.details || {};
  if (obj.method === "landmarks" && details.polish_from_clicks_px == null) return "from the clicks' residual alone";
  return "from how well the two images' edges correlate there and how closely two refinements agree";
}

// What vouches for the transform: the independent check and the SEM windows re-located near it (automatic), or the
// landmark fit's largest residual and what refining it on the images did (or why it was not refined).
function checkedText(details) {
  const verified = details.verify_subregions;
  const local = details.local;
  const windows = local && local.off_px != null
    ? `${local.located} SEM windows re-located nearby put it within ${Number(local.off_px).toFixed(2)} px` : "";
  if (verified) return `Verified in ${verified.by} against the whole mosaic` + (windows ? `; ${windows}` : "");
  const fit = details.n_landmarks != null ? details : (details.landmarks || {}).details;
  if (fit && fit.n_landmarks != null) {
    let text = `${fit.n_landmarks} landmark pairs, largest residual ${Number(fit.max_residual_px).toFixed(2)} px` +
      (fit.note ? ` (${fit.note})` : "");
    if (details.polish_from_clicks_px != null) {
      text += `; refined on the images, ${Number(details.polish_from_clicks_px).toFixed(2)} px from the clicks` +
        (windows ? `; ${windows}` : "");
    } else if (details.refinement_refused) {
      text += `; kept as clicked: refining it on the images was refused (${details.refinement_refused})`;
    }
    return text;
  }
  return "—";
}

// ---- overlay: one pyramid level small enough to be a single tile -----------------------------------------------------
async function overview(dziUrl) {
  const source = await dziTileSource(dziUrl);
  const maxLevel = Math.ceil(Math.log2(Math.max(source.width, source.height)));
  let level = maxLevel;
  while (level > 0 && Math.max(source.width, source.height) / 2 ** (maxLevel - level) > source.tileSize) level--;
  const img = new Image();
  img.src = source.getTileUrl(level, 0, 0);
  await img.decode();
  return { img, scale: source.width / Math.ceil(source.width / 2 ** (maxLevel - level)) };  // image px per tile px
}

let layers = null, matrix = null;
async function drawOverlay(mosaicToSem) {
  matrix = mosaicToSem;
  layers = await Promise.all([overview(cfg.mosaic.dzi_url), overview(cfg.sem.dzi_url)]);
  paint();
  document.body.dataset.overlayReady = "true";
}

function paint() {
  if (!layers) return;
  const [mos, sem] = layers;
  const canvas = $("overlay-canvas");
  const w = Math.min(640, canvas.clientWidth || 640);
  const s = w / cfg.mosaic.width;  // canvas px per mosaic px
  canvas.width = w; canvas.height = Math.round(cfg.mosaic.height * s);
  const g = canvas.getContext("2d");
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.drawImage(mos.img, 0, 0, canvas.width, canvas.height);
  // SEM tile px → SEM px (× sem.scale) → mosaic px (inverse of mosaic_to_sem) → canvas px (× s).
  const [a, b, c] = matrix[0], [d, e, f] = matrix[1];
  const det = a * e - b * d;
  const inv = [[e / det, -b / det, (b * f - c * e) / det], [-d / det, a / det, (c * d - a * f) / det]];
  const k = sem.scale;
  const mix = Number($("overlay-mix").value) / 100;
  g.save();
  if ($("overlay-mode").value === "checker") {
    const size = Math.max(4, Math.round(mix * canvas.width / 4));
    g.beginPath();
    for (let y = 0; y < canvas.height; y += size) for (let x = ((y / size) % 2) * size; x < canvas.width; x += 2 * size) g.rect(x, y, size, size);
    g.clip();
  } else {
    g.globalAlpha = mix;
  }
  g.setTransform(s * inv[0][0] * k, s * inv[1][0] * k, s * inv[0][1] * k, s * inv[1][1] * k, s * inv[0][2], s * inv[1][2]);
  g.drawImage(sem.img, 0, 0);
  g.restore();
}

// ---- accept ------------------------------------------------------------------------------------------------------------
$("accept").addEventListener("click", async () => {
  $("accept-error").textContent = "";
  try { showStatus(await api(`/api/registrations/${cfg.id}/accept/`, { method: "POST" })); }
  catch (err) { $("accept-error").textContent = err.message; }
});
$("overlay-mode").addEventListener("change", paint);
$("overlay-mix").addEventListener("input", paint);
window.addEventListener("resize", paint);

// ---- pairs: every set of this registration in #pair-sets (newest first); the grid previews one -------------------
function followPairSet(id) {
  $("pairs-status").textContent = "Queued…";
  watchJob("pair-sets", id, `/api/pair-sets/${id}/`, {
    onEvent: (e) => { if (e.type === "job.progress") $("pairs-status").textContent = progressText(e); },
    onUpdate: (obj) => {
      $("pairs-status").textContent = obj.status === "failed" ? `Pair extraction failed: ${obj.failure_reason}` : progressText(obj);
      showPairSetRow(obj);
      if (obj.status === "succeeded") showPairs(obj);
      if (FINAL.includes(obj.status)) $("extract").disabled = false;
    },
  });
}

const pairsText = (n) => `${n} pair${n === 1 ? "" : "s"}`;
// A test fraction asked for and none held out: the tiles fill one train/test block, too few to split.
const noneHeldOut = (ps) => (ps.test_fraction > 0 && ps.test_count === 0 ? NONE_HELD_OUT : "");
const NONE_HELD_OUT = " (too few tiles to hold any out for testing: try smaller tiles)";

// The same row as the page renders for each set on load.
function showPairSetRow(ps) {
  const done = ps.status === "succeeded";
  const result = done ? `${pairsText(ps.pair_count)}: ${ps.train_count} train, ${ps.test_count} test${noneHeldOut(ps)}`
    : ps.status === "failed" ? ps.failure_reason : ps.message || "Queued…";
  const row = el("tr", { id: `pair-set-${ps.id}` },
    el("td", { "data-label": "Pair set" }, String(ps.id)),
    el("td", { "data-label": "Status" }, el("span", { class: `status status-${ps.status}` }, ps.status)),
    el("td", { "data-label": "Tiles" }, `${ps.tile_px} px tiles every ${ps.stride_px} px`),
    el("td", { "data-label": "Pairs", class: ps.status === "failed" ? "error" : undefined }, result),
    el("td", { "data-label": "" }, ...(done ? [
      el("a", { href: `/api/pair-sets/${ps.id}/export/`, "aria-label": `Download pair set ${ps.id} (zip)` }, "zip"), " ",
      el("button", { type: "button", class: "show-pairs", "data-pair-set": ps.id, "aria-label": `Show pair set ${ps.id}` }, "Show"),
    ] : [])));
  const old = $(`pair-set-${ps.id}`);
  if (old) old.replaceWith(row); else $("pair-set-rows").prepend(row);
  $("pair-sets").hidden = false;
}

async function showPairs(pairSet) {
  const data = await api(`/api/pairs/?pair_set=${pairSet.id}&page_size=500`);
  const pairs = data.results || data;
  const total = data.count ?? pairs.length;
  $("pairs-counts").textContent = `Pair set ${pairSet.id}, ${pairSet.tile_px} px tiles: ${pairsText(total)}, `
    + `${pairSet.train_count} train, ${pairSet.test_count} test${noneHeldOut(pairSet)}${pairs.length < total ? ` (first ${pairs.length} shown)` : ""}.`
    + (pairSet.skipped_in_words ? ` Skipped: ${pairSet.skipped_in_words}.` : "");
  $("pairs-counts").dataset.total = String(total);
  $("pair-grid").replaceChildren(...pairs.slice(0, 120).map((p) => el("figure", { class: `split-${p.split}`, title: `${p.split} · box (${p.box_x}, ${p.box_y}) ${p.box_size} px` },
    el("div", { class: "pair-imgs" },
      el("img", { src: p.lr_url, alt: `SSUM tile ${p.id} (${p.split})`, loading: "lazy" }),
      el("img", { src: p.hr_url, alt: `SEM tile ${p.id} (${p.split})`, loading: "lazy" })))));
  $("pairs-export").href = `/api/pair-sets/${pairSet.id}/export/`;
  $("pairs-export").hidden = false;
  // training uses one pair set per registration: this one
  $("train-link").href = `/training/?registration=${cfg.id}&pair_set=${pairSet.id}`;
  $("train-link").hidden = !total;
}

$("pairs-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { registration: cfg.id, ...formValues($("pairs-form")) };
  // a new try: the last one's failure or field errors no longer apply
  clearErrors($("pairs-form"));
  $("pairs-status").textContent = "";
  $("extract").disabled = true;
  try {
    const pairSet = await api("/api/pair-sets/", { method: "POST", body });
    showPairSetRow(pairSet);
    followPairSet(pairSet.id);
  } catch (err) { showErrors($("pairs-form"), err); $("extract").disabled = false; }
});

$("pair-set-rows").addEventListener("click", async (e) => {
  const button = e.target.closest(".show-pairs");
  if (button) showPairs(await api(`/api/pair-sets/${button.dataset.pairSet}/`));
});

watchJob("registrations", cfg.id, `/api/registrations/${cfg.id}/`, {
  onEvent: (e) => { if (e.type === "job.progress") { $("reg-progress").value = e.progress || 0; $("reg-progress-text").textContent = progressText(e); } },
  onUpdate: showStatus,
});
if (cfg.pair_set) api(`/api/pair-sets/${cfg.pair_set}/`).then(showPairs).catch((err) => { $("pairs-status").textContent = err.message; });
for (const id of cfg.running) followPairSet(id);
