// The device page (edge_node/browser.py): a phone's browser as a device agent. It enrols with the
// operator's one-time code and a non-extractable WebCrypto key, runs the device partition (blocks
// [0, split) of the model, the same ONNX files the cloud distributes, sha256-checked against the
// manifest) in onnxruntime-web, and streams the encoded activations as ecd.v1.Frame messages over a
// WebSocket to the edge node that serves it. One state at a time, shown on the page (State).
"use strict";

const State = Object.freeze({
  NOT_ENROLLED: "not enrolled", ENROLLING: "enrolling", LOADING: "loading the model",
  NO_ENGINE: "onnxruntime-web missing", CAMERA_DENIED: "camera denied", CONNECTING: "connecting",
  STREAMING: "streaming", PAUSED: "paused (tab hidden)", RECONNECTING: "reconnecting", OFFLINE: "offline",
  REFUSED: "refused", RESPLITTING: "applying the new weights",
});
const REFUSED_CLOSE = 4401;  // edge_node.browser.REFUSED: the edge refused the session (do not retry)
const KEY_DB = "ecd-device", KEY_STORE = "keys";
const params = new URLSearchParams(location.search);
const DEBUG = params.get("debug") === "1";  // keeps each sent frame's pixels (window.ecdDebug), for tests
const $ = (id) => document.getElementById(id);

const page = {
  state: null, detail: "", ws: null, key: null, enrolment: null, assignment: null, manifest: null,
  sessions: [], sessionOf: null, video: null, canvas: null, ctx: null, backoffMs: 500, timer: null,
  unanswered: new Map(),  // frame_id -> the frame's bytes, until its result comes (resent after a reconnect)
  answered: 0, errors: 0, bytesUp: 0, latency: [], busy: false, ticks: 0,
  fps: Number(params.get("fps") || 10), window: Number(params.get("window") || 4),
};
const debug = { frames: new Map(), results: [] };
if (DEBUG) window.ecdDebug = debug;
window.ecdPage = page;

function setState(state, detail = "") {
  page.state = state; page.detail = detail;
  const el = $("state");
  el.textContent = state + (detail ? ": " + detail : "");
  el.dataset.state = Object.keys(State).find((k) => State[k] === state);
}

// ---- the key: made once, non-extractable, kept in IndexedDB (a CryptoKey survives structured clone)
function keyDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(KEY_DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(KEY_STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
async function keyGet() {
  const db = await keyDb();
  return new Promise((resolve) => {
    const req = db.transaction(KEY_STORE).objectStore(KEY_STORE).get("device");
    req.onsuccess = () => resolve(req.result || null);
    req.onerror = () => resolve(null);
  });
}
async function keyPut(pair) {
  const db = await keyDb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(KEY_STORE, "readwrite");
    tx.objectStore(KEY_STORE).put(pair, "device");
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
  });
}
const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)));
const unb64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

