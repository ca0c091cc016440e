"""``distilvit convert MODEL --to llava``: a prefix captioner as a standard ``LlavaForConditionalGeneration``.

The two designs are the same computation when the distilvit model is built from parts LLaVA has: a transformers
vision tower (SigLIP, CLIP, ViT), one hidden state of it, an optional CLS token dropped, a Linear or
Linear-GELU-Linear projection, image tokens written over ``<image>`` placeholders of a decoder-only LM. The
mapping:

* encoder -> ``model.vision_tower`` (same class, same weights). distilvit's feature layer ``-1`` is the encoder's
  final output (after SigLIP's ``post_layernorm`` / ViT's final ``layernorm``); LLaVA reads ``hidden_states[-1]``,
  which these encoders leave before that norm unless their config sets ``tie_last_hidden_states``, so the
  converted vision config sets it (``True`` for layer ``-1``, ``False`` otherwise).
* CLS handling: LLaVA's ``"default"`` strategy drops exactly one leading token, ``"full"`` keeps all. SigLIP has
  none (``"full"``), CLIP and ViT have one (distilvit's strategy carries over); ``num_additional_image_tokens``
  counts it for the processor.
* projection -> ``multi_modal_projector``: ``mlp`` is ``linear_1``/GELU/``linear_2`` as is; ``linear`` becomes
  ``linear_1``, the identity activation (``"linear"``) and an identity ``linear_2``.
* LM -> ``model.language_model`` (its base model) + ``lm_head``, LoRA merged. LLaVA embeds every id before it
  writes the image features over the placeholders, so an ``<image>`` id outside the embedding table gets a
  zero row; ``generation_config.suppress_tokens`` keeps it from ever being generated.
* prompt: a chat template that renders distilvit's prompt layout; the converter checks that the processor then
  gives exactly distilvit's prompt ids (otherwise the layout is one LLaVA's processor cannot produce).

What LLaVA cannot express is refused with :class:`~distilvit.errors.ModelError`: other encoders, prefix
reduction, the projection's LayerNorm, logit scaling/soft-capping, the blind (``ablate_image``) model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image
from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from distilvit.errors import ModelError
from distilvit.model.configuration import IMAGE_TOKEN
from distilvit.model.modeling import DistilViTForCaptioning
from distilvit.model.processing import CaptionProcessor

#: vision towers LLaVA runs as they are, with their number of CLS-like tokens
LLAVA_VISION = {"siglip_vision_model": 0, "clip_vision_model": 1, "vit": 1}


def unsupported_reasons(model: DistilViTForCaptioning) -> list[str]:
    """Why ``model`` has no exact LLaVA equivalent (empty: it converts)."""
    config = model.config
    reasons = []
    kind = config.vision_config.model_type
    if kind not in LLAVA_VISION:
        reasons.append(f"its encoder is {kind!r}; LLaVA's vision tower is read through transformer hidden states "
                       f"with at most one CLS token ({', '.join(sorted(LLAVA_VISION))})")
    if config.prefix_reduction != "none":
        reasons.append(f"it reduces the image tokens ({config.prefix_reduction}); LLaVA feeds every patch token to "
                       "the projector (train with --prefix-reduction none)")
    if config.projection_layernorm:
        reasons.append("its projection starts with a LayerNorm; LLaVA's projector (Linear-GELU-Linear) has none and "
                       "a LayerNorm cannot be folded into a Linear (train with --no-projection-layernorm)")
    text = config.text_config
    if getattr(text, "logit_scale", None) or getattr(text, "final_logit_softcapping", None):
        reasons.append(f"its language model ({text.model_type}) scales or soft-caps its logits, which LLaVA's "
                       "lm_head does not")
    head = model.language_model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        reasons.append("its language model's output head has a bias (or none at all); LLaVA's lm_head is a bias-free "
                       "Linear")
    if config.ablate_image:
        reasons.append("it is a blind baseline (ablate_image): it ignores the image, which LLaVA cannot")
    return reasons


def _strategy(model: DistilViTForCaptioning) -> tuple[str, int]:
    """LLaVA's ``(vision_feature_select_strategy, num_additional_image_tokens)`` for distilvit's selection."""
    cls_tokens = LLAVA_VISION[model.config.vision_config.model_type]
    if cls_tokens == 0:
        return "full", 0
    return model.config.vision_feature_select_strategy, cls_tokens


def llava_config(model: DistilViTForCaptioning, vocab_size: int) -> LlavaConfig:
    config = model.config
    vision = config.vision_config.__class__.from_dict(config.vision_config.to_dict())
    vision.tie_last_hidden_states = config.vision_feature_layer == -1
    text = config.text_config.__class__.from_dict(config.text_config.to_dict())
    text.vocab_size = vocab_size
    strategy, _ = _strategy(model)
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=config.image_token_id,
        image_seq_length=config.num_image_tokens,
        projector_hidden_act="gelu" if config.projection_type == "mlp" else "linear",
        vision_feature_select_strategy=strategy, vision_feature_layer=config.vision_feature_layer,
        multimodal_projector_bias=True, tie_word_embeddings=config.tie_word_embeddings,
    )


@torch.no_grad()
def llava_model(model: DistilViTForCaptioning) -> LlavaForConditionalGeneration:
    """The LLaVA model with ``model``'s weights (``model`` must have its LoRA merged)."""
    embeddings = model.language_model.get_input_embeddings().weight
    vocab = max(embeddings.shape[0], model.config.image_token_id + 1)
    llava = LlavaForConditionalGeneration(llava_config(model, vocab)).to(embeddings.dtype).eval()
    missing, unexpected = llava.model.vision_tower.load_state_dict(model.vision_model.state_dict(), strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise ModelError(f"the encoder's weights do not fit LLaVA's vision tower (missing {missing}, unexpected "
                         f"{unexpected}); this encoder cannot be converted.")
    for key in missing:  # ViT's pooler, which LLaVA builds but never runs: zeros, not random numbers
        llava.model.vision_tower.get_parameter(key).zero_()
    base = model.language_model.base_model
    state = base.state_dict()
    table_key = next(key for key, value in state.items() if value.data_ptr() == embeddings.data_ptr())
    # the <image> row (zeros) goes after the table: never read (image features replace it), never generated
    state[table_key] = torch.cat([embeddings, embeddings.new_zeros(vocab - embeddings.shape[0], embeddings.shape[1])])
    llava.model.language_model.load_state_dict(state)
    if not model.config.tie_word_embeddings:
        llava.lm_head.weight.zero_()
        llava.lm_head.weight[: embeddings.shape[0]] = model.language_model.get_output_embeddings().weight
    layers = [m for m in model.projection.layers if isinstance(m, torch.nn.Linear)]
    projector = llava.model.multi_modal_projector
    projector.linear_1.load_state_dict(layers[0].state_dict())
    if len(layers) == 2:
        projector.linear_2.load_state_dict(layers[1].state_dict())
    else:  # linear projection: identity second layer behind the identity activation
        projector.linear_2.weight.copy_(torch.eye(projector.linear_2.weight.shape[0]))
        projector.linear_2.bias.zero_()
    return llava


def _literal(text: str) -> str:
    """``text`` as a string expression of a Jinja template (Python's Jinja and transformers.js's, which has no
    ``raw`` blocks, read JSON's escapes alike)."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def prompt_template(processor: CaptionProcessor) -> str:
    """A chat template that renders distilvit's caption prompt: one ``<image>`` per image in the messages, in
    distilvit's layout (leading specials or BOS, image, trained prompt; or the LM's chat template around them).
    The messages' text is not used: the captioner was trained on its one prompt."""
    tokenizer = processor.tokenizer
    auto_lead = tokenizer.decode(tokenizer("", add_special_tokens=True).input_ids)  # added by the tokenizer itself
    if processor.chat_template:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": IMAGE_TOKEN + processor.prompt}],
                                                 tokenize=False, add_generation_prompt=True)
        before, _, after = rendered.partition(IMAGE_TOKEN)
    else:
        before, after = tokenizer.decode(processor.lead_ids()), processor.prompt
    if auto_lead and before.startswith(auto_lead):
        before = before[len(auto_lead):]
    images = ("{% for message in messages %}{% if message['content'] is not string %}{% for item in "
              "message['content'] %}{% if item['type'] == 'image' %}" + IMAGE_TOKEN + "{% endif %}{% endfor %}"
              "{% endif %}{% endfor %}")
    return _literal(before) + images + _literal(after)


