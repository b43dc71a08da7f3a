// Synchronised deep-zoom viewers. Every layer maps to the mosaic's pixel frame ("master" coordinates) through a
// 3×3 matrix (mosaic px → layer px); panning or zooming one viewer moves the others to the same place.
import { dziTileSource, attachScaleBar, jsonScript, formatLength, el } from "./common.js";

const cfg = jsonScript("viewer-config");
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const viewers = {};
window.ssumViewers = viewers;  // for tests and the console
let syncing = false;
let leader = null;  // the viewer under the user's pointer or focus

// ---- 2-D affine helpers (matrices as [[a,b,c],[d,e,f],[0,0,1]]) ------------------------------------------------
const apply = (m, x, y) => [m[0][0] * x + m[0][1] * y + m[0][2], m[1][0] * x + m[1][1] * y + m[1][2]];
function invert(m) {
  const [a, b, c] = m[0], [d, e, f] = m[1];
  const det = a * e - b * d;
  return [[e / det, -b / det, (b * f - c * e) / det], [-d / det, a / det, (c * d - a * f) / det], [0, 0, 1]];
}
const scaleOf = (m) => Math.sqrt(Math.abs(m[0][0] * m[1][1] - m[0][1] * m[1][0]));

// ---- viewers ---------------------------------------------------------------------------------------------------
function makeViewer(layer, index) {
  const box = el("figure", { class: "viewer-box", "data-layer": layer.key },
    el("figcaption", {}, el("span", { text: layer.label }),
      el("output", { class: "cursor-pos", title: "Where the pointer is on the mosaic (x right, y down from its top-left corner)" })),
    el("div", { class: "osd", id: `osd-${layer.key}`, role: "img", "aria-label": `${layer.label} (deep zoom)` }),
    el("div", { class: "scalebar", hidden: true }, el("div", { class: "bar" }), el("span", { class: "label" })));
  $("viewers").append(box);
  const viewer = OpenSeadragon({
    element: box.querySelector(".osd"), prefixUrl: "/static/openseadragon/images/", drawer: "canvas",
    showNavigator: index === 0, navigatorPosition: "BOTTOM_RIGHT", crossOriginPolicy: false,
    gestureSettingsMouse: { clickToZoom: false }, maxZoomPixelRatio: 8, visibilityRatio: 0.2,
    // Keep the image scale when the layout reflows (a layer added, a phone rotated), so a shared view stays put.
    preserveImageSizeOnResize: true,
  });
  viewer.layer = layer;
  viewer.toLayer = layer.transform || [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
  viewer.toMaster = invert(viewer.toLayer);
  attachScaleBar(viewer, box.querySelector(".scalebar"), layer.pixel_size_nm);
  // Follow the viewer the user is working in, on every animation frame (a "zoom" event only gives the start of
  // an animated zoom); followers are moved immediately, so their own events never drive the others.
  const lead = () => { leader = viewer; };
  box.addEventListener("pointerenter", lead);
  box.addEventListener("pointerdown", lead);
  box.addEventListener("focusin", lead);
  for (const name of ["zoom", "pan", "animation", "animation-finish"]) viewer.addHandler(name, () => { if (!leader || leader === viewer) sync(viewer); });
  viewer.addHandler("animation-finish", saveState);
  const osd = box.querySelector(".osd");
  osd.addEventListener("pointermove", (e) => showCursor(viewer, e));
  osd.addEventListener("pointerleave", () => showCursor(null));
  viewers[layer.key] = viewer;
  return dziTileSource(layer.dzi_url).then((source) => new Promise((resolve) => {
    viewer.addOnceHandler("open", () => resolve(viewer));
    viewer.addOnceHandler("open-failed", (e) => { box.append(el("p", { class: "error", text: `Could not open: ${e.message}` })); resolve(viewer); });
    viewer.open(source);
  })).catch((err) => { box.append(el("p", { class: "error", text: err.message })); return viewer; });
}

/** Where a viewer looks, in master (mosaic px) coordinates: centre and screen px per master px. */
function viewOf(viewer) {
  const item = viewer.world.getItemAt(0);
  if (!item) return null;
  const centre = item.viewportToImageCoordinates(viewer.viewport.getCenter(true));
  const zoomLayer = item.viewportToImageZoom(viewer.viewport.getZoom(true));
  const [x, y] = apply(viewer.toMaster, centre.x, centre.y);
  return { x, y, zoom: zoomLayer * scaleOf(viewer.toLayer) };
}

function showView(viewer, view, immediately = true) {
  const item = viewer.world.getItemAt(0);
  if (!item || !view) return;
  const [lx, ly] = apply(viewer.toLayer, view.x, view.y);
  const zoomLayer = view.zoom / scaleOf(viewer.toLayer);
  viewer.viewport.zoomTo(item.imageToViewportZoom(zoomLayer), null, immediately);
  viewer.viewport.panTo(item.imageToViewportCoordinates(lx, ly), immediately);
}

function sync(source) {
  if (syncing) return;
  syncing = true;
  try {
    const view = viewOf(source);
    for (const v of Object.values(viewers)) if (v !== source) showView(v, view);
    updateSwipe();
  } finally { syncing = false; }
}

// ---- cursor readout: where the pointer is on the mosaic, in µm from its top-left corner ---------------------------------
// Every layer is registered to the mosaic, so a point in any of them is read in the mosaic's pixels × its pixel size
// (the same size its scale bar and lengths use), and every viewer shows the same place.
function showCursor(viewer, event) {
  const item = viewer?.world.getItemAt(0);
  let text = "";
  if (item) {
    const r = viewer.element.getBoundingClientRect();
    const p = item.viewerElementToImageCoordinates(new OpenSeadragon.Point(event.clientX - r.left, event.clientY - r.top));
    const [x, y] = apply(viewer.toMaster, p.x, p.y);
    const master = cfg.layers[0];
    const inside = x >= 0 && y >= 0 && (!master.width || x <= master.width) && (!master.height || y <= master.height);
    text = master.pixel_size_nm
      ? `x ${(x * master.pixel_size_nm / 1000).toFixed(2)} µm · y ${(y * master.pixel_size_nm / 1000).toFixed(2)} µm`
      : `x ${x.toFixed(0)} · y ${y.toFixed(0)} px (no pixel size)`;
    if (!inside) text += " (off the mosaic)";
  }
  for (const out of document.querySelectorAll("#viewers .cursor-pos")) out.textContent = text;
}

// ---- shareable URL -----------------------------------------------------------------------------------------------
let saveTimer = null;
function saveState() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => {
    const master = Object.values(viewers)[0];
    const view = master && viewOf(master);
    if (!view) return;
    const p = new URLSearchParams(location.search);
    p.set("x", view.x.toFixed(1)); p.set("y", view.y.toFixed(1)); p.set("z", view.zoom.toPrecision(4));
    p.set("layers", [...document.querySelectorAll("[name=layer]:checked")].map((c) => c.value).join(","));
    p.set("lo", $("win-lo").value); p.set("hi", $("win-hi").value);
    if ($("frame-outlines")?.checked) p.set("frames", "1"); else p.delete("frames");
    const overlay = $("overlay-layer").value;
    if (overlay) { p.set("overlay", overlay); p.set("mode", $("overlay-mode").value); p.set("mix", $("overlay-mix").value); }
    else { p.delete("overlay"); p.delete("mode"); p.delete("mix"); }
    history.replaceState(null, "", `${location.pathname}?${p}`);
    $("share-link").value = location.href;
  }, 150);
}

