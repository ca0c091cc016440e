"""Prefix token reduction: fewer image tokens for the language model to read.

The LM's cost grows with the sequence length, and a 224 px SigLIP-B/16 gives 196 image tokens: far more than
the ~20 caption tokens they condition. Two parameter-free reductions work on the encoder's square token grid:

* ``pool2``: 2x2 average pooling, ``(B, S*S, D) -> (B, ceil(S/2)^2, D)``; the width stays ``D``.
  ``pool4`` pools 4x4 windows (196 -> 16 tokens for a 14x14 grid): the cheapest prefix, for captions only.
* ``shuffle2``: pixel shuffle (space-to-depth) as in SmolVLM/nanoVLM: each 2x2 neighbourhood is concatenated
  into one token, ``(B, S*S, D) -> (B, ceil(S/2)^2, 4D)``; nothing is averaged away, the projection sees it all.

Odd grid sides are padded (pooling ignores the padding; shuffling pads with zeros).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distilvit.choices import DEFAULT_PREFIX_REDUCTION, PREFIX_REDUCTIONS  # noqa: F401 (re-exported)
from distilvit.errors import ModelError


def grid_side(num_tokens: int) -> int:
    """Side of the square token grid of ``num_tokens`` tokens (error if the grid is not square)."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ModelError(
            f"prefix reduction needs a square grid of image tokens, but the encoder gives {num_tokens} tokens; "
            "use --prefix-reduction none (or --vision-feature-select-strategy default to drop a CLS token)."
        )
    return side


def reduced_shape(num_tokens: int, feature_dim: int, kind: str) -> tuple[int, int]:
    """``(tokens, width)`` after reduction ``kind`` of ``num_tokens`` features of width ``feature_dim``."""
    if kind not in PREFIX_REDUCTIONS:
        raise ModelError(f"unknown prefix reduction {kind!r}; use one of {', '.join(PREFIX_REDUCTIONS)}.")
    if kind == "none":
        return num_tokens, feature_dim
    side = math.ceil(grid_side(num_tokens) / _factor(kind))
    return side * side, reduced_width(feature_dim, kind)


def reduced_width(feature_dim: int, kind: str) -> int:
    """Width of the reduced tokens: ``shuffle2`` concatenates 2x2 neighbours (4x), the others keep it."""
    if kind not in PREFIX_REDUCTIONS:
        raise ModelError(f"unknown prefix reduction {kind!r}; use one of {', '.join(PREFIX_REDUCTIONS)}.")
    return feature_dim * (4 if kind == "shuffle2" else 1)


def _factor(kind: str) -> int:
    return 4 if kind == "pool4" else 2


def reduce_tokens(features: torch.Tensor, kind: str) -> torch.Tensor:
    """Apply reduction ``kind`` to ``(B, N, D)`` features (row-major square grid); see the module docstring."""
    if kind == "none":
        return features
    batch, num_tokens, dim = features.shape
    side = grid_side(num_tokens)
    grid = features.transpose(1, 2).reshape(batch, dim, side, side)  # (B, D, S, S)
    if kind in ("pool2", "pool4"):
        k = _factor(kind)
        pooled = F.avg_pool2d(grid, kernel_size=k, stride=k, ceil_mode=True, count_include_pad=False)
        return pooled.flatten(2).transpose(1, 2)  # (B, ceil(S/k)^2, D)
    if kind == "shuffle2":
        if side % 2:
            grid = F.pad(grid, (0, 1, 0, 1))
        shuffled = F.pixel_unshuffle(grid, 2)  # (B, 4D, S/2, S/2)
        return shuffled.flatten(2).transpose(1, 2)  # (B, (S/2)^2, 4D)
    raise ModelError(f"unknown prefix reduction {kind!r}; use one of {', '.join(PREFIX_REDUCTIONS)}.")
