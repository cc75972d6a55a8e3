// restyle studio: upload -> garment mask (tune, correct by hand) -> style -> generate with progress ->
// gallery and history. Talks only to the public /v1 API (plus /ping for readiness).

import { api, ApiError, base64ToBlob, blobToBase64, fetchBlob, followJob, getKey, ping, setKey } from "./api.js";
import * as form from "./form.js";
import { addHistory, clearHistory, clearResults, initCompare, renderHistory, showResults, thumbnail } from "./gallery.js";
import { MaskEditor } from "./mask.js";

const $ = (id) => document.getElementById(id);
const UPLOAD_SHARE = 0.3; // of the server's body limit for the photo (base64 adds a third, the mask rides along)
const PROMPT_HINT = "Choose a garment type or write what to wear";
const DECODABLE = ["image/png", "image/jpeg", "image/webp"];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const state = {
  ready: false,
  vocabulary: false,
  limits: { max_body_bytes: 6 * 1024 * 1024, max_pixels: 16e6, size: [64, 2048] },
  photo: null, // {blob, b64, url, width, height}
  photoSeq: 0, // bumped on every photo change: late answers about an older photo are dropped
  segmented: false,
  confidence: undefined,
  previewMask: false,
  job: null, // {id, abort, cancelRequested}
  promptEdited: false,
  promptSeq: 0,
};

const editor = new MaskEditor({
  stage: $("stage"), photoCanvas: $("photo-canvas"), maskCanvas: $("mask-canvas"), cursor: $("cursor"),
  onChange: () => showCoverage(),
});

// --- start ---------------------------------------------------------------------------------------------
async function start() {
  wire();
  initCompare();
  renderHistory(reloadEntry);
  await loadVocabulary();
  await waitReady();
}

async function loadVocabulary() {
  try {
    form.fillVocabulary(await api("/v1/vocabulary"));
    state.vocabulary = true;
  } catch (err) {
    handleError("style-error", err);
  }
}

async function waitReady() {
  for (let attempt = 0; ; attempt++) {
    const { code, body } = await ping();
    if (code === 200 && (await loadModels())) break;
    if (code === 200 && state.needsKey) return; // the key form's submit calls waitReady again
    if (body.status === "failed") return setStatus(`The models failed to load: ${body.error}`, "bad");
    if (code !== 200) setStatus(code === 0 ? "The server does not answer; retrying…" : `Starting: ${body.phase || "loading"}…`);
    await sleep(Math.min(1000 + attempt * 250, 4000));
  }
  updateButtons();
}

/** GET /v1/models and /v1/styles; true when the studio can work. */
async function loadModels() {
  try {
    const models = await api("/v1/models");
    state.limits = { ...state.limits, ...models.limits };
    form.applyLimits(state.limits);
    if (models.backend) form.applyBackend(models.backend);
    showBackend(models);
    $("preview-banner").hidden = !models.preview;
    const where = `${models.device}, ${models.native_size} px`;
    setStatus(models.preview ? `Ready: PREVIEW MODE, tiny random models (${where})` : `Ready: ${models.inpainter} (${where})`, "ok");
  } catch (err) {
    state.needsKey = err instanceof ApiError && err.status === 401;
    handleError("generate-error", err);
    return false;
  }
  try {
    form.fillStyles((await api("/v1/styles")).styles);
  } catch (err) {
    form.fillStyles([]); // no picker is better than no studio
    handleError("style-error", err);
  }
  form.clearError("generate-error");
  state.ready = true;
  $("server-status").dataset.ready = "true";
  return true;
}

/** Which model families run, their licence and mode: a user must know a non-commercial model is loaded. */
function showBackend(models) {
  const b = models.backend;
  const info = $("backend-info");
  if (!b) return;
  const seg = models.segmenter_backend ? ` · masks: ${models.segmenter_backend.backend}` : "";
  const mode = b.mode === "instruction" ? " · instruction editor: the prompt is an edit" : "";
  const licence = b.commercial_use ? b.license : `${b.license}: not for commercial use`;
  info.textContent = `Inpainter: ${b.family} (${licence})${mode}${seg}`;
  info.className = b.commercial_use ? "status" : "status bad";
  info.hidden = false;
}

