"""Turning images and captions into model inputs, and generated ids back into captions.

Sequence layout (one row)::

    [tokenizer's leading special tokens] <image> x N  prompt tokens | caption tokens EOS | padding
    <------------------------ labels = -100 ------------------------> <- caption ids -> <- -100 ->
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoTokenizer

from distilvit.errors import DataError, ModelError
from distilvit.model.configuration import IMAGE_TOKEN

IGNORE_INDEX = -100


def add_image_token(tokenizer) -> int:
    """Make sure ``tokenizer`` knows the ``<image>`` placeholder; return its id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


class CaptionProcessor:
    """Image processor + tokenizer + the prompt layout of one distilvit model."""

    def __init__(self, tokenizer, image_processor, *, num_image_tokens: int, prompt: str = "", max_length: int = 64,
                 chat_template: bool = False):
        if tokenizer.eos_token_id is None:
            raise ModelError("the language model's tokenizer has no EOS token; captions could never end.")
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ModelError("--chat-template needs a language model whose tokenizer has a chat template "
                             "(an instruct/chat model); this one has none.")
        self.chat_template = chat_template
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.prompt = prompt
        self.max_length = max_length
        self.image_token_id = add_image_token(tokenizer)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # the prefix never changes: tokenize it (and render the chat template) once, not for every batch
        self._prefix = self._chat_prompt_ids() if chat_template else self._plain_prompt_ids()

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        with open(Path(path) / "distilvit_processor.json", "w") as f:
            settings = {"num_image_tokens": self.num_image_tokens, "prompt": self.prompt,
                        "max_length": self.max_length, "chat_template": self.chat_template}
            json.dump(settings, f)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> CaptionProcessor:
        path = Path(path)
        settings_file = path / "distilvit_processor.json"
        if not settings_file.is_file():
            raise ModelError(f"{path} is not a distilvit model folder (no distilvit_processor.json).")
        settings = json.loads(settings_file.read_text())
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = AutoImageProcessor.from_pretrained(path)
        return cls(tokenizer, image_processor, **settings)

    # ------------------------------------------------------------------ text
    def lead_ids(self) -> list[int]:
        """Tokens before the image: the tokenizer's own leading specials, else its BOS token.

        Language models treat the first position as an attention sink (it soaks up attention and carries
        little content); an image token placed there is largely ignored, so a BOS token goes first.
        """
        lead = self.tokenizer("", add_special_tokens=True).input_ids
        if not lead and self.tokenizer.bos_token_id is not None:
            lead = [self.tokenizer.bos_token_id]
        return lead

    def prompt_ids(self) -> list[int]:
        """Ids of everything before the caption: leading specials or BOS, image placeholders, prompt.

        With ``chat_template``, the image and prompt form a user turn of the LM's chat template and the
        caption is the assistant's reply.
        """
        return list(self._prefix)

    def _plain_prompt_ids(self) -> list[int]:
        lead = self.lead_ids()
        prompt = self.tokenizer(self.prompt, add_special_tokens=False).input_ids if self.prompt else []
        return lead + [self.image_token_id] * self.num_image_tokens + prompt

    def _chat_prompt_ids(self) -> list[int]:
        messages = [{"role": "user", "content": IMAGE_TOKEN + self.prompt}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        at = ids.index(self.image_token_id)
        return ids[:at] + [self.image_token_id] * self.num_image_tokens + ids[at + 1 :]

    def caption_ids(self, caption: str) -> list[int]:
        """Caption token ids ending with EOS, truncated to ``max_length`` tokens (EOS kept)."""
        caption = caption.strip()
        if not caption:
            raise DataError("empty caption: every training caption needs at least one word.")
        spaced = self.prompt and not self.prompt.endswith((" ", "\n")) and not self.chat_template
        text = " " + caption if spaced else caption
        ids = self.tokenizer(text, add_special_tokens=False).input_ids[: self.max_length - 1]
        return ids + [self.tokenizer.eos_token_id]

    def decode(self, ids: torch.Tensor | list[list[int]]) -> list[str]:
        """Generated ids -> captions (special tokens dropped, whitespace stripped)."""
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in texts]

    # ------------------------------------------------------------------ images
    def pixel_values(self, images) -> torch.Tensor:
        """List of PIL images -> ``(B, 3, H, W)`` float tensor."""
        images = [img.convert("RGB") for img in images]
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    # ------------------------------------------------------------------ batches
    def training_batch(self, captions: list[str], images=None, *, pad_to_max_length: bool = False) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (+ ``pixel_values`` if images given).

        Padding goes to the longest row of the batch (dynamic padding); ``pad_to_max_length`` pads every batch to
        ``max_length`` caption tokens instead (the straightforward design, kept for comparisons).
        """
        prefix = self.prompt_ids()
        rows = [self.caption_ids(c) for c in captions]
        width = len(prefix) + (self.max_length if pad_to_max_length else max(len(r) for r in rows))
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            end = len(prefix) + len(row)
            input_ids[i, :end] = torch.tensor(prefix + row)
            labels[i, len(prefix) : end] = torch.tensor(row)
            attention_mask[i, :end] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if images is not None:
            batch["pixel_values"] = self.pixel_values(images)
        return batch

    def generation_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The caption prompt for ``batch_size`` images (all rows equal, so no padding is needed)."""
        ids = torch.tensor([self.prompt_ids()] * batch_size, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
