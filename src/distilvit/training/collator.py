"""Batch collation: dataset rows -> model inputs."""

from __future__ import annotations

import random

from distilvit.model.processing import CaptionProcessor


class CaptionCollator:
    """Turns rows ``{"image": PIL.Image, "captions": [str, ...]}`` into a padded training batch.

    Each row contributes one caption: a random one while training (seeded, so runs repeat), the first one
    for evaluation loss. Padding goes to the longest caption of the batch.
    """

    def __init__(self, processor: CaptionProcessor, *, train: bool = True, seed: int = 42):
        self.processor = processor
        self.train = train
        self.rng = random.Random(seed)

    def pick(self, captions: list[str]) -> str:
        return self.rng.choice(captions) if self.train else captions[0]

    def __call__(self, rows: list[dict]) -> dict:
        captions = [self.pick(row["captions"]) for row in rows]
        return self.processor.training_batch(captions, images=[row["image"] for row in rows])
