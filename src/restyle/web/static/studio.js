// restyle studio: upload -> garment mask (tune, correct by hand) -> style -> generate with progress ->
// gallery and history. Talks only to the public /v1 API (plus /ping for readiness).

import { api, ApiError, base64ToBlob, blobToBase64, fetchBlob, followJob, ping, setKey, getKey } from "./api.js";
import * as form from "./form.js";
import { addHistory, clearHistory, clearResults, initCompare, renderHistory, showResults, thumbnail } from "./gallery.js";
import { MaskEditor } from "./mask.js";

const $ = (id) => document.getElementById(id);
const UPLOAD_SHARE = 0.3; // of the server's body limit for the photo (base64 adds a third, the mask rides along)
const PROMPT_HINT = "Choose a garment type or write what to wear";
const DECODABLE = ["image/png", "image/jpeg", "image/webp"];

const state = {
  ready: false,
  limits: { max_body_bytes: 6 * 1024 * 1024, max_pixels: 16e6, size: [64, 2048] },
  photo: null, // {b64, url, width, height}
  segmented: false,
  segmentSeq: 0,
  job: null, // {id, abort}
  promptEdited: false,
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
  const status = $("server-status");
  for (let attempt = 0; ; attempt++) {
    const { code, body } = await ping();
    if (code === 200) break;
    if (body.status === "failed") {
      setStatus(`The models failed to load: ${body.error}`, "bad");
      return;
    }
    setStatus(code === 0 ? "The server does not answer; retrying…" : `Starting: ${body.phase || "loading"}…`);
    await new Promise((r) => setTimeout(r, Math.min(1000 + attempt * 250, 4000)));
  }
  try {
    const models = await api("/v1/models");
    state.limits = { ...state.limits, ...models.limits };
    form.applyLimits(state.limits);
    $("preview-banner").hidden = !models.preview;
    const where = `${models.device}, ${models.native_size} px`;
    setStatus(models.preview ? `Ready: PREVIEW MODE, tiny random models (${where})` : `Ready: ${models.inpainter} (${where})`, "ok");
    form.fillStyles((await api("/v1/styles")).styles);
    state.ready = true;
    status.dataset.ready = "true";
  } catch (err) {
    handleError("generate-error", err);
  }
  updateButtons();
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

// --- photo ---------------------------------------------------------------------------------------------
async function usePhoto(file) {
  form.clearError("photo-error");
  if (!file) return;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    form.showError("photo-error", { field: "image", message: `image: ${file.name || "this file"} could not be read as an image; use PNG, JPEG or WebP` });
    return;
  }
  try {
    const prepared = await prepareUpload(file, bitmap);
    if (state.photo) URL.revokeObjectURL(state.photo.url);
    state.photo = { ...prepared, url: URL.createObjectURL(prepared.blob) };
    editor.load(prepared.bitmap);
    state.segmented = false;
    $("editor").hidden = false;
    $("dropzone").classList.add("compact");
    const scaled = prepared.scaledFrom ? ` (scaled down from ${prepared.scaledFrom[0]} × ${prepared.scaledFrom[1]})` : "";
    $("photo-info").textContent = `Photo ${prepared.width} × ${prepared.height} px${scaled}, ${(prepared.blob.size / 1024).toFixed(0)} KB to upload.`;
    clearResults();
    if ($("garment").value.trim() && state.ready) await segment();
  } catch (err) {
    handleError("photo-error", err);
  }
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
    const w = Math.max(1, Math.round(width * scale));
    const h = Math.max(1, Math.round(height * scale));
    const canvas = new OffscreenCanvas(w, h);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; // JPEG has no alpha: transparent areas become white, not black
    ctx.fillRect(0, 0, w, h);
    ctx.drawImage(bitmap, 0, 0, w, h);
    const blob = await canvas.convertToBlob({ type: "image/jpeg", quality: 0.92 });
    if (blob.size <= budget) {
      const scaledBitmap = await createImageBitmap(blob);
      const scaledFrom = w === width && h === height ? null : [width, height];
      return { blob, b64: await blobToBase64(blob), bitmap: scaledBitmap, width: w, height: h, scaledFrom };
    }
  }
  throw new ApiError(0, { field: "image", message: "image: could not be made small enough for the server's upload limit" });
}

