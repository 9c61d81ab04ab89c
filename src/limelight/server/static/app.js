// limelight's web app, the entry module: which view is on screen (gallery, chat, character
// form), the user name box and the API key, and the wiring of the other modules.  Plain ES
// modules on the /api endpoints: no build step, nothing fetched from elsewhere.
//
//   ui.js       DOM helpers, banners, settings        api.js      requests, SSE parsing
//   gallery.js  characters, import, export links      chat.js     sessions and messages
//   speech.js   spoken replies (audio queue)          memories.js the memory panel
//   editor.js   character form and voice              mic.js      push-to-talk, call mode

import { APIError, auth, getJSON } from "./api.js";
import { openCharacter, chat, setupChat, showSpeaker } from "./chat.js";
import { hasVoices, openEditor, setupEditor } from "./editor.js";
import { exportLinks, setupGallery, showGallery } from "./gallery.js";
import { setupMemories } from "./memories.js";
import { endCall, setupMic } from "./mic.js";
import { stopSpeaking } from "./speech.js";
import { $, guard, nav, settings } from "./ui.js";

const VIEWS = ["gallery", "chat", "editor"];
let previous = "gallery";

function show(view) {
  const current = VIEWS.find((v) => !$(v).hidden);
  if (current && current !== view && current !== "editor") previous = current;
  for (const v of VIEWS) $(v).hidden = v !== view;
  document.body.dataset.view = view;
  if (view !== "chat") {
    stopSpeaking();
    endCall();
  }
  window.scrollTo(0, 0);
}

nav.gallery = async () => {
  show("gallery");
  await showGallery();
};

nav.chat = async (character) => {
  show("chat");
  $("export-links").replaceChildren(...exportLinks(character.slug));
  $("chat-menu").open = false;
  await openCharacter(character);
};

nav.editor = async (slug) => {
  await openEditor(slug);  // filled before it shows: never an empty form to type into
  show("editor");
};

nav.back = async () => {
  if (previous === "chat" && chat.character) return nav.chat(chat.character);
  return nav.gallery();
};

function setupUser() {
  const box = $("user");
  box.value = settings.user;
  box.addEventListener("change", guard(async () => {
    settings.user = box.value.trim() || "local";
    box.value = settings.user;
    if (!$("chat").hidden && chat.character) await nav.chat(chat.character);
  }));
}

// The API key: asked for when the server refuses the app, kept in this browser.  With a
// key the app acts as the key's user, which the name box then shows (and can't change).
function setupKey() {
  const dialog = $("key-dialog");
  const open = (message) => {
    $("key-error").hidden = !message;
    $("key-error").textContent = message;
    $("api-key").value = settings.apiKey;
    if (!dialog.open) dialog.showModal();
  };
  auth.onRefused = () => open(settings.apiKey ? "The server refused this key." : "This server asks for an API key.");
  $("key-button").onclick = () => open("");
  $("close-key").onclick = () => dialog.close();
  $("forget-key").onclick = guard(async () => {
    settings.apiKey = "";
    dialog.close();
    await signIn();
  });
  $("key-form").addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    settings.apiKey = $("api-key").value.trim();
    dialog.close();
    await signIn();  // a key the server refuses opens the dialog again, with its message
  }));
}

// Who the app acts as, then the gallery; every request before this one may be refused.
async function signIn() {
  if (settings.apiKey) settings.user = (await getJSON("/api/me")).user;
  $("user").value = settings.user;
  $("user").disabled = Boolean(settings.apiKey);
  await nav.gallery();
  chat.canSpeak = await hasVoices();
  showSpeaker();
}

async function start() {
  setupUser();
  setupKey();
  setupGallery();
  setupChat();
  setupMemories();
  setupEditor();
  setupMic();
  $("home").onclick = guard(async (e) => {
    e.preventDefault();
    await nav.gallery();
  });
  $("back").onclick = guard(() => nav.gallery());
  $("edit-character").onclick = guard(() => nav.editor(chat.character.slug));
  const menu = $("chat-menu"); // closes once an item is chosen, or on a click elsewhere
  menu.addEventListener("click", (e) => e.target.closest(".menu-items a, .menu-items button") && (menu.open = false));
  document.addEventListener("click", (e) => !menu.contains(e.target) && (menu.open = false));
  for (const close of document.querySelectorAll(".drawer .close")) {
    close.onclick = () => (close.closest(".drawer").hidden = true);
  }
  try {
    await signIn();
  } catch (err) {
    if (!(err instanceof APIError && err.status === 401)) throw err;  // the key dialog is open
  }
  document.body.dataset.ready = "true";
}

guard(start)();
