"""The captioner model: building from any supported parts, loss masking, generation, save/load."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tiny_models import pad_more, perturb_lora

from distilvit.errors import ModelError
from distilvit.model import (
    CaptionerSpec,
    DistilViTForCaptioning,
    build_captioner,
    load_captioner,
)
from distilvit.model.captioning import generate_captions
from distilvit.model.reduction import reduce_tokens

COLOURS = [(255, 0, 0), (0, 0, 255), (0, 170, 0)]


def images(n=2):
    return [Image.new("RGB", (40, 40), COLOURS[i % 3]) for i in range(n)]


def build(encoder, decoder, **kwargs):
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder=str(encoder), decoder=str(decoder), **kwargs))
    return model.eval(), processor


@pytest.mark.parametrize("lm", ["llama", "gpt2", "opt", "qwen2"])
def test_every_lm_kind_trains_and_generates(tiny_dirs, tiny_encoder, lm):
    model, processor = build(tiny_encoder, tiny_dirs(lm))
    batch = processor.training_batch(["a red circle", "a blue square left of a green triangle"], images())
    model.train()
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert model.projection.layers[0].weight.grad is not None
    ids = model.eval().generate(pixel_values=processor.pixel_values(images()), **processor.generation_inputs(2),
                                max_new_tokens=4)
    assert ids.shape[0] == 2 and 1 <= ids.shape[1] <= 4


@pytest.mark.parametrize("encoder", ["siglip", "siglip-full", "vit", "clip", "resnet"])
def test_every_encoder_kind(tmp_path, tiny_dirs, tiny_lm, encoder):
    model, processor = build(tiny_dirs(encoder), tiny_lm, prefix_reduction="none")
    expected_tokens = 16  # 32 px: 4x4 patches of 8 px; the 2-stage ResNet has stride 8
    assert model.config.num_image_tokens == expected_tokens  # CLS dropped for ViT/CLIP, conv map flattened
    assert model.config.vision_config.model_type != "siglip"  # the vision half of a dual encoder is used
    assert not any(p.requires_grad for p in model.vision_model.parameters())  # frozen by default
    batch = processor.training_batch(["a red circle", "a cat"], images())
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, _ = load_captioner(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).loss, loss, rtol=0, atol=0)


def test_caption_only_logits_match_full_forward(tiny_dirs, tiny_encoder):
    for lm in ("llama", "gpt2", "opt"):
        model, processor = build(tiny_encoder, tiny_dirs(lm))
        batch = processor.training_batch(["a red circle", "a small blue square left of a circle"], images())
        with torch.no_grad():
            lean = model(**batch).logits  # (labelled positions, vocab)
            full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         pixel_values=batch["pixel_values"]).logits
        keep = batch["labels"][:, 1:] != -100
        torch.testing.assert_close(lean, full[:, :-1][keep], rtol=1e-5, atol=1e-5)


def test_labels_mask_image_prompt_and_padding_and_end_with_eos(tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm, prompt="the image")
    batch = processor.training_batch(["a red circle", "a small blue square left of a green triangle"])
    prefix = len(processor.prompt_ids())
    assert prefix == 1 + model.config.num_image_tokens + 2  # BOS first (attention sink), image, 2 prompt words
    labels, mask = batch["labels"], batch["attention_mask"]
    assert (labels[:, :prefix] == -100).all()
    eos = processor.tokenizer.eos_token_id
    for row in range(2):
        real = labels[row][labels[row] != -100]
        assert real[-1] == eos and (real[:-1] != eos).all()
        assert (labels[row][mask[row] == 0] == -100).all()  # padding never in the loss
    assert batch["input_ids"].shape[1] == prefix + len(processor.caption_ids("a small blue square left of a green triangle"))


def test_loss_does_not_depend_on_padding_length(tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm)
    batch = processor.training_batch(["a red circle", "a small blue square left of a green triangle"], images())
    padded = pad_more(batch, 7, processor.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, model(**padded).loss, rtol=1e-6, atol=1e-6)


def test_zero_length_prefix_gives_the_bare_lm_logits(tiny_encoder, tiny_lm):
    from transformers import AutoModelForCausalLM

    model, processor = build(tiny_encoder, tiny_lm)
    bare = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    ids = processor.tokenizer(["a red circle left of the dog"], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, bare(input_ids=ids).logits, rtol=0, atol=0)


def test_image_placeholder_count_must_match_the_images(tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm)
    batch = processor.training_batch(["a red circle"], images(1))
    ids = batch["input_ids"][0]
    first_image = int((ids == processor.image_token_id).nonzero()[0])
    one_short = torch.cat([ids[:first_image], ids[first_image + 1 :]]).unsqueeze(0)
    with pytest.raises(ValueError, match="placeholder"):
        model(input_ids=one_short, pixel_values=batch["pixel_values"])


def test_save_and_reload_round_trip_exactly(tmp_path, tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm)
    perturb_lora(model, std=0.5)  # non-trivial adapters, so that a lost one would show
    batch = processor.training_batch(["a red circle", "a blue square"], images())
    with torch.no_grad():
        logits = model(**batch).logits
    captions = generate_captions(model, processor, images(), max_new_tokens=6)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    reloaded, reprocessor = load_captioner(tmp_path)
    assert not reloaded.training
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, logits, rtol=0, atol=0)
    assert generate_captions(reloaded, reprocessor, images(), max_new_tokens=6) == captions
    assert reloaded.has_lora() and any("lora_A" in k for k in reloaded.state_dict())


def test_merged_lora_saves_without_adapters_and_keeps_outputs(tmp_path, tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm)
    perturb_lora(model, std=0.5)  # non-trivial adapters, so that a lost one would show
    batch = processor.training_batch(["a red circle"], images(1))
    with torch.no_grad():
        before = model(**batch).logits
    assert model.merge_lora() > 0
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, _ = load_captioner(tmp_path)
    assert not reloaded.has_lora() and not any("lora" in k for k in reloaded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, before, rtol=1e-4, atol=1e-4)


def test_decoding_modes(tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm)
    imgs = images(2)
    greedy = generate_captions(model, processor, imgs, max_new_tokens=5)
    assert greedy == generate_captions(model, processor, imgs, max_new_tokens=5)  # deterministic
    beams = generate_captions(model, processor, imgs, max_new_tokens=5, num_beams=3)
    assert len(beams) == 2
    sampled = [generate_captions(model, processor, imgs, max_new_tokens=5, do_sample=True, temperature=2.0, seed=3)
               for _ in range(2)]
    assert sampled[0] == sampled[1]  # same seed, same sample
    word = greedy[0].split()[0]
    banned = generate_captions(model, processor, imgs, max_new_tokens=5, banned_words=[word])
    assert all(word not in caption.split() for caption in banned)
    with pytest.raises(ValueError, match="unknown generation options"):
        generate_captions(model, processor, imgs, beams=2)


@pytest.mark.parametrize("options", [{}, {"unfreeze_vision_layers": 1}, {"use_lora": False}])
def test_a_reloaded_model_trains_exactly_what_the_built_one_did(tmp_path, tiny_encoder, tiny_lm, options):
    """Loading creates fresh parameters that all require gradients; without resetting them, `train --base-model`
    would train the whole LM and encoder instead of the projection and LoRA."""
    model, processor = build(tiny_encoder, tiny_lm, **options)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, _ = load_captioner(tmp_path)

    def trainable(m):
        return {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable(reloaded) == trainable(model)
    assert not any(n.startswith("language_model.") and "lora_" not in n for n in trainable(reloaded))


def test_unfreezing_the_last_encoder_layers(tiny_encoder, tiny_lm):
    model, _ = build(tiny_encoder, tiny_lm, unfreeze_vision_layers=1)
    trainable = {n for n, p in model.vision_model.named_parameters() if p.requires_grad}
    assert any(n.startswith("encoder.layers.1.") for n in trainable)
    assert not any(n.startswith("encoder.layers.0.") for n in trainable)
    assert "post_layernorm.weight" in trainable
    assert not any(n.startswith("head.") for n in trainable)  # pooling head: unused, stays frozen
    with pytest.raises(ModelError, match="larger than the encoder"):
        build(tiny_encoder, tiny_lm, unfreeze_vision_layers=5)


def test_scratch_encoder_is_trainable(tiny_lm):
    model, _ = build("scratch:siglip-tiny", tiny_lm)
    assert all(p.requires_grad for p in model.vision_model.parameters())
    with pytest.raises(ModelError, match="unknown encoder preset"):
        build("scratch:nope", tiny_lm)


@pytest.mark.parametrize(
    "encoder,decoder,message",
    [
        ("./no/such/encoder", "LM", "does not exist"),
        ("ENC", "./no/such/lm", "does not exist"),
        ("LM", "LM", "unsupported vision encoder kind 'llama'"),
        ("ENC", "ENC", "not a decoder-only|unsupported language model kind"),
        ("ENC", "/no/such/file.gguf", "does not exist"),
        ("google/siglip-base-patch16-224", "LM", "Hub may be unreachable"),  # the tests run offline
        ("ENC", "HuggingFaceTB/SmolLM-135M", "Hub may be unreachable"),
    ],
)
def test_bad_model_names_give_clear_errors(tiny_encoder, tiny_lm, encoder, decoder, message):
    names = {"ENC": str(tiny_encoder), "LM": str(tiny_lm)}
    with pytest.raises(ModelError, match=message):
        build(names.get(encoder, encoder), names.get(decoder, decoder))


def test_encoder_only_lm_is_rejected(tmp_path, tiny_encoder):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="decoder-only"):
        build(tiny_encoder, tmp_path)


def test_loading_something_that_is_not_a_distilvit_model(tmp_path, tiny_lm):
    with pytest.raises(ModelError, match="does not exist"):
        load_captioner(tmp_path / "missing")
    with pytest.raises(ModelError, match="no config.json"):
        load_captioner(tmp_path)
    with pytest.raises(ModelError, match="not a distilvit captioner"):
        load_captioner(tiny_lm)


def test_auto_classes_know_the_model(tmp_path, tiny_encoder, tiny_lm):
    from transformers import AutoConfig, AutoModel

    model, processor = build(tiny_encoder, tiny_lm)
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "distilvit"
    assert isinstance(AutoModel.from_pretrained(tmp_path), DistilViTForCaptioning)


def test_chat_template_layout(tiny_encoder, tiny_lm):
    from transformers import AutoTokenizer

    from distilvit.model.processing import CaptionProcessor

    _, processor = build(tiny_encoder, tiny_lm)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    with pytest.raises(ModelError, match="chat template"):
        CaptionProcessor(tokenizer, processor.image_processor, num_image_tokens=4, chat_template=True)
    tokenizer.chat_template = (
        "{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}{% if add_generation_prompt %}the {% endif %}"
    )
    chat = CaptionProcessor(tokenizer, processor.image_processor, num_image_tokens=4, prompt=" a photo",
                            chat_template=True)
    ids = chat.prompt_ids()
    words = tokenizer.convert_ids_to_tokens(ids)
    assert words == ["<s>"] + ["<image>"] * 4 + ["a", "photo", "</s>", "the"]
    batch = chat.training_batch(["a red circle"])
    real = batch["labels"][0][batch["labels"][0] != -100]
    assert tokenizer.convert_ids_to_tokens(real.tolist()) == ["a", "red", "circle", "</s>"]


def test_frozen_encoder_stays_in_eval_mode_while_training(tiny_dirs, tiny_lm):
    """A frozen batch-norm encoder must neither use batch statistics nor update its running statistics."""
    model, processor = build(tiny_dirs("resnet"), tiny_lm)
    stats = {k: v.clone() for k, v in model.vision_model.state_dict().items() if "running_" in k}
    assert stats
    with torch.no_grad():
        evaluated = model.image_tokens(processor.pixel_values(images(2)))
    model.train()
    assert model.training and not model.vision_model.training
    assert model.language_model.training  # LoRA dropout still active where it belongs
    batch = processor.training_batch(["a red circle", "a cat"], images(2))
    model(**batch).loss.backward()
    for key, value in model.vision_model.state_dict().items():
        if key in stats:
            assert torch.equal(value, stats[key]), key
    with torch.no_grad():
        assert torch.equal(model.image_tokens(batch["pixel_values"]), evaluated)


def test_resnet_inner_stage_with_pixel_shuffle(tiny_lm):
    """A finer grid at the same prefix length: the ResNet preset read at its second-to-last stage (6x6 at 96 px,
    128 wide), 2x2 neighbours concatenated -> 9 tokens of 512 for the projection."""
    model, processor = build("scratch:resnet-tiny", tiny_lm, vision_feature_layer=-2, prefix_reduction="shuffle2")
    assert model.config.num_image_tokens == 9
    assert model.projection.norm.normalized_shape == (512,)
    pixels = processor.image_processor(images(2), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        stage = model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        assert stage.shape[1:] == (128, 6, 6)
        tokens = model.image_tokens(pixel_values=pixels)
    assert tokens.shape == (2, 9, model.language_model.config.hidden_size)
    # the top-left token sees exactly the top-left 2x2 cells of the 6x6 map: changing another cell leaves it alone
    changed = stage.clone()
    changed[:, :, 5, 5] += 1.0
    def flat(fmap):
        return fmap.flatten(2).transpose(1, 2)

    assert torch.equal(reduce_tokens(flat(stage), "shuffle2")[:, 0], reduce_tokens(flat(changed), "shuffle2")[:, 0])
    assert not torch.equal(reduce_tokens(flat(stage), "shuffle2")[:, 8], reduce_tokens(flat(changed), "shuffle2")[:, 8])
