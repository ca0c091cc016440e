// Captions images with an exported image-to-text folder through transformers.js's own `image-to-text` pipeline
// (AutoModelForVision2Seq, as Firefox's moz-image-to-text runs it), from local files only
// (tests/test_transformers_js.py). Usage:
//   node web/tests/imagetotext.mjs JOB.json [MODULE]
// JOB.json: {"model_dir": DIR, "images": [PNG, ...], "max_new_tokens": N, "dtype": optional, "threads": optional,
//            "repeat": optional timed runs per image}
// MODULE: the transformers.js package to import (default "@huggingface/transformers"; "transformers-v3" is 3.x).
// Prints {"captions": [...], "ms": [...]} as JSON on stdout.

import { openJob } from "./localjob.mjs";

const { job, library, name, options } = await openJob();
const captioner = await library.pipeline("image-to-text", name, options);
const captions = [];
const ms = [];
for (const file of job.images) {
  let caption;
  for (let run = 0; run < (job.repeat ?? 1); run++) {
    const start = performance.now();
    const [result] = await captioner(file, { max_new_tokens: job.max_new_tokens, do_sample: false });
    ms.push(performance.now() - start);
    caption = result.generated_text;
  }
  captions.push(caption);
}
await captioner.dispose();
process.stdout.write(JSON.stringify({ captions, ms }) + "\n");
