// Captioning with an exported distilvit ONNX bundle in onnxruntime-web (docs/export.md is the contract):
// vision.onnx -> embed the prompt -> put the image tokens in place -> prefill decoder.onnx -> greedy loop with the
// KV cache (`present.*` fed back as `past_key_values.*`) -> decode the ids with the bundle's tokenizer.

import * as ort from "onnxruntime-web";

import { CaptionDecoder } from "./tokenizer.js";

const FORMAT = "distilvit-onnx";
const FORMAT_VERSION = 2; // reads versions 1 and 2 (2: graphs may share external-data files, `external_data`)

/** Check the manifest is a bundle this page understands; throws a message saying what is wrong. */
export function checkManifest(manifest) {
  if (manifest?.format !== FORMAT) {
    throw new Error(`not a distilvit ONNX bundle (manifest format is ${JSON.stringify(manifest?.format)}, expected "${FORMAT}")`);
  }
  if (!Number.isInteger(manifest.format_version) || manifest.format_version < 1 || manifest.format_version > FORMAT_VERSION) {
    throw new Error(`bundle format version ${manifest.format_version} is not supported (this page reads versions 1 to ${FORMAT_VERSION}); re-export the model with this distilvit version`);
  }
  for (const key of ["files", "image", "prompt_ids", "image_token_start", "num_image_tokens", "eos_token_ids", "decoder"]) {
    if (manifest[key] === undefined) throw new Error(`bundle manifest has no "${key}"; re-export the model`);
  }
  return manifest;
}

