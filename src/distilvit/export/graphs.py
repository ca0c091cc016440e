"""The three graphs of a bundle as torch modules, and their export to ONNX (fp32).

Exported with the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it needs no
extra package, exports the 135M LM in seconds, and its graphs were checked equal to PyTorch for every
prompt length, past length and batch size (``tests/test_export.py``). Examples are traced at batch 2
with a non-empty past, and the batch, sequence and past axes are declared dynamic.

Shapes: ``B`` batch, ``S`` new positions, ``P`` past positions, ``D`` LM width, ``V`` vocabulary,
``L`` layers, ``H_kv`` key/value heads, ``d_head`` head width.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from transformers import DynamicCache

from distilvit.export import activations, attention
from distilvit.export.nbits import MS
from distilvit.model.modeling import DistilViTForCaptioning

OPSET = 17


class VisionGraph(nn.Module):
    """Encoder + projection: ``pixel_values (B, 3, H, W)`` -> ``image_tokens (B, N, D)``."""

    def __init__(self, model: DistilViTForCaptioning):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.image_tokens(pixel_values=pixel_values)


class EmbedGraph(nn.Module):
    """Token embedding lookup: ``input_ids (B, T)`` -> ``inputs_embeds (B, T, D)``.

    Ids outside the table (the ``<image>`` placeholder, which is never embedded) look up id 0; their
    positions are overwritten by image tokens anyway.
    """

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        inside = (input_ids >= 0) & (input_ids < self.embedding.num_embeddings)
        return self.embedding(torch.where(inside, input_ids, torch.zeros_like(input_ids)))


class DecoderGraph(nn.Module):
    """The LM with a flat KV cache: ``(inputs_embeds, attention_mask, position_ids, *past)`` -> ``(logits, *present)``.

    ``past`` holds ``2 L`` tensors ``(B, H_kv, P, d_head)`` (key then value per layer); ``logits`` are
    ``(B, 1, V)``, for the last position only (all a decoding loop needs; full-vocabulary logits for a
    200-token prompt would cost more than the rest of the prefill). ``gqa``: each layer's attention as one
    ``GroupQueryAttention`` node (:mod:`.attention`; decoder families it supports), else the traced eager
    attention with a ``transformers`` cache.
    """

    def __init__(self, language_model: nn.Module, gqa: bool = False):
        super().__init__()
        self.lm = language_model
        self.gqa = gqa

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        if self.gqa:
            return self._forward_gqa(inputs_embeds, attention_mask, position_ids, past)
        layers = [(past[i], past[i + 1]) for i in range(0, len(past), 2)]
        out = self.lm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=DynamicCache(ddp_cache_data=layers),
            use_cache=True,
            logits_to_keep=1,
        )
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)

    def _forward_gqa(self, inputs_embeds, attention_mask, position_ids, past):
        state = attention.cache_state(self.lm, attention_mask, past)
        with attention.gqa_attention(self.lm):
            out = self.lm(
                inputs_embeds=inputs_embeds,
                attention_mask=attention.attention_bias(attention_mask, inputs_embeds.shape[1]),
                position_ids=position_ids,
                use_cache=False,
                logits_to_keep=1,
                gqa_state=state,
            )
        return (out.logits, *state.present)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict,
            contrib_ops: bool = False) -> None:
    """``contrib_ops``: the graph has onnxruntime ``com.microsoft`` nodes (declare their opset)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about the TorchScript exporter
        torch.onnx.export(
            module.eval(), args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
            custom_opsets={MS: 1} if contrib_ops else None,
        )


def export_vision(model: DistilViTForCaptioning, path: Path, image_size: tuple[int, int]) -> None:
    """Export encoder + projection as ``vision.onnx``; tanh/quick GELUs as one contrib node each (:mod:`.activations`)."""
    pixels = torch.zeros(2, 3, *image_size)
    with activations.fused_activations(model) as fused:
        _export(VisionGraph(model), (pixels,), path, ["pixel_values"], ["image_tokens"],
                {"pixel_values": {0: "batch"}, "image_tokens": {0: "batch"}}, contrib_ops=fused > 0)


def export_embed_tokens(model: DistilViTForCaptioning, path: Path) -> None:
    ids = torch.zeros(2, 3, dtype=torch.long)
    _export(EmbedGraph(model.language_model.get_input_embeddings()), (ids,), path, ["input_ids"], ["inputs_embeds"],
            {"input_ids": {0: "batch", 1: "sequence"}, "inputs_embeds": {0: "batch", 1: "sequence"}})


def decoder_names(num_layers: int) -> tuple[list[str], list[str]]:
    """``(input names, output names)`` of ``decoder.onnx``."""
    kinds = ("key", "value")
    past = [f"past_key_values.{i}.{k}" for i in range(num_layers) for k in kinds]
    present = [f"present.{i}.{k}" for i in range(num_layers) for k in kinds]
    return ["inputs_embeds", "attention_mask", "position_ids", *past], ["logits", *present]


@torch.no_grad()
def decoder_dims(language_model: nn.Module) -> dict:
    """``num_layers``, ``num_kv_heads``, ``head_dim``, ``hidden_size``, ``vocab_size``, measured by one forward."""
    graph = DecoderGraph(language_model).eval()
    width = language_model.get_input_embeddings().embedding_dim
    logits, key, *rest = graph(torch.zeros(1, 1, width), torch.ones(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long))
    return {"num_layers": (len(rest) + 1) // 2, "num_kv_heads": key.shape[1], "head_dim": key.shape[3], "hidden_size": width,
            "vocab_size": logits.shape[-1]}


def export_decoder(language_model: nn.Module, path: Path, dims: dict, gqa: bool | None = None) -> None:
    """Export the LM (LoRA already merged) as ``decoder.onnx``; traced at ``B=2, S=3, P=2``.

    ``gqa``: attention as ``GroupQueryAttention`` nodes (default: where :func:`attention.supports_gqa`).
    """
    gqa = attention.supports_gqa(language_model) if gqa is None else gqa
    batch, new, seen = 2, 3, 2
    past = [torch.zeros(batch, dims["num_kv_heads"], seen, dims["head_dim"]) for _ in range(2 * dims["num_layers"])]
    args = (
        torch.zeros(batch, new, dims["hidden_size"]),
        torch.ones(batch, seen + new, dtype=torch.long),
        torch.arange(seen, seen + new).expand(batch, new).contiguous(),
        *past,
    )
    inputs, outputs = decoder_names(dims["num_layers"])
    axes = {"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
    axes.update({name: {0: "batch", 2: "past_sequence"} for name in inputs[3:]})
    axes.update({name: {0: "batch", 2: "total_sequence"} for name in outputs[1:]})
    _export(DecoderGraph(language_model, gqa=gqa), args, path, inputs, outputs, axes, contrib_ops=gqa)
    if gqa:
        graph = onnx.load(str(path), load_external_data=False)  # weights of a > 2 GB LM stay where they are
        attention.fill_optional_inputs(graph)
        attention.keep_position_ids(graph)
        onnx.save(graph, str(path))
