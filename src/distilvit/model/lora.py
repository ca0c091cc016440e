"""LoRA adapters on the language model, through ``peft``.

Adapters are injected in place (``peft.inject_adapter_in_model``), so the LM stays a plain
``transformers`` model whose attention projections carry ``lora_A``/``lora_B`` weights; they are
saved in the same safetensors file as everything else and can be merged into the base weights.
"""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn
from transformers import PretrainedConfig

from distilvit.errors import ModelError

# Attention projections per architecture (query, key, value, output), our default targets.
ATTENTION_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "smollm3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "olmo": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense"],
    "gpt2": ["attn.c_attn", "attn.c_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "gpt_neox": ["query_key_value", "attention.dense"],
    "bloom": ["query_key_value", "self_attention.dense"],
    "falcon": ["query_key_value", "self_attention.dense"],
}

ADAPTER_NAME = "default"


def default_target_modules(text_config: PretrainedConfig) -> list[str]:
    """LoRA target module names for the LM's architecture (attention projections)."""
    model_type = text_config.model_type
    if model_type in ATTENTION_TARGETS:
        return list(ATTENTION_TARGETS[model_type])
    if model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
    raise ModelError(
        f"no default LoRA target modules for language model kind {model_type!r}; "
        "pass them with --lora-target-modules (e.g. --lora-target-modules q_proj v_proj)."
    )


def add_lora(language_model: nn.Module, *, r: int, alpha: int, dropout: float, target_modules: list[str]) -> None:
    """Inject LoRA adapters into ``language_model`` in place and freeze everything but the adapters."""
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        fan_in_fan_out=language_model.config.model_type == "gpt2",  # GPT-2 uses Conv1D (transposed) layers
    )
    try:
        inject_adapter_in_model(config, language_model, adapter_name=ADAPTER_NAME)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise ModelError(f"cannot add LoRA to the language model: {err}. Check --lora-target-modules.") from err
    for name, param in language_model.named_parameters():
        param.requires_grad_("lora_" in name)


def lora_layers(module: nn.Module) -> list[tuple[str, LoraLayer]]:
    """All LoRA-wrapped layers inside ``module`` with their qualified names."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, LoraLayer)]


def merge_lora(language_model: nn.Module) -> int:
    """Merge every adapter into its base weight and replace the wrapper by the plain layer.

    Returns the number of layers merged. Afterwards the LM has no LoRA parameters.
    """
    layers = lora_layers(language_model)
    for name, layer in layers:
        layer.merge(safe_merge=True)
        parent_name, _, child_name = name.rpartition(".")
        parent = language_model.get_submodule(parent_name) if parent_name else language_model
        setattr(parent, child_name, layer.get_base_layer())
    return len(layers)
