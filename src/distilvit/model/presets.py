"""Built-in encoder presets, trained from scratch (``--encoder-model scratch:NAME``).

No pretrained vision weights can be downloaded in every setting (CI, air-gapped machines); these give a
randomly initialised encoder of a real ``transformers`` architecture plus a matching image processor.
A frozen random encoder is useless, so presets are always fully trainable.
"""

from __future__ import annotations

from transformers import ResNetConfig, SiglipVisionConfig
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from distilvit.errors import ModelError

PREFIX = "scratch:"


def _image_processor(size: int):
    return SiglipImageProcessorPil(
        size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3, do_rescale=True
    )


def _resnet_tiny():
    """A 1.2M-parameter ResNet: 96 px -> 3x3 = 9 tokens of width 256 (stride 32).

    Suits simple synthetic scenes: the 3x3 token grid lines up with the ``shapes`` scenes' three columns,
    and a convolutional encoder learns colours and shapes from scratch far faster than a ViT does.
    """
    config = ResNetConfig(
        embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type="basic", num_channels=3
    )
    return config, _image_processor(96)


def _siglip_tiny():
    """A 2-layer, 64-wide SigLIP vision tower: 32 px, patch 8 -> 16 tokens. For tests."""
    config = SiglipVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    return config, _image_processor(32)


def _siglip_base():
    """SigLIP-base-size tower (768 wide, 12 layers, 224 px, patch 16 -> 196 tokens), random init. For benchmarks."""
    config = SiglipVisionConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16
    )
    return config, _image_processor(224)


PRESETS = {"resnet-tiny": _resnet_tiny, "siglip-tiny": _siglip_tiny, "siglip-base": _siglip_base}


def is_preset(name: str) -> bool:
    return name.startswith(PREFIX)


def preset_encoder(name: str):
    """``scratch:NAME`` -> ``(vision_config, image_processor)``."""
    key = name[len(PREFIX) :]
    if key not in PRESETS:
        raise ModelError(f"unknown encoder preset {name!r}; available: {', '.join(PREFIX + k for k in PRESETS)}")
    return PRESETS[key]()
