// The character form: create (POST /api/characters) or edit (PATCH /api/characters/{slug})
// a character's card fields and its voice: a backend/voice from GET /api/voices, rate,
// pitch and variability, and a Preview that plays what POST /api/voices/preview renders.
// The voice goes in the body as `voice: {backend, voice, rate, pitch, variability}`.

import { getJSON, request, sendJSON } from "./api.js";
import { $, el, guard, nav, showNotice } from "./ui.js";

const FIELDS = ["name", "description", "personality", "scenario", "first_mes", "mes_example"];
const SLIDERS = ["rate", "pitch", "variability"];
const editor = { slug: null, voices: null };

async function loadVoices() {
  if (editor.voices) return editor.voices;
  try {
    editor.voices = await getJSON("/api/voices");
  } catch (err) {
    // 404: a server without the voice routes; 400: one with voice turned off.  Either way
    // the voice section stays hidden and replies are not spoken.
    if (err.status !== 404 && err.status !== 400) throw err;
    editor.voices = [];
  }
  return editor.voices;
}

export async function hasVoices() {
  return (await loadVoices()).length > 0;
}

const key = (v) => `${v.backend}/${v.voice}`;

function fillVoiceChoices(voices, current) {
  const select = $("voice-choice");
  const options = [el("option", { value: "" }, "— no voice —")];
  const byBackend = new Map();
  for (const v of voices) byBackend.set(v.backend, [...(byBackend.get(v.backend) || []), v]);
  for (const [backend, list] of byBackend) {
    options.push(el("optgroup", { label: backend },
      ...list.map((v) => el("option", { value: key(v) }, v.label || v.voice))));
  }
  if (current && !voices.some((v) => key(v) === key(current))) {
    options.push(el("option", { value: key(current) }, `${current.voice} (not installed)`));
  }
  select.replaceChildren(...options);
  select.value = current ? key(current) : (voices[0] ? key(voices[0]) : "");
}

function setVoice(voice) {
  const defaults = { rate: 1, pitch: 1, variability: 0.5 };
  for (const name of SLIDERS) {
    const input = $(`voice-${name}`);
    input.value = voice?.[name] ?? defaults[name];
    input.dispatchEvent(new Event("input"));
  }
}

function readVoice() {
  const chosen = $("voice-choice").value;
  if (!chosen) return null;
  const cut = chosen.indexOf("/");
  const voice = { backend: chosen.slice(0, cut), voice: chosen.slice(cut + 1) };
  for (const name of SLIDERS) voice[name] = parseFloat($(`voice-${name}`).value);
  return voice;
}

// Open the form: `slug` null for a new character.
export async function openEditor(slug) {
  editor.slug = slug;
  const form = $("character-form");
  form.reset();
  $("editor-title").textContent = slug ? "Edit character" : "New character";
  let data = {};
  let voice = null;
  if (slug) {
    const character = await getJSON(`/api/characters/${encodeURIComponent(slug)}`);
    data = { ...character.card.data, name: character.name };
    voice = character.voice;
  }
  for (const name of FIELDS) form.elements[name].value = data[name] || "";
  form.elements.tags.value = (data.tags || []).join(", ");
  const voices = await loadVoices();
  $("voice-section").hidden = voices.length === 0;
  fillVoiceChoices(voices, voice);
  setVoice(voice);
  $("voice-preview").hidden = true;
}

function formBody() {
  const form = $("character-form");
  const body = {};
  for (const name of FIELDS) body[name] = form.elements[name].value;
  body.tags = form.elements.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
  if (!$("voice-section").hidden) {
    const voice = readVoice();
    if (voice) body.voice = voice;
  }
  return body;
}

async function save(event) {
  event.preventDefault();
  const body = formBody();
  const saved = editor.slug
    ? await sendJSON("PATCH", `/api/characters/${encodeURIComponent(editor.slug)}`, body)
    : await sendJSON("POST", "/api/characters", body);
  showNotice(`Saved ${saved.name}.`);
  await nav.chat(saved);
}

async function preview() {
  const voice = readVoice();
  if (!voice) throw new Error("pick a voice to preview");
  const text = $("voice-text").value.trim() || "Hello! This is how I sound.";
  const response = await request("/api/voices/preview", { method: "POST", json: { text, voice } });
  const audio = $("voice-preview");
  if (audio.src) URL.revokeObjectURL(audio.src);
  audio.src = URL.createObjectURL(await response.blob());
  audio.hidden = false;
  await audio.play();
}

export function setupEditor() {
  $("character-form").onsubmit = guard(save);
  $("cancel-edit").onclick = guard(() => nav.back());
  $("preview-voice").onclick = guard(preview);
  for (const name of SLIDERS) {
    const input = $(`voice-${name}`);
    input.addEventListener("input", () => ($(`voice-${name}-value`).textContent = Number(input.value).toFixed(2)));
  }
}
