"""`distilvit export --layout transformers.js`: the folder transformers.js itself (@huggingface/transformers from
npm, in Node with onnxruntime-node) loads from local files, captioning like `OnnxCaptioner` on the bundle of the
same precision. Tiny random models.

Node only: Chromium is not driven here. Without node or web/node_modules/@huggingface/transformers (`npm ci` in
web/) the Node tests skip; ``DISTILVIT_REQUIRE_BROWSER=1`` (set by .ci/run) makes them fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from tiny_models import perturb_lora

from distilvit.cli.main import main
from distilvit.errors import ModelError
from distilvit.export import OnnxCaptioner, export_bundle
from distilvit.export.image_to_text import export_image_to_text
from distilvit.export.transformers_js import SUFFIXES, export_transformers_js
from distilvit.model import CaptionerSpec, build_captioner, load_captioner

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
REQUIRED = os.environ.get("DISTILVIT_REQUIRE_BROWSER") == "1"
MAX_NEW = 10
# the default prefix (SigLIP, 2x2 pixel shuffle, LayerNorm + linear projection) and a LLaVA-like one (CLIP with its
# CLS token kept, MLP projection): the <image> expansion count must come out right for both
MODELS = {"siglip-shuffle2": ("siglip", {}),
          "clip-full": ("clip", {"prefix_reduction": "none", "projection_type": "mlp"})}


def images(n=5, seed=3):
    """Images at the processor's size (32 px): transformers.js resizes with sharp, Python with Pillow; at the
    target size neither resamples, so the comparison is of the graphs and the generation loop."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    missing = ("node (apt-get install nodejs)" if path is None else
               "web/node_modules/@huggingface/transformers (run `npm ci` in web/)"
               if not (WEB / "node_modules" / "@huggingface" / "transformers").is_dir() else None)
    if missing:
        message = f"transformers.js tests need {missing}"
        if REQUIRED:
            pytest.fail(message + " (DISTILVIT_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_dirs):
    made = {}
    for name, (encoder, spec) in MODELS.items():
        torch.manual_seed(0)
        model, processor = build_captioner(CaptionerSpec(encoder=str(tiny_dirs(encoder)),
                                                         decoder=str(tiny_dirs("llama")), **spec))
        perturb_lora(model, std=0.05)
        made[name] = tmp_path_factory.mktemp(name)
        model.save_pretrained(made[name])
        processor.save_pretrained(made[name])
    return made


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, image in enumerate(images()):
        paths.append(folder / f"{i}.png")
        image.save(paths[-1])
    return paths


def run_transformers_js(node: str, folder: Path, image_files: list[Path], tmp_path: Path, *,
                        script: str = "transformersjs.mjs", module: str | None = None, **extra) -> dict:
    """Run ``web/tests/<script>`` (transformersjs.mjs: AutoProcessor + AutoModelForImageTextToText; imagetotext.mjs:
    the image-to-text pipeline) with transformers.js ``module`` (default: the 4.x package)."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model_dir": str(folder), "images": [str(p) for p in image_files],
                               "max_new_tokens": MAX_NEW, **extra}))
    command = [node, str(WEB / "tests" / script), str(job), *([module] if module else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=WEB)
    assert done.returncode == 0, f"transformers.js failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


def test_folder_has_the_files_and_tensor_names_transformers_js_loads(model_dirs, tmp_path):
    out = tmp_path / "js"
    assert main(["export", str(model_dirs["siglip-shuffle2"]), "--out", str(out), "--layout", "transformers.js",
                 "--quantize", "int4"]) == 0
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
            "tokenizer.json", "tokenizer_config.json", "onnx/vision_encoder_q4.onnx", "onnx/embed_tokens_q4.onnx",
            "onnx/decoder_model_merged_q4.onnx"} <= names
    assert not any(name.endswith(".bin") for name in names)  # no shared table.bin: every graph is self-contained
    config = json.loads((out / "config.json").read_text())
    model, processor = load_captioner(model_dirs["siglip-shuffle2"])
    assert config["model_type"] == "llava" and config["image_token_index"] == processor.image_token_id
    assert config["transformers.js_config"]["dtype"] == "q4"
    assert json.loads((out / "preprocessor_config.json").read_text())["processor_class"] == "LlavaProcessor"
    assert processor.image_token_id in json.loads((out / "tokenizer.json").read_text())["added_tokens"][-1].values()
    for session, inputs, outputs in [
        ("vision_encoder", ["pixel_values"], ["image_features"]),
        ("embed_tokens", ["input_ids"], ["inputs_embeds"]),
        ("decoder_model_merged", ["inputs_embeds", "attention_mask", "position_ids", "past_key_values.0.key"],
         ["logits", "present.0.key"]),
    ]:
        graph = onnx.load(str(out / "onnx" / f"{session}_q4.onnx")).graph
        values = {v.name: v for v in [*graph.input, *graph.output]}
        assert set(inputs) <= {v.name for v in graph.input} and set(outputs) <= {v.name for v in graph.output}
        for name in [*inputs, *outputs]:
            assert values[name].type.tensor_type.shape.dim[0].dim_param == "batch_size", (session, name)
        for name in ("image_features", "inputs_embeds"):
            if name in values:
                assert values[name].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.fixture(scope="module")
def expected_captions(model_dirs, image_files, tmp_path_factory):
    """Factory ``expected_captions(model, quantize)``: ``(OnnxCaptioner's captions, its prompt ids)`` on the
    distilvit bundle of that precision, exported once."""
    made = {}

    def get(name: str, quantize: str):
        if (name, quantize) not in made:
            bundle = tmp_path_factory.mktemp(f"bundle-{name}-{quantize}")
            export_bundle(model_dirs[name], bundle, quantize=quantize, progress=False)
            captioner = OnnxCaptioner(bundle)
            # one image per call, as transformers.js runs them: int4's int8 activations are quantised per tensor,
            # so a caption may depend on which other images share its batch
            captions = [captioner.caption([Image.open(p)], max_new_tokens=MAX_NEW, batch_size=1)[0]
                        for p in image_files]
            made[name, quantize] = captions, [int(i) for i in captioner.prompt_ids]
        return made[name, quantize]

    return get


@pytest.mark.parametrize("quantize", list(SUFFIXES))
@pytest.mark.parametrize("name", list(MODELS))
def test_transformers_js_captions_equal_onnx_captioner(name, quantize, node, model_dirs, image_files,
                                                        expected_captions, tmp_path):
    folder = tmp_path / "js"
    export_transformers_js(model_dirs[name], folder, quantize=quantize, progress=False)
    assert (folder / "onnx" / f"decoder_model_merged{SUFFIXES[quantize][1]}.onnx").is_file()
    got = run_transformers_js(node, folder, image_files, tmp_path)  # dtype from config.json
    expected, prompt_ids = expected_captions(name, quantize)
    assert got["input_ids"][0] == prompt_ids
    assert got["captions"] == expected
    assert len(set(expected)) > 1


@pytest.mark.parametrize("name,quantize", [("siglip-shuffle2", q) for q in SUFFIXES] + [("clip-full", "none")])
def test_image_to_text_pipeline_captions_equal_onnx_captioner(name, quantize, node, model_dirs, image_files,
                                                              expected_captions, tmp_path):
    folder = tmp_path / "i2t"
    assert main(["export", str(model_dirs[name]), "--out", str(folder), "--layout", "image-to-text",
                 "--quantize", quantize]) == 0
    suffix = SUFFIXES[quantize][1]
    assert {p.name for p in (folder / "onnx").iterdir()} == {f"encoder_model{suffix}.onnx",
                                                             f"decoder_model_merged{suffix}.onnx"}
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "vision-encoder-decoder" and config["is_encoder_decoder"] is True
    decoder = onnx.load(str(folder / "onnx" / f"decoder_model_merged{suffix}.onnx")).graph
    assert [i.name for i in decoder.input][:2] == ["input_ids", "encoder_hidden_states"]
    got = run_transformers_js(node, folder, image_files, tmp_path, script="imagetotext.mjs")
    assert got["captions"] == expected_captions(name, quantize)[0]


def test_replaces_an_earlier_export_but_not_other_folders(model_dirs, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not empty"):
        export_transformers_js(model_dirs["clip-full"], other, quantize="none", progress=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_transformers_js_3_sizes_the_empty_cache_of_a_grouped_query_lm(node, tiny_dirs, image_files, tmp_path,
                                                                       monkeypatch):
    """transformers.js 3.x (the npm alias ``transformers-v3``) runs both layouts of a model whose LM has fewer
    key/value heads than ``hidden_size / head_dim`` (tiny Qwen2: width 32, one KV head of 16): 3.x sizes the empty
    first-step cache from ``config.json``. Its onnxruntime (1.21) predates the fused attention and quantised-gather
    nodes of distilvit's graphs, so this is the eager-attention fp32 export."""
    if not (WEB / "node_modules" / "transformers-v3").is_dir():
        pytest.fail("web/node_modules/transformers-v3 is missing (run `npm ci` in web/)") if REQUIRED else \
            pytest.skip("transformers.js 3.x tests need web/node_modules/transformers-v3 (run `npm ci` in web/)")
    monkeypatch.setattr("distilvit.export.attention.supports_gqa", lambda language_model: False)
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder=str(tiny_dirs("siglip")), decoder=str(tiny_dirs("qwen2")),
                                                     prefix_reduction="pool2"))
    perturb_lora(model, std=0.05)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert text.hidden_size // text.num_key_value_heads != head_dim  # the case 3.x gets wrong by default
    bundle = tmp_path / "bundle"
    export_bundle(model_dir, bundle, quantize="none", progress=False)
    captioner = OnnxCaptioner(bundle)
    expected = [captioner.caption([Image.open(p)], max_new_tokens=MAX_NEW)[0] for p in image_files]
    export_transformers_js(model_dir, tmp_path / "js", quantize="none", progress=False)
    export_image_to_text(model_dir, tmp_path / "i2t", quantize="none", progress=False)
    for folder, script in ((tmp_path / "js", "transformersjs.mjs"), (tmp_path / "i2t", "imagetotext.mjs")):
        for module in ("transformers-v3", None):
            got = run_transformers_js(node, folder, image_files, tmp_path, script=script, module=module)
            assert got["captions"] == expected, (script, module)


