// A line plot of training losses on a <canvas>: axes with round ticks, one coloured series per loss, a legend, and a
// log scale to read the late steps when the first ones start two orders of magnitude higher.
// No dependencies; redraws from the full history each time (histories are capped at a few thousand points).

const COLOURS = { g_total: "#1f6feb", g_gan: "#8250df", cycle: "#1a7f37", identity: "#9a6700", contextual: "#bf3989",
                  d_a: "#cf222e", d_b: "#fb8f44" };
const LABELS = { g_total: "G total", g_gan: "G adversarial", cycle: "cycle", identity: "identity", contextual: "contextual",
                 d_a: "D (SSUM)", d_b: "D (SEM)" };

/** Round tick values covering [lo, hi]: about `count` of them at 1, 2 or 5 × 10^k spacing. */
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** Ticks of a log axis over [lo, hi] (both > 0): the powers of ten, with 2× and 5× when they are too few. */
export function logTicks(lo, hi) {
  const out = [];
  for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) {
    for (const m of hi / lo < 100 ? [1, 2, 5] : [1]) {
      const v = Number((m * 10 ** k).toPrecision(12));
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v);
    }
  }
  return out;
}

export class LossPlot {
  constructor(canvas, { keys = Object.keys(COLOURS) } = {}) {
    this.canvas = canvas; this.keys = keys; this.history = []; this.logScale = false;
  }

  set(history) { this.history = [...history]; this.draw(); }

  add(entry) {
    if (this.history.length && entry.step <= this.history[this.history.length - 1].step) return;  // replayed event
    this.history.push(entry); this.draw();
  }

  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 600, h = c.clientHeight || 260;
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const series = this.keys.filter((k) => this.history.some((e) => Number.isFinite(e[k])));
    const legendRows = Math.ceil(series.length / Math.max(1, Math.floor((w - 60) / 110)));
    const pad = { l: 48, r: 12, t: 10 + 16 * legendRows, b: 34 };
    const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#647084"; g.strokeStyle = "#dde2ea"; g.lineWidth = 1;
    if (!this.history.length || !series.length) {
      g.strokeRect(pad.l, pad.t, pw, ph);
      g.fillText("Waiting for the first step…", pad.l + 8, pad.t + 18);
      c.dataset.points = "0";
      return;
    }
    const steps = this.history.map((e) => e.step);
    let x0 = Math.min(...steps), x1 = Math.max(...steps);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    // A log axis shows what is > 0 (a loss of exactly 0 has no place on it); a linear one starts at 0.
    const log = this.logScale;
    const shown = (v) => Number.isFinite(v) && (!log || v > 0);
    let y0 = Infinity, y1 = -Infinity;
    for (const e of this.history) for (const k of series) if (shown(e[k])) { y0 = Math.min(y0, e[k]); y1 = Math.max(y1, e[k]); }
    if (!log) y0 = Math.min(0, y0);
    if (!(y1 > y0)) [y0, y1] = log ? [(y0 || 1) / 2, (y1 || 1) * 2] : [y0, y0 + 1];
    const t = log ? Math.log10 : (v) => v;
    const X = (v) => pad.l + ((v - x0) / (x1 - x0)) * pw;
    const Y = (v) => pad.t + (1 - (t(v) - t(y0)) / (t(y1) - t(y0))) * ph;
    // Grid and ticks.
    g.textAlign = "right"; g.textBaseline = "middle";
    for (const v of log ? logTicks(y0, y1) : ticks(y0, y1, 5)) {
      g.strokeStyle = "#eef0f3"; g.beginPath(); g.moveTo(pad.l, Y(v)); g.lineTo(pad.l + pw, Y(v)); g.stroke();
      g.fillText(String(v), pad.l - 6, Y(v));
    }
    g.textAlign = "center"; g.textBaseline = "top";
    for (const v of ticks(x0, x1, Math.max(2, Math.floor(pw / 80))).filter((t) => Number.isInteger(t))) {
      g.strokeStyle = "#dde2ea"; g.beginPath(); g.moveTo(X(v), pad.t + ph); g.lineTo(X(v), pad.t + ph + 4); g.stroke();
      g.fillText(String(v), X(v), pad.t + ph + 6);
    }
    g.strokeStyle = "#9aa4b2"; g.strokeRect(pad.l, pad.t, pw, ph);
    g.fillText("step", pad.l + pw / 2, pad.t + ph + 20);
    g.save(); g.translate(12, pad.t + ph / 2); g.rotate(-Math.PI / 2); g.textBaseline = "middle"; g.fillText("loss", 0, 0); g.restore();
    // Series.
    for (const k of series) {
      g.strokeStyle = COLOURS[k] || "#333"; g.lineWidth = k === "g_total" ? 2 : 1.3;
      g.beginPath();
      let started = false;
      for (const e of this.history) {
        if (!shown(e[k])) continue;
        started ? g.lineTo(X(e.step), Y(e[k])) : g.moveTo(X(e.step), Y(e[k]));
        started = true;
      }
      g.stroke();
      if (this.history.length === 1 && shown(this.history[0][k])) {
        const e = this.history[0]; g.fillStyle = COLOURS[k]; g.fillRect(X(e.step) - 2, Y(e[k]) - 2, 4, 4);
      }
    }
    // Legend.
    g.textAlign = "left"; g.textBaseline = "middle";
    let lx = pad.l, ly = 10;
    for (const k of series) {
      if (lx + 110 > w) { lx = pad.l; ly += 16; }
      g.fillStyle = COLOURS[k] || "#333"; g.fillRect(lx, ly - 2, 14, 4);
      g.fillStyle = "#1c2430"; g.fillText(LABELS[k] || k, lx + 18, ly);
      lx += 110;
    }
    c.dataset.points = String(this.history.length);
    c.dataset.scale = log ? "log" : "linear";
    c.dataset.lastStep = String(Math.max(...steps));
  }
}
