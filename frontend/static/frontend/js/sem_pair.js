// Register an SEM image to a mosaic: automatically, or from landmark pairs clicked in two deep-zoom viewers.
// Points are kept in image pixels (x = column, y = row) of each image, as the API wants them.
import { api, dziTileSource, el, jsonScript, showErrors } from "./common.js";

const cfg = jsonScript("pair-config");
const $ = (id) => document.getElementById(id);
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
  viewers[key] = viewer;
  return viewer;
}

async function open(viewer, dziUrl) {
  const source = await dziTileSource(dziUrl);
  await new Promise((resolve) => { viewer.addOnceHandler("open", resolve); viewer.addOnceHandler("open-failed", resolve); viewer.open(source); });
}

function addPoint(key, x, y) {
  points[key].push([x, y]);
  order.push(key);
  render();
}

function render() {
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
  $("landmark-help").textContent = `${pairs} complete pair${pairs === 1 ? "" : "s"}${pairs < 3 ? ` (at least 3 needed)` : ""}. Next: click in ${next}.`;
  $("landmark-help").dataset.pairs = String(pairs);
}

async function showMethod() {
  const landmarks = form.method.value === "landmarks";
  $("landmark-tools").hidden = !landmarks;
  if (!landmarks) return;
  if (!viewers.mosaic) { makeViewer("mosaic", "osd-mosaic"); makeViewer("sem", "osd-sem"); await open(viewers.sem, cfg.sem.dzi_url); }
  await openMosaic();
}

let openedMosaic = null;
async function openMosaic() {
  if (!viewers.mosaic) return;
  const chosen = cfg.mosaics.find((m) => String(m.id) === $("mosaic").value);
  if (!chosen || openedMosaic === chosen.id) return;
  openedMosaic = chosen.id;
  points.mosaic = []; points.sem = []; order.length = 0;
  await open(viewers.mosaic, chosen.dzi_url);
  render();
  document.body.dataset.pairReady = "true";
}

if (form) {
  if (cfg.selected) $("mosaic").value = String(cfg.selected);
  for (const radio of form.querySelectorAll("[name=method]")) radio.addEventListener("change", showMethod);
  $("mosaic").addEventListener("change", openMosaic);
  $("undo-landmark").addEventListener("click", () => { const key = order.pop(); if (key) { points[key].pop(); render(); } });
  $("clear-landmarks").addEventListener("click", () => { points.mosaic = []; points.sem = []; order.length = 0; render(); });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const method = form.method.value;
    const n = Math.min(points.mosaic.length, points.sem.length);
    const body = { mosaic: Number($("mosaic").value), sem_image: cfg.sem.id, method };
    if (method === "landmarks") body.landmarks = Array.from({ length: n }, (_, i) => [...points.mosaic[i], ...points.sem[i]]);
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
