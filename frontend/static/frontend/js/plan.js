// "Plan a scan": create the scan, start it, then open its monitor. Field errors appear beside their inputs.
import { api, showErrors, clearErrors, formValues, formatLength } from "./common.js";

const form = document.getElementById("plan-form");

// The grid the numbers give, checked by the server as creating the scan would check them (the instrument's
// field of view sets the step), so a plan of one frame or ten thousand shows before it is made.
const preview = document.getElementById("plan-preview");
let previewTimer, previewAbort;
async function showPreview() {
  previewAbort?.abort();
  previewAbort = new AbortController();
  const values = formValues(form); delete values.start_now;
  try {
    const grid = await api("/api/scans/preview/", { method: "POST", body: values, signal: previewAbort.signal });
    const planes = grid.z_planes > 1
      ? `, ${grid.z_planes} planes each over ${formatLength(grid.z_span_nm)} of focus travel` : "";
    preview.textContent = `${grid.rows} × ${grid.cols} grid: ${grid.frames} frame${grid.frames === 1 ? "" : "s"}`
      + `${planes}, ${formatLength(grid.step_nm)} apart.`;
  } catch (err) {
    if (err.name === "AbortError") return;
    const first = (err.body?.errors || [])[0];
    const control = first?.field && form.querySelector(`[name="${CSS.escape(first.field)}"]`);
    const label = control?.labels?.[0]?.textContent || first?.field;
    preview.textContent = first ? `Not yet a plan: ${label ? `${label}: ` : ""}${first.message}` : "";
  }
}
if (form && preview) {
  form.addEventListener("input", () => { clearTimeout(previewTimer); previewTimer = setTimeout(showPreview, 250); });
  showPreview();
}

if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    const values = formValues(form);
    const startNow = values.start_now; delete values.start_now;
    try {
      const scan = await api("/api/scans/", { method: "POST", body: values });
      if (startNow) {
        try { await api(`/api/scans/${scan.id}/start/`, { method: "POST" }); } catch (err) {
          showErrors(form, err);  // the scan exists: say why it did not start, then show it anyway
          setTimeout(() => { location.href = `/scans/${scan.id}/`; }, 2500);
          return;
        }
      }
      location.href = `/scans/${scan.id}/`;
    } catch (err) {
      showErrors(form, err);
      submit.disabled = false;
    }
  });
}
