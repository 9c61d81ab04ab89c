// Spoken replies: a `ReplyPlayer` is one visible <audio> element fed by a queue of the
// sentences' WAV clips as the `audio` events arrive.  The first clip plays the moment it
// comes; each later one starts when the one before ends.  `drained` resolves once the
// reply is over (its stream finished) and every clip has been played, so call mode knows
// when to listen again.

import { el, showError } from "./ui.js";

let current = null; // the player speaking now; a new reply silences it

export function stopSpeaking() {
  current?.stop();
}

export class ReplyPlayer {
  constructor() {
    this.audio = el("audio", { controls: true, className: "speech", preload: "auto" });
    this.queue = []; // [{index, text, url}] waiting, smallest index first
    this.clips = []; // every clip so far, in order: a replay plays them all
    this.playing = false;
    this.finished = false; // the stream said `done` (or failed)
    this.drained = new Promise((resolve) => (this.resolveDrained = resolve));
    this.audio.addEventListener("ended", () => this.advance());
    this.audio.addEventListener("play", () => {
      if (this.playing || !this.finished || !this.clips.length) return;
      this.queue = [...this.clips]; // play pressed on a finished reply: all of it again
      this.advance();
    });
    this.audio.addEventListener("error", () => {
      showError(`a sentence of the reply could not be played (${this.audio.error?.message || "bad audio"})`);
      this.advance();
    });
  }

  add({ index, text, audio, format }) {
    const bytes = Uint8Array.from(atob(audio), (c) => c.charCodeAt(0));
    const url = URL.createObjectURL(new Blob([bytes], { type: `audio/${format || "wav"}` }));
    const clip = { index: index ?? this.clips.length, text, url };
    const byIndex = (a, b) => a.index - b.index;
    this.clips = [...this.clips, clip].sort(byIndex);
    this.queue = [...this.queue, clip].sort(byIndex);
    if (current !== this) {
      current?.stop();
      current = this;
    }
    if (!this.playing) this.advance();
  }

  advance() {
    const next = this.queue.shift();
    if (!next) {
      this.playing = false;
      this.settle();
      return;
    }
    this.playing = true;
    this.audio.title = next.text || "";
    this.audio.src = next.url;
    this.audio.play().catch((err) => {
      if (err.name === "AbortError") return; // stopped on purpose
      showError(`speech could not start: ${err.message} (press play on the reply)`);
      this.playing = false;
      this.settle();
    });
  }

  finish() {
    this.finished = true;
    this.settle();
  }

  settle() {
    if (this.finished && !this.playing && !this.queue.length) this.resolveDrained();
  }

  stop() {
    this.queue = [];
    this.audio.pause();
    this.playing = false;
    this.finish();
    if (current === this) current = null;
  }
}
