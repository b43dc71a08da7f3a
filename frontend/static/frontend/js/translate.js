// "Translate this mosaic": start a translation with the chosen model, follow its progress, link to the viewer.
import { api, el, showErrors } from "./common.js";
import { progressText, watchJob } from "./jobs.js";

const $ = (id) => document.getElementById(id);
const form = $("translate-form");

form?.addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { mosaic: Number(form.elements.mosaic.value), model: Number(form.elements.model.value) };
  $("translate").disabled = true;
  $("translate-viewer").hidden = true;
  try {
    const t = await api("/api/translations/", { method: "POST", body });
    $("translate-progress").hidden = false;
    $("translate-status").textContent = "Queued…";
    watchJob("translations", t.id, `/api/translations/${t.id}/`, {
      onEvent: (ev) => {
        if (ev.type !== "job.progress") return;
        $("translate-progress").value = ev.progress || 0;
        $("translate-status").textContent = progressText(ev);
      },
      onUpdate: (obj) => {
        $("translate-progress").value = obj.progress || 0;
        $("translate-status").textContent = obj.status === "failed" ? `Translation failed: ${obj.failure_reason}` : `${obj.status} · ${progressText(obj)}`;
        if (obj.status === "succeeded") {
          $("translate-status").textContent = `Translation ${obj.id} is ready.`;
          $("translate-viewer").href = `/viewer/?mosaic=${obj.mosaic}&translation=${obj.id}`;
          $("translate-viewer").hidden = false;
          listTranslation(obj, form.elements.model.selectedOptions[0]?.textContent || `model ${obj.model}`);
        }
        if (["succeeded", "failed", "cancelled"].includes(obj.status)) $("translate").disabled = false;
      },
    });
  } catch (err) { showErrors(form, err); $("translate").disabled = false; }
});

// The list the page shows after a reload too (newest first), so a finished translation stays within reach.
function listTranslation(t, modelName) {
  const list = $("translations");
  if (!list || list.querySelector(`[data-translation="${t.id}"]`)) return;
  list.prepend(el("li", { "data-translation": String(t.id) }, `Translation ${t.id} of mosaic ${t.mosaic} with ${modelName}: `,
    el("span", { class: "status status-succeeded", text: "succeeded" }), " ",
    el("a", { href: `/viewer/?mosaic=${t.mosaic}&translation=${t.id}`, text: "open in the viewer" })));
  $("translations-title").hidden = false;
}
