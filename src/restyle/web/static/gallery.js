// Results: the gallery (original first), the before/after slider, and the history kept in localStorage.

const HISTORY_KEY = "restyle.history";
const HISTORY_MAX = 24;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

/**
 * Show a finished job: `original` {url, width}, `items` [{url, blob, seed, name}], `mask` {url, name}.
 * Picking an item puts it in the before/after view.
 */
let owned = []; // object URLs of the shown results, revoked when they are replaced

function release() {
  for (const url of owned) URL.revokeObjectURL(url);
  owned = [];
}

export function showResults({ original, items, mask, meta }) {
  release();
  owned = [...items.map((item) => item.url), ...(mask ? [mask.url] : [])];
  const gallery = $("gallery");
  gallery.replaceChildren();
  $("results-empty").hidden = true;
  const entries = [{ url: original.url, label: "Original", name: null }, ...items];
  entries.forEach((entry, index) => {
    const img = el("img", { src: entry.url, alt: index === 0 ? "Original photo" : `Result ${index}, seed ${entry.seed}` });
    img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < 200), { once: true });
    const pick = el("button", { type: "button", class: "pick", "aria-pressed": "false",
      "aria-label": index === 0 ? "Show the original" : `Compare result ${index} with the original` }, img);
    pick.addEventListener("click", () => select(index));
    const caption = el("figcaption", {}, el("span", { text: entry.label || `seed ${entry.seed}` }));
    if (entry.name) {
      caption.append(el("a", { href: entry.url, download: entry.name, class: "download",
        "aria-label": `Download result ${index} (PNG)`, text: "Download" }));
    }
    gallery.append(el("li", {}, el("figure", {}, pick, caption)));
  });
  if (mask) {
    const link = el("a", { href: mask.url, download: mask.name, class: "download", id: "download-result-mask",
      text: "Download the mask" });
    gallery.append(el("li", { class: "mask-item" }, el("figure", {}, el("figcaption", {}, link))));
  }
  $("result-meta").textContent = meta || "";

  function select(index) {
    gallery.querySelectorAll("button.pick").forEach((b, i) => b.setAttribute("aria-pressed", String(i === index)));
    if (index > 0) compare(original.url, entries[index].url);
    else showOriginal(original.url);
  }
  if (items.length) select(1);
}

export function clearResults() {
  release();
  $("gallery").replaceChildren();
  $("compare").hidden = true;
  $("results-empty").hidden = false;
  $("result-meta").textContent = "";
}

function showOriginal(url) {
  $("compare").hidden = false;
  $("compare-before").src = url;
  $("compare-after").hidden = true;
  $("compare-line").hidden = true;
}

function compare(beforeUrl, afterUrl) {
  $("compare").hidden = false;
  $("compare-after").hidden = false;
  $("compare-line").hidden = false;
  $("compare-before").src = beforeUrl;
  const after = $("compare-after");
  after.src = afterUrl;
  after.addEventListener("load", () => after.classList.toggle("small", after.naturalWidth < 200), { once: true });
  setSplit(Number($("compare-range").value));
}

function setSplit(percent) {
  // the result shows on the right of the line, the original on the left
  $("compare-after").style.clipPath = `inset(0 0 0 ${percent}%)`;
  $("compare-line").style.left = `${percent}%`;
}

export function initCompare() {
  $("compare-range").addEventListener("input", (e) => setSplit(Number(e.target.value)));
}

// --- history -------------------------------------------------------------------------------------------
export function loadHistory() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

export function addHistory(entry) {
  const list = [entry, ...loadHistory().filter((e) => e.id !== entry.id)].slice(0, HISTORY_MAX);
  for (;;) {
    try {
      localStorage.setItem(HISTORY_KEY, JSON.stringify(list));
      return;
    } catch {
      if (list.length <= 1) return; // storage full even for one entry: keep nothing rather than fail
      list.pop();
    }
  }
}

export function clearHistory() {
  localStorage.removeItem(HISTORY_KEY);
}

/** Draw the history list; `onPick(entry)` reloads one. */
export function renderHistory(onPick) {
  const list = loadHistory();
  const ul = $("history");
  ul.replaceChildren();
  $("history-empty").hidden = list.length > 0;
  $("clear-history").hidden = list.length === 0;
  for (const entry of list) {
    const when = new Date(entry.time).toLocaleString();
    const button = el("button", { type: "button", class: "history-item", "data-id": entry.id },
      el("img", { src: entry.thumb || "", alt: "" }),
      el("span", { text: `${when} · seed ${entry.seeds?.[0] ?? "?"} · ${entry.prompt}` }));
    button.addEventListener("click", () => onPick(entry));
    ul.append(el("li", {}, button));
  }
}

/** A small JPEG data URL of an image blob, for the history list. */
export async function thumbnail(blob, side = 96) {
  const bitmap = await createImageBitmap(blob);
  const scale = side / Math.max(bitmap.width, bitmap.height);
  const canvas = el("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/jpeg", 0.8);
}