// ---- layers on/off --------------------------------------------------------------------------------------------------
function applyLayerVisibility() {
  for (const box of document.querySelectorAll("#viewers .viewer-box")) {
    const on = document.querySelector(`[name=layer][value="${box.dataset.layer}"]`)?.checked ?? true;
    box.hidden = !on;
  }
  Object.values(viewers).forEach((v) => v.forceResize && v.forceResize());
  saveState();
}

// ---- contrast / window: an exact linear map v → (v − lo) / (hi − lo) as an SVG filter on every viewer ----------------
function applyWindow() {
  let lo = Number($("win-lo").value) / 255, hi = Number($("win-hi").value) / 255;
  if (hi <= lo) hi = Math.min(1, lo + 1 / 255);
  const slope = 1 / (hi - lo), intercept = -lo * slope;
  for (const f of document.querySelectorAll("#window-filter feFuncR, #window-filter feFuncG, #window-filter feFuncB")) {
    f.setAttribute("slope", String(slope)); f.setAttribute("intercept", String(intercept));
  }
  $("win-out").textContent = `${$("win-lo").value}–${$("win-hi").value}`;
  saveState();
}

// ---- overlay / swipe on the first viewer -------------------------------------------------------------------------
let overlayItem = null;
async function setOverlay() {
  const master = Object.values(viewers)[0];
  if (!master) return;
  if (overlayItem) { master.world.removeItem(overlayItem); overlayItem = null; }
  const key = $("overlay-layer").value;
  $("overlay-controls").hidden = !key;
  const layer = cfg.layers.find((l) => l.key === key);
  if (!layer) { saveState(); return; }
  const base = master.world.getItemAt(0);
  const source = await dziTileSource(layer.dzi_url);
  // Place the layer in the mosaic's viewport: its origin and scale from the inverse transform (rotation ignored).
  const toMaster = invert(layer.transform || [[1, 0, 0], [0, 1, 0], [0, 0, 1]]);
  const [ox, oy] = apply(toMaster, 0, 0);
  const widthMaster = layer.width * scaleOf(toMaster);
  const origin = base.imageToViewportCoordinates(ox, oy);
  master.addTiledImage({
    tileSource: source, x: origin.x, y: origin.y, width: base.imageToViewportCoordinates(widthMaster, 0).x - base.imageToViewportCoordinates(0, 0).x,
    opacity: 1, success: (e) => { overlayItem = e.item; updateSwipe(); },
  });
  saveState();
}

