// The controls: filled from /v1/vocabulary, read into API request bodies, restored from history, and the
// place where an API error is shown beside the control it names.

const $ = (id) => document.getElementById(id);

export const ATTRIBUTES = ["garment_type", "design_style", "pattern", "fabric", "fit", "length"];
const FIELDS = [
  "garment", "threshold", "grow", "feather", "details", "prompt", "negative_prompt", "style", "style_scale",
  "num_images", "steps", "guidance", "size", "seed", "rank", ...ATTRIBUTES,
];

// API field name -> the control to mark (mask_options.* and /invocations names map to the same controls)
const CONTROL_OF = {
  image: "file", mask: "stage", garment: "garment", threshold: "threshold", grow: "grow", feather: "feather",
  protect: "garment", prompt: "prompt", negative_prompt: "negative_prompt", style: "style",
  style_scale: "style_scale", num_images: "num_images", steps: "steps", guidance: "guidance", size: "size",
  seed: "seed", garment_type: "garment_type", design_style: "design_style", pattern: "pattern",
  fabric: "fabric", fit: "fit", length: "length", color: "colors", rank: "rank",
};

function option(value, label = value) {
  const node = document.createElement("option");
  node.value = value;
  node.textContent = label;
  return node;
}

/** Fill the selects, swatches and suggestions from GET /v1/vocabulary. */
export function fillVocabulary(vocab) {
  const garments = $("garment_type");
  garments.replaceChildren(option("", "—"));
  for (const [group, names] of Object.entries(vocab.garments)) {
    const optgroup = document.createElement("optgroup");
    optgroup.label = group;
    optgroup.append(...names.map((n) => option(n)));
    garments.append(optgroup);
  }
  const lists = { design_style: vocab.design_styles, pattern: vocab.patterns, fabric: vocab.fabrics,
    fit: vocab.fits, length: vocab.lengths };
  for (const [id, names] of Object.entries(lists)) $(id).replaceChildren(option("", "—"), ...names.map((n) => option(n)));
  const suggestions = Object.values(vocab.garments).flat().map((n) => option(`the ${n}`));
  $("garment-list").replaceChildren(...suggestions);
  fillSwatches(vocab.colors);
  if (!$("negative_prompt").value) $("negative_prompt").value = vocab.default_negative;
}

function fillSwatches(colors) {
  const box = $("colors");
  const legend = box.querySelector("legend");
  box.replaceChildren(legend);
  const entries = [["", null], ...Object.entries(colors)];
  for (const [name, hex] of entries) {
    const id = `color-${name || "none"}`;
    const input = Object.assign(document.createElement("input"), { type: "radio", name: "color", id, value: name });
    if (!name) input.checked = true;
    const chip = document.createElement("span");
    chip.className = "chip" + (name ? "" : " none") + (hex && hex.startsWith("#") ? "" : name ? " multi" : "");
    if (hex && hex.startsWith("#")) chip.style.background = hex;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.append(chip, name || "any");
    box.append(input, label);
  }
}

export function fillStyles(styles) {
  const select = $("style");
  select.replaceChildren(option("", "none (base model)"), ...styles.map((s) => option(s.name)));
  select.disabled = styles.length === 0;
  select.title = styles.length ? "" : "No LoRA styles are loaded (restyle serve --lora NAME=PATH)";
}

/** Apply the server's limits to the number inputs so the browser can help before the API refuses. */
export function applyLimits(limits) {
  for (const id of ["steps", "num_images", "guidance"]) {
    $(id).min = limits[id][0];
    $(id).max = limits[id][1];
  }
  $("seed").max = limits.seed[1];
  for (const id of ["prompt", "negative_prompt", "details", "garment"]) $(id).maxLength = limits.prompt_chars;
  $("grow").min = Math.max(-128, limits.grow[0]);
  $("grow").max = Math.min(128, limits.grow[1]);
}

