// The public /v1 API as the studio uses it: JSON calls, file downloads and the job event stream.
// Every failure becomes an ApiError carrying the server's {error, field, message}.

const KEY_STORE = "restyle.apiKey";
const TERMINAL = ["done", "failed", "cancelled"];

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `the server answered ${status}`);
    this.status = status;
    this.kind = body?.error || "http_error";
    this.field = body?.field || null;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function send(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { error: "network", message: "the server did not answer; is `restyle serve` running?" });
  }
  if (!response.ok) throw new ApiError(response.status, await errorBody(response));
  return response;
}

async function errorBody(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.message === "string") return body;
  } catch {
    // not JSON: a proxy or a crash page; say what came back
  }
  return { error: "http_error", message: `the server answered ${response.status}: ${text.slice(0, 200)}` };
}

/** JSON request to the API; resolves to the parsed body. */
export async function api(path, options = {}) {
  const response = await send(path, options);
  return response.json();
}

/** A file from the API (a job's PNG) as a Blob, its bytes unchanged (metadata included). */
export async function fetchBlob(path) {
  const response = await send(path);
  return response.blob();
}

/** GET /ping without throwing: {status, ...} and the HTTP code. */
export async function ping() {
  try {
    const response = await fetch("/ping", { cache: "no-store" });
    return { code: response.status, body: await response.json() };
  } catch {
    return { code: 0, body: { status: "unreachable" } };
  }
}

/**
 * Follow a job's server-sent events; calls onEvent(name, status) for each and resolves with the last status.
 * Uses fetch rather than EventSource so the API key header can be sent.
 */
export async function followJob(id, onEvent, signal) {
  const response = await send(`/v1/jobs/${encodeURIComponent(id)}/events`, { signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = parseEvent(block);
      if (event) {
        last = event.data;
        onEvent(event.name, event.data);
      }
    }
  }
  // the stream ended early (a proxy's idle timeout, a network blip): poll until the job ends
  while (last === null || !TERMINAL.includes(last.state)) {
    if (last !== null) await new Promise((r) => setTimeout(r, 500));
    if (signal?.aborted) throw new DOMException("aborted", "AbortError");
    last = await api(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
    onEvent(last.state, last);
  }
  return last;
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trim());
  }
  return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
}

/** A Blob as base64 (the API accepts a data: URL prefix). */
export function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/** base64 (no prefix) -> Blob. */
export function base64ToBlob(b64, type = "image/png") {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type });
}
