// The HTTP side of the app: every request names the user (`?user=`) or, on a server that
// asks for API keys, carries the key (`Authorization: Bearer`; the key names the user), every
// failure becomes an Error carrying the server's own message (bodies are
// `{"error": {"message": …}}`), and streamed replies are read as Server-Sent Events off a
// fetch body (EventSource can't POST).

import { settings } from "./ui.js";

export class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// What the app does when the server refuses it for want of a (valid) key (app.js sets it).
export const auth = { onRefused: null };

export function withUser(path) {
  if (settings.apiKey) return path;
  const sep = path.includes("?") ? "&" : "?";
  return `${path}${sep}user=${encodeURIComponent(settings.user)}`;
}

// fetch(path) as the user; JSON bodies are sent as JSON, FormData as multipart.
export async function request(path, { json, ...options } = {}) {
  options.headers = { ...options.headers };
  if (json !== undefined) {
    options.body = JSON.stringify(json);
    options.headers["content-type"] = "application/json";
  }
  if (settings.apiKey) options.headers.authorization = `Bearer ${settings.apiKey}`;
  const response = await fetch(withUser(path), options);
  if (!response.ok) {
    const error = await failure(response);
    if (response.status === 401 && auth.onRefused) {
      auth.onRefused();
      error.shown = true;  // the key dialog says it: no banner as well
    }
    throw error;
  }
  return response;
}

// Save the file at `path` (a download a plain link can't make when it needs the key).
export async function download(path, filename) {
  const url = URL.createObjectURL(await (await request(path)).blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export async function getJSON(path) {
  return (await request(path)).json();
}

export async function sendJSON(method, path, json) {
  const response = await request(path, { method, json });
  return response.status === 204 ? null : response.json();
}

async function failure(response) {
  const text = await response.text().catch(() => "");
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = JSON.parse(text);
    message = body.error?.message || body.detail || message;
  } catch {
    if (text) message = `${message}: ${text.slice(0, 300)}`;
  }
  return new APIError(response.status, message);
}

// The events of a `text/event-stream` body as {event, data} with `data` parsed as JSON,
// yielded as each one arrives.
export async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const parsed = parseEvent(block);
      if (parsed) yield parsed;
    }
  }
  const last = parseEvent(buffer);
  if (last) yield last;
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const text = data.join("\n");
  try {
    return { event, data: JSON.parse(text) };
  } catch {
    return { event, data: text };
  }
}

// POST and feed each streamed event to handlers[event]; an `error` event throws.
export async function streamEvents(path, body, handlers) {
  const options = body instanceof FormData ? { method: "POST", body } : { method: "POST", json: body };
  const response = await request(path, options);
  for await (const { event, data } of serverEvents(response)) {
    if (event === "error") throw new APIError(500, data.error?.message || String(data));
    handlers[event]?.(data);
  }
}
