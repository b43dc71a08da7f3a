// "Add a sample": create it in this project, then open its page (where scans are planned). Field errors
// appear beside their inputs.
import { api, showErrors, clearErrors, formValues } from "./common.js";

const form = document.getElementById("sample-form");
form?.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const submit = form.querySelector("button[type=submit]");
  submit.disabled = true;
  try {
    const sample = await api("/api/samples/", { method: "POST", body: formValues(form) });
    location.href = `/samples/${sample.id}/`;
  } catch (err) {
    showErrors(form, err);
    submit.disabled = false;
  }
});
