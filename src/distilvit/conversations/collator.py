"""Batching conversations: rendered ids and labels, right padding, pixels only for rows with an image.

Rows with and without an image mix in one batch: ``pixel_values`` holds the images of the rows that have one,
in row order, which is the order of their ``<image>`` placeholders (what
:func:`distilvit.model.embeddings.embed_with_images` expects); a batch without any image has no
``pixel_values``. Rows longer than ``max_tokens`` are cut at the end; a cut that would split the image's
placeholders cuts before them and drops the image.
"""

from __future__ import annotations

import torch

from distilvit.conversations.template import IGNORE_INDEX, training_ids


class ConversationCollator:
    def __init__(self, processor, *, max_tokens: int = 1024):
        self.processor = processor
        self.max_tokens = max_tokens

    def row(self, row: dict) -> tuple[list[int], list[int], object]:
        ids, labels = training_ids(self.processor, row["messages"])
        image = row.get("image")
        placeholder = self.processor.image_token_id
        if len(ids) > self.max_tokens:
            ids, labels = ids[: self.max_tokens], labels[: self.max_tokens]
            if ids.count(placeholder) not in (0, self.processor.num_image_tokens):
                cut = ids.index(placeholder)
                ids, labels = ids[:cut], labels[:cut]
        if placeholder not in ids:
            image = None
        elif image is None:
            raise ValueError("a conversation holds <image> but its row has no image")
        return ids, labels, image

    def __call__(self, rows: list[dict]) -> dict:
        rendered = [self.row(r) for r in rows]
        width = max(len(ids) for ids, _, _ in rendered)
        pad = self.processor.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, labs, _) in enumerate(rendered):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(labs)] = torch.tensor(labs)
            attention_mask[i, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        images = [image for _, _, image in rendered if image is not None]
        if images:
            batch["pixel_values"] = self.processor.pixel_values(images)
        return batch
