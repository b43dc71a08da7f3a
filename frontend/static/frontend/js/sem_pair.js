// Register an SEM image to a mosaic: automatically, or from landmark pairs clicked in two deep-zoom viewers.
// Points are kept in image pixels (x = column, y = row) of each image, as the API wants them.
import { api, attachScaleBar, clearErrors, dziTileSource, el, jsonScript, showErrors } from "./common.js";

const cfg = jsonScript("pair-config");
const $ = (id) => document.getElementById(id);
const chosenMosaic = () => cfg.mosaics.find((m) => String(m.id) === $("mosaic").value);
const form = $("pair-form");
const points = { mosaic: [], sem: [] };
const order = [];  // which viewer each point went to, for undo
const viewers = {};
window.ssumPairViewers = viewers;  // for tests and the console

function makeViewer(key, id) {
  const viewer = OpenSeadragon({
    element: $(id), prefixUrl: "/static/openseadragon/images/", drawer: "canvas", crossOriginPolicy: false,
    gestureSettingsMouse: { clickToZoom: false }, gestureSettingsTouch: { clickToZoom: false }, maxZoomPixelRatio: 8,
    showNavigationControl: true,
  });
  viewer.addHandler("canvas-click", (e) => {
    if (!e.quick) return;  // a drag pans
    e.preventDefaultAction = true;
    const p = viewer.viewport.viewerElementToImageCoordinates(e.position);
    const size = viewer.world.getItemAt(0)?.getContentSize();
    if (!size || p.x < 0 || p.y < 0 || p.x > size.x || p.y > size.y) return;  // outside the image
    addPoint(key, p.x, p.y);
  });
  // Keyboard: OpenSeadragon pans with the arrow keys and zooms with + / −; Enter places a point at the crosshair.
  const name = key === "mosaic" ? "Mosaic" : "SEM image";
  viewer.canvas.setAttribute("role", "application");
  viewer.canvas.setAttribute("aria-label", `${name} viewer: arrow keys pan, + and − zoom, Enter places a landmark at the crosshair`);
  viewer.canvas.setAttribute("aria-describedby", "landmark-keys");
  viewer.addHandler("canvas-key", (e) => {
    if (e.originalEvent.key !== "Enter" || e.originalEvent.repeat) return;
    e.preventDefaultAction = true;
    e.originalEvent.preventDefault();
    const c = viewer.viewport.viewportToImageCoordinates(viewer.viewport.getCenter(true));
    const size = viewer.world.getItemAt(0)?.getContentSize();
    if (!size || c.x < 0 || c.y < 0 || c.x > size.x || c.y > size.y) {
      $("landmark-help").textContent = `The crosshair is outside the ${name.toLowerCase()}: move it onto the image first.`;
      return;
    }
    addPoint(key, c.x, c.y);
  });
  viewers[key] = viewer;
  return viewer;
}

async function open(viewer, dziUrl) {
  const source = await dziTileSource(dziUrl);
  await new Promise((resolve) => { viewer.addOnceHandler("open", resolve); viewer.addOnceHandler("open-failed", resolve); viewer.open(source); });
}

// The image as imported, for everyone who may see it (the form below is for operators).
if ($("osd-sem-view") && cfg.sem.dzi_url) {
  const view = OpenSeadragon({ element: $("osd-sem-view"), prefixUrl: "/static/openseadragon/images/", drawer: "canvas",
                               crossOriginPolicy: false, maxZoomPixelRatio: 8, showNavigationControl: true });
  viewers.image = view;
  attachScaleBar(view, $("osd-sem-view").closest(".viewer-box").querySelector(".scalebar"), cfg.sem.pixel_size_nm);
  open(view, cfg.sem.dzi_url);
}

function addPoint(key, x, y) {
  points[key].push([x, y]);
  order.push(key);
  render();
}

