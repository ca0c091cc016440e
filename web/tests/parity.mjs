// Runs the page's pure modules (resize, preprocessing, caption decoding) under node for the Python parity tests
// (tests/test_browser.py). Usage: node web/tests/parity.mjs JOB.json
//
// JOB.json: {"tasks": [task, ...]}; each task is one of
//   {"kind": "preprocess", "input": RGB.raw, "width", "height", "image": manifest image block, "output": F32.raw}
//   {"kind": "resize", "input": RGB.raw, "width", "height", "out_width", "out_height", "resample", "output": RGB.raw}
//   {"kind": "decode", "tokenizer_dir": DIR, "sequences": [[id, ...], ...]}
// Prints {"results": [...]} (decode: the captions; others: null) as JSON on stdout.

import fs from "node:fs";
import path from "node:path";

import { pixelValues } from "../src/preprocess.js";
import { resizeLikePillow } from "../src/resize.js";
import { CaptionDecoder } from "../src/tokenizer.js";

const readJson = (file) => JSON.parse(fs.readFileSync(file, "utf8"));

function run(task) {
  if (task.kind === "resize") {
    const rgb = new Uint8Array(fs.readFileSync(task.input));
    const out = resizeLikePillow(rgb, task.width, task.height, 3, task.out_width, task.out_height, task.resample);
    fs.writeFileSync(task.output, out);
    return null;
  }
  if (task.kind === "preprocess") {
    const rgb = new Uint8Array(fs.readFileSync(task.input));
    const { data } = pixelValues(rgb, task.width, task.height, task.image);
    fs.writeFileSync(task.output, new Uint8Array(data.buffer));
    return null;
  }
  if (task.kind === "decode") {
    const dir = task.tokenizer_dir;
    const configFile = path.join(dir, "tokenizer_config.json");
    const config = fs.existsSync(configFile) ? readJson(configFile) : {};
    const decoder = new CaptionDecoder(readJson(path.join(dir, "tokenizer.json")), config);
    return task.sequences.map((ids) => decoder.decode(ids));
  }
  throw new Error(`unknown task kind ${task.kind}`);
}

const job = readJson(process.argv[2]);
process.stdout.write(JSON.stringify({ results: job.tasks.map(run) }));
