"""Decoder attention as one onnxruntime ``GroupQueryAttention`` node per layer (export only).

The TorchScript exporter writes the eager attention of a grouped-query LM as some 35 nodes per layer: the
key/value cache concatenation, the key/value heads repeated to the query heads, the mask arithmetic, two
matmuls and a softmax. onnxruntime's ``com.microsoft.GroupQueryAttention`` contrib op does all of it in one
kernel, without materialising the repeated heads, on CPU and in onnxruntime-web. ``decoder.onnx`` keeps its
inputs and outputs; inside, each layer's attention is one node fed by

* ``query (B, S, H d)``, ``key``/``value (B, S, H_kv d)``: the new positions, before the rotary embedding,
  which the op applies (``do_rotary``) from cos/sin tables of the LM's own rotary module for positions
  ``0 .. max_positions - 1`` (:data:`MAX_POSITIONS` at most; stored in the graph),
* ``past_key``/``past_value (B, H_kv, P, d)``: the cache inputs; its outputs are the ``present`` outputs,
* ``seqlens_k (B,) = T - 1`` and ``total_sequence_length = T`` (``T = P + S``, every row the same length:
  batches are left-padded, so the padding is in the cache and masked by the bias),
* ``attention_bias (B, 1, S, T)``: 0 where ``attention_mask`` is 1, the float32 minimum where it is 0
  (computed once per graph, shared by the layers); the op adds causal masking itself.

Positions are the cache slots ``P .. P + S - 1`` of every row, so the ``position_ids`` input is not read.
For rows without left padding (every batch the captioners build) they are the same positions; with left
padding every distance between two tokens is still the same, and rotary attention depends on distances
only.

The op's restriction: a batch of more than one row with ``S > 1`` new positions needs an empty past
(prefill). Decoding never does that: prompts are prefilled from an empty past and steps add one position.

How it gets into the graph: while exporting, the LM runs with its attention implementation switched to
:data:`IMPLEMENTATION` (registered with ``transformers``' ``AttentionInterface``), no cache object, and its
modeling module's ``apply_rotary_pos_emb`` swapped for the identity (the op rotates). So every layer hands its
new, unrotated query/key/value to :func:`_attention`, which takes that layer's past from the
:class:`CacheState` and calls :class:`GroupQueryAttention`: in PyTorch a reference computation (what tracing
runs), in the exported graph the contrib op (its ``symbolic``).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from onnx import TensorProto, helper
from torch import nn
from transformers import AttentionInterface

from distilvit.export.nbits import MS

IMPLEMENTATION = "distilvit_onnx_gqa"
# decoder families whose attention is plain causal softmax attention over (past + new) after rotary embedding
MODEL_TYPES = {"llama", "qwen2", "qwen3"}
STATIC_ROPE = {"default", "linear", "llama3"}  # rotary tables that do not depend on the sequence length
# and the op rotates heads whose width is a multiple of 16 (onnxruntime's CPU kernel refuses others)
MAX_POSITIONS = 2048  # rotary table rows stored in the graph (0.5 MB at d = 64); captions need a few hundred


def supports_gqa(language_model: nn.Module) -> bool:
    """Whether ``language_model`` exports with :class:`GroupQueryAttention` (else: the traced eager attention)."""
    config = language_model.config
    rotary = getattr(getattr(language_model, "model", None), "rotary_emb", None)
    return (config.model_type in MODEL_TYPES and not getattr(config, "use_sliding_window", False)
            and getattr(rotary, "rope_type", None) in STATIC_ROPE
            and rotary.inv_freq.numel() * 2 == _head_dim(config) and _head_dim(config) % 16 == 0)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def max_positions(language_model: nn.Module) -> int:
    """Positions the exported decoder covers (prompt + caption)."""
    return min(int(language_model.config.max_position_embeddings), MAX_POSITIONS)


@torch.no_grad()
def rotary_tables(language_model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each ``(max_positions, d / 2)``, from the LM's own rotary module (its scaling included)."""
    rotary = language_model.model.rotary_emb
    positions = torch.arange(max_positions(language_model))[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    half = cos.shape[-1] // 2
    return cos[0, :, :half].contiguous(), sin[0, :, :half].contiguous()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (the ``rotate_half`` layout) of ``x (B, heads, S, d)`` by ``cos``/``sin (S, d / 2)``."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


class GroupQueryAttention(torch.autograd.Function):
    """``(query, key, value, past_key, past_value, seqlens_k, total, cos, sin, bias)`` -> ``(out, present_key,
    present_value)``.

    Shapes: ``query (B, S, H d)``, ``key``/``value (B, S, H_kv d)`` (not yet rotated), ``past_* (B, H_kv, P, d)``,
    ``cos``/``sin (max_positions, d / 2)``, ``bias (B, 1, S, T)``; ``out (B, S, H d)``, ``present_* (B, H_kv, T, d)``.
    """

    @staticmethod
    def forward(ctx, query, key, value, past_key, past_value, seqlens_k, total, cos, sin, bias, num_heads: int,
                kv_heads: int, scale: float):
        batch, new, _ = query.shape
        head = past_key.shape[-1]
        seen = past_key.shape[2]
        split = lambda x, heads: x.view(batch, new, heads, head).transpose(1, 2)
        angles = (cos[seen : seen + new], sin[seen : seen + new])  # positions P .. P + S - 1
        queries = _rotate(split(query, num_heads), *angles)
        present_key = torch.cat([past_key, _rotate(split(key, kv_heads), *angles)], dim=2)
        present_value = torch.cat([past_value, split(value, kv_heads)], dim=2)
        group = num_heads // kv_heads
        keys = present_key.repeat_interleave(group, dim=1)
        values = present_value.repeat_interleave(group, dim=1)
        total_len = present_key.shape[2]
        scores = queries @ keys.transpose(-1, -2) * scale + bias
        causal = torch.ones(new, total_len, dtype=torch.bool).tril(total_len - new)
        lowest = torch.finfo(scores.dtype).min
        scores = scores.masked_fill(~causal, lowest).clamp_min(lowest)  # rows of padding only: uniform, not NaN
        out = torch.softmax(scores, dim=-1) @ values
        return out.transpose(1, 2).reshape(batch, new, num_heads * head), present_key, present_value

    @staticmethod
    def symbolic(g, query, key, value, past_key, past_value, seqlens_k, total, cos, sin, bias, num_heads, kv_heads,
                 scale):
        # the optional position_ids input (between sin and bias) is inserted as an empty name by
        # ``fill_optional_inputs`` after export
        outputs = g.op(f"{MS}::GroupQueryAttention", query, key, value, past_key, past_value, seqlens_k, total,
                       cos, sin, bias, num_heads_i=num_heads, kv_num_heads_i=kv_heads, scale_f=scale, do_rotary_i=1,
                       outputs=3)
        for out, like in zip(outputs, (query, past_key, past_value)):  # output types (float32, rank 3 / 4)
            out.setType(like.type().with_sizes([None] * like.type().dim()))
        return outputs


@dataclass
class CacheState:
    """The flat cache of one decoder call: ``past`` in, ``present`` out (key then value per layer)."""

    past: list[torch.Tensor]
    seqlens_k: torch.Tensor  # (B,) int32
    total: torch.Tensor  # () int32
    cos: torch.Tensor  # (max_positions, d / 2)
    sin: torch.Tensor
    present: list[torch.Tensor] = field(default_factory=list)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, gqa_state=None, **kwargs):
    """``transformers`` attention function: ``query (B, H, S, d)``, ``key``/``value (B, H_kv, S, d)`` (new positions)."""
    state: CacheState = gqa_state
    layer = module.layer_idx
    batch, _, new, _ = query.shape
    # head counts as Python ints from the config (traced shapes are tensors, and the op needs attributes)
    heads, kv_heads = module.config.num_attention_heads, module.config.num_key_value_heads
    head = module.head_dim
    scale = float(scaling if scaling is not None else head**-0.5)
    flat = lambda x: x.transpose(1, 2).reshape(batch, new, -1)
    out, present_key, present_value = GroupQueryAttention.apply(
        flat(query), flat(key), flat(value), state.past[2 * layer], state.past[2 * layer + 1], state.seqlens_k,
        state.total, state.cos, state.sin, attention_mask, heads, kv_heads, scale)
    state.present += [present_key, present_value]
    return out.view(batch, new, heads, head), None


