"""Tiny models built locally (random init, real Hugging Face configs), saved to folders so that tests go
through the same ``from_pretrained(path)`` code as Hub ids."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    ResNetConfig,
    ResNetModel,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

SPECIALS = ["<unk>", "<pad>", "<s>", "</s>"]
WORDS = (
    "a small large red green blue yellow purple circle square triangle left of right the and "
    "dog cat man woman photo picture with on in , . is an image"
).split()


def make_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(path)
    return tokenizer


def _common(tokenizer) -> dict:
    # initializer_range 0.4 rather than 0.02: with frozen random weights the largest reachable logit is about
    # |normed hidden| x |embedding row|, which at 0.02 is ~0.6 and makes even memorising two captions impossible
    return {
        "initializer_range": 0.4,
        "vocab_size": len(SPECIALS) + len(WORDS),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


LM_BUILDERS = {
    # head width 16: the smallest onnxruntime's GroupQueryAttention rotates (export/attention.py)
    "llama": lambda c: LlamaForCausalLM(LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, max_position_embeddings=128, tie_word_embeddings=True, **c)),
    "gpt2": lambda c: GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **c)),
    "opt": lambda c: OPTForCausalLM(OPTConfig(
        hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32,
        max_position_embeddings=128, **c)),
    "qwen2": lambda c: Qwen2ForCausalLM(Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=128, **c)),
}


def make_lm(path: Path, kind: str = "llama", seed: int = 0) -> Path:
    """Save a tiny causal LM of architecture ``kind`` with the word-level tokenizer to ``path``."""
    tokenizer = make_tokenizer(path)
    torch.manual_seed(seed)
    LM_BUILDERS[kind](_common(tokenizer)).save_pretrained(path)
    return path


def _processor(size: int):
    return SiglipImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _siglip_vision():
    return SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)


ENCODER_BUILDERS = {
    "siglip": lambda: SiglipVisionModel(_siglip_vision()),
    "siglip-full": lambda: SiglipModel(SiglipConfig(
        vision_config=_siglip_vision().to_dict(),
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64, "max_position_embeddings": 16})),
    "vit": lambda: ViTModel(ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=32, patch_size=8), add_pooling_layer=False),
    "clip": lambda: CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                     num_attention_heads=2, image_size=32, patch_size=8)),
    "resnet": lambda: ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                               layer_type="basic")),
}


def make_encoder(path: Path, kind: str = "siglip", seed: int = 0) -> Path:
    """Save a tiny vision encoder of ``kind`` with a 32 px image processor to ``path``."""
    torch.manual_seed(seed)
    ENCODER_BUILDERS[kind]().save_pretrained(path)
    _processor(32).save_pretrained(path)
    return path


def pad_more(batch: dict, extra: int, pad_token_id: int) -> dict:
    """``batch`` with ``extra`` more padding columns (pad ids, attention 0, labels -100)."""
    rows = batch["input_ids"].shape[0]
    padded = dict(batch)
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.full((rows, extra), pad_token_id)], 1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(rows, extra, dtype=torch.long)], 1)
    padded["labels"] = torch.cat([batch["labels"], torch.full((rows, extra), -100)], 1)
    return padded


@torch.no_grad()
def perturb_lora(model, std: float) -> None:
    """Give the (zero-initialised) LoRA B matrices random values, so that a lost or unmerged adapter shows."""
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.normal_(std=std)
