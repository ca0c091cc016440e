// Generated ids -> caption text with the bundle's tokenizer files (@huggingface/tokenizers, pure JS).
//
// Mirrors the Python side (`transformers` tokenizer `decode(ids, skip_special_tokens=True).strip()`): special tokens
// dropped, transformers 5's `clean_up_tokenization_spaces` rule (off unless the config turns it on, and never for
// BPE models), then Python's `str.strip()` (whose whitespace set differs from JavaScript's `trim()`).

import { Tokenizer } from "@huggingface/tokenizers";

// the characters Python's str.isspace() accepts (str.strip() removes them at both ends)
const PY_SPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "gu");

/** Python's `str.strip()` with no argument. */
export function pythonStrip(text) {
  return text.replace(PY_STRIP, "");
}

/** Whether transformers 5 would clean up tokenization spaces when decoding with this tokenizer. */
export function cleansUpSpaces(tokenizerJson, tokenizerConfig) {
  if (!tokenizerConfig.clean_up_tokenization_spaces) return false;
  const isBpe = tokenizerJson.model?.type === "BPE";
  return !isBpe || Boolean(tokenizerConfig.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output);
}

/** A caption decoder for the parsed `tokenizer.json` and `tokenizer_config.json`. */
export class CaptionDecoder {
  constructor(tokenizerJson, tokenizerConfig = {}) {
    this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    this.cleanUp = cleansUpSpaces(tokenizerJson, tokenizerConfig);
  }

  /** Ids (numbers) -> caption: special tokens skipped, whitespace stripped. */
  decode(ids) {
    if (ids.length === 0) return ""; // the library rejects an empty list; an EOS-first caption is empty
    const text = this.tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: this.cleanUp });
    return pythonStrip(text);
  }
}