def test_encoder_decoder_model_runs_in_the_image_to_text_pipeline_as_in_pytorch(node, tiny_dirs, image_files,
                                                                               tmp_path):
    """`--architecture encoder-decoder` (ViT + GPT-2 cross-attention, the layout mozilla/distilvit ships): the
    pipeline of transformers.js 4.x and 3.x gives PyTorch's greedy captions."""
    from distilvit.model.captioning import generate_captions

    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(architecture="encoder-decoder", encoder=str(tiny_dirs("vit")),
                                                     decoder=str(tiny_dirs("gpt2"))))
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    with pytest.raises(ModelError, match="--quantize none"):
        export_image_to_text(model_dir, tmp_path / "i2t", quantize="int8", progress=False)
    summary = export_image_to_text(model_dir, tmp_path / "i2t", quantize="none", progress=False)
    assert {"onnx/encoder_model.onnx", "onnx/decoder_model_merged.onnx"} <= set(summary["files"])
    model, processor = load_captioner(model_dir)
    expected = generate_captions(model, processor, [Image.open(p) for p in image_files], max_new_tokens=MAX_NEW)
    assert len(set(expected)) > 1
    modules = [None] + (["transformers-v3"] if (WEB / "node_modules" / "transformers-v3").is_dir() else [])
    for module in modules:
        got = run_transformers_js(node, tmp_path / "i2t", image_files, tmp_path, script="imagetotext.mjs",
                                  module=module)
        assert got["captions"] == expected, module


