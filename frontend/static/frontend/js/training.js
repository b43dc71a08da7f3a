// Start a training run: the chosen registrations, one pair set of each, and the main settings; the API's field errors
// go beside the fields.
import { api, clearErrors, showErrors } from "./common.js";

const form = document.getElementById("training-form");
const SETTINGS = ["steps", "crop_px", "batch_size", "blocks", "features", "learning_rate", "lambda_cycle", "lambda_contextual", "seed"];

if (form) {
  const project = form.querySelector("[name=project]");
  const filter = () => {
    for (const box of form.querySelectorAll("[name=registration]")) {
      const other = box.dataset.project !== project.value;
      box.closest(".registration-choice").hidden = other;
      if (other) box.checked = false;
    }
  };
  project.addEventListener("change", filter);
  filter();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const config = {};
    for (const name of SETTINGS) { const v = form.elements[name].value; if (v !== "") config[name] = Number(v); }
    const checked = [...form.querySelectorAll("[name=registration]:checked")];
    const body = {
      project: Number(project.value), name: form.elements.name.value.trim(), config,
      registrations: checked.map((b) => Number(b.value)),
      pair_sets: checked.map((b) => Number(form.querySelector(`[name=pair_set][data-registration="${b.value}"]`).value)),
    };
    // The settings' errors come back as "config.<name>" (or nested): point them at the inputs.
    const button = document.getElementById("start-training");
    button.disabled = true;
    try {
      const run = await api("/api/training-runs/", { method: "POST", body });
      location.assign(`/training/${run.id}/`);
    } catch (err) {
      for (const item of err.body?.errors || []) if (item.field && item.field.startsWith("config.")) item.field = item.field.slice(7);
      showErrors(form, err);
      button.disabled = false;
    }
  });
}