function setStatus(text, kind = "") {
  const status = $("server-status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

function updateButtons() {
  const busy = state.job !== null;
  $("find").disabled = !state.ready;
  $("generate").disabled = !state.ready || busy;
  $("cancel").hidden = !busy;
  $("cancel").disabled = Boolean(state.job?.cancelRequested);
  $("file").disabled = busy; // the photo stays put while a job runs on it
}

// --- errors --------------------------------------------------------------------------------------------
function handleError(boxId, err) {
  if (err?.name === "AbortError") return;
  if (err instanceof ApiError && err.status === 401) {
    openKeyForm();
    err.message = `${err.message} Enter the server's API key above.`;
  }
  if (!(err instanceof ApiError)) console.error(err);
  form.showError(boxId, err);
}

function openKeyForm() {
  $("key-form").hidden = false;
  $("key-button").setAttribute("aria-expanded", "true");
  $("api-key").value = getKey();
  $("api-key").focus();
}

function busyRefusal(boxId) {
  form.showError(boxId, { message: "A job is running on this photo: wait for it or cancel it first." });
}

// --- photo ---------------------------------------------------------------------------------------------
async function usePhoto(file) {
  form.clearError("photo-error");
  if (!file) return;
  if (state.job) return busyRefusal("photo-error");
  const seq = newPhotoSeq();
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    const message = `image: ${file.name || "this file"} could not be read as an image; use PNG, JPEG or WebP`;
    return form.showError("photo-error", { field: "image", message });
  }
  try {
    const prepared = await prepareUpload(file, bitmap);
    if (prepared.bitmap !== bitmap) bitmap.close();
    if (seq !== state.photoSeq) return prepared.bitmap.close(); // another photo came meanwhile
    setPhoto(prepared, prepared.bitmap);
    const scaled = prepared.scaledFrom ? ` (scaled down from ${prepared.scaledFrom[0]} × ${prepared.scaledFrom[1]})` : "";
    const size = `${(prepared.blob.size / 1024).toFixed(0)} KB to upload`;
    $("photo-info").textContent = `${file.name || "Photo"}: ${prepared.width} × ${prepared.height} px${scaled}, ${size}.`;
    clearResults();
    if ($("garment").value.trim() && state.ready) await requestSegment();
  } catch (err) {
    handleError("photo-error", err);
  }
}

function newPhotoSeq() {
  clearTimeout(resegmentTimer);
  segmentDirty = false;
  return ++state.photoSeq;
}

function setPhoto(photo, bitmap) {
  if (state.photo) URL.revokeObjectURL(state.photo.url);
  state.photo = { blob: photo.blob, b64: photo.b64, width: bitmap.width, height: bitmap.height, url: URL.createObjectURL(photo.blob) };
  editor.load(bitmap);
  bitmap.close();
  state.segmented = false;
  state.confidence = undefined;
  $("editor").hidden = false;
}

/** The photo as it will be uploaded: the file itself when small enough, else scaled and re-encoded. */
async function prepareUpload(file, bitmap) {
  const budget = state.limits.max_body_bytes * UPLOAD_SHARE;
  const maxSide = state.limits.size[1];
  const { width, height } = bitmap;
  const fits = Math.max(width, height) <= maxSide && width * height <= state.limits.max_pixels;
  if (fits && file.size <= budget && DECODABLE.includes(file.type)) {
    return { blob: file, b64: await blobToBase64(file), bitmap, width, height, scaledFrom: null };
  }
  let scale = Math.min(1, maxSide / Math.max(width, height), Math.sqrt(state.limits.max_pixels / (width * height)));
  for (let attempt = 0; attempt < 6; attempt++, scale *= 0.8) {
    const w = Math.max(1, Math.floor(width * scale));
    const h = Math.max(1, Math.floor(height * scale));
    const canvas = new OffscreenCanvas(w, h);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; // JPEG has no alpha: transparent areas become white, as the server does
    ctx.fillRect(0, 0, w, h);
    ctx.drawImage(bitmap, 0, 0, w, h);
    const blob = await canvas.convertToBlob({ type: "image/jpeg", quality: 0.92 });
    if (blob.size <= budget) {
      const scaledFrom = w === width && h === height ? null : [width, height];
      return { blob, b64: await blobToBase64(blob), bitmap: await createImageBitmap(blob), width: w, height: h, scaledFrom };
    }
  }
  throw new ApiError(0, { field: "image", message: "image: could not be made small enough for the server's upload limit" });
}

// --- mask ----------------------------------------------------------------------------------------------
// One segment request at a time: a change while one runs marks the mask dirty, and one more request with
// the latest values follows (sliders must not flood the server's single queue).
let segmentRun = null;
let segmentDirty = false;
let resegmentTimer = null;

function requestSegment() {
  clearTimeout(resegmentTimer);
  if (segmentRun) {
    segmentDirty = true;
    return segmentRun;
  }
  segmentRun = (async () => {
    do {
      segmentDirty = false;
      await segmentOnce();
    } while (segmentDirty);
  })().finally(() => { segmentRun = null; });
  return segmentRun;
}

async function segmentOnce() {
  form.clearError("mask-error");
  const values = form.collect();
  if (!state.photo) return form.showError("photo-error", { field: "image", message: "image: choose a photo first" });
  if (!form.garmentPrompts(values.garment).length) {
    return form.showError("mask-error", { field: "garment", message: 'garment: say what to find, e.g. "the dress"' });
  }
  const seq = state.photoSeq;
  $("mask-info").textContent = "Finding the garment…";
  try {
    const res = await api("/v1/segment", { method: "POST", body: { image: state.photo.b64, ...form.segmentBody(values) } });
    const mask = await createImageBitmap(base64ToBlob(res.mask));
    if (seq !== state.photoSeq) return mask.close(); // the photo changed meanwhile
    editor.setBase(mask);
    mask.close();
    state.segmented = true;
    state.confidence = res.confidence;
    state.previewMask = Boolean(res.preview);
    showCoverage();
  } catch (err) {
    if (seq !== state.photoSeq) return;
    showCoverage();
    handleError("mask-error", err);
  }
}

function resegmentSoon() {
  if (!state.segmented) return;
  clearTimeout(resegmentTimer);
  resegmentTimer = setTimeout(requestSegment, 250);
}

/** Let a pending or running segmentation finish, so a job gets the mask the user sees. */
async function settleMask() {
  if (resegmentTimer !== null && state.segmented) {
    clearTimeout(resegmentTimer);
    resegmentTimer = null;
    await requestSegment();
  }
  if (segmentRun) await segmentRun;
}

function showCoverage() {
  if (!editor.loaded) return;
  const share = editor.coverage() * 100;
  const n = editor.strokes.length;
  const edits = n ? `, ${n} hand edit${n > 1 ? "s" : ""}` : "";
  const conf = state.segmented && state.confidence !== undefined ? `, segmenter confidence ${state.confidence.toFixed(2)}` : "";
  const placeholder = state.segmented && state.previewMask ? " Preview mask: a placeholder shape, not a reading of the photo." : "";
  $("mask-info").textContent = `Mask: ${share.toFixed(1)}% of the photo will be repainted${edits}${conf}.${placeholder}`;
  $("mask-info").dataset.coverage = share.toFixed(3);
}

async function downloadMask() {
  if (!editor.loaded) return;
  const url = URL.createObjectURL(await editor.toBlob());
  const link = Object.assign(document.createElement("a"), { href: url, download: "restyle-mask.png" });
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// --- prompt --------------------------------------------------------------------------------------------
let promptTimer = null;
function rebuildPromptSoon() {
  if (state.promptEdited) return;
  clearTimeout(promptTimer);
  promptTimer = setTimeout(rebuildPrompt, 200);
}

async function rebuildPrompt() {
  form.clearError("style-error");
  const seq = ++state.promptSeq;
  const current = () => seq === state.promptSeq && !state.promptEdited; // else the answer is stale
  const body = form.promptBody(form.collect());
  $("prompt").placeholder = PROMPT_HINT;
  if (Object.values(body).every((v) => !v)) {
    if (current()) $("prompt").value = "";
    return;
  }
  try {
    const res = await api("/v1/prompt", { method: "POST", body });
    if (current()) $("prompt").value = res.prompt;
  } catch (err) {
    if (!current()) return;
    if (err instanceof ApiError && err.status === 422 && err.field === "prompt") {
      // not enough chosen yet (a colour alone): the API's reason becomes the hint, not an error
      $("prompt").value = "";
      $("prompt").placeholder = `${PROMPT_HINT} (${err.message})`;
    } else {
      handleError("style-error", err);
    }
  }
}

function setPromptEdited(edited) {
  state.promptEdited = edited;
  $("prompt-edited").hidden = !edited;
  $("rebuild").hidden = !edited;
}

// --- generate ------------------------------------------------------------------------------------------
async function generate() {
  for (const box of ["generate-error", "mask-error", "photo-error"]) form.clearError(box);
  if (state.job) return;
  if (!state.photo) return form.showError("photo-error", { field: "image", message: "image: choose a photo first" });
  const job = { id: null, abort: new AbortController(), cancelRequested: false };
  state.job = job;
  updateButtons();
  $("cancel").focus(); // Generate is disabled under the keyboard user's focus: hand it to Cancel
  const photo = state.photo;
  try {
    setProgress(0, 1, "Sending…");
    await settleMask();
    if (editor.coverage() === 0) {
      setProgress(0, 1, "");
      return form.showError("mask-error", { field: "mask", message: "mask: empty; find the garment or paint over it first" });
    }
    if (!$("seed-lock").checked) $("seed").value = form.randomSeed();
    const values = form.collect();
    const mask = await blobToBase64(await editor.toBlob());
    const body = { image: photo.b64, mask, ...form.jobBody(values) };
    const created = await api("/v1/jobs", { method: "POST", body, signal: job.abort.signal });
    job.id = created.id;
    if (job.cancelRequested) await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" });
    const final = await followJob(created.id, (_, status) => onJobEvent(status), job.abort.signal);
    await finish(final, values, photo);
  } catch (err) {
    setProgress(0, 1, "");
    handleError("generate-error", err);
  } finally {
    state.job = null;
    updateButtons();
    if (document.activeElement === document.body || document.activeElement === $("cancel")) $("generate").focus();
  }
}

function onJobEvent(status) {
  if (state.job?.cancelRequested) return; // keep saying "Cancelling…"
  if (status.state === "queued") {
    setProgress(0, 1, status.position ? `Queued: ${status.position} ahead` : "Queued");
  } else if (status.state === "running") {
    const total = status.total || 1;
    setProgress(status.step, total, status.total ? `Step ${status.step} / ${status.total}` : "Starting…");
  }
}

let lastAnnounced = "";
function setProgress(value, max, text) {
  const bar = $("progress");
  bar.max = max;
  bar.value = value;
  $("progress-text").textContent = text;
  // screen readers hear the start, each quarter and the end, not every step
  const quarter = max > 1 ? `${Math.floor((4 * value) / max) * 25}%` : text;
  const say = text.startsWith("Step") ? `Progress ${quarter}` : text;
  if (say !== lastAnnounced) $("progress-announce").textContent = lastAnnounced = say;
}

async function finish(status, values, photo) {
  if (status.state === "cancelled") {
    const where = status.step ? `at step ${status.step} / ${status.total}` : "before it started";
    setProgress(status.step, status.total || 1, `Cancelled ${where}`);
    return;
  }
  if (status.state === "failed") {
    setProgress(0, 1, "Failed");
    throw new ApiError(status.error?.status || 500, status.error || {});
  }
  setProgress(status.total, status.total || 1, "Fetching the images…");
  const { items } = await showJob(status.id, status.result, photo.url);
  setProgress(status.total, status.total || 1, `Done in ${status.result.elapsed_s.toFixed(1)} s`);
  addHistory({
    id: status.id, time: Date.now(), params: values, prompt: status.result.prompt, seeds: status.result.seeds,
    thumb: items[0] ? await thumbnail(items[0].blob) : null,
  });
  renderHistory(reloadEntry);
}

async function showJob(id, result, originalUrl) {
  if (result.images.some((image) => !image.url)) {
    throw new ApiError(0, { message: "the server keeps no result files (started without an output folder)" });
  }
  const items = [];
  for (const [i, image] of result.images.entries()) {
    const blob = await fetchBlob(image.url);
    const delta = image.metadata?.color_delta_e;  // the variant's colour against the requested one
    const label = delta != null ? `seed ${image.seed} · ΔE ${delta.toFixed(1)}${image.metadata.color_match ? "" : " (off colour)"}` : undefined;
    items.push({ url: URL.createObjectURL(blob), blob, seed: image.seed, label, name: `restyle-${id.slice(0, 8)}-${i}-seed${image.seed}.png` });
  }
  const maskBlob = result.mask_url ? await fetchBlob(result.mask_url) : null;
  const mask = maskBlob ? { url: URL.createObjectURL(maskBlob), name: `restyle-${id.slice(0, 8)}-mask.png`, blob: maskBlob } : null;
  const preview = result.preview ? " · preview mode (tiny random models)" : "";
  showResults({ original: { url: originalUrl }, items, mask, meta: `${result.prompt} · seeds ${result.seeds.join(", ")}${preview}` });
  return { items, mask };
}

async function cancel() {
  const job = state.job;
  if (!job || job.cancelRequested) return;
  job.cancelRequested = true;
  updateButtons();
  setProgress($("progress").value, $("progress").max, "Cancelling…");
  if (!job.id) return; // generate() cancels it as soon as the server names it
  try {
    await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" });
  } catch (err) {
    handleError("generate-error", err);
  }
}

// --- history -------------------------------------------------------------------------------------------
async function reloadEntry(entry) {
  form.clearError("history-error");
  if (state.job) return busyRefusal("history-error");
  const seq = newPhotoSeq();
  form.restore(entry.params || {});
  $("seed-lock").checked = true; // the same seed again reproduces the result
  setPromptEdited(true); // the prompt comes back as it ran
  $("prompt").value = entry.params?.prompt || entry.prompt;
  try {
    const status = await api(`/v1/jobs/${encodeURIComponent(entry.id)}`);
    if (status.state !== "done" || !status.result) {
      throw new ApiError(404, { message: `job ${entry.id} did not finish (${status.state})` });
    }
    const input = await fetchBlob(`/v1/jobs/${encodeURIComponent(entry.id)}/files/input.png`);
    const bitmap = await createImageBitmap(input);
    if (seq !== state.photoSeq) return bitmap.close();
    setPhoto({ blob: input, b64: await blobToBase64(input) }, bitmap);
    $("photo-info").textContent = `Photo ${state.photo.width} × ${state.photo.height} px, from job ${entry.id.slice(0, 8)}.`;
    const { mask } = await showJob(entry.id, status.result, state.photo.url);
    if (mask && seq === state.photoSeq) {
      const maskBitmap = await createImageBitmap(mask.blob);
      editor.setBase(maskBitmap); // the job's own mask; Find garment makes a new one
      maskBitmap.close();
    }
  } catch (err) {
    const gone = err instanceof ApiError && err.status === 404;
    const message = `This result is no longer on the server (job ${entry.id}); its settings were restored.`;
    handleError("history-error", gone ? new ApiError(404, { message }) : err);
  }
}

// --- wiring --------------------------------------------------------------------------------------------
function wireDrop() {
  // a photo dropped anywhere must not make the browser navigate away from the studio
  for (const name of ["dragover", "drop"]) document.addEventListener(name, (e) => e.preventDefault());
  const zone = $("photo-panel");
  const over = (on) => $("dropzone").classList.toggle("over", on);
  zone.addEventListener("dragover", () => over(true));
  zone.addEventListener("dragleave", (e) => { if (!zone.contains(e.relatedTarget)) over(false); });
  zone.addEventListener("drop", (e) => {
    over(false);
    usePhoto(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (e) => {
    usePhoto(e.target.files[0]);
    e.target.value = ""; // choosing the same file again is a change too
  });
}

function wireMask() {
  $("mask-form").addEventListener("submit", (e) => { e.preventDefault(); requestSegment(); });
  for (const id of ["threshold", "grow", "feather"]) {
    $(id).addEventListener("input", () => { form.showValue(id); resegmentSoon(); });
  }
  for (const box of document.querySelectorAll("input[name=protect]")) box.addEventListener("change", resegmentSoon);
  $("tool-brush").addEventListener("change", () => editor.setTool("brush"));
  $("tool-eraser").addEventListener("change", () => editor.setTool("eraser"));
  $("stage").addEventListener("toolchange", (e) => { $(`tool-${e.detail}`).checked = true; });
  $("brush-size").addEventListener("input", (e) => editor.setSize(Number(e.target.value)));
  $("stage").addEventListener("sizechange", (e) => { $("brush-size").value = e.detail; });
  $("undo").addEventListener("click", () => editor.undo());
  $("reset-mask").addEventListener("click", () => editor.reset());
  $("download-mask").addEventListener("click", downloadMask);
  $("show-mask").addEventListener("change", (e) => $("mask-canvas").classList.toggle("off", !e.target.checked));
}

function wireStyle() {
  $("style-form").addEventListener("submit", (e) => e.preventDefault());
  $("style-form").addEventListener("change", (e) => {
    if (!["prompt", "negative_prompt", "style", "style_scale"].includes(e.target.id)) rebuildPromptSoon();
  });
  $("details").addEventListener("input", rebuildPromptSoon);
  $("prompt").addEventListener("input", () => setPromptEdited(true));
  $("rebuild").addEventListener("click", () => { setPromptEdited(false); rebuildPrompt(); });
  $("style_scale").addEventListener("input", () => form.showValue("style_scale"));
}

function wireKey() {
  $("key-button").addEventListener("click", () => {
    if ($("key-form").hidden) return openKeyForm();
    $("key-form").hidden = true;
    $("key-button").setAttribute("aria-expanded", "false");
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setKey($("api-key").value.trim());
    $("key-form").hidden = true;
    $("key-button").setAttribute("aria-expanded", "false");
    for (const box of ["generate-error", "mask-error", "style-error", "history-error"]) form.clearError(box);
    if (!state.vocabulary) loadVocabulary();
    if (!state.ready) waitReady();
  });
}

function wire() {
  wireDrop();
  wireMask();
  wireStyle();
  wireKey();
  $("generate-form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  $("cancel").addEventListener("click", cancel);
  $("seed-new").addEventListener("click", () => { $("seed").value = form.randomSeed(); });
  $("clear-history").addEventListener("click", () => { clearHistory(); renderHistory(reloadEntry); });
  // an edited control loses its error mark
  document.addEventListener("input", (e) => {
    if (e.target.getAttribute?.("aria-invalid") === "true") form.clearError(e.target.getAttribute("aria-errormessage"));
  });
  updateButtons();
}

start();
