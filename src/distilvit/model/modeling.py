"""The distilvit captioner: vision encoder -> projection -> decoder-only LM (+ LoRA).

Shapes used in docstrings: ``B`` batch, ``T`` text length (image placeholders included), ``N`` image
tokens per image, ``D_v`` encoder width, ``D`` LM width, ``V`` vocabulary size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from distilvit.model.configuration import DistilViTConfig
from distilvit.model.embeddings import embed_with_images
from distilvit.model.lora import add_lora, default_target_modules, lora_layers, merge_lora
from distilvit.model.projection import VisionProjection
from distilvit.model.reduction import reduce_tokens, reduced_width
from distilvit.model.vision import build_vision_model, extract_features, set_vision_trainable


class DistilViTPreTrainedModel(PreTrainedModel):
    config_class = DistilViTConfig
    base_model_prefix = "distilvit"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class DistilViTForCaptioning(DistilViTPreTrainedModel):
    #: training-loss logits: "caption" (only at labelled positions) or "full" (every position, as the
    #: straightforward design does; same loss, slower). A run-time switch, not saved with the model.
    loss_logits: str = "caption"

    """Image captioner (and, through ``<image>`` placeholders, an image-conditioned chat model).

    Build one from pretrained parts with :func:`distilvit.model.build_captioner`; reload a trained one
    with ``DistilViTForCaptioning.from_pretrained(path)``.
    """

    def __init__(
        self,
        config: DistilViTConfig,
        vision_model: nn.Module | None = None,
        language_model: nn.Module | None = None,
    ):
        super().__init__(config)
        # PreTrainedModel resolves the attention backend on the top-level config only; hand it down to the
        # sub-models' configs (otherwise they fall back to eager attention and logits change on reload)
        config._attn_implementation = config._attn_implementation or "sdpa"
        self.vision_model = vision_model if vision_model is not None else build_vision_model(config.vision_config)
        self.language_model = (
            language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        )
        self.projection = VisionProjection(
            self.projection_input_dim(config),
            config.text_config.hidden_size,
            kind=config.projection_type,
            layernorm=config.projection_layernorm,
        )
        self.post_init()
        # LoRA goes in after post_init: weight initialisation must not touch peft's zero-initialised lora_B.
        if config.use_lora and not config.lora_merged:
            targets = config.lora_target_modules or default_target_modules(config.text_config)
            add_lora(
                self.language_model,
                r=config.lora_r,
                alpha=config.lora_alpha,
                dropout=config.lora_dropout,
                target_modules=targets,
            )
        self.set_trainable()

    def set_trainable(self) -> None:
        """Make exactly the parts this config trains trainable: the projection, the LoRA adapters (the rest of the
        LM frozen) and the encoder layers ``freeze_vision``/``unfreeze_vision_layers`` leave open."""
        for name, param in self.language_model.named_parameters():
            param.requires_grad_("lora_" in name)
        self.projection.requires_grad_(True)
        set_vision_trainable(
            self.vision_model, freeze=self.config.freeze_vision, unfreeze_last=self.config.unfreeze_vision_layers
        )

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, then :meth:`set_trainable`: loading creates fresh parameters that
        all require gradients, which would make ``train --base-model`` train the whole LM and encoder."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).set_trainable()
        return loaded

    @staticmethod
    def projection_input_dim(config: DistilViTConfig) -> int:
        """Width of the (reduced) features the projection reads; ``shuffle2`` makes them 4x wider."""
        return reduced_width(config.vision_feature_dim, config.prefix_reduction)

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``, but a fully frozen encoder stays in eval mode: its dropout stays off and its
        batch-norm layers keep using (and never update) their running statistics, so its features are the same
        as at inference and as the feature cache's."""
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.vision_model.parameters()):
            self.vision_model.eval()
        return self

    # ----------------------------------------------------------------- image path
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` pixels -> ``(B, N_raw, D_v)`` encoder features (before any reduction)."""
        pixel_values = pixel_values.to(self.vision_model.dtype)
        return extract_features(
            self.vision_model,
            pixel_values,
            feature_layer=self.config.vision_feature_layer,
            select_strategy=self.config.vision_feature_select_strategy,
        )

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N_raw, D_v)`` encoder features -> ``(B, N, D)`` LM-space image tokens (after prefix reduction)."""
        features = reduce_tokens(features, self.config.prefix_reduction)
        return self.projection(features.to(self.projection.layers[0].weight.dtype))

    def image_tokens(
        self, pixel_values: torch.Tensor | None = None, image_features: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Projected image tokens from pixels or from precomputed encoder features (one of the two)."""
        if image_features is None and pixel_values is None:
            return None
        if image_features is None:
            image_features = self.encode_images(pixel_values)
        if self.config.ablate_image:
            image_features = torch.zeros_like(image_features)
        return self.project_features(image_features)

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T)`` ids with ``<image>`` placeholders -> ``(B, T, D)`` LM input embeddings."""
        tokens = self.image_tokens(pixel_values, image_features)
        return embed_with_images(
            input_ids, self.language_model.get_input_embeddings(), self.config.image_token_id, tokens
        )

    # ----------------------------------------------------------------- training forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Run the model.

        Args:
            input_ids: ``(B, T)`` token ids with ``<image>`` placeholders.
            attention_mask: ``(B, T)``, 1 for real tokens, 0 for padding.
            pixel_values: ``(B, 3, H, W)`` images, or
            image_features: ``(B, N, D_v)`` precomputed encoder features.
            labels: ``(B, T)`` target ids, ``-100`` wherever no loss is wanted (image, prompt, padding).
            num_items_in_batch: total number of label tokens across gradient-accumulation steps; when
                given, the loss is the summed token loss divided by it (set by ``Trainer``).

        Returns:
            With ``labels``: ``loss`` (mean over caption tokens) and ``logits`` of shape ``(L, V)`` for the
            ``L`` labelled positions only (full-vocabulary logits elsewhere are never computed); with
            ``model.loss_logits = "full"`` (for comparisons) logits ``(B, T - 1, V)`` at every position.
            Without ``labels``: ``logits`` of shape ``(B, T, V)``.
        """
        embeds = self.embed(input_ids, pixel_values, image_features)
        if labels is None:
            out = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
            return CausalLMOutputWithPast(logits=out.logits)
        hidden = self.language_model.base_model(
            inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        targets = labels[:, 1:]
        reduction = "mean" if num_items_in_batch is None else "sum"
        if self.loss_logits == "full":  # the straightforward way: (B, T, V) logits, padding ignored by the loss
            logits = self._lm_head(hidden[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction=reduction)
        else:
            keep = targets != -100
            logits = self._lm_head(hidden[:, :-1][keep])
            loss = F.cross_entropy(logits.float(), targets[keep], reduction=reduction)
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def _lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the LM's output head (and its logit scaling/soft-capping, where it has one)."""
        logits = self.language_model.get_output_embeddings()(hidden)
        text_config = self.config.text_config
        if getattr(text_config, "logit_scale", None):
            logits = logits * text_config.logit_scale
        cap = getattr(text_config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Generate continuations of ``input_ids`` (left-padded prompts with ``<image>`` placeholders).

        Decoding runs through the LM's own ``generate`` on input embeddings, so greedy, beam search,
        sampling, KV caching, repetition penalties and ``bad_words_ids`` all come from ``transformers``.
        ``generation_config`` defaults to :meth:`default_generation_config` (greedy); ``kwargs`` override it.

        Returns:
            ``(B * num_return_sequences, new_tokens)`` ids of the generated tokens only.
        """
        embeds = self.embed(input_ids, pixel_values, image_features)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        config = generation_config or self.default_generation_config()
        return self.language_model.generate(
            inputs_embeds=embeds, attention_mask=attention_mask, generation_config=config, **kwargs
        )

    def default_generation_config(self) -> GenerationConfig:
        """Deterministic greedy decoding that stops at EOS."""
        text = self.config.text_config
        eos = text.eos_token_id
        pad = text.pad_token_id if text.pad_token_id is not None else eos
        if isinstance(pad, list):
            pad = pad[0]
        return GenerationConfig(
            max_new_tokens=40, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad
        )

    # ----------------------------------------------------------------- LoRA management
    def merge_lora(self) -> int:
        """Merge the LoRA adapters into the LM weights (for export/inference); returns layers merged."""
        merged = merge_lora(self.language_model)
        self.config.lora_merged = True
        return merged

    def has_lora(self) -> bool:
        return bool(lora_layers(self.language_model))

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the adapter weights (``language_model.*lora_*``)."""
        return {k: v for k, v in self.state_dict().items() if "lora_" in k}


AutoModel.register(DistilViTConfig, DistilViTForCaptioning)