@pytest.mark.slow
@pytest.mark.parametrize("chat_template", [False, True], ids=["plain-prompt", "chat-template"])
def test_real_lm_layouts_caption_like_onnx_captioner(chat_template, node, image_files, tmp_path):
    """The real SmolLM2-135M-Instruct (BPE tokenizer, chat template, tied 49152-token table) with a small random
    SigLIP, default int4: both transformers.js layouts give OnnxCaptioner's captions. Slow."""
    pytest.importorskip("gguf")
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from tiny_models import _processor

    encoder = tmp_path / "siglip"
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=32, patch_size=8)).save_pretrained(encoder)
    _processor(32).save_pretrained(encoder)
    model, processor = build_captioner(CaptionerSpec(
        encoder=str(encoder), decoder="smollm2-gguf", chat_template=chat_template,
        prompt="Describe the image." if chat_template else " A photo of"))
    perturb_lora(model, std=0.02)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    bundle = tmp_path / "bundle"
    export_bundle(model_dir, bundle, quantize="int4", progress=False)
    captioner = OnnxCaptioner(bundle)
    expected = [captioner.caption([Image.open(p)], max_new_tokens=MAX_NEW, batch_size=1)[0] for p in image_files]
    export_transformers_js(model_dir, tmp_path / "js", quantize="int4", progress=False)
    export_image_to_text(model_dir, tmp_path / "i2t", quantize="int4", progress=False)
    got = run_transformers_js(node, tmp_path / "js", image_files, tmp_path)
    assert got["input_ids"][0] == [int(i) for i in captioner.prompt_ids]
    assert got["captions"] == expected
    got = run_transformers_js(node, tmp_path / "i2t", image_files, tmp_path, script="imagetotext.mjs")
    assert got["captions"] == expected
