"""Batch collation: dataset rows -> model inputs."""

from __future__ import annotations

import hashlib
import json

import torch

from distilvit.model.processing import CaptionProcessor


class CaptionCollator:
    """Turns rows ``{"image": PIL.Image, "captions": [str, ...]}`` into a padded training batch; rows with
    ``image_features`` instead of ``image`` (cached encoder features) give ``batch["image_features"]``.

    Each row contributes one caption: while training, a pseudo-random one that depends only on (seed, epoch,
    the row's captions), so runs repeat and a resumed run (or a worker process) picks what an uninterrupted
    run picks; the first one for evaluation loss. Padding goes to the longest caption of the batch.
    """

    def __init__(self, processor: CaptionProcessor, *, train: bool = True, seed: int = 42,
                 pad_to_max_length: bool = False):
        self.processor = processor
        self.pad_to_max_length = pad_to_max_length
        self.train = train
        self.seed = seed
        self.epoch = 0

    def for_evaluation(self) -> CaptionCollator:
        """The same collation with the first caption of each row (a loss comparable across evaluations)."""
        return CaptionCollator(self.processor, train=False, seed=self.seed, pad_to_max_length=self.pad_to_max_length)

    def set_epoch(self, epoch: int) -> None:
        """Called at each epoch start (through the training sampler): the next epoch picks other captions."""
        self.epoch = epoch

    def pick(self, captions: list[str]) -> str:
        if not self.train or len(captions) == 1:
            return captions[0]
        key = json.dumps([self.seed, self.epoch, captions]).encode()
        return captions[int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % len(captions)]

    def __call__(self, rows: list[dict]) -> dict:
        captions = [self.pick(row["captions"]) for row in rows]
        if "image_features" in rows[0]:  # cached encoder features (distilvit.features): no pixels at all
            batch = self.processor.training_batch(captions, pad_to_max_length=self.pad_to_max_length)
            batch["image_features"] = torch.stack([row["image_features"] for row in rows])  # (B, N_raw, D_v)
            return batch
        return self.processor.training_batch(
            captions, images=[row["image"] for row in rows], pad_to_max_length=self.pad_to_max_length
        )
