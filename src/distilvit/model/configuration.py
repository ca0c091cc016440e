"""Configuration of the distilvit captioner.

A :class:`DistilViTConfig` holds the full configs of its two sub-models (the vision encoder and the
decoder-only language model) so that ``from_pretrained`` can rebuild the whole model offline, plus the
settings of the parts distilvit adds: the projection, the LoRA adapters and the prompt layout.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from distilvit.choices import PREFIX_REDUCTIONS, PROJECTION_TYPES  # noqa: F401 (PROJECTION_TYPES re-exported)

FEATURE_SELECT_STRATEGIES = ("default", "full")
IMAGE_TOKEN = "<image>"


class DistilViTConfig(PretrainedConfig):
    r"""Configuration for :class:`~distilvit.model.DistilViTForCaptioning`.

    Args:
        vision_config: config of the vision encoder (SigLIP/CLIP vision, ViT, DeiT, DINOv2, ResNet, ConvNeXt).
        text_config: config of the decoder-only causal LM (Llama/SmolLM, Qwen2, GPT-2, OPT, ...).
        projection_type: ``"linear"`` or ``"mlp"`` (Linear-GELU-Linear) from vision width to LM width.
        projection_layernorm: apply a LayerNorm to the vision features before the projection.
        vision_feature_layer: which hidden state of the encoder to use; ``-1`` is the encoder's final output
            (``last_hidden_state``), any other index selects ``hidden_states[index]``.
        vision_feature_select_strategy: ``"default"`` drops the encoder's CLS-like prefix tokens,
            ``"full"`` keeps them.
        prefix_reduction: ``"none"``, ``"pool2"`` (2x2 average pooling) or ``"shuffle2"`` (2x2 pixel shuffle):
            fewer image tokens for the LM, applied to the encoder features before the projection.
        num_image_tokens: number of image tokens per image the LM reads, after reduction (filled in by the builder).
        vision_feature_dim: width of the encoder's features, before reduction (filled in by the builder).
        image_token_id: id of the ``<image>`` placeholder in the tokenizer; its positions are replaced by
            the projected vision tokens. It may lie outside the LM's embedding table: it is never embedded.
        prompt: text that follows the image tokens and precedes the caption (may be empty).
        use_lora, lora_r, lora_alpha, lora_dropout, lora_target_modules: LoRA adapters on the LM
            (``lora_target_modules=None`` picks them per architecture).
        lora_merged: the adapters have been merged into the LM weights (the model then has no LoRA layers).
        freeze_vision: the encoder is frozen except its last ``unfreeze_vision_layers`` layers
            (``-1`` = all layers trainable).
        ablate_image: zero the image features (the "blind" baseline that shows how much the model uses the image).
    """

    model_type = "distilvit"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="siglip_vision_model"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PretrainedConfig | None = None
    text_config: dict | PretrainedConfig | None = None
    projection_type: str = "linear"
    projection_layernorm: bool = True
    vision_feature_layer: int = -1
    vision_feature_select_strategy: str = "default"
    prefix_reduction: str = "none"
    num_image_tokens: int = 0
    vision_feature_dim: int = 0
    image_token_id: int | None = None
    prompt: str = ""
    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | None = None
    lora_merged: bool = False
    freeze_vision: bool = True
    unfreeze_vision_layers: int = 0
    ablate_image: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.projection_type not in PROJECTION_TYPES:
            raise ValueError(f"projection_type must be one of {PROJECTION_TYPES}, got {self.projection_type!r}")
        if self.prefix_reduction not in PREFIX_REDUCTIONS:
            raise ValueError(f"prefix_reduction must be one of {PREFIX_REDUCTIONS}, got {self.prefix_reduction!r}")
        if self.vision_feature_select_strategy not in FEATURE_SELECT_STRATEGIES:
            raise ValueError(
                f"vision_feature_select_strategy must be one of {FEATURE_SELECT_STRATEGIES}, "
                f"got {self.vision_feature_select_strategy!r}"
            )
        # generation/saving code looks the tie flag up on the top-level config
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True


AutoConfig.register("distilvit", DistilViTConfig)
