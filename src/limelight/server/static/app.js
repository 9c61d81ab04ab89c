// limelight's web app, the entry module: which view is on screen (gallery, chat, character
// form), the user name box, and the wiring of the other modules.  Plain ES modules on the
// /api endpoints: no build step, nothing fetched from elsewhere.
//
//   ui.js       DOM helpers, banners, settings        api.js      requests, SSE parsing
//   gallery.js  characters, import, export links      chat.js     sessions and messages
//   speech.js   spoken replies (audio queue)          memories.js the memory panel
//   editor.js   character form and voice              mic.js      push-to-talk, call mode

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

async function start() {
  setupUser();
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
  await nav.gallery();
  chat.canSpeak = await hasVoices();
  showSpeaker();
  document.body.dataset.ready = "true";
}

guard(start)();
