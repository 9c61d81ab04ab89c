// The chat view: a session's messages, replies streamed token by token (and spoken sentence
// by sentence when the speaker is on), swipes and regenerate on the last reply, edit,
// delete and branch on any message, and the list of the user's earlier chats with this
// character.  Push-to-talk and call mode (mic.js) send through `sendVoice` here.

import { getJSON, sendJSON, streamEvents } from "./api.js";
import { ReplyPlayer, stopSpeaking } from "./speech.js";
import { $, el, fillMacros, guard, settings, showError, showNotice } from "./ui.js";

export const chat = {
  character: null, // the summary from GET /api/characters
  session: null, // the SessionPublic on screen
  busy: false, // a reply is streaming
  canSpeak: false, // the server has voices (GET /api/voices answered)
  players: new Map(), // message id -> the ReplyPlayer that spoke it
};

const base = () => `/api/sessions/${chat.session.id}`;

export async function openCharacter(character) {
  chat.character = character;
  chat.players.clear();
  $("chat-avatar").hidden = false;
  $("chat-avatar").onerror = () => { $("chat-avatar").hidden = true; };
  $("chat-avatar").src = character.avatar_url;
  $("chat-name").textContent = character.name;
  $("memories").hidden = true;
  $("sessions").hidden = true;
  const sessions = await listSessions();
  const latest = sessions.find((s) => s.title !== "API");
  if (latest) await loadSession(latest.id);
  else await newSession();
}

async function listSessions() {
  return getJSON(`/api/sessions?character=${encodeURIComponent(chat.character.slug)}`);
}

export async function newSession() {
  stopSpeaking();
  await switching(() => sendJSON("POST", "/api/sessions", { character: chat.character.slug, user: settings.user }));
  if (!$("sessions").hidden) await showSessions();
}

export async function loadSession(id) {
  await switching(() => getJSON(`/api/sessions/${id}`));
}

// Shows the session `load` fetches; sending waits meanwhile, so that a message typed while
// the chat switches goes to the session on screen, not to the one being left.
async function switching(load) {
  if (chat.busy) return render(await load());
  setBusy(true);
  try {
    render(await load());
  } finally {
    setBusy(false);
  }
}

export function render(session) {
  chat.session = session;
  const lastReply = session.messages.findLastIndex((m) => m.role === "assistant");
  $("messages").replaceChildren(...session.messages.map((m, i) => messageItem(m, i === lastReply)));
  $("chat").dataset.session = session.id;
  follow(true);
}

function bubble(role, text = "") {
  const li = el("li", { className: `message ${role}` }, el("div", { className: "text" }, text));
  return li;
}

function messageItem(m, isLastReply) {
  const li = bubble(m.role, fillMacros(m.content, chat.character.name));
  li.dataset.id = m.id;
  const tools = el("div", { className: "tools" });
  if (isLastReply) {
    tools.append(
      button("‹", "Previous swipe", () => swipe(m, -1), "swipe-prev"),
      el("span", { className: "swipe-count" }, `${m.swipe_index + 1}/${m.swipe_count}`),
      button("›", "Next swipe", () => swipe(m, 1), "swipe-next"),
      button("↻", "Regenerate", () => regenerate(m, li), "regenerate"),
    );
  }
  tools.append(
    button("✎", "Edit", () => editInPlace(li, m), "edit"),
    deleteButton(m),
    button("branch", "Branch from here", () => branch(m), "branch"),
  );
  li.append(tools);
  const player = chat.players.get(m.id);
  if (player) li.append(player.audio); // moved, not rebuilt: it keeps playing
  return li;
}

function button(label, title, action, className) {
  return el("button", { type: "button", className, title, ariaLabel: title, onclick: guard(action) }, label);
}

// Deleting takes everything after the message with it: a second click confirms.
function deleteButton(m) {
  const del = button("delete", "Delete", async () => {
    if (!del.classList.contains("confirm")) {
      del.classList.add("confirm");
      del.textContent = "delete?";
      setTimeout(() => { del.classList.remove("confirm"); del.textContent = "delete"; }, 4000);
      return;
    }
    render(await sendJSON("DELETE", `${base()}/messages/${m.id}`));
  }, "delete");
  return del;
}

function follow(force = false) {
  const gap = document.documentElement.scrollHeight - window.innerHeight - window.scrollY;
  if (force || gap < 160) window.scrollTo(0, document.documentElement.scrollHeight);
}

async function swipe(m, step) {
  render(await sendJSON("POST", `${base()}/messages/${m.id}/swipe`, { step }));
}

async function branch(m) {
  render(await sendJSON("POST", `${base()}/messages/${m.id}/branch`));
  showNotice("Branched into a new chat: the old one is under “Chats”.");
  if (!$("sessions").hidden) await showSessions();
}

function editInPlace(li, m) {
  const box = el("textarea", { className: "edit-box", value: m.content, ariaLabel: "Edit message", rows: 4 });
  const save = button("Save", "Save edit", async () => {
    render(await sendJSON("PATCH", `${base()}/messages/${m.id}`, { content: box.value }));
  }, "save");
  const cancel = button("Cancel", "Cancel edit", () => render(chat.session), "cancel");
  li.replaceChildren(box, el("div", { className: "tools" }, save, cancel));
  box.focus();
}

