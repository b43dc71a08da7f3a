// Shared helpers for every page: API calls with CSRF, field errors next to controls,
// event websockets that reconnect and resume by seq, DZI tile sources and a scale bar.

export function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `Request failed (${status})`);
    this.status = status;
    this.body = body || {};
  }
}

/** fetch JSON from the API; POST bodies are JSON unless a FormData is given. Throws ApiError. */
export async function api(url, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(url, { method, headers, body: payload, signal, credentials: "same-origin" });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text.slice(0, 200) }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Clear then show an API error: each field message beside the control named like the field, the rest in `general`. */
export function showErrors(form, error, general) {
  clearErrors(form);
  const body = error instanceof ApiError ? error.body : { detail: String(error) };
  const left = [];
  for (const item of body.errors || []) {
    const control = item.field && form.querySelector(`[name="${CSS.escape(item.field)}"]`);
    if (control) {
      const msg = document.createElement("p");
      msg.className = "error field-error";
      msg.id = `${control.id || control.name}-error`;
      msg.textContent = item.message;
      control.setAttribute("aria-invalid", "true");
      control.setAttribute("aria-describedby", msg.id);
      control.insertAdjacentElement("afterend", msg);
    } else {
      left.push(item.field && item.field !== "non_field_errors" ? `${item.field}: ${item.message}` : item.message);
    }
  }
  const out = general || form.querySelector(".form-error");
  if (out) {
    out.textContent = left.length ? left.join(" ") : ((body.errors || []).length ? "" : body.detail || "Something went wrong.");
  }
}

export function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((e) => e.remove());
  form.querySelectorAll("[aria-invalid]").forEach((c) => { c.removeAttribute("aria-invalid"); c.removeAttribute("aria-describedby"); });
  const out = form.querySelector(".form-error");
  if (out) out.textContent = "";
}

/** Values of a form as an object; numbers for type=number inputs, booleans for checkboxes, blanks left out. */
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.value === "") continue;
    else if (el.type === "number") out[el.name] = Number(el.value);
    else out[el.name] = el.value;
  }
  return out;
}

export function wsUrl(path) {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
}

/**
 * An event stream on /ws/<kind>/<id>/ that reconnects with exponential backoff and resumes with ?after=<last seq>,
 * so nothing is missed or shown twice. onEvent(event) for each event; onState("open"|"closed"|"retrying", delay_ms).
 */
export class EventStream {
  constructor(path, { onEvent, onState = () => {}, after = 0 } = {}) {
    this.path = path; this.onEvent = onEvent; this.onState = onState;
    this.seq = after; this.delay = 500; this.stopped = false;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(wsUrl(`${this.path}?after=${this.seq}`));
    this.ws = ws;
    ws.onopen = () => { this.delay = 500; this.onState("open"); };
    ws.onmessage = (msg) => {
      let event;
      try { event = JSON.parse(msg.data); } catch { return; }
      if (typeof event.seq === "number") {
        if (event.seq <= this.seq) return;
        this.seq = event.seq;
      }
      this.onEvent(event);
    };
    ws.onclose = (e) => {
      if (this.stopped) return;
      if (e.code === 4401 || e.code === 4404) { this.onState("closed"); return; }  // refused: retrying will not help
      this.onState("retrying", this.delay);
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 15000);
    };
  }

  close() { this.stopped = true; clearTimeout(this.timer); if (this.ws) this.ws.close(); }
}

/** Parse a DZI descriptor into an OpenSeadragon tile source whose tiles live at `${tilesBase}<level>/<col>_<row>.<fmt>`. */
export async function dziTileSource(dziUrl, tilesBase, version = "") {
  const response = await fetch(dziUrl, { credentials: "same-origin" });
  if (!response.ok) throw new ApiError(response.status, { detail: `No pyramid at ${dziUrl}` });
  const xml = new DOMParser().parseFromString(await response.text(), "application/xml");
  const image = xml.getElementsByTagName("Image")[0];
  const size = xml.getElementsByTagName("Size")[0];
  if (!image || !size) throw new Error(`Bad DZI descriptor at ${dziUrl}`);
  const format = image.getAttribute("Format") || "jpeg";
  const base = tilesBase || dziUrl.replace(/dzi\/?$/, "tiles/");
  return {
    width: Number(size.getAttribute("Width")),
    height: Number(size.getAttribute("Height")),
    tileSize: Number(image.getAttribute("TileSize")),
    tileOverlap: Number(image.getAttribute("Overlap") || 0),
    minLevel: 0,
    getTileUrl: (level, x, y) => `${base}${level}/${x}_${y}.${format}${version ? `?v=${encodeURIComponent(version)}` : ""}`,
  };
}

/** A length in nm, written with a sensible unit. */
export function formatLength(nm) {
  if (!isFinite(nm)) return "—";
  if (Math.abs(nm) >= 1e6) return `${(nm / 1e6).toPrecision(3)} mm`;
  if (Math.abs(nm) >= 1000) return `${(nm / 1000).toPrecision(3)} µm`;
  return `${nm.toPrecision(3)} nm`;
}

/** The round length (1, 2 or 5 × 10^k nm) closest below `maxNm`. */
export function niceLength(maxNm) {
  if (!(maxNm > 0)) return 0;
  const p = 10 ** Math.floor(Math.log10(maxNm));
  for (const m of [5, 2, 1]) if (m * p <= maxNm) return m * p;
  return p;
}

/**
 * Keep a scale bar element right for an OpenSeadragon viewer: nm per screen pixel comes from the image pixel size
 * and the ratio of image pixels to viewport (screen) pixels at the current zoom.
 */
export function attachScaleBar(viewer, element, pixelSizeNm) {
  const update = () => {
    const item = viewer.world.getItemAt(0);
    if (!item || !pixelSizeNm) { element.hidden = true; return; }
    const zoom = item.viewportToImageZoom(viewer.viewport.getZoom(true));  // screen px per image px
    drawScaleBar(element, pixelSizeNm / zoom);
  };
  viewer.addHandler("animation", update);
  viewer.addHandler("open", update);
  viewer.addHandler("resize", update);
  return update;
}

/** Draw a scale bar element (.bar and .label inside) for an image shown at `nmPerScreenPx`; hidden when unknown. */
export function drawScaleBar(element, nmPerScreenPx) {
  if (!(nmPerScreenPx > 0 && isFinite(nmPerScreenPx))) { element.hidden = true; return; }
  const length = niceLength(nmPerScreenPx * 120);
  element.querySelector(".bar").style.width = `${length / nmPerScreenPx}px`;
  element.querySelector(".label").textContent = formatLength(length);
  element.dataset.nmPerPx = String(nmPerScreenPx);
  element.hidden = false;
}

/**
 * Keep a scale bar right for a plain image (a canvas or <img>) showing `widthPx()` sample pixels of `pixelSizeNm`
 * across its drawn width, as the page's layout resizes it.
 */
export function attachImageScaleBar(image, element, pixelSizeNm, widthPx) {
  const update = () => drawScaleBar(element, image.clientWidth && pixelSizeNm ? (pixelSizeNm * widthPx()) / image.clientWidth : NaN);
  new ResizeObserver(update).observe(image);
  return update;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

export function jsonScript(id) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : null;
}
