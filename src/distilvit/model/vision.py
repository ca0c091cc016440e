"""Vision encoders: which kinds are supported, how features are read out, how layers are (un)frozen.

Any Hugging Face vision backbone of a supported kind works. Transformer encoders (SigLIP, CLIP, ViT,
DeiT, DINOv2) give ``(batch, tokens, width)`` hidden states; convolutional ones (ResNet, ConvNeXt) give
``(batch, channels, height, width)`` maps, which are flattened to ``(batch, height * width, channels)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig

from distilvit.errors import ModelError


@dataclass(frozen=True)
class VisionKind:
    """How to handle one family of vision encoders."""

    layers_path: str  # attribute path of the ModuleList of blocks (for partial unfreezing)
    num_prefix_tokens: int  # CLS-like tokens in front of the patch tokens


SUPPORTED_VISION = {
    "siglip_vision_model": VisionKind("encoder.layers", 0),
    "siglip2_vision_model": VisionKind("encoder.layers", 0),
    "clip_vision_model": VisionKind("encoder.layers", 1),
    "vit": VisionKind("encoder.layer", 1),
    "deit": VisionKind("encoder.layer", 2),
    "dinov2": VisionKind("encoder.layer", 1),
    "resnet": VisionKind("encoder.stages", 0),
    "convnext": VisionKind("encoder.stages", 0),
}

# full dual-encoder configs whose vision half we take
_DUAL_ENCODERS = {"siglip", "siglip2", "clip"}


def vision_kind(config: PretrainedConfig) -> VisionKind:
    """Return the :class:`VisionKind` of ``config`` or raise a :class:`ModelError` naming the supported kinds."""
    kind = SUPPORTED_VISION.get(config.model_type)
    if kind is None:
        raise ModelError(
            f"unsupported vision encoder kind {config.model_type!r}. Supported kinds: "
            f"{', '.join(sorted(SUPPORTED_VISION))} (or a full siglip/clip checkpoint, whose vision tower is used)."
        )
    return kind


def vision_config_of(config: PretrainedConfig) -> PretrainedConfig:
    """Return the vision part of ``config`` (the ``vision_config`` of a SigLIP/CLIP dual encoder, else itself)."""
    if config.model_type in _DUAL_ENCODERS:
        return config.vision_config
    vision_kind(config)
    return config


def hidden_state_count(config: PretrainedConfig) -> int:
    """How many hidden states the encoder returns: its patch embeddings plus one per layer (or stage)."""
    layers = getattr(config, "num_hidden_layers", None) or len(getattr(config, "depths", None) or [])
    return layers + 1


def check_feature_layer(config: PretrainedConfig, layer: int) -> None:
    """Raise :class:`ModelError` unless ``layer`` indexes the hidden states of an encoder of ``config``."""
    count = hidden_state_count(config)
    if not -count <= layer < count:
        raise ModelError(
            f"--vision-feature-layer {layer} is out of range for this {config.model_type} encoder, which has {count} "
            f"hidden states: use -1 (its final output) or an index from {-count} to {count - 1} (0 = patch embeddings)."
        )


def build_vision_model(config: PretrainedConfig) -> nn.Module:
    """Create a randomly initialised encoder of the given (vision) config."""
    vision_kind(config)
    kwargs = {"add_pooling_layer": False} if config.model_type in ("vit", "deit") else {}
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    # encoders without attention (ResNet, ConvNeXt) reject "sdpa", which the composite config hands down
    supports_sdpa = getattr(MODEL_MAPPING[type(config)], "_supports_sdpa", False)
    return AutoModel.from_config(config, attn_implementation="sdpa" if supports_sdpa else "eager", **kwargs)


def extract_features(
    vision_model: nn.Module,
    pixel_values: torch.Tensor,
    *,
    feature_layer: int = -1,
    select_strategy: str = "default",
) -> torch.Tensor:
    """Run the encoder and return token features.

    Args:
        pixel_values: ``(batch, 3, height, width)``.
        feature_layer: ``-1`` for the encoder's final output, else an index into its hidden states.
        select_strategy: ``"default"`` drops CLS-like prefix tokens, ``"full"`` keeps them.

    Returns:
        ``(batch, tokens, width)`` features.
    """
    want_hidden = feature_layer != -1
    out = vision_model(pixel_values=pixel_values, output_hidden_states=want_hidden, return_dict=True)
    feats = out.hidden_states[feature_layer] if want_hidden else out.last_hidden_state
    if feats.dim() == 4:  # conv feature map (B, C, H, W) -> (B, H*W, C)
        return feats.flatten(2).transpose(1, 2)
    if select_strategy == "default":
        feats = feats[:, vision_kind(vision_model.config).num_prefix_tokens :]
    return feats


def _get_path(module: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        module = getattr(module, name)
    return module


def set_vision_trainable(vision_model: nn.Module, *, freeze: bool, unfreeze_last: int = 0) -> None:
    """Freeze the encoder, then unfreeze its last ``unfreeze_last`` blocks (``-1`` or ``freeze=False``: all).

    When blocks are unfrozen, everything after the block list (final norms, heads) is unfrozen too.
    """
    if not freeze or unfreeze_last < 0:
        vision_model.requires_grad_(True)
        return
    vision_model.requires_grad_(False)
    if unfreeze_last == 0:
        return
    blocks = _get_path(vision_model, vision_kind(vision_model.config).layers_path)
    if unfreeze_last > len(blocks):
        raise ModelError(
            f"--unfreeze-vision-layers {unfreeze_last} is larger than the encoder's {len(blocks)} layers; "
            "use -1 to train the whole encoder."
        )
    for block in list(blocks)[-unfreeze_last:]:
        block.requires_grad_(True)
    # parameters registered after the blocks (final norms) belong to the top of the encoder; pooling
    # heads are not: the features are read before them, so they would get no gradient
    params = list(vision_model.named_parameters())
    prefix = vision_kind(vision_model.config).layers_path + "."
    last_block = max(i for i, (name, _) in enumerate(params) if name.startswith(prefix))
    for name, param in params[last_block + 1 :]:
        if not name.startswith(("head.", "pooler.")):
            param.requires_grad_(True)


@torch.no_grad()
def probe_vision_output(vision_model: nn.Module, image_size: tuple[int, int], **select) -> tuple[int, int]:
    """Return ``(num_tokens, feature_dim)`` of :func:`extract_features` for one image of ``image_size`` (h, w)."""
    was_training = vision_model.training
    vision_model.eval()
    param = next(vision_model.parameters())
    dummy = torch.zeros(1, 3, *image_size, dtype=param.dtype, device=param.device)
    feats = extract_features(vision_model, dummy, **select)
    vision_model.train(was_training)
    return feats.shape[1], feats.shape[2]
