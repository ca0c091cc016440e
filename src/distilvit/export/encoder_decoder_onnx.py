"""``--layout image-to-text`` for ``--architecture encoder-decoder`` models: the ViT + GPT-2 layout mozilla/distilvit
ships, which transformers.js's ``image-to-text`` pipeline runs as it is.

* ``onnx/encoder_model.onnx``: ``pixel_values`` -> ``last_hidden_state`` (the encoder's tokens, after the
  encoder-to-decoder projection where the widths differ, so the decoder reads them as they are).
* ``onnx/decoder_model_merged.onnx``: ``input_ids``, ``encoder_hidden_states``, ``past_key_values.{i}.key/value``
  (self-attention only) -> ``logits``, ``present.{i}.key/value``. Cross-attention keys and values are recomputed
  from ``encoder_hidden_states`` at every step, as in the layout transformers.js expects of a decoder-only
  ``decoder`` config (its cache names have no ``encoder`` part).

fp32 only (``--quantize none``): distilvit's quantisation recipes are written for the prefix design's graphs.
GPT-2-family decoders only (``gpt2``: GPT-2, DistilGPT2): the others that take cross-attention either use another
cache layout in transformers.js (BART/TrOCR-style decoders) or a fused key/value cache (``gpt_bigcode``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from transformers import DynamicCache, EncoderDecoderCache

from distilvit.errors import ModelError
from distilvit.export.graphs import OPSET
from distilvit.export.transformers_js import _write_json, write_processor_files

DECODERS = ("gpt2",)


class EncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        states = self.model.encoder(pixel_values=pixel_values).last_hidden_state
        model = self.model
        if (model.encoder.config.hidden_size != model.decoder.config.hidden_size
                and model.decoder.config.cross_attention_hidden_size is None):
            states = model.enc_to_dec_proj(states)
        return states


class CrossAttentionDecoderGraph(nn.Module):
    """``(input_ids, encoder_hidden_states, *past)`` -> ``(logits, *present)``, self-attention cache only."""

    def __init__(self, model):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, input_ids, encoder_hidden_states, *past):
        layers = [(past[i], past[i + 1]) for i in range(0, len(past), 2)]
        cache = EncoderDecoderCache(DynamicCache(ddp_cache_data=layers), DynamicCache())
        out = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states, past_key_values=cache,
                           use_cache=True)
        present = []
        for layer in out.past_key_values.self_attention_cache.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def _export(module, args, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)


@torch.no_grad()
def _dims(model) -> tuple[int, int, int, int]:
    """``(layers, heads, head width, encoder token width)`` measured by one decoder step."""
    states = EncoderGraph(model).eval()(torch.zeros(1, 3, *_image_size(model)))
    out = CrossAttentionDecoderGraph(model).eval()(torch.zeros(1, 1, dtype=torch.long), states)
    key = out[1]
    return (len(out) - 1) // 2, key.shape[1], key.shape[3], states.shape[-1]


def _image_size(model) -> tuple[int, int]:
    size = model.encoder.config.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def export_encoder_decoder(model, processor, staging: Path, quantize: str) -> dict:
    """Write the folder for the encoder-decoder ``model`` into ``staging``; return ``{session: MB}``."""
    kind = model.config.decoder.model_type
    if kind not in DECODERS:
        raise ModelError(f"the image-to-text export of encoder-decoder models takes GPT-2-family decoders "
                         f"({', '.join(DECODERS)}); this one is {kind!r}.")
    if quantize != "none":
        raise ModelError(f"--quantize {quantize} is not available for encoder-decoder models (distilvit's recipes "
                         "are written for the prefix design); use --quantize none.")
    (staging / "onnx").mkdir(parents=True)
    layers, heads, head_dim, width = _dims(model)
    pixels = torch.zeros(2, 3, *_image_size(model))
    _export(EncoderGraph(model), (pixels,), staging / "onnx" / "encoder_model.onnx", ["pixel_values"],
            ["last_hidden_state"], {"pixel_values": {0: "batch_size"}, "last_hidden_state": {0: "batch_size"}})
    past_names = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    present_names = [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    axes = {"input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
            "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
            "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    axes.update({name: {0: "batch_size", 2: "past_sequence_length"} for name in past_names})
    axes.update({name: {0: "batch_size", 2: "total_sequence_length"} for name in present_names})
    args = (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 5, width),
            *[torch.zeros(2, heads, 2, head_dim) for _ in past_names])
    path = staging / "onnx" / "decoder_model_merged.onnx"
    _export(CrossAttentionDecoderGraph(model), args, path, ["input_ids", "encoder_hidden_states", *past_names],
            ["logits", *present_names], axes)
    onnx.checker.check_model(str(path))
    config = model.config.to_dict()
    config["transformers.js_config"] = {"dtype": "fp32"}
    _write_json(staging / "config.json", config)
    model.default_generation_config().save_pretrained(staging)
    write_processor_files(staging, processor, llava=False)
    return {name: round((staging / "onnx" / f"{name}.onnx").stat().st_size / 1e6, 2)
            for name in ("encoder_model", "decoder_model_merged")}
