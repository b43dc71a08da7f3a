// SEM upload: drag-and-drop or the file input, an XHR upload with a progress bar, the pixel size the file gave
// (or a field to give it when the API says the file has none), then a wait for the deep-zoom pyramid.
import { ApiError, api, clearErrors, csrfToken, showErrors } from "./common.js";

const $ = (id) => document.getElementById(id);
const form = $("sem-upload");
const drop = $("dropzone");
let chosen = null;

function choose(file) {
  chosen = file || null;
  $("file-name").textContent = chosen ? `${chosen.name} (${(chosen.size / 1048576).toFixed(2)} MB)` : "";
}

/** POST multipart with upload progress; resolves with the JSON body, rejects with an ApiError. */
function upload(data) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/sem-images/");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      const pct = Math.round((100 * e.loaded) / e.total);
      $("upload-progress").value = pct;
      $("upload-text").textContent = pct < 100 ? `Uploading… ${pct}%` : "Reading the image…";
    };
    xhr.onload = () => {
      let body = null;
      try { body = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { body = { detail: xhr.responseText.slice(0, 200) }; }
      if (xhr.status === 413 && !(body && body.errors)) body = { errors: [{ field: "file", message: (body && body.detail) || "The file is too large." }] };
      if (xhr.status >= 200 && xhr.status < 300) resolve(body); else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, { detail: "The upload failed: no connection to the server." }));
    xhr.send(data);
  });
}

async function waitForPyramid(sem) {
  for (let i = 0; i < 600 && !sem.dzi_url; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    sem = await api(`/api/sem-images/${sem.id}/`);
  }
  $("sem-pyramid").textContent = sem.dzi_url ? "ready" : "not built yet (it is still queued)";
  const link = $("pair-link");
  link.href = `/sem/${sem.id}/`;
  link.hidden = false;
}

function showUploaded(sem) {
  $("uploaded").hidden = false;
  $("sem-name").textContent = sem.name;
  $("sem-size").textContent = `${sem.width} × ${sem.height} px`;
  const source = sem.pixel_size_source === "user" ? "given by you" : "read from the file";
  $("sem-pixel-size").textContent = `${Number(sem.pixel_size_nm).toPrecision(4)} nm/px (${source})`;
  $("sem-data-bar").textContent = sem.data_bar_rows ? `data bar cropped: ${sem.data_bar_rows} rows` : "none found";
  waitForPyramid(sem).catch((err) => { $("sem-pyramid").textContent = err.message; });
}

if (form) {
  // Only the chosen project's samples are offered.
  const filterSamples = () => {
    for (const opt of $("sample").options) if (opt.dataset.project) opt.hidden = opt.dataset.project !== $("project").value;
    if ($("sample").selectedOptions[0]?.hidden) $("sample").value = "";
  };
  $("project").addEventListener("change", filterSamples);
  filterSamples();
  $("file").addEventListener("change", () => choose($("file").files[0]));
  for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files.length) choose(e.dataTransfer.files[0]); });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    if (!chosen) { showErrors(form, new ApiError(400, { errors: [{ field: "file", message: "Choose an image file first." }] })); return; }
    const data = new FormData();
    data.append("project", $("project").value);
    if ($("sample").value) data.append("sample", $("sample").value);
    if ($("name").value.trim()) data.append("name", $("name").value.trim());
    if (!$("pixel-size-row").hidden && $("pixel_size_nm").value) data.append("pixel_size_nm", $("pixel_size_nm").value);
    data.append("file", chosen);
    $("upload-button").disabled = true;
    $("upload-progress").hidden = false;
    $("upload-progress").value = 0;
    try {
      const sem = await upload(data);
      $("upload-text").textContent = "Uploaded.";
      showUploaded(sem);
    } catch (err) {
      $("upload-text").textContent = "";
      $("upload-progress").hidden = true;
      // No pixel size in the file: ask for it, then the user submits again.
      if (err.body && (err.body.errors || []).some((x) => x.field === "pixel_size_nm")) $("pixel-size-row").hidden = false;
      showErrors(form, err);
      if (!$("pixel-size-row").hidden) $("pixel_size_nm").focus();
    } finally {
      $("upload-button").disabled = false;
    }
  });
}