// --- mask ----------------------------------------------------------------------------------------------
async function segment() {
  form.clearError("mask-error");
  const values = form.collect();
  if (!state.photo) return form.showError("photo-error", { field: "image", message: "image: choose a photo first" });
  if (!form.garmentPrompts(values.garment).length) {
    return form.showError("mask-error", { field: "garment", message: 'garment: say what to find, e.g. "the dress"' });
  }
  const seq = ++state.segmentSeq;
  $("mask-info").textContent = "Finding the garment…";
  try {
    const res = await api("/v1/segment", { method: "POST", body: { image: state.photo.b64, ...form.segmentBody(values) } });
    if (seq !== state.segmentSeq) return; // a newer request is on its way
    editor.setBase(await createImageBitmap(base64ToBlob(res.mask)));
    state.segmented = true;
    state.confidence = res.confidence;
    showCoverage();
  } catch (err) {
    if (seq === state.segmentSeq) {
      $("mask-info").textContent = "";
      handleError("mask-error", err);
    }
  }
}

let resegmentTimer = null;
function resegmentSoon() {
  if (!state.segmented) return;
  clearTimeout(resegmentTimer);
  resegmentTimer = setTimeout(segment, 250);
}

function showCoverage() {
  if (!editor.loaded) return;
  const share = editor.coverage() * 100;
  const edits = editor.strokes.length ? `, ${editor.strokes.length} hand edit${editor.strokes.length > 1 ? "s" : ""}` : "";
  const conf = state.segmented && state.confidence !== undefined ? `, segmenter confidence ${state.confidence.toFixed(2)}` : "";
  const text = `Mask: ${share.toFixed(1)}% of the photo will be repainted${edits}${conf}.`;
  $("mask-info").textContent = text;
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
  const body = form.promptBody(form.collect());
  const empty = Object.values(body).every((v) => !v);
  $("prompt").placeholder = PROMPT_HINT;
  if (empty) {
    $("prompt").value = "";
    return;
  }
  try {
    const res = await api("/v1/prompt", { method: "POST", body });
    if (!state.promptEdited) $("prompt").value = res.prompt;
  } catch (err) {
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
  if (!state.photo) return form.showError("photo-error", { field: "image", message: "image: choose a photo first" });
  if (editor.coverage() === 0) {
    return form.showError("mask-error", { field: "mask", message: "mask: empty; find the garment or paint over it first" });
  }
  if (!$("seed-lock").checked) $("seed").value = form.randomSeed();
  const values = form.collect();
  const abort = new AbortController();
  state.job = { id: null, abort };
  updateButtons();
  setProgress(0, 1, "Sending…");
  try {
    const mask = await blobToBase64(await editor.toBlob());
    const body = { image: state.photo.b64, mask, ...form.jobBody(values) };
    const created = await api("/v1/jobs", { method: "POST", body, signal: abort.signal });
    state.job.id = created.id;
    const final = await followJob(created.id, (_, status) => onJobEvent(status), abort.signal);
    await finish(final, values);
  } catch (err) {
    setProgress(0, 1, "");
    handleError("generate-error", err);
  } finally {
    state.job = null;
    updateButtons();
  }
}

function onJobEvent(status) {
  if (status.state === "queued") {
    setProgress(0, 1, status.position ? `Queued: ${status.position} ahead` : "Queued");
  } else if (status.state === "running") {
    const total = status.total || 1;
    setProgress(status.step, total, status.total ? `Step ${status.step} / ${status.total}` : "Starting…");
  }
}

function setProgress(value, max, text) {
  const bar = $("progress");
  bar.max = max;
  bar.value = value;
  $("progress-text").textContent = text;
}

async function finish(status, values) {
  if (status.state === "cancelled") {
    setProgress(status.step, status.total || 1, `Cancelled at step ${status.step} / ${status.total}`);
    return;
  }
  if (status.state === "failed") {
    setProgress(0, 1, "Failed");
    throw new ApiError(status.error?.status || 500, status.error || {});
  }
  setProgress(status.total, status.total || 1, "Fetching the images…");
  await showJob(status.id, status.result, { url: state.photo.url });
  setProgress(status.total, status.total || 1, `Done in ${status.result.elapsed_s.toFixed(1)} s`);
  const first = state.lastItems[0];
  addHistory({
    id: status.id, time: Date.now(), params: values, prompt: status.result.prompt, seeds: status.result.seeds,
    thumb: first ? await thumbnail(first.blob) : null, promptEdited: state.promptEdited,
  });
  renderHistory(reloadEntry);
}

async function showJob(id, result, original) {
  const items = [];
  for (const [i, image] of result.images.entries()) {
    const blob = await fetchBlob(image.url);
    items.push({ url: URL.createObjectURL(blob), blob, seed: image.seed, name: `restyle-${id.slice(0, 8)}-${i}-seed${image.seed}.png` });
  }
  const maskBlob = result.mask_url ? await fetchBlob(result.mask_url) : null;
  const mask = maskBlob ? { url: URL.createObjectURL(maskBlob), name: `restyle-${id.slice(0, 8)}-mask.png`, blob: maskBlob } : null;
  state.lastItems = items;
  const preview = result.preview ? " · preview mode (tiny random models)" : "";
  showResults({ original, items, mask, meta: `${result.prompt} · seeds ${result.seeds.join(", ")}${preview}` });
  return { items, mask };
}

async function cancel() {
  const job = state.job;
  if (!job) return;
  if (!job.id) return job.abort.abort();
  $("progress-text").textContent = "Cancelling…";
  try {
    await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" });
  } catch (err) {
    handleError("generate-error", err);
  }
}

// --- history -------------------------------------------------------------------------------------------
async function reloadEntry(entry) {
  form.clearError("history-error");
  form.restore(entry.params || {});
  setPromptEdited(true); // the prompt comes back as it ran
  $("prompt").value = entry.params?.prompt ?? entry.prompt;
  try {
    const status = await api(`/v1/jobs/${entry.id}`);
    if (status.state !== "done" || !status.result) throw new ApiError(404, { message: `job ${entry.id} did not finish (${status.state})` });
    const input = await fetchBlob(`/v1/jobs/${entry.id}/files/input.png`);
    const bitmap = await createImageBitmap(input);
    if (state.photo) URL.revokeObjectURL(state.photo.url);
    state.photo = { blob: input, b64: await blobToBase64(input), url: URL.createObjectURL(input), width: bitmap.width, height: bitmap.height };
    editor.load(bitmap);
    $("editor").hidden = false;
    $("photo-info").textContent = `Photo ${bitmap.width} × ${bitmap.height} px, from job ${entry.id.slice(0, 8)}.`;
    const { mask } = await showJob(entry.id, status.result, { url: state.photo.url });
    if (mask) editor.setBase(await createImageBitmap(mask.blob));
    state.segmented = false; // the mask is the job's own; Find garment makes a new one
    $("history-error").textContent = "";
  } catch (err) {
    const gone = err instanceof ApiError && err.status === 404;
    handleError("history-error", gone ? new ApiError(404, { message: `This result is no longer on the server (job ${entry.id}); its settings were restored.` }) : err);
  }
}

// --- wiring --------------------------------------------------------------------------------------------
function wire() {
  $("file").addEventListener("change", (e) => usePhoto(e.target.files[0]));
  const zone = $("dropzone");
  for (const name of ["dragenter", "dragover"]) zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    usePhoto(e.dataTransfer.files[0]);
  });
  $("mask-form").addEventListener("submit", (e) => { e.preventDefault(); segment(); });
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

  $("style-form").addEventListener("submit", (e) => e.preventDefault());
  $("style-form").addEventListener("change", (e) => {
    if (e.target.id === "style_scale") return;
    if (!["prompt", "negative_prompt", "style"].includes(e.target.id)) rebuildPromptSoon();
  });
  $("details").addEventListener("input", rebuildPromptSoon);
  $("prompt").addEventListener("input", () => setPromptEdited(true));
  $("rebuild").addEventListener("click", () => { setPromptEdited(false); rebuildPrompt(); });
  $("style_scale").addEventListener("input", () => form.showValue("style_scale"));

  $("generate-form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  $("cancel").addEventListener("click", cancel);
  $("seed-new").addEventListener("click", () => { $("seed").value = form.randomSeed(); });
  $("clear-history").addEventListener("click", () => { clearHistory(); renderHistory(reloadEntry); });

  // an edited control loses its error mark
  document.addEventListener("input", (e) => {
    if (e.target.getAttribute?.("aria-invalid") === "true") form.clearError(e.target.getAttribute("aria-errormessage"));
  });
  $("key-button").addEventListener("click", () => {
    const form_ = $("key-form");
    if (form_.hidden) openKeyForm();
    else { form_.hidden = true; $("key-button").setAttribute("aria-expanded", "false"); }
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
  updateButtons();
}

start();