function updateSwipe() {
  if (!overlayItem) return;
  const master = Object.values(viewers)[0];
  const mix = Number($("overlay-mix").value) / 100;
  if ($("overlay-mode").value === "blend") {
    overlayItem.setClip(null);
    overlayItem.setOpacity(mix);
  } else {
    overlayItem.setOpacity(1);
    // Swipe: the overlay shows left of a vertical line at `mix` of the viewer's width.
    const size = master.viewport.getContainerSize();
    const edge = master.viewport.viewerElementToViewportCoordinates(new OpenSeadragon.Point(size.x * mix, 0));
    const right = overlayItem.viewportToImageCoordinates(edge);
    const full = overlayItem.getContentSize();
    overlayItem.setClip(new OpenSeadragon.Rect(0, 0, Math.max(0, Math.min(full.x, right.x)), full.y));
    $("swipe-line").style.left = `${mix * 100}%`;
  }
  $("swipe-line").hidden = $("overlay-mode").value !== "swipe";
}

// ---- line tool: intensity profile along a line drawn on the first viewer -----------------------------------------------
// The line is kept in image px and drawn again whenever the view moves, so it stays on the features it measured.
// Pointer events serve mouse, pen and finger alike; the overlay's CSS (touch-action: none) keeps a finger's drag
// from being taken for a scroll of the page.
let measuring = false;
function setupLineTool() {
  const master = Object.values(viewers)[0];
  const box = master.element.closest(".viewer-box");
  const overlay = el("canvas", { class: "line-overlay", "aria-hidden": "true" });
  master.element.append(overlay);
  let start = null;  // while drawing: where the pointer went down, in element px
  let pointer = null;
  let line = null;  // the measured line's ends in image px
  const toggle = $("line-tool");
  toggle.addEventListener("click", () => {
    measuring = !measuring;
    toggle.setAttribute("aria-pressed", String(measuring));
    master.setMouseNavEnabled(!measuring);
    overlay.style.pointerEvents = measuring ? "auto" : "none";
    box.classList.toggle("measuring", measuring);
  });
  const item = () => master.world.getItemAt(0);
  const local = (e) => { const r = overlay.getBoundingClientRect(); return { x: e.clientX - r.left, y: e.clientY - r.top }; };
  const toImage = (p) => item().viewerElementToImageCoordinates(new OpenSeadragon.Point(p.x, p.y));
  const toScreen = (p) => item().imageToViewerElementCoordinates(p);
  const draw = (a, b) => {
    overlay.width = overlay.clientWidth; overlay.height = overlay.clientHeight;  // (clears it)
    if (!a) return;
    const g = overlay.getContext("2d");
    g.strokeStyle = "#facc15"; g.lineWidth = 2; g.beginPath(); g.moveTo(a.x, a.y); g.lineTo(b.x, b.y); g.stroke();
  };
  const redraw = () => { if (!start) draw(line && toScreen(line.a), line && toScreen(line.b)); };
  master.addHandler("update-viewport", redraw);
  master.addHandler("resize", redraw);
  overlay.addEventListener("pointerdown", (e) => {
    if (!e.isPrimary || (e.pointerType === "mouse" && e.button !== 0)) return;
    start = local(e); pointer = e.pointerId;
    overlay.setPointerCapture(e.pointerId);
  });
  overlay.addEventListener("pointermove", (e) => { if (start && e.pointerId === pointer) draw(start, local(e)); });
  overlay.addEventListener("pointerup", (e) => {
    if (!start || e.pointerId !== pointer) return;
    const end = local(e);
    line = { a: toImage(start), b: toImage(end) };
    measure(master, start, end);
    start = null;
    redraw();
  });
  overlay.addEventListener("pointercancel", () => { start = null; redraw(); });  // the line measured before stays
}

