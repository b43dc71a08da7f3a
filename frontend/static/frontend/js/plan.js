// "Plan a scan": create the scan, start it, then open its monitor. Field errors appear beside their inputs.
import { api, showErrors, clearErrors, formValues } from "./common.js";

const form = document.getElementById("plan-form");
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
