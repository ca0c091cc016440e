"""Captioning with an ONNX bundle: onnxruntime + numpy + PIL + ``tokenizers``, no torch.

    captioner = OnnxCaptioner("bundle/")
    captioner.caption([PIL.Image.open("cat.jpg")])            # greedy
    captioner.caption(images, num_beams=3, max_new_tokens=30)  # beam search

The steps are those of ``docs/export.md``: preprocess -> ``vision.onnx`` -> embed the prompt with
``embed_tokens.onnx`` -> write the image tokens over the ``<image>`` positions -> prefill ``decoder.onnx``
-> greedy or beam search with the KV cache -> decode with the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from tokenizers import Tokenizer

from distilvit.errors import DistilViTError
from distilvit.export.manifest import PARTS, TOKENIZER, BundleError, read_manifest
from distilvit.export.preprocess import preprocess
from distilvit.export.search import beam_search, greedy_search

# what onnxruntime raises for a graph file it cannot read or run
UNREADABLE = (ort_errors.Fail, ort_errors.InvalidGraph, ort_errors.InvalidProtobuf, ort_errors.InvalidArgument,
              ort_errors.NoSuchFile, ort_errors.NotImplemented, ort_errors.RuntimeException)


def _session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except UNREADABLE as err:
        raise BundleError(f"cannot load {path}: {str(err).splitlines()[0]}. The file is corrupt; re-export the model.") from None


class _Decoder:
    """``decoder.onnx`` behind the ``prefill``/``step`` interface of :mod:`distilvit.export.search`."""

    def __init__(self, session: ort.InferenceSession, embed, settings: dict):
        self.session = session
        self.embed = embed
        self.layers = settings["num_layers"]
        self.kv_shape = (settings["num_kv_heads"], settings["head_dim"])
        self.past_names = [f"past_key_values.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]
        self.output_names = ["logits"] + [f"present.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    def _run(self, embeds: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        batch, new = embeds.shape[:2]
        seen = past[0].shape[2]
        feed = {
            "inputs_embeds": embeds,
            "attention_mask": np.ones((batch, seen + new), dtype=np.int64),
            "position_ids": np.broadcast_to(np.arange(seen, seen + new, dtype=np.int64), (batch, new)).copy(),
        }
        feed.update(zip(self.past_names, past))
        logits, *present = self.session.run(self.output_names, feed)
        return logits[:, -1], present

    def prefill(self, embeds: np.ndarray):
        """``(B, T, D)`` -> ``(logits (B, V), past)``."""
        empty = np.zeros((embeds.shape[0], self.kv_shape[0], 0, self.kv_shape[1]), dtype=np.float32)
        return self._run(embeds, [empty] * (2 * self.layers))

    def step(self, tokens: np.ndarray, past: list[np.ndarray]):
        """``(B,)`` new token ids -> ``(logits (B, V), past)``."""
        return self._run(self.embed(np.asarray(tokens, dtype=np.int64)[:, None]), past)


class OnnxCaptioner:
    """Caption PIL images with a bundle written by ``distilvit export``.

    Args:
        bundle_dir: the bundle folder (``manifest.json``, three graphs, tokenizer files).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, all cores).

    Raises:
        BundleError: the folder is not a bundle, a file is missing, or the manifest or a graph is corrupt.
    """

    def __init__(self, bundle_dir: str | Path, *, threads: int | None = None):
        self.bundle_dir = Path(bundle_dir).expanduser()
        self.manifest = read_manifest(self.bundle_dir)
        files = self.manifest["files"]
        self.sessions = {part: _session(self.bundle_dir / files[part], threads) for part in PARTS}
        self.tokenizer = Tokenizer.from_file(str(self.bundle_dir / TOKENIZER))
        self._clean_up_spaces = self._cleanup_setting()
        self.decoder = _Decoder(self.sessions["decoder"], self.embed, self.manifest["decoder"])
        self.prompt_ids = np.asarray(self.manifest["prompt_ids"], dtype=np.int64)

    def _cleanup_setting(self) -> bool:
        """``transformers`` cleans up spaces before punctuation when the tokenizer config asks (never for BPE)."""
        config_path = self.bundle_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        bpe = type(self.tokenizer.model).__name__ == "BPE"
        return bool(config.get("clean_up_tokenization_spaces")) and not bpe

    # ------------------------------------------------------------------ graph wrappers
    def image_tokens(self, pixel_values: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 -> ``(B, N, D)`` projected image tokens."""
        return self.sessions["vision"].run(["image_tokens"], {"pixel_values": pixel_values})[0]

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        """``(B, T)`` int64 ids -> ``(B, T, D)`` embeddings (``<image>`` ids embed as id 0)."""
        return self.sessions["embed_tokens"].run(["inputs_embeds"], {"input_ids": input_ids})[0]

    def prompt_embeds(self, pixel_values: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` -> ``(B, T, D)`` prompt embeddings with the image tokens in place."""
        tokens = self.image_tokens(pixel_values)
        batch = tokens.shape[0]
        embeds = self.embed(np.broadcast_to(self.prompt_ids, (batch, len(self.prompt_ids))).copy())
        start = self.manifest["image_token_start"]
        embeds[:, start : start + self.manifest["num_image_tokens"]] = tokens
        return embeds

    # ------------------------------------------------------------------ captioning
    def generate_ids(
        self,
        pixel_values: np.ndarray,
        *,
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        length_penalty: float = 1.0,
    ) -> list[list[int]]:
        """Caption token ids (EOS dropped) for ``(B, 3, H, W)`` pixel values."""
        max_new = max_new_tokens if max_new_tokens is not None else self.manifest["generation"]["max_new_tokens"]
        self._check_length(max_new)
        embeds = self.prompt_embeds(pixel_values)
        eos = self.manifest["eos_token_ids"]
        if num_beams == 1:
            return greedy_search(self.decoder, embeds, eos_ids=eos, max_new_tokens=max_new, min_new_tokens=min_new_tokens)
        return beam_search(
            self.decoder, embeds, eos_ids=eos, max_new_tokens=max_new, num_beams=num_beams, length_penalty=length_penalty
        )

    def _check_length(self, max_new: int) -> None:
        limit = self.manifest["decoder"].get("max_positions")  # bundles of format 2 written before it: no limit
        if limit is not None and len(self.prompt_ids) + max_new > limit:
            raise DistilViTError(
                f"max_new_tokens {max_new} is too many for this bundle: its decoder covers {limit} positions and the "
                f"prompt takes {len(self.prompt_ids)}; ask for at most {limit - len(self.prompt_ids)}.")

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Token ids -> captions (special tokens skipped, whitespace stripped)."""
        texts = self.tokenizer.decode_batch([list(row) for row in ids], skip_special_tokens=True)
        if self._clean_up_spaces:
            texts = [_clean_up(t) for t in texts]
        return [t.strip() for t in texts]

    def caption(
        self,
        images: Sequence,
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        batch_size: int = 8,
        *,
        length_penalty: float = 1.0,
        min_new_tokens: int = 0,
        progress: bool = False,
    ) -> list[str]:
        """One caption per PIL image (greedy with ``num_beams=1``, else beam search; ``min_new_tokens``: greedy only)."""
        _check_positive(num_beams=num_beams, batch_size=batch_size,
                        **({"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}))
        from tqdm.auto import tqdm

        images = list(images)
        captions: list[str] = []
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="captioning", unit="batch", disable=not progress):
            pixels = preprocess(images[start : start + batch_size], self.manifest["image"])
            ids = self.generate_ids(
                pixels, num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                length_penalty=length_penalty,
            )
            captions.extend(self.decode(ids))
        return captions


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise DistilViTError(f"{name} must be a positive integer, got {value!r}.")


def _clean_up(text: str) -> str:
    """The space clean-up of ``transformers`` tokenizers (``clean_up_tokenization_spaces``)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text
