// The demo page: load the bundle named by `?bundle=` (default `bundle/`), caption a picked or dropped image.
// Everything runs in the browser (onnxruntime-web, wasm backend); the server only serves static files.

import * as ort from "onnxruntime-web";

import { Captioner } from "./captioner.js";
import { pixelValues, rgbaToRgb } from "./preprocess.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const bundleUrl = new URL(withSlash(params.get("bundle") ?? "bundle/"), location.href);
let captioner = null;

/** A positive integer URL parameter, or undefined when absent. */
function optionalInt(name) {
  if (!params.has(name)) return undefined;
  const value = Number(params.get(name));
  if (!Number.isInteger(value) || value < 0) throw new Error(`?${name}= must be a whole number, got ${params.get(name)}`);
  return value;
}

function withSlash(path) {
  return path.endsWith("/") ? path : `${path}/`;
}

/** Page state for people (status line) and for the end-to-end test (`data-state` on <body>). */
function setState(state, text) {
  document.body.dataset.state = state;
  $("status").textContent = text;
  $("status").className = state;
}

const ms = (v) => `${v.toFixed(1)} ms`;

/** Fetch one bundle file with a progress line; throws a message naming the file and what to check. */
async function readBundleFile(name) {
  const url = new URL(name, bundleUrl);
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new Error(`could not fetch ${url}: ${err.message}`);
  }
  if (!response.ok) {
    throw new Error(`could not fetch ${url} (HTTP ${response.status}); is ?bundle= the folder that \`distilvit export\` wrote?`);
  }
  const total = Number(response.headers.get("content-length")) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    const share = total ? ` ${Math.round((100 * received) / total)}%` : "";
    setState("loading", `loading ${name}: ${(received / 1e6).toFixed(1)} MB${share}`);
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

/** Decode an image file to RGB pixels as the browser stores them (EXIF orientation applied, no colour management). */
async function decodeImage(blob) {
  const bitmap = await createImageBitmap(blob, { premultiplyAlpha: "none", colorSpaceConversion: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height);
  const image = { rgb: rgbaToRgb(data), width: bitmap.width, height: bitmap.height };
  bitmap.close();
  return image;
}

function showTimings(load, image, result) {
  const t = result.timings;
  const rate = t.tokens && t.decode ? ` (${((1000 * t.tokens) / t.decode).toFixed(1)} tokens/s)` : "";
  $("timings").textContent = [
    `preprocess ${ms(image.ms)}${image.resized ? ` (resized ${image.width}x${image.height} -> model size)` : " (no resize needed)"}`,
    `vision ${ms(t.vision)}, prefill ${ms(t.prefill)}, ${t.tokens} tokens in ${ms(t.decode)}${rate}`,
    `total ${ms(t.total + image.ms)}; bundle loaded in ${ms(load)}`,
  ].join("\n");
}

async function captionFile(file) {
  if (!captioner) return;
  if (!file.type.startsWith("image/")) {
    setState("error", `${file.name} is not an image (type ${file.type || "unknown"})`);
    return;
  }
  $("preview").src = URL.createObjectURL(file);
  $("caption").textContent = "";
  setState("busy", `captioning ${file.name}`);
  try {
    const start = performance.now();
    const image = await decodeImage(file);
    const pixels = pixelValues(image.rgb, image.width, image.height, captioner.manifest.image);
    const prep = { ms: performance.now() - start, resized: pixels.resized, width: image.width, height: image.height };
    const result = await captioner.caption(pixels, {
      maxNewTokens: optionalInt("max_tokens"),
      minNewTokens: optionalInt("min_tokens") ?? 0,
      onToken: (ids) => setState("busy", `captioning ${file.name}: ${ids.length} tokens`),
    });
    $("caption").textContent = result.text;
    showTimings(captioner.loadMs, prep, result);
    window.distilvitResult = { file: file.name, ...result, preprocessMs: prep.ms, resized: prep.resized };
    setState("done", `captioned ${file.name}`);
  } catch (err) {
    setState("error", `captioning failed: ${err.message}`);
  }
}

function wireInputs() {
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) captionFile(event.target.files[0]);
    event.target.value = ""; // picking the same file again captions it again
  });
  const zone = $("drop");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) captionFile(event.dataTransfer.files[0]);
  });
}

async function main() {
  $("bundle").textContent = bundleUrl.href;
  wireInputs();
  try {
    ort.env.wasm.numThreads = optionalInt("threads") ?? 1; // more than 1 needs a cross-origin-isolated page
    const start = performance.now();
    captioner = await Captioner.load(readBundleFile, { onStatus: (text) => setState("loading", text) });
    captioner.loadMs = performance.now() - start;
    const m = captioner.manifest;
    const [h, w] = m.image.size;
    const name = (m.source_model ?? "model").split(/[\\/]/).filter(Boolean).pop();
    $("model").textContent = `${name}: ${w}x${h} images, ${m.num_image_tokens} image tokens, ` +
      `${m.decoder.num_layers} decoder layers, decoder ${m.quantization?.decoder ?? "?"}, ${m.sizes_mb?.total ?? "?"} MB`;
    $("file").disabled = false;
    setState("ready", `ready (bundle loaded in ${ms(captioner.loadMs)}); pick or drop an image`);
  } catch (err) {
    setState("error", `could not load the bundle: ${err.message}`);
  }
}

main();