/** Length in nm and intensity profile between two points given in viewer-element pixels. */
function measure(viewer, a, b) {
  const item = viewer.world.getItemAt(0);
  const ia = item.viewerElementToImageCoordinates(new OpenSeadragon.Point(a.x, a.y));
  const ib = item.viewerElementToImageCoordinates(new OpenSeadragon.Point(b.x, b.y));
  const lengthPx = Math.hypot(ib.x - ia.x, ib.y - ia.y);
  const lengthNm = lengthPx * (viewer.layer.pixel_size_nm || NaN);
  const canvas = viewer.drawer.canvas;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const ratio = canvas.width / viewer.element.clientWidth;
  const n = Math.max(2, Math.round(Math.hypot(b.x - a.x, b.y - a.y)));
  const values = [];
  for (let i = 0; i < n; i++) {
    const t = i / (n - 1);
    const x = Math.round((a.x + (b.x - a.x) * t) * ratio), y = Math.round((a.y + (b.y - a.y) * t) * ratio);
    const [r, g, bl] = ctx.getImageData(Math.min(canvas.width - 1, Math.max(0, x)), Math.min(canvas.height - 1, Math.max(0, y)), 1, 1).data;
    values.push((r + g + bl) / 3);
  }
  $("line-length").textContent = `Length ${formatLength(lengthNm)} (${lengthPx.toFixed(1)} image px)`;
  $("line-length").dataset.nm = String(lengthNm);
  // An overlay mixes another layer into the first viewer's pixels: its grey levels are then no one layer's counts.
  plotProfile(values, lengthNm, overlayItem ? null : viewer.layer.display_window);
}

/** The profile's y axis: the tiles' 8-bit grey as the counts it stands for where the pyramid's display window is known
 * (low + grey/255 · (high − low)), else as the display grey it is. */
function profileAxis(counts) {
  if (!counts) {
    return { title: "display grey (0–255)", at: (v) => v, format: (v) => v.toFixed(0),
      note: "Grey level along the line, as the screen shows it (0–255): this layer does not say which values its grey stands for." };
  }
  const step = (counts.high - counts.low) / 255;
  const digits = step < 0.1 ? 3 : step < 1 ? 1 : 0;
  return { title: `≈ ${counts.unit}`, at: (v) => counts.low + v * step, format: (v) => v.toFixed(digits),
    note: `Grey level along the line as ≈ ${counts.unit}: the tiles map ${counts.low.toFixed(digits)}–${counts.high.toFixed(digits)} `
      + `to 0–255 in 8-bit JPEG, so one grey level spans about ${step.toPrecision(2)} of them.` };
}

