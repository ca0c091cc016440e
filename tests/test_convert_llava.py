"""`distilvit convert --to llava`: plain transformers (AutoModelForImageTextToText + AutoProcessor, run in a child
process that never imports distilvit) gives distilvit's logits and greedy captions; what LLaVA cannot express is
refused with a clear error. Tiny random models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import perturb_lora

from distilvit.cli.main import main
from distilvit.errors import ModelError
from distilvit.export.llava import convert_to_llava
from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.model.captioning import generate_captions

MAX_NEW = 10  # tests/llava_reference.py decodes as many tokens
LOGIT_TOLERANCE = 1e-4  # absolute, on logits of magnitude ~1-10 (fp32; the two attention code paths differ in rounding)
REFERENCE = Path(__file__).with_name("llava_reference.py")
# (encoder, projection, vision feature layer): SigLIP (no CLS, post-norm output), CLIP (CLS dropped, identity
# second projector layer), ViT (CLS, final layernorm, an inner hidden state)
CASES = {"siglip-mlp": ("siglip", "mlp", -1), "clip-linear": ("clip", "linear", -1), "vit-mlp-layer-2": ("vit", "mlp", -2)}


def images(n=5, seed=1):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (30 + 3 * i, 44 - 2 * i, 3), dtype=np.uint8)) for i in range(n)]


def save_model(path: Path, encoder: Path, lm: Path, **spec) -> Path:
    torch.manual_seed(0)
    options = {"prefix_reduction": "none", "projection_layernorm": False, **spec}
    model, processor = build_captioner(CaptionerSpec(encoder=str(encoder), decoder=str(lm), **options))
    perturb_lora(model, std=0.05)  # an unmerged or lost adapter shows in the logits
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_dirs):
    """``{case: (distilvit folder, llava folder)}``, converted through the CLI."""
    made = {}
    for case, (encoder, projection, layer) in CASES.items():
        root = tmp_path_factory.mktemp(case)
        model_dir = save_model(root / "model", tiny_dirs(encoder), tiny_dirs("llama"), projection_type=projection,
                               vision_feature_layer=layer)
        assert main(["convert", str(model_dir), "--to", "llava", "--out", str(root / "llava")]) == 0
        made[case] = (model_dir, root / "llava")
    return made


@pytest.fixture(scope="module")
def reference(converted, tmp_path_factory):
    """What plain transformers computes on every converted folder (one child process)."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, image in enumerate(images()):
        paths.append(str(folder / f"{i}.png"))
        image.save(paths[-1])
    out = folder / "reference.json"
    llava_dirs = [str(llava) for _, llava in converted.values()]
    result = subprocess.run([sys.executable, str(REFERENCE), str(out), *paths, "--", *llava_dirs],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data.pop("distilvit_imported") is False
    return {case: data[str(llava)] for case, (_, llava) in converted.items()}


@pytest.mark.parametrize("case", CASES)
def test_transformers_gives_distilvit_logits_and_captions(case, converted, reference):
    model, processor = load_captioner(converted[case][0])
    got = reference[case]
    assert got["class"] == "LlavaForConditionalGeneration"
    assert got["input_ids"][0] == processor.prompt_ids()
    batch = processor.generation_inputs(len(images()))
    with torch.no_grad():
        expected = model(**batch, pixel_values=processor.pixel_values(images())).logits
    logits = torch.tensor(got["logits"])
    vocab = expected.shape[-1]  # LLaVA's table has one more row, the <image> placeholder's
    assert logits.shape[-1] in (vocab, vocab + 1)
    assert (logits[..., :vocab] - expected).abs().max() < LOGIT_TOLERANCE
    captions = generate_captions(model, processor, images(), max_new_tokens=MAX_NEW)
    assert got["captions"] == captions
    assert len(set(captions)) > 1  # the images give different captions: the image path matters


def test_converted_folder_is_a_standard_llava_checkpoint(converted):
    llava = converted["siglip-mlp"][1]
    names = {p.name for p in llava.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "processor_config.json",
            "chat_template.jinja", "tokenizer.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)
    config = json.loads((llava / "config.json").read_text())
    assert config["model_type"] == "llava"
    assert config["vision_feature_select_strategy"] == "full"  # SigLIP has no CLS token to drop
    assert config["vision_feature_layer"] == -1
    assert config["vision_config"]["tie_last_hidden_states"] is True  # hidden_states[-1] after post_layernorm
    clip = json.loads((converted["clip-linear"][1] / "config.json").read_text())
    assert clip["vision_feature_select_strategy"] == "default" and clip["projector_hidden_act"] == "linear"
    processor = json.loads((converted["clip-linear"][1] / "processor_config.json").read_text())
    assert processor["num_additional_image_tokens"] == 1 and processor["patch_size"] == 8
    generation = json.loads((llava / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == [config["image_token_index"]]


def test_replaces_an_earlier_conversion_but_not_other_folders(converted, tmp_path):
    model_dir, llava = converted["siglip-mlp"]
    convert_to_llava(model_dir, llava)  # an earlier conversion: replaced
    assert (llava / "model.safetensors").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not empty"):
        convert_to_llava(model_dir, other)
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("encoder,spec,why", [
    ("resnet", {}, "'resnet'"),
    ("siglip", {"prefix_reduction": "pool2"}, "reduces the image tokens"),
    ("siglip", {"projection_layernorm": True}, "LayerNorm"),
])
def test_what_llava_cannot_express_is_refused(encoder, spec, why, tiny_dirs, tmp_path, capsys):
    model_dir = save_model(tmp_path / "model", tiny_dirs(encoder), tiny_dirs("llama"), **spec)
    capsys.readouterr()
    assert main(["convert", str(model_dir), "--to", "llava", "--out", str(tmp_path / "llava")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and "cannot be converted to LLaVA" in err and why in err
    assert not (tmp_path / "llava").exists()


def test_prompt_llava_cannot_reproduce_is_refused(tiny_dirs, tmp_path, monkeypatch):
    model_dir = save_model(tmp_path / "model", tiny_dirs("siglip"), tiny_dirs("llama"), prompt="a photo of")
    # a processor that counts the image tokens differently from the model: the check must catch it
    monkeypatch.setattr("distilvit.export.llava._strategy", lambda model: ("full", 1))
    with pytest.raises(ModelError, match="cannot reproduce this model's prompt"):
        convert_to_llava(model_dir, tmp_path / "llava")


def test_train_flag_builds_models_without_the_projection_layernorm():
    from distilvit.cli.main import build_parser
    from distilvit.cli.train import options_from_args

    argv = ["train", "--dataset", "shapes", "--save-dir", "x"]
    assert options_from_args(build_parser().parse_args(argv)).model.projection_layernorm is True
    opts = options_from_args(build_parser().parse_args([*argv, "--no-projection-layernorm"]))
    assert opts.model.projection_layernorm is False
