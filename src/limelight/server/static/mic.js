// Speaking to a character.  Push-to-talk: hold the mic button (or Space, when no text box
// has the focus) to record; on release the recording goes to POST /api/sessions/{id}/voice
// and the reply streams like a typed one.  Call mode loops hands-free: listen, notice the
// end of speech by ~800 ms of quiet (WebAudio analyser energy under a threshold), send,
// play the spoken answer to its end, listen again, until the call is ended.
//
// Recordings are re-encoded here as 16 kHz mono 16-bit WAV, so the server never needs a
// WebM/Opus decoder; if the browser cannot decode its own recording it is sent as is.

import { chat, sendVoice } from "./chat.js";
import { stopSpeaking } from "./speech.js";
import { $, guard, isTyping, showError, showNotice } from "./ui.js";

const TICK_MS = 50;
const SILENCE_MS = 800; // this long under the threshold after speech ends an utterance
const MIN_SPEECH_MS = 250; // this much over it counts as speech (not a cough or a click)
const RESTART_MS = 15000; // a recording that heard nothing is started afresh
const mic = { pending: null, recording: null, calling: false, stream: null, context: null };

const threshold = () => parseFloat(localStorage.getItem("limelight.vadThreshold")) || 0.02;

async function openMic() {
  if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
    throw new Error("this browser cannot record audio here (it needs https or localhost)");
  }
  return navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
}

class Recording {
  constructor(stream) {
    this.chunks = [];
    this.started = performance.now();
    this.recorder = new MediaRecorder(stream);
    this.recorder.ondataavailable = (e) => e.data.size && this.chunks.push(e.data);
    this.recorder.start();
  }

  stop() {
    return new Promise((resolve) => {
      this.recorder.onstop = () => resolve({
        blob: new Blob(this.chunks, { type: this.recorder.mimeType }),
        seconds: (performance.now() - this.started) / 1000,
      });
      this.recorder.stop();
    });
  }
}

// --- push-to-talk -----------------------------------------------------------------------

async function pressStart() {
  if (mic.pending || mic.calling || chat.busy || !chat.session) return;
  stopSpeaking();
  $("mic").classList.add("recording");
  $("mic").setAttribute("aria-pressed", "true");
  mic.pending = openMic().then((stream) => {
    mic.stream = stream;
    mic.recording = new Recording(stream);
  });
  try {
    await mic.pending;
  } catch (err) {
    releaseMic();
    throw err;
  }
}

async function pressEnd() {
  const pending = mic.pending;
  if (!pending) return;
  try {
    await pending;
  } catch {
    return; // pressStart has shown why
  }
  const recording = mic.recording;
  const { blob, seconds } = await recording.stop();
  releaseMic();
  if (seconds < 0.3 || !blob.size) {
    showNotice("Hold the mic button (or Space) while you talk, then let go.");
    return;
  }
  await sendVoice(await toWav(blob));
}

function releaseMic() {
  mic.stream?.getTracks().forEach((t) => t.stop());
  mic.pending = mic.recording = mic.stream = null;
  $("mic").classList.remove("recording");
  $("mic").setAttribute("aria-pressed", "false");
}

// --- call mode --------------------------------------------------------------------------

async function toggleCall() {
  if (mic.calling) return endCall();
  mic.calling = true;
  showCall("starting…");
  try {
    mic.stream = await openMic();
    mic.context = new AudioContext();
    const analyser = mic.context.createAnalyser();
    analyser.fftSize = 1024;
    mic.context.createMediaStreamSource(mic.stream).connect(analyser);
    while (mic.calling) {
      showCall("listening…");
      const blob = await listen(analyser);
      if (!blob || !mic.calling) break;
      showCall("thinking…");
      let player = null;
      try {
        player = await sendVoice(await toWav(blob), { speak: true });
      } catch (err) {
        if (err.status !== 400) throw err; // e.g. nothing heard in it: say so, keep listening
        showError(err.message);
        continue;
      }
      if (player && mic.calling) {
        showCall("speaking…");
        await player.drained;
      }
    }
  } finally {
    endCall();
  }
}

export function endCall() {
  mic.calling = false;
  mic.stream?.getTracks().forEach((t) => t.stop());
  mic.context?.close();
  mic.stream = mic.context = null;
  stopSpeaking();
  showCall("");
}

function showCall(status) {
  $("call").setAttribute("aria-pressed", String(mic.calling));
  $("call").classList.toggle("on", mic.calling);
  $("call-status").textContent = status;
  $("call-status").hidden = !status;
}

// Record until speech has been heard and then ~SILENCE_MS of quiet; null if the call ends.
function listen(analyser) {
  return new Promise((resolve) => {
    let recording = new Recording(mic.stream);
    const samples = new Float32Array(analyser.fftSize);
    let heard = 0;
    let quietFor = 0;
    let finishing = false;
    const finish = async (keep) => {
      finishing = true;
      clearInterval(timer);
      const { blob } = await recording.stop();
      resolve(keep ? blob : null);
    };
    const timer = setInterval(() => {
      if (finishing) return;
      if (!mic.calling) return finish(false);
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const x of samples) sum += x * x;
      const loud = Math.sqrt(sum / samples.length) > threshold();
      if (loud) {
        heard += TICK_MS;
        quietFor = 0;
      } else if (heard >= MIN_SPEECH_MS) {
        quietFor += TICK_MS;
        if (quietFor >= SILENCE_MS) return finish(true);
      } else {
        heard = Math.max(0, heard - TICK_MS); // stray noise fades
        if (performance.now() - recording.started > RESTART_MS) {
          recording.stop();
          recording = new Recording(mic.stream);
        }
      }
    }, TICK_MS);
  });
}

// --- WAV --------------------------------------------------------------------------------

async function toWav(blob) {
  let decoded;
  try {
    decoded = await new OfflineAudioContext(1, 1, 16000).decodeAudioData(await blob.arrayBuffer());
  } catch {
    const ext = (blob.type.split("/")[1] || "webm").split(";")[0];
    return new File([blob], `speech.${ext}`, { type: blob.type });
  }
  const mono = new Float32Array(decoded.length);
  for (let c = 0; c < decoded.numberOfChannels; c++) {
    decoded.getChannelData(c).forEach((x, i) => (mono[i] += x / decoded.numberOfChannels));
  }
  return new File([encodeWav(mono, decoded.sampleRate)], "speech.wav", { type: "audio/wav" });
}

function encodeWav(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
  return view.buffer;
}

export function setupMic() {
  const button = $("mic");
  button.addEventListener("pointerdown", guard(async (e) => {
    if (e.button !== 0) return;
    button.setPointerCapture?.(e.pointerId);
    await pressStart();
  }));
  for (const kind of ["pointerup", "pointercancel"]) button.addEventListener(kind, guard(pressEnd));
  button.addEventListener("contextmenu", (e) => e.preventDefault()); // a long press on a phone
  const spaceTalks = (e) => e.code === "Space" && !$("chat").hidden && !isTyping(e.target);
  document.addEventListener("keydown", guard(async (e) => {
    if (!spaceTalks(e)) return;
    e.preventDefault();
    if (!e.repeat) await pressStart();
  }));
  document.addEventListener("keyup", guard(async (e) => {
    if (!spaceTalks(e)) return;
    e.preventDefault();
    await pressEnd();
  }));
  $("call").onclick = guard(toggleCall);
}
