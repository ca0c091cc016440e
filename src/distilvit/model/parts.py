"""Loading the pretrained parts of a captioner by name: vision encoders and language models.

A name is a Hugging Face Hub id, a local folder (the same ``from_pretrained`` code path), a GGUF file or alias
(decoders), or a ``scratch:NAME`` preset (encoders). Local folders are checked first (``model/files.py``:
safetensors weights only, readable files); every load failure becomes one :class:`ModelError` line. Used by both
designs: :mod:`distilvit.model.loading` (prefix) and :mod:`distilvit.model.encoder_decoder`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING

from distilvit.errors import ModelError
from distilvit.model.files import check_model_folder, refuse_pickles
from distilvit.model.gguf import convert_gguf, is_gguf
from distilvit.model.presets import is_preset, preset_encoder
from distilvit.model.vision import build_vision_model, vision_config_of

# Encoder-only models that transformers can put under a causal-LM head but that are no decoders.
_NOT_DECODERS = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "bert-generation", "big_bird"}


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).suffix in {".gguf", ".json", ".safetensors"}


def resolve_name(name: str, what: str) -> str:
    """Local folder or Hub id; a path-like name that does not exist is an error, not a Hub lookup."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if _looks_like_path(name) or name.count("/") > 1:
        raise ModelError(f"{what} {name!r} does not exist. Give an existing folder or a Hugging Face Hub id.")
    return name


def check_local(path: str, what: str, auto_class: str = "AutoModel") -> None:
    """A local model folder is checked (safetensors weights, readable files) before transformers reads it."""
    if Path(path).is_dir():
        check_model_folder(path, what, auto_class)


def hub_call(fn, name: str, what: str, **kwargs):
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
    path = resolve_name(name, "encoder model")
    vision = hub_call(_load_vision_weights, path, "encoder", config=config, cache_dir=cache_dir)
    processor = hub_call(AutoImageProcessor.from_pretrained, path, "image processor", cache_dir=cache_dir)
    return vision, processor, False


def encoder_config(name: str, cache_dir: str | None = None):
    """The vision config of an encoder name (preset, folder or Hub id), read without loading any weights."""
    if is_preset(name):
        return preset_encoder(name)[0]
    path = resolve_name(name, "encoder model")
    check_local(path, "encoder model")
    return vision_config_of(hub_call(AutoConfig.from_pretrained, path, "encoder config", cache_dir=cache_dir))


def _load_vision_weights(path: str, *, config, cache_dir):
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
    path = str(convert_gguf(name, cache_dir)) if is_gguf(name) else resolve_name(name, "decoder model")
    check_local(path, "decoder model", "AutoModelForCausalLM")
    config = hub_call(AutoConfig.from_pretrained, path, "decoder config", cache_dir=cache_dir)
    check_decoder_config(config)
    model = hub_call(AutoModelForCausalLM.from_pretrained, path, "decoder", cache_dir=cache_dir, dtype=torch.float32,
                      use_safetensors=True)
    tokenizer = hub_call(AutoTokenizer.from_pretrained, path, "tokenizer", cache_dir=cache_dir)
    return model, tokenizer