// ---- enrolment
async function enrol(event) {
  event.preventDefault();
  setState(State.ENROLLING);
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const spki = await crypto.subtle.exportKey("spki", pair.publicKey);  // only the public half can leave
  const body = {
    code: $("code").value.trim(), public_key: b64(spki), device_name: $("name").value || "phone",
    model_id: $("model").value, w_energy: Number($("w_energy").value), w_privacy: Number($("w_privacy").value),
    min_split: Number($("min_split").value), split: Number($("split").value), encoding: $("encoding").value, radio: $("radio").value,
  };
  const response = await fetch("/api/enrol", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const reply = await response.json();
  if (!response.ok) { setState(State.NOT_ENROLLED, reply.error); return; }
  await keyPut({ privateKey: pair.privateKey, spki: b64(spki) });
  page.key = { privateKey: pair.privateKey, spki: b64(spki) };
  page.enrolment = reply.assignment;
  localStorage.setItem("ecd.enrolment", JSON.stringify(reply.assignment));
  history.replaceState(null, "", location.pathname + (DEBUG ? "?debug=1&fps=" + page.fps + "&window=" + page.window : ""));
  await start();
}

// ---- the device partition: blocks [0, split) in onnxruntime-web
async function sha256hex(buf) {
  return Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", buf)), (b) => b.toString(16).padStart(2, "0")).join("");
}
async function loadPartition(a) {
  if (page.sessionOf === a.model_version + "/" + a.split_device) return;
  setState(State.LOADING, a.model_id + " blocks 0.." + a.split_device);
  const base = "/api/models/" + encodeURIComponent(a.model_id) + "/" + encodeURIComponent(a.model_version) + "/";
  page.manifest = await (await fetch(base + "manifest.json")).json();
  page.sessions = [];
  for (const block of page.manifest.blocks.slice(0, a.split_device)) {
    const buf = await (await fetch(base + encodeURIComponent(block.file))).arrayBuffer();
    if (await sha256hex(buf) !== block.sha256) throw new Error("manifest: " + block.file + " does not match its sha256");
    page.sessions.push(await ort.InferenceSession.create(buf, { executionProviders: ["wasm"] }));
  }
  page.sessionOf = a.model_version + "/" + a.split_device;
}

// ---- camera: frames at the model's input size
async function openCamera() {
  const [c, h, w] = page.manifest.input.shape;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: false, video: { width: { ideal: w }, height: { ideal: h }, facingMode: "environment" } });
    page.video.srcObject = stream;
    await page.video.play();
  } catch (e) {
    setState(State.CAMERA_DENIED, (e && e.name) + " — allow the camera for this page in the browser's site settings, then reload");
    return false;
  }
  page.canvas.width = w; page.canvas.height = h;
  return true;
}

function capture() {  // the model's input: uint8 pixels [H, W, C] (grey by PIL's ITU-R 601-2 luma: what `convert("L")` gives)
  const [c, h, w] = page.manifest.input.shape;
  page.ctx.drawImage(page.video, 0, 0, w, h);
  const rgba = page.ctx.getImageData(0, 0, w, h).data;
  const pixels = new Uint8Array(h * w * c);
  for (let i = 0, j = 0; i < h * w; i++, j += 4) {
    if (c === 1) pixels[i] = (rgba[j] * 19595 + rgba[j + 1] * 38470 + rgba[j + 2] * 7471 + 0x8000) >>> 16;
    else for (let k = 0; k < c; k++) pixels[i * c + k] = rgba[j + k];
  }
  return pixels;
}

function normalise(pixels) {  // ecd.manifest.InputSpec.preprocess: float32 NCHW, (p * scale - mean) / std
  const { shape, pixel_scale: scale, mean, std } = page.manifest.input;
  const [c, h, w] = shape;
  const x = new Float32Array(c * h * w);
  const s = Math.fround(scale);
  for (let k = 0; k < c; k++) {
    const m = Math.fround(mean[k]), d = Math.fround(std[k]);
    for (let i = 0; i < h * w; i++) x[k * h * w + i] = Math.fround(Math.fround(Math.fround(pixels[i * c + k] * s) - m) / d);
  }
  return x;
}

function defend(x, scale) {  // Laplace(0, scale) noise on the activation before it leaves (AgentCore._defend); fresh entropy
  if (!(scale > 0)) return x;
  const u32 = new Uint32Array(x.length);
  crypto.getRandomValues(u32);
  for (let i = 0; i < x.length; i++) {
    const u = (u32[i] + 0.5) / 4294967296 - 0.5;  // uniform in (-0.5, 0.5)
    x[i] = Math.fround(x[i] - scale * Math.sign(u) * Math.log(1 - 2 * Math.abs(u)));
  }
  return x;
}

async function devicePartition(pixels, a) {
  if (a.split_device === 0 && !(a.defence_scale > 0)) {  // nothing to run: the image as captured (UINT8_IMAGE), as the Python agent sends it
    const [c, h, w] = page.manifest.input.shape;
    return { encoding: "uint8", shape: [1, h, w, c], data: pixels };
  }
  let x = normalise(pixels), shape = [1, ...page.manifest.input.shape];
  for (const session of page.sessions) {
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", x, shape) });
    const y = out[session.outputNames[0]];
    x = y.data; shape = y.dims.map(Number);
  }
  return ecdWire.encode(defend(x, a.defence_scale), shape, a.encoding);
}