function render() {
  clearErrors(form);  // an earlier "3 landmarks needed" no longer applies once the points change
  for (const key of ["mosaic", "sem"]) {
    const viewer = viewers[key];
    viewer.clearOverlays();
    points[key].forEach(([x, y], i) => {
      const marker = el("div", { class: `landmark landmark-${key}`, text: String(i + 1), "aria-label": `Landmark ${i + 1}` });
      viewer.addOverlay({ element: marker, location: viewer.viewport.imageToViewportCoordinates(x, y), placement: OpenSeadragon.Placement.CENTER });
    });
  }
  const n = Math.max(points.mosaic.length, points.sem.length);
  const fmt = (p) => (p ? `(${p[0].toFixed(1)}, ${p[1].toFixed(1)})` : "—");
  $("landmark-rows").replaceChildren(...(n ? Array.from({ length: n }, (_, i) => el("tr", {},
    el("td", { "data-label": "#", text: String(i + 1) }),
    el("td", { "data-label": "Mosaic px", text: fmt(points.mosaic[i]) }),
    el("td", { "data-label": "SEM px", text: fmt(points.sem[i]) }))) : [el("tr", {}, el("td", { colspan: 3, class: "muted", text: "No landmarks yet." }))]));
  const pairs = Math.min(points.mosaic.length, points.sem.length);
  const next = points.mosaic.length <= points.sem.length ? "the mosaic" : "the SEM image";
  $("landmark-help").textContent = `${pairs} complete pair${pairs === 1 ? "" : "s"}${pairs < 3 ? ` (at least 3 needed)` : ""}. Next: a point in ${next}.`;
  $("landmark-help").dataset.pairs = String(pairs);
}

// ---- automatic: optionally only the part of the mosaic in view -------------------------------------------------------
// The independent check searches the whole mosaic for the SEM image's place, which it refuses for an SEM image of
// less than 1/64 of the mosaic's area: there the search box is ticked for the user, who zooms to the SEM's area.
let searchViewer = null, searchOpened = null, searchTouched = false;

function footprintShare(mosaic) {
  const scale = cfg.sem.pixel_size_nm / mosaic.pixel_size_nm;  // mosaic px per SEM px
  return (cfg.sem.width * scale) * (cfg.sem.height * scale) / (mosaic.width * mosaic.height);
}

async function showSearch() {
  const mosaic = chosenMosaic();
  if (!mosaic) return;
  const share = footprintShare(mosaic);
  if (!searchTouched) $("search-in-view").checked = share < 1 / 64;
  const across = Math.round(Math.min(cfg.sem.width, cfg.sem.height) * cfg.sem.pixel_size_nm / mosaic.pixel_size_nm);
  $("search-help").textContent = across < 100
    ? `The SEM image is only ${across} px across at this mosaic's pixel size: too little to find and verify its place ` +
      "automatically (at least 100). Use landmarks."
    : `The SEM image covers about ${share >= 0.1 ? `${Math.round(100 * share)} %` : `1/${Math.round(1 / share)}`} ` +
      `of this mosaic's area${share < 1 / 64 ? " (less than 1/64: the search must be narrowed to where it lies)" : ""}. ` +
      ($("search-in-view").checked ? "Zoom the mosaic below to where the SEM image lies: the search then covers what you see."
        : "The whole mosaic is searched; to search only where the SEM image lies, tick the box and zoom the mosaic there.");
  $("search-view").hidden = !$("search-in-view").checked;
  if ($("search-view").hidden) return;
  if (!searchViewer) {
    searchViewer = OpenSeadragon({ element: $("osd-search"), prefixUrl: "/static/openseadragon/images/", drawer: "canvas",
                                   crossOriginPolicy: false, maxZoomPixelRatio: 8, showNavigationControl: true });
    viewers.search = searchViewer;
  }
  if (searchOpened !== mosaic.id) { searchOpened = mosaic.id; await open(searchViewer, mosaic.dzi_url); }
}

/** The part of the mosaic in view as [x0, y0, x1, y1] mosaic px, clipped to the mosaic. */
function searchBox() {
  const mosaic = chosenMosaic();
  const r = searchViewer.viewport.viewportToImageRectangle(searchViewer.viewport.getBounds(true));
  return [Math.max(0, r.x), Math.max(0, r.y), Math.min(mosaic.width, r.x + r.width), Math.min(mosaic.height, r.y + r.height)]
    .map((v) => Math.round(v * 10) / 10);
}