AttentionInterface.register(IMPLEMENTATION, _attention)


def cache_state(language_model: nn.Module, attention_mask: torch.Tensor, past: list[torch.Tensor]) -> CacheState:
    """``seqlens_k`` and ``total_sequence_length`` from ``attention_mask (B, T)`` (traced: dynamic in ``T``), and
    the rotary tables."""
    seqlens = torch.ones_like(attention_mask).sum(dim=-1) - 1
    total = (seqlens[:1] + 1).reshape(()).to(torch.int32)
    return CacheState(list(past), seqlens.to(torch.int32), total, *rotary_tables(language_model))


def attention_bias(attention_mask: torch.Tensor, new: int) -> torch.Tensor:
    """``(B, T)`` 0/1 mask -> ``(B, 1, S, T)`` additive float32 bias for ``S = new`` positions."""
    blocked = (1 - attention_mask[:, None, None, :]).to(torch.float32)
    return (blocked * torch.finfo(torch.float32).min).expand(-1, -1, new, -1)


def _no_rotary(query, key, *args, **kwargs):
    return query, key


@contextmanager
def gqa_attention(language_model: nn.Module):
    """Run ``language_model`` with :func:`_attention` and without its own rotary embedding (the op applies it)
    while exporting; restores both after."""
    config = language_model.config
    modeling = sys.modules[type(language_model).__module__]
    before, rotary = config._attn_implementation, modeling.apply_rotary_pos_emb
    config._attn_implementation, modeling.apply_rotary_pos_emb = IMPLEMENTATION, _no_rotary
    try:
        yield
    finally:
        config._attn_implementation, modeling.apply_rotary_pos_emb = before, rotary


def fill_optional_inputs(model) -> None:
    """Move each ``GroupQueryAttention``'s bias to input 10 (after an empty ``position_ids``)."""
    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention" and node.domain == MS and len(node.input) == 10:
            bias = node.input[9]
            del node.input[9:]
            node.input.extend(["", bias])


def keep_position_ids(model) -> None:
    """Put back the ``position_ids (B, S)`` input the exporter drops as unread, at its place (third): every
    ``decoder.onnx`` takes the same inputs, whichever attention it runs."""
    inputs = model.graph.input
    if any(i.name == "position_ids" for i in inputs):
        return
    declared = helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"])
    kept = list(inputs)
    del inputs[:]
    inputs.extend(kept[:2] + [declared] + kept[2:])
