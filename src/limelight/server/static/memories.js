// The memory panel: what the open character remembers about this user
// (GET /api/characters/{slug}/memories), each memory editable (PATCH keeps the old text as
// history server-side) and deletable.  Memories are written in the background after each
// reply, so the panel has a refresh button.

import { getJSON, sendJSON } from "./api.js";
import { chat } from "./chat.js";
import { $, el, guard } from "./ui.js";

const base = () => `/api/characters/${encodeURIComponent(chat.character.slug)}/memories`;
const path = (m) => `${base()}/${encodeURIComponent(m.id)}`;

export async function showMemories() {
  const panel = $("memories");
  panel.querySelector(".who").textContent = chat.character.name;
  panel.hidden = false;
  const rows = await getJSON(base());
  $("memory-list").replaceChildren(...rows.map(memoryItem));
  $("memory-empty").hidden = rows.length > 0;
}

function memoryItem(m) {
  const li = el("li", { className: `memory ${m.kind}`, "data-id": m.id });
  const view = () => {
    const edit = el("button", { type: "button", className: "edit", title: "Edit", ariaLabel: "Edit memory" }, "✎");
    const forget = el("button", { type: "button", className: "forget", title: "Forget", ariaLabel: "Forget memory" }, "forget");
    edit.onclick = () => editing();
    forget.onclick = guard(async () => {
      await sendJSON("DELETE", path(m));
      li.remove();
      $("memory-empty").hidden = $("memory-list").children.length > 0;
    });
    li.replaceChildren(
      el("span", { className: "kind" }, m.kind),
      el("span", { className: "memory-text" }, m.text),
      el("span", { className: "memory-tools" }, edit, forget),
    );
  };
  const editing = () => {
    const box = el("textarea", { className: "memory-edit", value: m.text, rows: 3, ariaLabel: "Memory text" });
    const save = el("button", { type: "button", className: "save" }, "Save");
    const cancel = el("button", { type: "button", className: "cancel", onclick: view }, "Cancel");
    save.onclick = guard(async () => {
      const updated = await sendJSON("PATCH", path(m), { text: box.value });
      li.replaceWith(memoryItem(updated));
    });
    li.replaceChildren(box, el("span", { className: "memory-tools" }, save, cancel));
    box.focus();
  };
  view();
  return li;
}

export function setupMemories() {
  $("show-memories").onclick = guard(async () => {
    if ($("memories").hidden) await showMemories();
    else $("memories").hidden = true;
  });
  $("refresh-memories").onclick = guard(showMemories);
}