async function sendOne() {
  const a = page.assignment;
  page.busy = true;
  try {
    const pixels = capture();
    const t0 = performance.now();
    const tensor = await devicePartition(pixels, a);
    const frameId = Number(localStorage.getItem("ecd.next_frame_id") || 1);
    localStorage.setItem("ecd.next_frame_id", String(frameId + 1));  // monotonic, across reloads
    const bytes = ecdWire.frame({ deviceId: a.device_id, frameId, token: a.token, modelId: a.model_id, modelVersion: a.model_version,
      splitDevice: a.split_device, tensor, capturedMs: Date.now(), deviceComputeS: (performance.now() - t0) / 1000 });
    page.unanswered.set(frameId, { bytes, sentAt: performance.now() });
    if (DEBUG) debug.frames.set(frameId, { pixels: Array.from(pixels), split: a.split_device, bytes: bytes.length, encoding: tensor.encoding });
    page.ws.send(bytes);
    page.bytesUp += bytes.length;
  } finally {
    page.busy = false;
  }
}

function whenDrained(ws, then) {  // every frame in flight answered, at the split it was sent at
  if (page.ws !== ws) return;
  if (page.unanswered.size) { setTimeout(() => whenDrained(ws, then), 20); return; }
  then();
}

function applyPreferences() {  // as the agent's panel: no new frame, the ones in flight answered, then the new weights
  if (page.state !== State.STREAMING && page.state !== State.PAUSED) return;
  const ws = page.ws;
  setState(State.RESPLITTING);
  whenDrained(ws, () => ws.send(JSON.stringify({ preferences: { w_energy: Number($("p_energy").value),
    w_privacy: Number($("p_privacy").value), min_split: Number($("p_floor").value), radio: $("radio").value } })));
}

function tick() {
  page.ticks++;
  if (page.state !== State.STREAMING || page.busy || page.unanswered.size >= page.window) return;
  sendOne().catch((e) => setState(State.RECONNECTING, String(e)));
}

function onResult(buf) {
  const r = ecdWire.result(new Uint8Array(buf));
  const sent = page.unanswered.get(r.frameId);
  if (!sent) return;  // an answer to a frame answered already
  page.unanswered.delete(r.frameId);
  const latencyMs = performance.now() - sent.sentAt;
  page.latency.push(latencyMs);
  if (page.latency.length > 100) page.latency.shift();
  if (r.error) { page.errors++; $("answer").textContent = "error: " + r.error.message; }
  else { page.answered++; $("answer").textContent = r.heads.length ? r.heads[0].label : "(no head)"; }
  if (DEBUG) debug.results.push(Object.assign(r, { latencyMs, at: performance.now() }));
  const mean = page.latency.reduce((s, v) => s + v, 0) / Math.max(page.latency.length, 1);
  $("stats").textContent = `answered ${page.answered}, errors ${page.errors}, in flight ${page.unanswered.size}, ` +
    `split ${r.splitDevice}/${r.splitEdge}, ${Math.round(page.bytesUp / Math.max(page.answered + page.errors, 1))} B up per frame, ` +
    `latency ${mean.toFixed(1)} ms`;
  tick();
}

