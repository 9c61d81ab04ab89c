// The gallery: every character as a card (avatar, name, a line of description), a card to
// create a new one, and importing character cards (PNG, JSON, CHARX) dropped anywhere on
// the gallery or picked with the file picker.  An import's warnings show as a notice, its
// failure as an error banner; the gallery stays as it was.

import { download, getJSON, request, withUser } from "./api.js";
import { $, el, fillMacros, guard, nav, settings, showError, showNotice } from "./ui.js";

export async function showGallery() {
  const characters = await getJSON("/api/characters");
  const create = el("a", { href: "#", className: "card new-character", onclick: open(() => nav.editor(null)) },
    el("span", { className: "plus" }, "+"), el("h3", {}, "New character"));
  $("character-list").replaceChildren(...characters.map(characterCard), create);
  return characters;
}

// A card is a link (so it may hold a heading): clicking it runs `action`, not the href.
const open = (action) => guard(async (event) => {
  event.preventDefault();
  await action();
});

function characterCard(c) {
  const summary = fillMacros(c.description, c.name).replace(/\s+/g, " ").trim();
  const short = summary.length > 110 ? `${summary.slice(0, 108).trimEnd()}…` : summary;
  return el("a", { href: "#", className: "card", "data-slug": c.slug, onclick: open(() => nav.chat(c)) },
    el("img", { src: c.avatar_url, alt: "", loading: "lazy", onerror: noAvatar(c.name) }),
    el("h3", {}, c.name),
    el("p", {}, short),
  );
}

// A character made in the editor has no picture: its initial stands in.
const noAvatar = (name) => (event) =>
  event.target.replaceWith(el("div", { className: "avatar-fallback", ariaHidden: "true" }, name.slice(0, 1)));

export function exportLinks(slug) {
  return ["png", "json", "charx"].map((format) => {
    const path = `/api/characters/${encodeURIComponent(slug)}/export?format=${format}`;
    const filename = `${slug}.${format}`;
    const link = el("a", { className: `export-${format}`, href: withUser(path), download: filename },
      `Export ${format.toUpperCase()}`);
    link.onclick = (e) => {  // with a key, a link can't send it: fetch, then save
      if (!settings.apiKey) return;
      e.preventDefault();
      guard(() => download(path, filename))();
    };
    return link;
  });
}

async function importFiles(files) {
  for (const file of files) {
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const character = await (await request("/api/characters/import", { method: "POST", body: form })).json();
      const warnings = character.warnings || [];
      showNotice(`Imported ${character.name}${warnings.length ? ", with warnings:" : "."}`, warnings);
    } catch (err) {
      showError(`Could not import ${file.name}: ${err.message}`);
    }
  }
  await showGallery();
}

export function setupGallery() {
  const gallery = $("gallery");
  const picker = $("import-file");
  picker.onchange = guard(async () => {
    const files = [...picker.files];
    picker.value = "";
    await importFiles(files);
  });
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
  gallery.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    gallery.classList.add("dropping");
  });
  gallery.addEventListener("dragleave", (e) => {
    if (!gallery.contains(e.relatedTarget)) gallery.classList.remove("dropping");
  });
  gallery.addEventListener("drop", guard(async (e) => {
    e.preventDefault();
    gallery.classList.remove("dropping");
    const files = [...(e.dataTransfer?.files || [])];
    if (files.length) await importFiles(files);
  }));
}
