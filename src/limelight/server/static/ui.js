// Small DOM helpers shared by every view: element lookup and creation, the banners that
// show errors and notices (never swallowed: uncaught errors land here too), the settings
// kept in localStorage, and `nav`, the switchboard app.js fills so that views can open
// one another without importing each other.

export const $ = (id) => document.getElementById(id);

export const nav = { gallery: null, chat: null, editor: null };

// el("button", { className: "x", onclick }, "text", child…): properties, then children.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith("aria") || key.startsWith("data-") || key === "for") {
      node.setAttribute(key.replace(/^aria([A-Z])/, (_, c) => `aria-${c.toLowerCase()}`), value);
    } else {
      node[key] = value;
    }
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function banner(kind, message, details = []) {
  const text = el("div", { className: "banner-text" }, message);
  if (details.length) text.append(el("ul", {}, ...details.map((d) => el("li", {}, d))));
  const close = el("button", { type: "button", className: "dismiss", ariaLabel: "Dismiss", title: "Dismiss" }, "×");
  const node = el("div", { className: `banner ${kind}`, role: kind === "error" ? "alert" : "status" }, text, close);
  close.onclick = () => node.remove();
  $("banners").append(node);
  return node;
}

export const showError = (message, details) => banner("error", String(message), details);
// Notices fade (one with details, an import's warnings, stays longer); errors stay.
export function showNotice(message, details = []) {
  const node = banner("notice", String(message), details);
  setTimeout(() => node.remove(), details.length ? 30000 : 8000);
  return node;
}

// Run an async UI action; whatever it throws becomes an error banner (unless it is `shown`
// already, as a refused key is by the key dialog).
export function guard(action) {
  return async (...args) => {
    try {
      return await action(...args);
    } catch (err) {
      if (!err?.shown) showError(err.message || err);
    }
  };
}

window.addEventListener("error", (e) => showError(e.message));
window.addEventListener("unhandledrejection", (e) => e.reason?.shown || showError(e.reason?.message || e.reason));

// Settings the user (or a test) keeps between visits.
export const settings = {
  get user() { return localStorage.getItem("limelight.user") || "local"; },
  set user(value) { localStorage.setItem("limelight.user", value); },
  // an API key for a server that asks for one; the key's user is then the user
  get apiKey() { return localStorage.getItem("limelight.apiKey") || ""; },
  set apiKey(value) {
    if (value) localStorage.setItem("limelight.apiKey", value);
    else localStorage.removeItem("limelight.apiKey");
  },
  get speak() { return localStorage.getItem("limelight.speak") !== "false"; },
  set speak(value) { localStorage.setItem("limelight.speak", String(value)); },
  // Optional cap on a reply's length; unset by default (the server decides).
  get maxTokens() {
    const value = parseInt(localStorage.getItem("limelight.maxTokens") || "", 10);
    return Number.isFinite(value) && value > 0 ? value : null;
  },
};

// The character's name and the user's in place of a card's {{char}} / {{user}} macros.
export function fillMacros(text, charName) {
  return text.replace(/\{\{char\}\}/gi, charName).replace(/\{\{user\}\}/gi, settings.user);
}

export function isTyping(target) {
  return target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}
