"""The encoder-decoder (cross-attention) captioner: ``--architecture encoder-decoder``.

The design the original distilvit started from (ViT + DistilGPT2): a ``transformers``
``VisionEncoderDecoderModel`` whose decoder reads the encoder's tokens through freshly initialised
cross-attention layers, with every weight trained. Saved models are ordinary ``vision-encoder-decoder``
checkpoints that plain ``transformers`` loads too.

Shapes used in docstrings: ``B`` batch, ``T`` caption length (EOS included), ``N`` encoder tokens,
``D_e`` encoder width, ``V`` vocabulary size.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    VisionEncoderDecoderModel,
)
from transformers.modeling_outputs import Seq2SeqLMOutput
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from distilvit.errors import ModelError
from distilvit.model.encoder_decoder_processing import EncoderDecoderProcessor
from distilvit.model.files import load_checked
from distilvit.model.gguf import convert_gguf, is_gguf
from distilvit.model.parts import check_local, hub_call, load_encoder, resolve_name

ENCODER_DECODER = "encoder-decoder"
MODEL_TYPE = "vision-encoder-decoder"

# transformers causal LMs whose forward takes ``encoder_hidden_states`` (checked against transformers 5.x);
# the check itself inspects the class, this list is only for the error message
KNOWN_CROSS_ATTENTION_DECODERS = (
    "gpt2 (GPT-2, DistilGPT2), gpt_bigcode, gpt-sw3, xglm, bert/roberta/electra/camembert/xlm-roberta "
    "(as decoders), bart/mbart/marian/pegasus/blenderbot decoders, trocr"
)


class EncoderDecoderCaptioner(VisionEncoderDecoderModel):
    """``VisionEncoderDecoderModel`` with a caption loss that honours gradient accumulation, and greedy defaults.

    Build one with :func:`build_encoder_decoder` (random weights from configs) or
    :func:`build_encoder_decoder_captioner` (pretrained parts); reload with ``from_pretrained(path)``.
    """

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        """Run encoder and decoder.

        Args:
            pixel_values: ``(B, 3, H, W)`` images.
            labels: ``(B, T)`` caption ids ending in EOS, ``-100`` at padding. The decoder reads them shifted
                right behind ``config.decoder_start_token_id`` (teacher forcing).
            num_items_in_batch: total label tokens across gradient-accumulation steps (set by ``Trainer``);
                when given, the loss is the summed token loss divided by it.
            kwargs: passed to ``VisionEncoderDecoderModel.forward`` (``decoder_input_ids``, ``encoder_outputs``,
                ``past_key_values``, ... as ``generate`` uses them).

        Returns:
            ``logits`` ``(B, T, V)``; with ``labels`` also ``loss`` (mean over caption tokens).
        """
        if pixel_values is not None:
            pixel_values = pixel_values.to(self.encoder.dtype)
        if labels is None:
            return super().forward(pixel_values=pixel_values, **kwargs)
        if kwargs.get("decoder_input_ids") is None and kwargs.get("decoder_inputs_embeds") is None:
            kwargs["decoder_input_ids"] = self.prepare_decoder_input_ids_from_labels(labels)
        kwargs.setdefault("use_cache", False)
        out = super().forward(pixel_values=pixel_values, **kwargs)
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = F.cross_entropy(out.logits.flatten(0, 1).float(), labels.flatten(), reduction=reduction)
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
        out.loss = loss
        return out

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """``transformers`` ``generate`` on ``(B, 3, H, W)`` pixels (cast to the encoder's dtype).

        Returns:
            ``(B * num_return_sequences, 1 + new_tokens)`` ids: the decoder start token, then the caption.
        """
        if pixel_values is not None:
            pixel_values = pixel_values.to(self.encoder.dtype)
        kwargs.setdefault("generation_config", self.default_generation_config())
        return super().generate(pixel_values=pixel_values, **kwargs)

    def default_generation_config(self) -> GenerationConfig:
        """Deterministic greedy decoding of up to 40 tokens that stops at EOS."""
        saved = self.generation_config
        decoder = self.config.decoder
        start = _first_set(getattr(self.config, "decoder_start_token_id", None), saved.decoder_start_token_id,
                           decoder.bos_token_id)
        eos = _first_set(decoder.eos_token_id, saved.eos_token_id)
        pad = _first_set(getattr(self.config, "pad_token_id", None), decoder.pad_token_id, saved.pad_token_id, eos)
        return GenerationConfig(
            max_new_tokens=40, do_sample=False, num_beams=1, decoder_start_token_id=start, bos_token_id=start,
            eos_token_id=eos, pad_token_id=pad[0] if isinstance(pad, list) else pad,
        )

    def has_lora(self) -> bool:
        """Always ``False``: this architecture trains every weight, it has no adapters."""
        return False


def _first_set(*values):
    return next((v for v in values if v is not None), None)


# ----------------------------------------------------------------- checks
def check_encoder_config(config: PretrainedConfig) -> None:
    """Raise :class:`ModelError` unless the encoder gives a sequence of tokens that cross-attention can read."""
    if getattr(config, "hidden_size", None) is None:
        raise ModelError(
            f"--architecture encoder-decoder needs a transformer vision encoder whose output is a sequence of "
            f"tokens (vit, deit, dinov2, siglip, clip, or scratch:siglip-tiny / scratch:siglip-base); "
            f"{config.model_type!r} gives a convolutional feature map. Use --architecture prefix for it."
        )


def supports_cross_attention(config: PretrainedConfig) -> bool:
    """True when ``transformers`` has a causal LM for ``config`` whose forward takes ``encoder_hidden_states``."""
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        return False
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    return "encoder_hidden_states" in inspect.signature(model_class.forward).parameters


def check_decoder_config(config: PretrainedConfig, name: str = "the decoder") -> None:
    """Raise :class:`ModelError` naming the decoders that work unless ``config`` can take cross-attention."""
    if not supports_cross_attention(config):
        raise ModelError(
            f"decoder {name!r} ({config.model_type!r}) has no cross-attention in transformers, so it cannot read "
            f"the image with --architecture encoder-decoder. Decoders that work: {KNOWN_CROSS_ATTENTION_DECODERS}. "
            "Decoder-only LMs such as Llama/SmolLM/Qwen2 need --architecture prefix."
        )


def as_cross_attention_decoder(config: PretrainedConfig) -> PretrainedConfig:
    """A copy of a decoder config set up as a decoder with (new) cross-attention layers."""
    check_decoder_config(config)
    config = copy.deepcopy(config)
    config.is_decoder = True
    config.add_cross_attention = True
    return config


# ----------------------------------------------------------------- builders
def assemble(encoder, decoder, tokenizer, image_processor, *, max_length: int = 30):
    """Join an encoder and a cross-attention decoder into ``(EncoderDecoderCaptioner, EncoderDecoderProcessor)``.

    The decoder starts from the tokenizer's BOS (else CLS, else EOS) token; padding is EOS where the tokenizer
    has no pad token. Every weight is trainable.
    """
    processor = EncoderDecoderProcessor(tokenizer, image_processor, max_length=max_length)
    model = EncoderDecoderCaptioner(encoder=encoder, decoder=decoder)
    start = _first_set(tokenizer.bos_token_id, tokenizer.cls_token_id, processor.eos_token_id)
    model.config.decoder_start_token_id = start
    model.config.pad_token_id = processor.pad_token_id
    model.config.decoder.eos_token_id = processor.eos_token_id
    model.config.decoder.pad_token_id = processor.pad_token_id
    model.generation_config = model.default_generation_config()
    model.requires_grad_(True)
    return model, processor


def build_encoder_decoder(
    encoder_config: PretrainedConfig,
    decoder_config: PretrainedConfig,
    tokenizer,
    image_processor,
    *,
    max_length: int = 30,
):
    """An encoder-decoder captioner of the given sizes with random weights (for benchmarks and tests).

    Args:
        encoder_config: a vision config with token output, e.g. ``ViTConfig()`` (ViT-base).
        decoder_config: a causal-LM config that supports cross-attention, e.g.
            ``GPT2Config(n_layer=6, n_embd=768, vocab_size=50257)`` (DistilGPT2 size); it is copied and set to
            ``is_decoder=True, add_cross_attention=True``.
        tokenizer: any tokenizer with an EOS (or SEP) token whose ids fit ``decoder_config.vocab_size``.
        image_processor: turns PIL images into ``(B, 3, H, W)`` pixels of the encoder's image size.

    Returns:
        ``(model, processor)``: an :class:`EncoderDecoderCaptioner` in train mode with every weight trainable,
        and its :class:`EncoderDecoderProcessor`.
    """
    check_encoder_config(encoder_config)
    encoder = AutoModel.from_config(encoder_config)
    decoder = AutoModelForCausalLM.from_config(as_cross_attention_decoder(decoder_config))
    return assemble(encoder, decoder, tokenizer, image_processor, max_length=max_length)


def load_cross_attention_decoder(name: str, cache_dir: str | None = None):
    """``(decoder, tokenizer)`` for a pretrained decoder name; its cross-attention layers are new (random)."""
    path = str(convert_gguf(name, cache_dir)) if is_gguf(name) else resolve_name(name, "decoder model")
    check_local(path, "decoder model", "AutoModelForCausalLM")
    config = hub_call(AutoConfig.from_pretrained, path, "decoder config", cache_dir=cache_dir)
    check_decoder_config(config, name)
    config = as_cross_attention_decoder(config)
    model = hub_call(AutoModelForCausalLM.from_pretrained, path, "decoder", config=config, cache_dir=cache_dir,
                      dtype=torch.float32, use_safetensors=True)
    tokenizer = hub_call(AutoTokenizer.from_pretrained, path, "tokenizer", cache_dir=cache_dir)
    return model, tokenizer


def build_encoder_decoder_captioner(spec):
    """A new encoder-decoder captioner from a ``CaptionerSpec`` (its encoder, decoder, max_length, cache_dir).

    Pretrained encoder and decoder weights are kept; only the cross-attention layers (and, where the widths
    differ, the encoder-to-decoder projection) start random.
    """
    encoder, image_processor, _ = load_encoder(spec.encoder, spec.cache_dir)
    check_encoder_config(encoder.config)
    decoder, tokenizer = load_cross_attention_decoder(spec.decoder, spec.cache_dir)
    return assemble(encoder, decoder, tokenizer, image_processor, max_length=spec.max_length)


def load_encoder_decoder(path: str | Path, *, dtype: torch.dtype = torch.float32):
    """Load a saved ``vision-encoder-decoder`` folder: ``(model, processor)`` in eval mode.

    Folders written by other tools work too when they hold the tokenizer and image processor.
    """
    model = load_checked(EncoderDecoderCaptioner, path, dtype=dtype)
    processor = EncoderDecoderProcessor.from_pretrained(path)
    return model.eval(), processor


def is_encoder_decoder(model) -> bool:
    return isinstance(model, VisionEncoderDecoderModel)


__all__ = [
    "ENCODER_DECODER",
    "EncoderDecoderCaptioner",
    "EncoderDecoderProcessor",
    "build_encoder_decoder",
    "build_encoder_decoder_captioner",
    "check_decoder_config",
    "is_encoder_decoder",
    "load_encoder_decoder",
]
