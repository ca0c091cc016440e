"""`distilvit convert --to llava` with the real SmolLM2-135M-Instruct (its BPE tokenizer and chat template) and a
small random SigLIP: plain transformers in a child process gives distilvit's logits and greedy captions. Slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import _processor, perturb_lora
from transformers import SiglipVisionConfig, SiglipVisionModel

from distilvit.export.llava import convert_to_llava
from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.model.captioning import generate_captions

pytestmark = pytest.mark.slow
REFERENCE = Path(__file__).with_name("llava_reference.py")
MAX_NEW = 10  # as tests/llava_reference.py
LOGIT_TOLERANCE = 1e-3  # absolute, on SmolLM2 logits of magnitude ~10-30 (fp32, two attention code paths)


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("siglip-small")
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=64, patch_size=16)).save_pretrained(path)
    _processor(64).save_pretrained(path)
    return path


@pytest.mark.parametrize("chat_template", [False, True], ids=["plain-prompt", "chat-template"])
def test_real_lm_conversion_matches(chat_template, siglip_dir, tmp_path):
    pytest.importorskip("gguf")
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(
        encoder=str(siglip_dir), decoder="smollm2-gguf", prefix_reduction="none", projection_layernorm=False,
        projection_type="mlp", prompt="Describe the image." if chat_template else " A photo of",
        chat_template=chat_template))
    perturb_lora(model, std=0.02)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    convert_to_llava(tmp_path / "model", tmp_path / "llava")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    out = tmp_path / "reference.json"
    done = subprocess.run([sys.executable, str(REFERENCE), str(out), *paths, "--", str(tmp_path / "llava")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(out.read_text())[str(tmp_path / "llava")]
    model, processor = load_captioner(tmp_path / "model")
    assert got["input_ids"][0] == processor.prompt_ids()
    batch = processor.generation_inputs(len(images))
    with torch.no_grad():
        expected = model(**batch, pixel_values=processor.pixel_values(images)).logits
    logits = torch.tensor(got["logits"])[..., : expected.shape[-1]]
    assert (logits - expected).abs().max() < LOGIT_TOLERANCE
    assert got["captions"] == generate_captions(model, processor, images, max_new_tokens=MAX_NEW)
