"""Building a captioner from pretrained parts (loaded by :mod:`distilvit.model.parts`), and loading a trained one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from distilvit.errors import ModelError
from distilvit.hub.resolve import resolve_model
from distilvit.model.configuration import DistilViTConfig
from distilvit.model.encoder_decoder import ENCODER_DECODER, build_encoder_decoder_captioner, load_encoder_decoder
from distilvit.model.files import check_model_folder, load_checked, load_config
from distilvit.model.lora import default_target_modules
from distilvit.model.modeling import DistilViTForCaptioning
from distilvit.model.parts import load_decoder, load_encoder
from distilvit.model.processing import CaptionProcessor
from distilvit.model.reduction import DEFAULT_PREFIX_REDUCTION, reduced_shape
from distilvit.model.vision import check_feature_layer, probe_vision_output


@dataclass
class CaptionerSpec:
    """Everything needed to build a fresh captioner (the ``distilvit train`` model options)."""

    encoder: str = "google/siglip-base-patch16-224"
    decoder: str = "HuggingFaceTB/SmolLM-135M"
    architecture: str = "prefix"  # or "encoder-decoder" (model/encoder_decoder.py; uses encoder, decoder, max_length)
    projection_type: str = "linear"
    projection_layernorm: bool = True
    vision_feature_layer: int = -1
    prefix_reduction: str = DEFAULT_PREFIX_REDUCTION
    prompt: str = ""
    chat_template: bool = False
    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | None = None
    unfreeze_vision_layers: int = 0
    max_length: int = 30
    cache_dir: str | None = None
    extra: dict = field(default_factory=dict)


def _image_size(processor, vision_config) -> tuple[int, int]:
    size = getattr(processor, "size", None) or {}
    if "height" in size:
        return size["height"], size["width"]
    if "shortest_edge" in size:
        crop = getattr(processor, "crop_size", None) or {}
        return crop.get("height", size["shortest_edge"]), crop.get("width", size["shortest_edge"])
    side = getattr(vision_config, "image_size", 224)
    return side, side


def build_captioner(spec: CaptionerSpec) -> tuple[DistilViTForCaptioning, CaptionProcessor]:
    """A new captioner from a pretrained (or scratch) encoder and a pretrained LM; only new parts are random."""
    if spec.architecture != "prefix":
        if spec.architecture != ENCODER_DECODER:
            raise ModelError(f"unknown architecture {spec.architecture!r}; use prefix or {ENCODER_DECODER}.")
        return build_encoder_decoder_captioner(spec)
    vision, image_processor, from_scratch = load_encoder(spec.encoder, spec.cache_dir)
    language_model, tokenizer = load_decoder(spec.decoder, spec.cache_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    check_feature_layer(vision.config, spec.vision_feature_layer)
    raw_tokens, feature_dim = probe_vision_output(
        vision, _image_size(image_processor, vision.config), feature_layer=spec.vision_feature_layer
    )
    num_tokens = reduced_shape(raw_tokens, feature_dim, spec.prefix_reduction)[0]
    text_config = language_model.config
    text_config.eos_token_id = tokenizer.eos_token_id
    text_config.pad_token_id = tokenizer.pad_token_id
    targets = spec.lora_target_modules or (default_target_modules(text_config) if spec.use_lora else None)
    config = DistilViTConfig(
        vision_config=vision.config,
        text_config=text_config,
        projection_type=spec.projection_type,
        projection_layernorm=spec.projection_layernorm,
        vision_feature_layer=spec.vision_feature_layer,
        prefix_reduction=spec.prefix_reduction,
        num_image_tokens=num_tokens,
        vision_feature_dim=feature_dim,
        prompt=spec.prompt,
        use_lora=spec.use_lora,
        lora_r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        lora_target_modules=targets,
        freeze_vision=not from_scratch,
        unfreeze_vision_layers=-1 if from_scratch else spec.unfreeze_vision_layers,
    )
    processor = CaptionProcessor(
        tokenizer, image_processor, num_image_tokens=num_tokens, prompt=spec.prompt, max_length=spec.max_length,
        chat_template=spec.chat_template,
    )
    config.image_token_id = processor.image_token_id
    model = DistilViTForCaptioning(config, vision_model=vision, language_model=language_model)
    embedding_std = float(language_model.get_input_embeddings().weight.std())
    model.projection.match_output_scale(embedding_std)
    return model, processor


def load_captioner(path: str | Path, *, dtype: torch.dtype = torch.float32, revision: str | None = None):
    """Load a trained model folder (or Hub id ``owner/name`` at ``revision``): ``(model, processor)``, in eval mode."""
    path = resolve_model(path, revision)  # a Hub id -> its downloaded snapshot folder (hub/resolve.py)
    path = Path(path).expanduser()
    check_model_folder(path)  # config.json and safetensors weights readable; pickle-only folders refused
    config = load_config(path)
    if config.model_type == "vision-encoder-decoder":  # --architecture encoder-decoder
        return load_encoder_decoder(path, dtype=dtype)
    if not isinstance(config, DistilViTConfig):
        raise ModelError(f"{path} holds a {config.model_type!r} model, not a distilvit captioner.")
    model = load_checked(DistilViTForCaptioning, path, dtype=dtype)
    processor = CaptionProcessor.from_pretrained(path)
    return model.eval(), processor
