// limelight's web app: the character gallery, a chat whose tokens stream in as they are
// sampled, swipes and regenerate, and the memory panel.  Plain JS on the /api endpoints;
// no build step, nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { character: null, session: null };
const user = () => encodeURIComponent($("user").value.trim() || "local");

async function api(path, options = {}) {
  const sep = path.includes("?") ? "&" : "?";
  const response = await fetch(`${path}${sep}user=${user()}`, {
    headers: { "content-type": "application/json" }, ...options,
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error ? body.error.message : response.statusText);
  }
  return response.status === 204 ? null : response;
}

async function showGallery() {
  $("chat").hidden = true;
  $("gallery").hidden = false;
  const characters = await (await api("/api/characters")).json();
  $("gallery").replaceChildren(...characters.map((c) => {
    const card = document.createElement("article");
    card.className = "card";
    card.innerHTML = `<img alt=""><h3></h3><p></p>`;
    card.querySelector("img").src = c.avatar_url;
    card.querySelector("h3").textContent = c.name;
    card.querySelector("p").textContent = c.description.slice(0, 110);
    card.onclick = () => openCharacter(c);
    return card;
  }));
}

async function openCharacter(character) {
  state.character = character;
  $("gallery").hidden = true;
  $("chat").hidden = false;
  $("chat-avatar").src = character.avatar_url;
  $("chat-name").textContent = character.name;
  $("memories").hidden = true;
  const sessions = await (await api(`/api/sessions?character=${character.slug}`)).json();
  const latest = sessions.find((s) => s.title !== "API");
  if (latest) await loadSession(latest.id); else await newSession();
}

async function newSession() {
  const body = JSON.stringify({ character: state.character.slug });
  render(await (await api("/api/sessions", { method: "POST", body })).json());
}

async function loadSession(id) {
  render(await (await api(`/api/sessions/${id}`)).json());
}

function render(session) {
  state.session = session;
  $("messages").replaceChildren(...session.messages.map(messageItem));
  window.scrollTo(0, document.body.scrollHeight);
}

function messageItem(m) {
  const li = document.createElement("li");
  li.className = m.role;
  li.textContent = m.content;
  if (m.role === "assistant") {
    const bar = document.createElement("div");
    bar.className = "swipes";
    bar.innerHTML = `<button data-step="-1">‹</button> ${m.swipe_index + 1}/${m.swipe_count}
      <button data-step="1">›</button> <button data-regen>↻</button>`;
    bar.querySelectorAll("[data-step]").forEach((b) => (b.onclick = () => swipe(m, +b.dataset.step)));
    bar.querySelector("[data-regen]").onclick = () => regenerate(m);
    li.append(bar);
  }
  return li;
}

async function swipe(message, step) {
  const path = `/api/sessions/${state.session.id}/messages/${message.id}/swipe`;
  render(await (await api(path, { method: "POST", body: JSON.stringify({ step }) })).json());
}

async function regenerate(message) {
  const path = `/api/sessions/${state.session.id}/messages/${message.id}/regenerate`;
  await streamReply(path, {}, null);
}

async function send(event) {
  event.preventDefault();
  const content = $("input").value.trim();
  if (!content) return;
  $("input").value = "";
  const mine = document.createElement("li");
  mine.className = "user";
  mine.textContent = content;
  $("messages").append(mine);
  await streamReply(`/api/sessions/${state.session.id}/messages`, { content }, mine);
}

// POST, then read Server-Sent Events: `delta` events grow the reply, `done` ends it.
async function streamReply(path, body, after) {
  const reply = document.createElement("li");
  reply.className = "assistant streaming";
  $("messages").append(reply);
  const response = await api(path, { method: "POST", body: JSON.stringify({ ...body, stream: true }) });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const kind = (block.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((block.match(/^data: (.*)$/m) || [, "{}"])[1]);
      if (kind === "delta") reply.textContent += data.text;
      window.scrollTo(0, document.body.scrollHeight);
    }
  }
  await loadSession(state.session.id);
}

async function showMemories() {
  const panel = $("memories");
  panel.hidden = !panel.hidden;
  if (panel.hidden) return;
  panel.querySelector(".who").textContent = state.character.name;
  const rows = await (await api(`/api/characters/${state.character.slug}/memories`)).json();
  $("memory-list").replaceChildren(...rows.map((m) => {
    const li = document.createElement("li");
    li.textContent = `${m.kind}: ${m.text}`;
    const forget = document.createElement("button");
    forget.textContent = "forget";
    forget.onclick = async () => {
      await api(`/api/characters/${state.character.slug}/memories/${m.id}`, { method: "DELETE" });
      li.remove();
    };
    li.append(forget);
    return li;
  }));
}

$("home").onclick = (e) => { e.preventDefault(); showGallery(); };
$("composer").onsubmit = send;
$("new-session").onclick = newSession;
$("show-memories").onclick = showMemories;
showGallery().catch((err) => alert(err.message));