def llava_processor(processor: CaptionProcessor, model: DistilViTForCaptioning) -> LlavaProcessor:
    strategy, additional = _strategy(model)
    return LlavaProcessor(
        image_processor=processor.image_processor, tokenizer=processor.tokenizer,
        patch_size=model.config.vision_config.patch_size, vision_feature_select_strategy=strategy,
        chat_template=prompt_template(processor), image_token=IMAGE_TOKEN, num_additional_image_tokens=additional,
    )


def caption_prompt(llava: LlavaProcessor) -> str:
    """The text to give the converted processor with one image (what its chat template renders)."""
    messages = [{"role": "user", "content": [{"type": "image"}]}]
    return llava.apply_chat_template(messages, add_generation_prompt=True)


def check_prompt(llava: LlavaProcessor, processor: CaptionProcessor) -> None:
    """The converted processor must give distilvit's prompt ids exactly (image tokens included)."""
    size = processor.pixel_values([Image.new("RGB", (32, 32))]).shape[-2:]
    image = Image.new("RGB", (int(size[1]), int(size[0])))
    ids = llava(images=[image], text=[caption_prompt(llava)], return_tensors="pt")["input_ids"][0].tolist()
    expected = processor.prompt_ids()
    if ids != expected:
        raise ModelError(
            "LLaVA's processor cannot reproduce this model's prompt: it gives "
            f"{len(ids)} ids ({ids.count(processor.image_token_id)} image tokens), distilvit uses {len(expected)} "
            f"({expected.count(processor.image_token_id)} image tokens). The prompt placement or the image token "
            "count of this model has no LLaVA equivalent."
        )


