"""Projection from vision features to the language model's embedding space."""

from __future__ import annotations

import math

import torch
from torch import nn


class VisionProjection(nn.Module):
    """Maps ``(batch, tokens, vision_dim)`` features to ``(batch, tokens, text_dim)`` LM input embeddings.

    ``kind="linear"``: one Linear layer. ``kind="mlp"``: Linear -> GELU -> Linear (as LLaVA-1.5).
    An optional LayerNorm on the input keeps the features' scale independent of the encoder.
    """

    def __init__(self, vision_dim: int, text_dim: int, kind: str = "mlp", layernorm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(vision_dim) if layernorm else nn.Identity()
        if kind == "linear":
            self.layers = nn.Sequential(nn.Linear(vision_dim, text_dim))
        elif kind == "mlp":
            self.layers = nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))
        else:
            raise ValueError(f"unknown projection type {kind!r}; use 'linear' or 'mlp'")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(self.norm(features))

    @torch.no_grad()
    def match_output_scale(self, target_std: float) -> None:
        """Re-initialise so that, for unit-variance inputs, outputs have standard deviation ``target_std``.

        Projected tokens far larger or smaller than the LM's own token embeddings are either drowned out
        by the text or drown it; starting at the embedding scale makes the LM read the image early.
        """
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        for layer in linears[:-1]:  # hidden layers: variance-preserving init for the GELU MLP
            nn.init.normal_(layer.weight, std=math.sqrt(2.0 / layer.in_features))
            nn.init.zeros_(layer.bias)
        last = linears[-1]
        nn.init.normal_(last.weight, std=target_std / math.sqrt(last.in_features))
        nn.init.zeros_(last.bias)