async function showMethod() {
  const landmarks = form.method.value === "landmarks";
  $("landmark-tools").hidden = !landmarks;
  $("search-tools").hidden = landmarks;
  if (!landmarks) { await showSearch(); return; }
  if (!viewers.mosaic) { makeViewer("mosaic", "osd-mosaic"); makeViewer("sem", "osd-sem"); await open(viewers.sem, cfg.sem.dzi_url); }
  await openMosaic();
}

/** Add the pair typed into the four coordinate fields; each bad field gets its message beside it. */
function addTypedPair() {
  const box = $("typed-landmark");
  box.querySelectorAll(".field-error").forEach((e) => e.remove());
  box.querySelectorAll("[aria-invalid]").forEach((c) => { c.removeAttribute("aria-invalid"); c.removeAttribute("aria-describedby"); });
  const mosaic = chosenMosaic() || { width: 0, height: 0 };
  const limits = { "lm-mosaic-x": mosaic.width, "lm-mosaic-y": mosaic.height, "lm-sem-x": cfg.sem.width, "lm-sem-y": cfg.sem.height };
  const values = {};
  let ok = true;
  const fail = (control, message) => {
    ok = false;
    const msg = el("p", { class: "error field-error", id: `${control.id}-error`, text: message });
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-describedby", msg.id);
    control.insertAdjacentElement("afterend", msg);
  };
  for (const [id, max] of Object.entries(limits)) {
    const control = $(id);
    const value = control.value.trim() === "" ? NaN : Number(control.value);
    if (!Number.isFinite(value)) fail(control, "Enter a number of pixels.");
    else if (value < 0 || value > max) fail(control, `Between 0 and ${max} px.`);
    else values[id] = value;
  }
  if (ok && points.mosaic.length !== points.sem.length) {
    fail($("add-typed-landmark"), "One clicked point has no partner yet: place it or undo it first.");
  }
  if (!ok) { box.querySelector("[aria-invalid]")?.focus(); return; }
  points.mosaic.push([values["lm-mosaic-x"], values["lm-mosaic-y"]]);
  points.sem.push([values["lm-sem-x"], values["lm-sem-y"]]);
  order.push("mosaic", "sem");  // as if clicked: undo takes the SEM point, then the mosaic one
  for (const id of Object.keys(limits)) $(id).value = "";
  render();
  $("lm-mosaic-x").focus();
}

let openedMosaic = null;
async function openMosaic() {
  if (!viewers.mosaic) return;
  const chosen = chosenMosaic();
  if (!chosen || openedMosaic === chosen.id) return;
  openedMosaic = chosen.id;
  $("lm-mosaic-x").max = String(chosen.width); $("lm-mosaic-y").max = String(chosen.height);
  points.mosaic = []; points.sem = []; order.length = 0;
  await open(viewers.mosaic, chosen.dzi_url);
  render();
  document.body.dataset.pairReady = "true";
}

if (form) {
  if (cfg.selected) $("mosaic").value = String(cfg.selected);
  for (const radio of form.querySelectorAll("[name=method]")) radio.addEventListener("change", showMethod);
  $("mosaic").addEventListener("change", () => { openMosaic(); if (form.method.value === "automatic") showSearch(); });
  $("search-in-view").addEventListener("change", () => { searchTouched = true; showSearch(); });
  $("undo-landmark").addEventListener("click", () => { const key = order.pop(); if (key) { points[key].pop(); render(); } });
  $("add-typed-landmark").addEventListener("click", addTypedPair);
  for (const input of $("typed-landmark").querySelectorAll("input")) {
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addTypedPair(); } });  // not the Register button
  }
  $("clear-landmarks").addEventListener("click", () => { points.mosaic = []; points.sem = []; order.length = 0; render(); });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const method = form.method.value;
    const n = Math.min(points.mosaic.length, points.sem.length);
    const body = { mosaic: Number($("mosaic").value), sem_image: cfg.sem.id, method };
    if (method === "landmarks") body.landmarks = Array.from({ length: n }, (_, i) => [...points.mosaic[i], ...points.sem[i]]);
    else if ($("search-in-view").checked && searchViewer?.world.getItemCount()) body.search_box = searchBox();
    $("register").disabled = true;
    try {
      const registration = await api("/api/registrations/", { method: "POST", body });
      location.assign(`/registrations/${registration.id}/`);
    } catch (err) {
      showErrors(form, err);
      $("register").disabled = false;
    }
  });
  showMethod();
}
