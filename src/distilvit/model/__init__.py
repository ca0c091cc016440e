"""The captioner model: config, modeling, processor, builders."""

from distilvit.model.configuration import DistilViTConfig
from distilvit.model.encoder_decoder import EncoderDecoderCaptioner, EncoderDecoderProcessor, build_encoder_decoder
from distilvit.model.loading import CaptionerSpec, build_captioner, load_captioner
from distilvit.model.modeling import DistilViTForCaptioning
from distilvit.model.processing import CaptionProcessor

__all__ = [
    "CaptionProcessor",
    "CaptionerSpec",
    "DistilViTConfig",
    "DistilViTForCaptioning",
    "EncoderDecoderCaptioner",
    "EncoderDecoderProcessor",
    "build_captioner",
    "build_encoder_decoder",
    "load_captioner",
]
