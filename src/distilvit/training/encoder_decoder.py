"""What ``distilvit train`` does differently for ``--architecture encoder-decoder``.

The encoder-decoder design trains every weight with one learning rate (``--learning-rate``). Options of
the prefix design (projection, LoRA, prompt, image-token reduction, feature cache, ...) have no meaning
there; setting one to a non-default value is an error rather than silently ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from distilvit.errors import DistilViTError
from distilvit.model.encoder_decoder import ENCODER_DECODER, MODEL_TYPE

PREFIX = "prefix"
ARCHITECTURES = (PREFIX, ENCODER_DECODER)
DEFAULT_LEARNING_RATE = 5e-5  # one rate for all weights: the usual full fine-tuning rate for ViT + GPT-2

# (field of CaptionerSpec or TrainOptions, its flag): prefix-architecture settings
PREFIX_MODEL_OPTIONS = {
    "projection_type": "--projection-type", "projection_layernorm": "--no-projection-layernorm",
    "vision_feature_layer": "--vision-feature-layer",
    "prefix_reduction": "--prefix-reduction", "prompt": "--prompt", "chat_template": "--chat-template",
    "use_lora": "--no-lora", "lora_r": "--lora-r", "lora_alpha": "--lora-alpha", "lora_dropout": "--lora-dropout",
    "lora_target_modules": "--lora-target-modules", "unfreeze_vision_layers": "--unfreeze-vision-layers",
}
PREFIX_RUN_OPTIONS = {
    "projection_lr": "--projection-lr", "lora_lr": "--lora-lr", "vision_lr": "--vision-lr",
    "merge_lora": "--merge-lora", "blind": "--blind", "loss_logits": "--loss-logits",
    "attn_implementation": "--attn-implementation",
}


def architecture_of(opts) -> str:
    """The architecture a run trains: the saved model's for ``--base-model``, else ``--architecture``."""
    if opts.base_model:
        config = Path(opts.base_model).expanduser() / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("model_type") == MODEL_TYPE:
            return ENCODER_DECODER
        return PREFIX
    return opts.model.architecture


def _changed(obj, defaults, options: dict[str, str]) -> list[str]:
    return [flag for name, flag in options.items()
            if hasattr(obj, name) and getattr(obj, name) != getattr(defaults, name)]


def check_architecture_options(opts) -> str:
    """Raise :class:`DistilViTError` for options that do not apply to the run's architecture; return it.

    ``opts`` is a ``TrainOptions``; an option counts as given when it differs from its class's default.
    """
    architecture = architecture_of(opts)
    if architecture not in ARCHITECTURES:
        raise DistilViTError(f"unknown --architecture {architecture!r}; use {' or '.join(ARCHITECTURES)}.")
    if architecture == PREFIX:
        if opts.learning_rate is not None:
            raise DistilViTError("--learning-rate applies to --architecture encoder-decoder; the prefix architecture "
                                 "takes --projection-lr, --lora-lr and --vision-lr.")
        return architecture
    flags = _changed(opts, type(opts)(), PREFIX_RUN_OPTIONS)
    if getattr(opts, "cache_features", None):  # the encoder is trained: its features change every step
        flags.append("--cache-features")
    if not opts.base_model:  # --base-model ignores the model options anyway
        flags = _changed(opts.model, type(opts.model)(), PREFIX_MODEL_OPTIONS) + flags
    if flags:
        raise DistilViTError(
            f"{', '.join(flags)} only apply to --architecture prefix. The encoder-decoder architecture has no LoRA, "
            "projection or prompt: it trains every weight with --learning-rate. Remove these options."
        )
    return architecture


def learning_rates(opts) -> dict[str, float]:
    """``CaptionTrainer`` learning rates: every parameter group at ``--learning-rate`` (default 5e-5)."""
    rate = opts.learning_rate if opts.learning_rate is not None else DEFAULT_LEARNING_RATE
    return {"projection_lr": rate, "lora_lr": rate, "vision_lr": rate}
