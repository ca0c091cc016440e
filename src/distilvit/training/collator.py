"""Batch collation: dataset rows -> model inputs."""

from __future__ import annotations

import random

import torch

from distilvit.model.processing import CaptionProcessor


class CaptionCollator:
    """Turns rows ``{"image": PIL.Image, "captions": [str, ...]}`` into a padded training batch; rows with
    ``image_features`` instead of ``image`` (cached encoder features) give ``batch["image_features"]``.

    Each row contributes one caption: a random one while training (seeded, so runs repeat), the first one
    for evaluation loss. Padding goes to the longest caption of the batch.
    """

    def __init__(self, processor: CaptionProcessor, *, train: bool = True, seed: int = 42,
                 pad_to_max_length: bool = False):
        self.processor = processor
        self.pad_to_max_length = pad_to_max_length
        self.train = train
        self.rng = random.Random(seed)

    def pick(self, captions: list[str]) -> str:
        return self.rng.choice(captions) if self.train else captions[0]

    def __call__(self, rows: list[dict]) -> dict:
        captions = [self.pick(row["captions"]) for row in rows]
        if "image_features" in rows[0]:  # cached encoder features (distilvit.features): no pixels at all
            batch = self.processor.training_batch(captions, pad_to_max_length=self.pad_to_max_length)
            batch["image_features"] = torch.stack([row["image_features"] for row in rows])  # (B, N_raw, D_v)
            return batch
        return self.processor.training_batch(
            captions, images=[row["image"] for row in rows], pad_to_max_length=self.pad_to_max_length
        )