def generation_config(model: DistilViTForCaptioning, image_token_id: int) -> GenerationConfig:
    config = model.default_generation_config()
    config.bos_token_id = model.config.text_config.bos_token_id
    config.suppress_tokens = [int(image_token_id)]
    return config


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ModelError(f"--out {out} is a file; give a folder for the converted model.")
    if out.is_dir() and any(out.iterdir()):
        config = out / "config.json"
        previous = config.is_file() and json.loads(config.read_text()).get("model_type") == "llava"
        if not previous:
            raise ModelError(f"--out {out} is not empty and holds no LLaVA model; give an empty or new folder.")


def convert_to_llava(model_dir: str | Path, out_dir: str | Path, *, revision: str | None = None) -> Path:
    """Convert the trained captioner in ``model_dir`` to a LLaVA folder ``out_dir`` (replaced atomically)."""
    from distilvit.model import load_captioner

    out = Path(out_dir).expanduser()
    _prepare_out(out)
    model, processor = load_captioner(model_dir, revision=revision)
    if not isinstance(model, DistilViTForCaptioning):
        raise ModelError(f"{model_dir} is an encoder-decoder captioner; only the prefix design (vision encoder -> "
                         "projection -> decoder-only LM) converts to LLaVA.")
    reasons = unsupported_reasons(model)
    if reasons:
        raise ModelError(f"{model_dir} cannot be converted to LLaVA: " + "; ".join(reasons) + ".")
    if model.has_lora():
        model.merge_lora()
    llava_proc = llava_processor(processor, model)
    check_prompt(llava_proc, processor)
    llava = llava_model(model)
    llava.generation_config = generation_config(model, processor.image_token_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        staging = Path(tmp) / "llava"
        llava.save_pretrained(staging)  # safetensors
        llava_proc.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return out