function plotProfile(values, lengthNm, counts) {
  const c = $("profile");
  c.hidden = false;
  const axis = profileAxis(counts);
  c.setAttribute("aria-label", `Intensity profile along the measured line; y axis: ${axis.title}`);
  $("profile-note").textContent = axis.note;
  $("profile-note").hidden = false;
  const w = (c.width = c.clientWidth || 600), h = (c.height = 160);
  const g = c.getContext("2d");
  const pad = { l: 64, r: 8, t: 8, b: 22 };
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#dde2ea"; g.strokeRect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
  g.fillStyle = "#647084"; g.font = "11px system-ui";
  g.textAlign = "right";
  g.fillText(axis.format(axis.at(255)), pad.l - 4, pad.t + 8); g.fillText(axis.format(axis.at(0)), pad.l - 4, h - pad.b);
  g.save(); g.translate(12, pad.t + (h - pad.t - pad.b) / 2); g.rotate(-Math.PI / 2); g.textAlign = "center";
  g.fillText(axis.title, 0, 0); g.restore();
  g.textAlign = "left"; g.fillText("0", pad.l, h - 6);
  g.textAlign = "right"; g.fillText(formatLength(lengthNm), w - pad.r, h - 6);
  g.textAlign = "center"; g.fillText("along the line", pad.l + (w - pad.l - pad.r) / 2, h - 6);
  g.strokeStyle = "#1f6feb"; g.lineWidth = 1.5; g.beginPath();
  values.forEach((v, i) => {
    const x = pad.l + (i / (values.length - 1)) * (w - pad.l - pad.r);
    const y = pad.t + (1 - v / 255) * (h - pad.t - pad.b);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
}

// ---- frame outlines: each stitched frame's field of view on the mosaic, the unsure ones in amber ---------------------
function showFrameOutlines(on) {
  const master = viewers.mosaic;
  if (!master) return;
  master.clearOverlays();
  const item = master.world.getItemAt(0);
  if (on && item) {
    for (const f of cfg.frames) {
      const ring = el("div", { class: `frame-outline${f.uncertain ? " uncertain" : ""}`, "data-index": String(f.index),
        title: `Frame ${f.index + 1}${f.uncertain ? " — placed with low confidence" : ""}` }, el("span", { text: String(f.index + 1) }));
      master.addOverlay({ element: ring, location: item.imageToViewportRectangle(f.x - f.r, f.y - f.r, 2 * f.r, 2 * f.r) });
    }
  }
  saveState();
}

// ---- start ---------------------------------------------------------------------------------------------------------
async function main() {
  if (!cfg.layers.length) return; // the page says why (#viewer-empty)
  const wanted = (params.get("layers") || "").split(",").filter(Boolean);
  for (const box of document.querySelectorAll("[name=layer]")) {
    if (wanted.length) box.checked = wanted.includes(box.value);
    box.addEventListener("change", applyLayerVisibility);
  }
  if (params.get("lo")) $("win-lo").value = params.get("lo");
  if (params.get("hi")) $("win-hi").value = params.get("hi");
  ["win-lo", "win-hi"].forEach((id) => $(id).addEventListener("input", applyWindow));
  applyWindow();
  const opened = await Promise.all(cfg.layers.map(makeViewer));
  applyLayerVisibility();
  // Once the layout has settled (showing the layers resizes the viewers), restore a shared view or fit the image.
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  for (const v of opened) v.viewport.resize(new OpenSeadragon.Point(v.container.clientWidth, v.container.clientHeight), true);
  if (params.get("x")) showView(opened[0], { x: Number(params.get("x")), y: Number(params.get("y")), zoom: Number(params.get("z")) });
  else opened[0].viewport.goHome(true);
  sync(opened[0]);
  setupLineTool();
  opened[0].element.append($("swipe-line"));
  if (params.get("overlay")) {
    $("overlay-layer").value = params.get("overlay");
    $("overlay-mode").value = params.get("mode") || "swipe";
    $("overlay-mix").value = params.get("mix") || "50";
  }
  $("overlay-layer").addEventListener("change", setOverlay);
  $("overlay-mode").addEventListener("change", () => { updateSwipe(); saveState(); });
  $("overlay-mix").addEventListener("input", () => { updateSwipe(); saveState(); });
  if ($("overlay-layer").value) await setOverlay();
  const outlines = $("frame-outlines");
  if (outlines) {
    outlines.checked = params.get("frames") === "1";
    outlines.addEventListener("change", () => showFrameOutlines(outlines.checked));
    if (outlines.checked) showFrameOutlines(true);
  }
  $("copy-link").addEventListener("click", async () => {
    $("share-link").select();
    try { await navigator.clipboard.writeText($("share-link").value); $("copy-link").textContent = "Copied"; } catch { /* selected for manual copy */ }
  });
  document.body.dataset.viewerReady = "true";
  saveState();
}

main();
