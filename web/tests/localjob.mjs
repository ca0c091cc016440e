// The part the transformers.js test scripts share (transformersjs.mjs, imagetotext.mjs): read the JOB.json named
// on the command line, import the transformers.js package (argv[3], default "@huggingface/transformers";
// "transformers-v3" is 3.x), allow local files only, and build the model name and load options of the job.

import fs from "node:fs";
import path from "node:path";

export async function openJob() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const library = await import(process.argv[3] ?? "@huggingface/transformers");
  library.env.allowRemoteModels = false;
  library.env.allowLocalModels = true;
  library.env.localModelPath = path.dirname(path.resolve(job.model_dir)) + path.sep;
  const name = path.basename(path.resolve(job.model_dir));
  const options = job.dtype ? { dtype: job.dtype } : {};
  if (job.threads) options.session_options = { intraOpNumThreads: job.threads, interOpNumThreads: 1 };
  return { job, library, name, options };
}
