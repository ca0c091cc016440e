"""Merging projected image tokens into the text embedding sequence.

Sequences carry one ``<image>`` placeholder token per image token. The placeholders are never looked
up in the embedding table (their id may lie outside it); their positions receive the projected vision
tokens instead. Because the merge is positional, images can sit anywhere: a caption prefix today, an
``<image>`` inside a multi-turn conversation (LLaVA-style) with no change to this code.
"""

from __future__ import annotations

import torch
from torch import nn


def embed_with_images(
    input_ids: torch.Tensor,
    embedding: nn.Embedding,
    image_token_id: int,
    image_tokens: torch.Tensor | None,
) -> torch.Tensor:
    """Embed ``input_ids`` and write ``image_tokens`` at the ``<image>`` placeholder positions.

    Args:
        input_ids: ``(batch, seq)`` token ids containing ``image_token_id`` placeholders.
        embedding: the LM's input embedding table.
        image_tokens: ``(num_images, tokens_per_image, hidden)`` projected image tokens, in the order the
            placeholders appear (row-major over the batch); ``None`` when there are no placeholders.

    Returns:
        ``(batch, seq, hidden)`` input embeddings.
    """
    is_image = input_ids == image_token_id
    embeds = embedding(input_ids.masked_fill(is_image, 0))
    num_slots = int(is_image.sum())
    num_given = 0 if image_tokens is None else image_tokens.shape[0] * image_tokens.shape[1]
    if num_slots != num_given:
        raise ValueError(
            f"the text has {num_slots} <image> placeholder tokens but {num_given} image tokens were given; "
            "each image needs exactly `num_image_tokens` placeholders"
        )
    if num_slots == 0:
        return embeds
    values = image_tokens.reshape(-1, image_tokens.shape[-1]).to(embeds.dtype)
    return embeds.masked_scatter(is_image.unsqueeze(-1).expand_as(embeds), values)
