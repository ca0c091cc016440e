"""Training order that depends only on (seed, epoch), never on the global RNG's history.

``LengthGroupedSampler`` draws its order from the global torch RNG when the epoch's iterator starts; on resume
Trainer restores that RNG only after the first resumed batch is drawn, so the replayed order matches only while
everything before it consumed the RNG exactly as the first run did. Here the order is a pure function of
(seed, epoch), so a resumed run replays exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


class EpochSampler(Sampler[int]):
    """A random permutation of ``range(size)`` per epoch; with ``lengths``, grouped so that each slice of
    ``batch_size`` holds samples of similar length (transformers' ``get_length_grouped_indices``).
    ``set_epoch`` (called by Trainer through accelerate before each epoch) is passed on to ``on_epoch``."""

    def __init__(self, size: int, *, seed: int, batch_size: int, lengths: list[int] | None = None,
                 on_epoch: Callable[[int], None] | None = None):
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"{len(lengths)} lengths for {size} samples")
        self.size, self.seed, self.batch_size, self.lengths = size, seed, batch_size, lengths
        self.on_epoch = on_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.on_epoch is not None:
            self.on_epoch(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = epoch_generator(self.seed, self.epoch)
        if self.lengths is None:
            return iter(torch.randperm(self.size, generator=generator).tolist())
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
