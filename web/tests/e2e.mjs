// End-to-end: drive headless Chromium (playwright-core, the system's browser) through the demo page.
//
//   node web/tests/e2e.mjs --url http://127.0.0.1:PORT/?bundle=bundle/ --image a.png [--image b.png ...]
//        [--drop c.png ...] [--screenshot shot.png] [--chromium /usr/bin/chromium] [--timeout 60000]
//
// Opens the page, waits for the bundle to load, picks each --image with the file input and drops each --drop on the
// drop zone, waiting for each caption.
// Prints {"load_ms", "results": [{file, text, ids, timings, resized}], "console": [...]} as JSON on stdout; exits 1
// with {"error": ...} when the page reports an error or times out.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    image: { type: "string", multiple: true, default: [] },
    drop: { type: "string", multiple: true, default: [] },
    screenshot: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM ?? "/usr/bin/chromium" },
    timeout: { type: "string", default: "60000" },
  },
});
const timeout = Number(args.timeout);
const consoleLines = [];
// no network beyond the local server, no background services, a fresh profile
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

async function waitForState(page, states) {
  await page.waitForFunction((wanted) => wanted.includes(document.body.dataset.state), states, { timeout });
  return page.evaluate(() => ({ state: document.body.dataset.state, status: document.getElementById("status").textContent }));
}

const TYPES = { ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp" };

/** Drop `file` on the page's drop zone, as a person dragging it from the desktop would. */
async function dropFile(page, file) {
  const bytes = fs.readFileSync(file).toString("base64");
  const type = TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream";
  await page.evaluate(({ name, bytes, type }) => {
    const data = Uint8Array.from(atob(bytes), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([data], name, { type }));
    const zone = document.getElementById("drop");
    zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }, { name: path.basename(file), bytes, type });
}

async function captionAll(page) {
  const start = Date.now();
  await page.goto(args.url);
  const loaded = await waitForState(page, ["ready", "error"]);
  if (loaded.state === "error") throw new Error(loaded.status);
  const loadMs = Date.now() - start;
  const results = [];
  const picks = [...args.image.map((file) => ({ file, how: "pick" })), ...args.drop.map((file) => ({ file, how: "drop" }))];
  for (const { file, how } of picks) {
    await page.evaluate(() => { window.distilvitResult = null; });
    if (how === "pick") await page.setInputFiles("#file", file);
    else await dropFile(page, file);
    await page.waitForFunction(() => document.body.dataset.state === "error" || window.distilvitResult, null, { timeout });
    const outcome = await page.evaluate(() => ({ result: window.distilvitResult, status: document.getElementById("status").textContent,
      shown: document.getElementById("caption").textContent }));
    if (!outcome.result) throw new Error(outcome.status);
    results.push({ ...outcome.result, shown: outcome.shown });
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
  return { load_ms: loadMs, results, console: consoleLines };
}

async function main() {
  if (!args.url) throw new Error("--url is required");
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "distilvit-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium, headless: true, args: FLAGS, timeout,
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (err) => consoleLines.push(`pageerror: ${err.message}`));
    try {
      process.stdout.write(JSON.stringify(await captionAll(page)));
    } catch (err) {
      const status = await page.evaluate(() => document.getElementById("status")?.textContent).catch(() => null);
      err.message = `${err.message} (page status: ${status})`;
      if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true }).catch(() => {});
      throw err;
    }
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: String(err.message ?? err), console: consoleLines }));
  process.exitCode = 1;
});
