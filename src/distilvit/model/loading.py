"""Building a captioner from pretrained parts, and loading a trained one.

A model name is a Hugging Face Hub id, a local folder (the same ``from_pretrained`` code path), a GGUF
file or alias (decoders), or a ``scratch:NAME`` preset (encoders).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from distilvit.errors import ModelError
from distilvit.hub.resolve import resolve_model
from distilvit.model.configuration import DistilViTConfig
from distilvit.model.files import check_model_folder, load_checked, load_config, refuse_pickles
from distilvit.model.gguf import convert_gguf, is_gguf
from distilvit.model.lora import default_target_modules
from distilvit.model.modeling import DistilViTForCaptioning
from distilvit.model.presets import is_preset, preset_encoder
from distilvit.model.processing import CaptionProcessor
from distilvit.model.reduction import DEFAULT_PREFIX_REDUCTION, reduced_shape
from distilvit.model.vision import build_vision_model, check_feature_layer, probe_vision_output, vision_config_of

logger = logging.getLogger("distilvit.model")

# Encoder-only models that transformers can put under a causal-LM head but that are no decoders.
_NOT_DECODERS = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "bert-generation", "big_bird"}


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


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).suffix in {".gguf", ".json", ".safetensors"}


def _resolve(name: str, what: str) -> str:
    """Local folder or Hub id; a path-like name that does not exist is an error, not a Hub lookup."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if _looks_like_path(name) or name.count("/") > 1:
        raise ModelError(f"{what} {name!r} does not exist. Give an existing folder or a Hugging Face Hub id.")
    return name


def _check_local(path: str, what: str, auto_class: str = "AutoModel") -> None:
    """A local model folder is checked (safetensors weights, readable files) before transformers reads it."""
    if Path(path).is_dir():
        check_model_folder(path, what, auto_class)


def _hub_call(fn, name: str, what: str, **kwargs):
    try:
        return fn(name, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:
        if "use_safetensors" in str(err):  # a Hub repository without safetensors weights
            auto_class = "AutoModelForCausalLM" if "decoder" in what else "AutoModel"
            raise refuse_pickles(Path(name), ["pytorch_model.bin"], what, auto_class) from None
        raise ModelError(
            f"cannot load {what} {name!r}: {str(err).splitlines()[0]}. If this is a Hub id, the Hub may be "
            "unreachable (offline?); download the model to a folder and pass the folder instead."
        ) from err


def load_encoder(name: str, cache_dir: str | None = None):
    """``(vision_model, image_processor, trainable_from_scratch)`` for an encoder name."""
    if is_preset(name):
        config, processor = preset_encoder(name)
        return build_vision_model(config), processor, True
    config = encoder_config(name, cache_dir)
    path = _resolve(name, "encoder model")
    vision = _hub_call(_load_vision_weights, path, "encoder", config=config, cache_dir=cache_dir)
    processor = _hub_call(AutoImageProcessor.from_pretrained, path, "image processor", cache_dir=cache_dir)
    return vision, processor, False


def encoder_config(name: str, cache_dir: str | None = None):
    """The vision config of an encoder name (preset, folder or Hub id), read without loading any weights."""
    if is_preset(name):
        return preset_encoder(name)[0]
    path = _resolve(name, "encoder model")
    _check_local(path, "encoder model")
    return vision_config_of(_hub_call(AutoConfig.from_pretrained, path, "encoder config", cache_dir=cache_dir))


def _load_vision_weights(path: str, *, config, cache_dir):
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    model_class = MODEL_MAPPING[type(config)]
    return model_class.from_pretrained(path, config=config, cache_dir=cache_dir, dtype=torch.float32, use_safetensors=True)


def check_decoder_config(config) -> None:
    """Raise :class:`ModelError` unless ``config`` is a decoder-only causal LM."""
    model_type = config.model_type
    if getattr(config, "is_encoder_decoder", False) or model_type in _NOT_DECODERS:
        raise ModelError(
            f"the decoder must be a decoder-only causal language model; {model_type!r} is not "
            "(use e.g. SmolLM/Llama, Qwen2, GPT-2 or OPT)."
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(f"unsupported language model kind {model_type!r}: transformers has no causal LM for it.")


def load_decoder(name: str, cache_dir: str | None = None):
    """``(language_model, tokenizer)`` for a decoder name (Hub id, folder, GGUF file or alias)."""
    path = str(convert_gguf(name, cache_dir)) if is_gguf(name) else _resolve(name, "decoder model")
    _check_local(path, "decoder model", "AutoModelForCausalLM")
    config = _hub_call(AutoConfig.from_pretrained, path, "decoder config", cache_dir=cache_dir)
    check_decoder_config(config)
    model = _hub_call(AutoModelForCausalLM.from_pretrained, path, "decoder", cache_dir=cache_dir, dtype=torch.float32,
                      use_safetensors=True)
    tokenizer = _hub_call(AutoTokenizer.from_pretrained, path, "tokenizer", cache_dir=cache_dir)
    return model, tokenizer


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
        from distilvit.model.encoder_decoder import ENCODER_DECODER, build_encoder_decoder_captioner

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
        from distilvit.model.encoder_decoder import load_encoder_decoder

        return load_encoder_decoder(path, dtype=dtype)
    if not isinstance(config, DistilViTConfig):
        raise ModelError(f"{path} holds a {config.model_type!r} model, not a distilvit captioner.")
    model = load_checked(DistilViTForCaptioning, path, dtype=dtype)
    processor = CaptionProcessor.from_pretrained(path)
    return model.eval(), processor