function int64(values, dims) {
  return new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

/**
 * Index of the largest of `length` values from `offset` (the first one on ties, as numpy's argmax), never one in
 * `banned` (a Set).
 */
export function argmax(data, offset, length, banned = null) {
  let best = -1;
  let bestValue = -Infinity;
  for (let i = 0; i < length; i++) {
    const v = data[offset + i];
    if ((v > bestValue || best < 0) && !banned?.has(i)) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/** A loaded bundle: three ONNX sessions, the manifest and the caption decoder. */
export class Captioner {
  constructor(manifest, sessions, decoder) {
    this.manifest = manifest;
    this.vision = sessions.vision;
    this.embedTokens = sessions.embed_tokens;
    this.decoder = sessions.decoder;
    this.captionDecoder = decoder;
  }

  /**
   * Load a bundle. `read(name)` returns a Promise of the bytes (Uint8Array) of a bundle file.
   * @param {(name: string) => Promise<Uint8Array>} read
   * @param {{onStatus?: (text: string) => void, sessionOptions?: object}} options
   */
  static async load(read, { onStatus = () => {}, sessionOptions = {} } = {}) {
    const json = async (name) => JSON.parse(new TextDecoder().decode(await read(name)));
    onStatus("reading manifest.json");
    const manifest = checkManifest(await json("manifest.json"));
    const tokenizer = await json("tokenizer.json");
    let config = {};
    try {
      config = await json("tokenizer_config.json");
    } catch {
      // optional: tokenizer.json alone decodes, with transformers' defaults
    }
    // external-data files shared by several graphs (the tied embedding table / output head): fetched once,
    // handed to every session that reads them (`path` is the name the graphs' initializers refer to)
    const external = manifest.external_data ?? {};
    const shared = new Map();
    for (const name of Object.values(external).flat()) {
      if (shared.has(name)) continue;
      onStatus(`loading ${name}`);
      shared.set(name, await read(name));
    }
    const sessions = {};
    for (const part of ["vision", "embed_tokens", "decoder"]) {
      const file = manifest.files[part];
      onStatus(`loading ${file}`);
      const bytes = await read(file);
      onStatus(`starting ${file}`);
      const externalData = (external[part] ?? []).map((name) => ({ path: name, data: shared.get(name) }));
      try {
        sessions[part] = await ort.InferenceSession.create(bytes, {
          executionProviders: ["wasm"],
          ...(externalData.length ? { externalData } : {}),
          ...sessionOptions,
        });
      } catch (err) {
        throw new Error(`onnxruntime-web cannot load ${file}: ${err.message ?? err}`);
      }
    }
    return new Captioner(manifest, sessions, new CaptionDecoder(tokenizer, config));
  }

  /** `input_ids` (T) -> embeddings, a Float32Array of shape (T, D). */
  async embed(ids) {
    const out = await this.embedTokens.run({ input_ids: int64(ids, [1, ids.length]) });
    return (out.inputs_embeds ?? out[this.embedTokens.outputNames[0]]).data;
  }

  /** The prompt's embeddings (T, D) with the image tokens (N, D) in place of the image placeholders. */
  async promptEmbeddings(imageTokens) {
    const m = this.manifest;
    const hidden = m.decoder.hidden_size;
    const embeds = Float32Array.from(await this.embed(m.prompt_ids));
    if (imageTokens.length !== m.num_image_tokens * hidden) {
      throw new Error(`vision.onnx gave ${imageTokens.length / hidden} image tokens, the manifest says ${m.num_image_tokens}`);
    }
    embeds.set(imageTokens, m.image_token_start * hidden);
    return embeds;
  }

  /** Empty `past_key_values.*` (B=1, H_kv, 0, d_head) for the prefill step. */
  emptyPast() {
    const { num_layers: layers, num_kv_heads: heads, head_dim: headDim } = this.manifest.decoder;
    const past = {};
    for (let i = 0; i < layers; i++) {
      for (const kind of ["key", "value"]) {
        past[`past_key_values.${i}.${kind}`] = new ort.Tensor("float32", new Float32Array(0), [1, heads, 0, headDim]);
      }
    }
    return past;
  }

  /** One decoder call on `embeds` (S new positions) after `pastLength` cached ones -> {logits, past}. */
  async step(embeds, length, pastLength, past) {
    const hidden = this.manifest.decoder.hidden_size;
    const feeds = {
      inputs_embeds: new ort.Tensor("float32", embeds, [1, length, hidden]),
      attention_mask: int64(new Array(pastLength + length).fill(1), [1, pastLength + length]),
      position_ids: int64(Array.from({ length }, (_, i) => pastLength + i), [1, length]),
      ...past,
    };
    const wanted = Object.fromEntries(this.decoder.inputNames.filter((n) => n in feeds).map((n) => [n, feeds[n]]));
    const out = await this.decoder.run(wanted);
    const next = {};
    for (const name of Object.keys(past)) next[name] = out[name.replace("past_key_values.", "present.")];
    return { logits: out.logits, past: next };
  }

  /**
   * Caption one image.
   * @param {{data: Float32Array, dims: number[]}} pixels  `pixel_values` (1, 3, H, W)
   * @param {{maxNewTokens?: number, minNewTokens?: number, onToken?: (ids: number[]) => void}} options
   *   maxNewTokens defaults to the manifest's; minNewTokens forbids EOS for that many steps (fixed-length runs)
   * @returns {Promise<{text: string, ids: number[], timings: object}>} timings in milliseconds
   */
  async caption(pixels, { maxNewTokens, minNewTokens = 0, onToken = () => {} } = {}) {
    const m = this.manifest;
    const limit = maxNewTokens ?? m.generation?.max_new_tokens ?? 40;
    const eos = new Set(m.eos_token_ids);
    const vocab = m.decoder.vocab_size;
    const clock = () => performance.now();
    const t0 = clock();
    const visionOut = await this.vision.run({ pixel_values: new ort.Tensor("float32", pixels.data, pixels.dims) });
    const imageTokens = (visionOut.image_tokens ?? visionOut[this.vision.outputNames[0]]).data;
    const t1 = clock();
    const prompt = await this.promptEmbeddings(imageTokens);
    let { logits, past } = await this.step(prompt, m.prompt_ids.length, 0, this.emptyPast());
    const t2 = clock();
    let length = m.prompt_ids.length;
    const ids = [];
    while (ids.length < limit) {
      const rows = logits.dims[1];
      const next = argmax(logits.data, (rows - 1) * vocab, vocab, ids.length < minNewTokens ? eos : null);
      if (eos.has(next)) break;
      ids.push(next);
      onToken(ids);
      if (ids.length >= limit) break;
      ({ logits, past } = await this.step(await this.embed([next]), 1, length, past));
      length += 1;
    }
    const t3 = clock();
    const timings = { vision: t1 - t0, prefill: t2 - t1, decode: t3 - t2, total: t3 - t0, tokens: ids.length };
    return { text: this.captionDecoder.decode(ids), ids, timings };
  }
}
