"""Captioning images with a trained model (batched, no gradients)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from distilvit.model.modeling import DistilViTForCaptioning
from distilvit.model.processing import CaptionProcessor

# generate() options a user may set; anything else is rejected early with a clear message
GENERATION_OPTIONS = (
    "max_new_tokens", "num_beams", "do_sample", "temperature", "top_k", "top_p",
    "repetition_penalty", "no_repeat_ngram_size", "length_penalty", "banned_words", "seed",
)


def banned_words_ids(processor: CaptionProcessor, words: Sequence[str]) -> list[list[int]]:
    """Token-id sequences for ``words`` (with and without a leading space) for ``bad_words_ids``."""
    ids = []
    for word in words:
        for variant in (word, " " + word):
            tokens = processor.tokenizer(variant, add_special_tokens=False).input_ids
            if tokens and tokens not in ids:
                ids.append(tokens)
    return ids


def generation_config(model, processor, **generation) -> GenerationConfig:
    """The model's default decoding updated with :data:`GENERATION_OPTIONS` (``seed`` seeds torch here)."""
    unknown = set(generation) - set(GENERATION_OPTIONS)
    if unknown:
        raise ValueError(f"unknown generation options {sorted(unknown)}; known: {GENERATION_OPTIONS}")
    generation = dict(generation)
    seed = generation.pop("seed", None)
    if seed is not None:
        torch.manual_seed(seed)
    banned = generation.pop("banned_words", None)
    if banned:
        generation["bad_words_ids"] = banned_words_ids(processor, banned)
    config = model.default_generation_config()
    config.update(**{k: v for k, v in generation.items() if v is not None})
    return config


@torch.no_grad()
def generate_captions(
    model: DistilViTForCaptioning,  # or an EncoderDecoderCaptioner
    processor: CaptionProcessor,  # or an EncoderDecoderProcessor
    images: Sequence,
    *,
    batch_size: int = 8,
    progress: bool = False,
    **generation,
) -> list[str]:
    """Caption PIL ``images``; ``generation`` holds :data:`GENERATION_OPTIONS` (default: greedy, 40 tokens).

    ``banned_words`` is a list of words the captions must not contain; ``seed`` makes sampling repeatable.
    """
    config = generation_config(model, processor, **generation)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    captions: list[str] = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="captioning", disable=not progress, unit="batch"):
        chunk = images[start : start + batch_size]
        # the prefix design's prompt ids and mask; nothing for the encoder-decoder design
        inputs = {k: v.to(device) for k, v in processor.generation_inputs(len(chunk)).items()}
        ids = model.generate(pixel_values=processor.pixel_values(chunk).to(device), generation_config=config, **inputs)
        captions.extend(processor.decode(ids))
    model.train(was_training)
    return captions