// ---- the session: challenge signed, assignment, frames; reconnects by itself
function connect() {
  if (!navigator.onLine) { setState(State.OFFLINE, "waiting for the network"); return; }
  setState(page.unanswered.size ? State.RECONNECTING : State.CONNECTING);
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.binaryType = "arraybuffer";
  page.ws = ws;
  ws.onmessage = async (event) => {
    if (typeof event.data !== "string") { onResult(event.data); return; }
    const msg = JSON.parse(event.data);
    if (msg.challenge) {
      const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, page.key.privateKey, unb64(msg.challenge));
      ws.send(JSON.stringify({ device_id: page.enrolment.device_id, token: page.enrolment.token, public_key: page.key.spki, signature: b64(signature) }));
    } else if (msg.assignment) {
      page.assignment = msg.assignment;
      await loadPartition(msg.assignment);
      $("p_energy").value = msg.assignment.preferences.w_energy.toFixed(2); $("p_privacy").value = msg.assignment.preferences.w_privacy.toFixed(2);
      $("p_floor").value = msg.assignment.preferences.min_split; $("p_floor").min = msg.assignment.preferences.min_split;
      page.backoffMs = 500;
      for (const [, f] of [...page.unanswered].sort((p, q) => p[0] - q[0])) { f.sentAt = performance.now(); ws.send(f.bytes); }
      setState(document.hidden ? State.PAUSED : State.STREAMING);
      tick();
    } else if (msg.preferences_applied) {  // the next session streams at the new split, once this one's frames are answered
      page.enrolment = Object.assign(page.enrolment, { split_device: msg.preferences_applied.split_device });
      localStorage.setItem("ecd.enrolment", JSON.stringify(page.enrolment));
      $("prefs-note").textContent = `split ${msg.preferences_applied.split_device} (was ${page.assignment.split_device})`;
      page.backoffMs = 0;
      ws.close(1000);  // onclose reconnects at once: the new session's assignment carries the new split
    } else if (msg.preferences_error) {
      $("prefs-note").textContent = msg.preferences_error;
      setState(document.hidden ? State.PAUSED : State.STREAMING);
      tick();
    } else if (msg.error) {
      page.detail = msg.error;
    }
  };
  ws.onclose = (event) => {
    if (page.ws !== ws) return;
    if (event.code === REFUSED_CLOSE) { setState(State.REFUSED, page.detail || "the edge node refused this device"); return; }
    const wait = page.backoffMs * (0.5 + Math.random() / 2);
    page.backoffMs = Math.min(Math.max(page.backoffMs * 2, 500), 10000);
    setState(navigator.onLine ? State.RECONNECTING : State.OFFLINE, `${page.unanswered.size} frames to resend`);
    setTimeout(connect, wait);
  };
}

async function start() {
  $("enrol").hidden = true;
  $("device").hidden = false;
  if (typeof ort === "undefined") { setState(State.NO_ENGINE, "the edge node was installed without `make browser-assets`"); return; }
  ort.env.wasm.wasmPaths = "/static/ort/";
  ort.env.wasm.numThreads = 1;  // no cross-origin isolation, so no shared memory for threads
  $("who").textContent = page.enrolment.device_name || page.enrolment.device_id;
  await loadPartition(page.enrolment);
  if (!(await openCamera())) return;
  page.timer = setInterval(tick, 1000 / page.fps);
  connect();
}

document.addEventListener("visibilitychange", () => {  // a backgrounded tab sends nothing; back in front, it goes on
  if (document.hidden && page.state === State.STREAMING) setState(State.PAUSED);
  else if (!document.hidden && page.state === State.PAUSED) { setState(State.STREAMING); tick(); }
});
window.addEventListener("online", () => { if (page.state === State.OFFLINE) { page.backoffMs = 500; connect(); } });
window.addEventListener("offline", () => { if (page.ws) page.ws.close(); });

window.addEventListener("load", async () => {
  page.video = $("video"); page.canvas = $("canvas"); page.ctx = page.canvas.getContext("2d", { willReadFrequently: true });
  $("apply").addEventListener("click", applyPreferences);
  for (const id of ["w_energy", "w_privacy", "p_energy", "p_privacy"]) $(id).addEventListener("input", () => { $(id + "_value").textContent = $(id).value; });
  $("enrol").addEventListener("submit", (e) => enrol(e).catch((err) => setState(State.NOT_ENROLLED, String(err))));
  $("code").value = params.get("code") || "";
  const saved = localStorage.getItem("ecd.enrolment");
  page.key = await keyGet();
  if (saved && page.key) { page.enrolment = JSON.parse(saved); start().catch((e) => setState(State.RECONNECTING, String(e))); }
  else setState(State.NOT_ENROLLED, params.get("code") ? "press Enrol" : "scan the operator's QR code or type its code");
});
