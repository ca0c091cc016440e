// Captions images with an exported folder through transformers.js itself (@huggingface/transformers, Node,
// onnxruntime-node), loading it from local files only, as a user of that library would
// (tests/test_transformers_js.py). Usage:
//   node web/tests/transformersjs.mjs JOB.json [MODULE]
// JOB.json: {"model_dir": DIR, "images": [PNG, ...], "max_new_tokens": N, "dtype": optional dtype, "threads": optional,
//            "repeat": optional number of timed runs per image}
// MODULE: the transformers.js package to import (default "@huggingface/transformers"; "transformers-v3" is 3.x).
// Prints {"captions": [...], "input_ids": [[...], ...], "ms": [...]} as JSON on stdout.

import { openJob } from "./localjob.mjs";

const { job, library, name, options } = await openJob();
const { AutoModelForImageTextToText, AutoProcessor, RawImage } = library;
const processor = await AutoProcessor.from_pretrained(name);
const model = await AutoModelForImageTextToText.from_pretrained(name, options);

const messages = [{ role: "user", content: [{ type: "image" }] }];
const text = processor.apply_chat_template(messages, { add_generation_prompt: true });
const captions = [];
const inputIds = [];
const ms = [];
for (const file of job.images) {
  const image = await RawImage.read(file);
  let caption;
  for (let run = 0; run < (job.repeat ?? 1); run++) {
    const start = performance.now();
    const inputs = await processor(image, text);
    const output = await model.generate({ ...inputs, max_new_tokens: job.max_new_tokens, do_sample: false });
    const prompt = inputs.input_ids.dims.at(-1);
    caption = processor.batch_decode(output.slice(null, [prompt, null]), { skip_special_tokens: true })[0].trim();
    ms.push(performance.now() - start);
    if (run === 0) inputIds.push(Array.from(inputs.input_ids.data, Number));
  }
  captions.push(caption);
}
await model.dispose();
process.stdout.write(JSON.stringify({ captions, input_ids: inputIds, ms }) + "\n");