/** The loaded model family's own ranges and defaults (GET /v1/models `backend.limits`). */
export function applyBackend(backend) {
  const limits = backend.limits;
  const guidance = $("guidance");
  [guidance.min, guidance.max] = limits.guidance;
  guidance.value = limits.guidance_default;
  guidance.title = limits.guidance_means;
  $("steps").value = limits.steps_default;
  $("steps").min = limits.min_steps;
  const negative = $("negative_prompt");
  negative.disabled = !limits.negative_prompt;
  negative.title = limits.negative_prompt ? "" : "This model has no negative prompt (its guidance is distilled)";
  if (!limits.negative_prompt) negative.value = "";
}

/** Everything the controls hold, as one plain object (saved in history, restored by `restore`). */
export function collect() {
  const state = {};
  for (const id of FIELDS) state[id] = $(id).value;
  state.color = document.querySelector("input[name=color]:checked")?.value || "";
  state.protect = [...document.querySelectorAll("input[name=protect]:checked")].map((i) => i.value);
  state.seedLocked = $("seed-lock").checked;
  return state;
}

export function restore(state) {
  for (const id of FIELDS) if (state[id] !== undefined) $(id).value = state[id];
  const color = document.getElementById(`color-${state.color || "none"}`);
  if (color) color.checked = true;
  for (const input of document.querySelectorAll("input[name=protect]")) {
    input.checked = (state.protect || []).includes(input.value);
  }
  $("seed-lock").checked = Boolean(state.seedLocked);
  for (const id of ["threshold", "grow", "feather", "style_scale"]) showValue(id);
}

export function showValue(id) {
  const value = Number($(id).value);
  $(`${id}-out`).textContent = id === "threshold" || id === "style_scale" ? value.toFixed(2) : String(value);
}

/** The garment text as the API takes it: a list of prompts, split at commas. */
export function garmentPrompts(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean);
}

const number = (value) => (value === "" ? undefined : Number(value));

/** POST /v1/segment body (without the image). */
export function segmentBody(state) {
  return {
    garment: garmentPrompts(state.garment),
    threshold: Number(state.threshold),
    grow: Number(state.grow),
    feather: Number(state.feather),
    protect: state.protect,
  };
}

/** POST /v1/prompt body: the attributes and free text. */
export function promptBody(state) {
  // garment: what to change; instruction editors' prompts name it ("Replace the dress with ...")
  const body = { prompt: state.details || null, color: state.color || null, garment: state.garment || null };
  for (const id of ATTRIBUTES) body[id] = state[id] || null;
  return body;
}

/** POST /v1/jobs body (without image and mask): the prompt as shown, verbatim. */
export function jobBody(state) {
  const body = {
    prompt: state.prompt,
    raw: true,
    num_images: number(state.num_images),
    steps: number(state.steps),
    guidance: number(state.guidance),
    seed: state.seed === "" ? null : Number(state.seed),
  };
  if (state.size) body.size = Number(state.size);
  // a model without a negative prompt (FLUX) disables the field; a restored history entry may still hold one
  if (!$("negative_prompt").disabled) body.negative_prompt = state.negative_prompt;
  if (state.color) body.color = state.color;  // the target colour: every variant gets its ΔE to it
  if (state.rank) body.rank = state.rank;
  if (state.style) {
    body.style = state.style;
    body.style_scale = Number(state.style_scale);
  }
  return body;
}

/** Show `message` in the error box `boxId` and mark the control the API named. */
export function showError(boxId, err) {
  const box = $(boxId);
  box.textContent = err.message || String(err);
  const field = (err.field || "").replace(/^mask_options\./, "").split(/[.[]/)[0];
  const control = $(CONTROL_OF[field] || "");
  if (control) {
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-errormessage", boxId);
    box.dataset.field = field;
  } else {
    delete box.dataset.field;
  }
}

export function clearError(boxId) {
  const box = $(boxId);
  box.textContent = "";
  for (const node of document.querySelectorAll(`[aria-errormessage=${boxId}]`)) {
    node.removeAttribute("aria-invalid");
    node.removeAttribute("aria-errormessage");
  }
}

export function randomSeed() {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return a[0] >>> 1; // 31 bits: readable, and far inside the API's limit
}