function replyBody(speak, extra = {}) {
  const body = { ...extra, stream: true };
  if (speak) body.speak = true;
  if (settings.maxTokens) body.max_tokens = settings.maxTokens;
  return body;
}

function setBusy(busy) {
  chat.busy = busy;
  $("send").disabled = busy;
  $("chat").classList.toggle("busy", busy);
}

// Stream a reply into `reply` (a message bubble); `handlers` may add events (transcript).
// Answers the ReplyPlayer (or null when nothing was spoken) once the stream is over.
async function streamReply(path, body, reply, { speak = false, handlers = {} } = {}) {
  stopSpeaking();
  setBusy(true);
  const sessionId = chat.session.id;
  const text = reply.querySelector(".text");
  text.textContent = "";
  reply.classList.add("streaming");
  const player = speak ? new ReplyPlayer() : null;
  let done = null;
  try {
    await streamEvents(path, body, {
      ...handlers,
      delta: (d) => { text.textContent += d.text; follow(); },
      audio: (d) => {
        if (!player) return;
        if (!player.audio.isConnected) reply.append(player.audio);
        player.add(d);
      },
      done: (d) => (done = d),
    });
  } finally {
    player?.finish();
    reply.classList.remove("streaming");
    setBusy(false);
    if (done && player?.clips.length) chat.players.set(done.message.id, player);
    if (chat.session?.id === sessionId) await loadSession(sessionId).catch((err) => showError(err.message));
    $("chat").dataset.replies = String(Number($("chat").dataset.replies || 0) + 1); // finished streams
  }
  return player?.clips.length ? player : null;
}

export async function send(content) {
  if (chat.busy || !content.trim()) return null;
  const mine = bubble("user", content);
  const reply = bubble("assistant");
  $("messages").append(mine, reply);
  follow(true);
  const speak = chat.canSpeak && settings.speak;
  return streamReply(`${base()}/messages`, replyBody(speak, { content }), reply, { speak });
}

// A recording from push-to-talk or call mode: the server transcribes it (a `transcript`
// event, shown as the user's message) and answers it like a typed message.
export async function sendVoice(recording, { speak = settings.speak } = {}) {
  if (chat.busy) return null;
  const mine = bubble("user pending", "(transcribing…)");
  const reply = bubble("assistant");
  $("messages").append(mine, reply);
  follow(true);
  const form = new FormData();
  form.append("file", recording, recording.name || "speech.wav");
  speak = Boolean(speak && chat.canSpeak);
  form.append("speak", String(speak));
  if (settings.maxTokens) form.append("max_tokens", String(settings.maxTokens));
  try {
    const transcript = (d) => {
      mine.querySelector(".text").textContent = d.text;
      mine.classList.remove("pending");
    };
    return await streamReply(`${base()}/voice`, form, reply, { speak, handlers: { transcript } });
  } finally {
    if (mine.classList.contains("pending")) mine.remove();
  }
}

async function regenerate(m, li) {
  if (chat.busy) return;
  li.querySelector(".tools")?.remove();
  chat.players.get(m.id)?.audio.remove();
  const path = `${base()}/messages/${m.id}/regenerate`;
  const speak = chat.canSpeak && settings.speak;
  await streamReply(path, replyBody(speak), li, { speak });
}

export async function showSessions() {
  const panel = $("sessions");
  panel.querySelector(".who").textContent = chat.character.name;
  const sessions = (await listSessions()).filter((s) => s.title !== "API");
  $("session-list").replaceChildren(...sessions.map((s) => {
    const when = new Date(s.updated_at + (s.updated_at.endsWith("Z") ? "" : "Z"));
    const label = `${s.title || "Chat"} · ${when.toLocaleString()}`;
    const open = el("button", { type: "button", className: "open-session" }, label);
    open.onclick = guard(async () => { stopSpeaking(); await loadSession(s.id); panel.hidden = true; });
    const item = el("li", { "data-id": s.id }, open);
    if (s.id === chat.session?.id) item.classList.add("current");
    return item;
  }));
  panel.hidden = false;
}

export function showSpeaker() {
  const on = chat.canSpeak && settings.speak;
  const speaker = $("speaker");
  speaker.setAttribute("aria-pressed", String(on));
  speaker.disabled = !chat.canSpeak;
  speaker.title = chat.canSpeak ? (on ? "Speech on" : "Speech off") : "this server has no voices";
}

export function setupChat() {
  $("composer").onsubmit = guard(async (event) => {
    event.preventDefault();
    const content = $("input").value;
    if (!content.trim() || chat.busy) return;
    $("input").value = "";
    await send(content);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("new-session").onclick = guard(newSession);
  $("show-sessions").onclick = guard(async () => {
    if ($("sessions").hidden) await showSessions();
    else $("sessions").hidden = true;
  });
  $("speaker").onclick = () => {
    settings.speak = !settings.speak;
    if (!settings.speak) stopSpeaking();
    showSpeaker();
  };
  showSpeaker();
}
