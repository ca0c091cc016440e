"""Images and captions in and out of the encoder-decoder captioner (the ``CaptionProcessor`` methods).

Labels of one row (the decoder reads them shifted right behind the decoder start token)::

    caption tokens  EOS | -100 padding
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoTokenizer

from distilvit.errors import DataError, ModelError

IGNORE_INDEX = -100
SETTINGS_FILE = "distilvit_processor.json"


def end_token_id(tokenizer) -> int:
    """The token that ends a caption: EOS, else SEP (BERT-style tokenizers)."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if eos is None:
        raise ModelError("the decoder's tokenizer has neither an EOS nor a SEP token; captions could never end.")
    return eos


class EncoderDecoderProcessor:
    """Image processor + tokenizer of an encoder-decoder captioner; no prompt, no image placeholders."""

    architecture = "encoder-decoder"

    def __init__(self, tokenizer, image_processor, *, max_length: int = 30):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_length = max_length
        self.eos_token_id = end_token_id(tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(self.eos_token_id)
        self.pad_token_id = tokenizer.pad_token_id

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        settings = {"architecture": self.architecture, "max_length": self.max_length}
        (Path(path) / SETTINGS_FILE).write_text(json.dumps(settings))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> EncoderDecoderProcessor:
        """Load from a model folder; the settings file is optional (folders written by other tools)."""
        path = Path(path)
        settings_file = path / SETTINGS_FILE
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            image_processor = AutoImageProcessor.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise ModelError(f"{path} lacks a usable tokenizer or image processor: {str(err).splitlines()[0]}") from err
        return cls(tokenizer, image_processor, max_length=settings.get("max_length", 30))

    # ------------------------------------------------------------------ text
    def caption_ids(self, caption: str) -> list[int]:
        """Caption token ids ending with EOS, truncated to ``max_length`` tokens (EOS kept)."""
        caption = caption.strip()
        if not caption:
            raise DataError("empty caption: every training caption needs at least one word.")
        ids = self.tokenizer(caption, add_special_tokens=False).input_ids[: self.max_length - 1]
        return ids + [self.eos_token_id]

    def decode(self, ids: torch.Tensor | list[list[int]]) -> list[str]:
        """Generated ids -> captions (start token and other special tokens dropped, whitespace stripped)."""
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ------------------------------------------------------------------ images
    def pixel_values(self, images) -> torch.Tensor:
        """List of PIL images -> ``(B, 3, H, W)`` float tensor."""
        images = [img.convert("RGB") for img in images]
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    # ------------------------------------------------------------------ batches
    def training_batch(self, captions: list[str], images=None, *, pad_to_max_length: bool = False) -> dict:
        """``labels`` ``(B, T)``: caption ids + EOS, ``-100`` padding (+ ``pixel_values`` if images given).

        ``T`` is the longest caption of the batch, or ``max_length`` with ``pad_to_max_length``. The decoder
        is causal and padding sits at the right, so no decoder attention mask is needed.
        """
        rows = [self.caption_ids(c) for c in captions]
        width = self.max_length if pad_to_max_length else max(len(r) for r in rows)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(rows):
            labels[i, : len(row)] = torch.tensor(row)
        batch = {"labels": labels}
        if images is not None:
            batch["pixel_values"] = self.pixel_values(images)
        return batch

    def generation_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Nothing besides the pixels: decoding starts from the model's ``decoder_start_token_id``."""
        return {}
