"""The browser demo (web/): its JavaScript matches the Python runtime, and the page captions like Python does.

* Parity (node only): the page's Pillow-exact resize, its preprocessing and its caption decoding give exactly
  what Python gives (web/tests/parity.mjs runs the page's modules under node).
* End to end (node + Chromium): export a tiny model, serve web/ and the bundle, drive headless Chromium through the
  page with playwright-core (web/tests/e2e.mjs), and compare its captions with ``OnnxCaptioner``'s.

Without node, web/node_modules (``npm ci`` in web/) or Chromium these tests skip, saying what is missing;
``DISTILVIT_REQUIRE_BROWSER=1`` (set by .ci/run) turns every such skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import make_tokenizer

from distilvit.export.preprocess import RESAMPLE, preprocess_one

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
REQUIRED = os.environ.get("DISTILVIT_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _missing(what: str) -> None:
    message = f"browser demo tests need {what}"
    if REQUIRED:
        pytest.fail(message + " (DISTILVIT_REQUIRE_BROWSER=1)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        _missing("node (apt-get install nodejs)")
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        _missing("web/node_modules (run `npm ci` in web/)")
    return path


def run_node(node: str, script: str, *args: str, timeout: float = 120) -> dict:
    """Run ``web/tests/<script>`` and parse the JSON it prints."""
    done = subprocess.run([node, str(WEB / "tests" / script), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=WEB)
    try:
        out = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"{script} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}") from None
    return out


def run_tasks(node: str, tmp_path: Path, tasks: list[dict]) -> list:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"tasks": tasks}))
    out = run_node(node, "parity.mjs", str(job))
    assert "results" in out, out
    return out["results"]


# ---------------------------------------------------------------- parity: resize, preprocessing, decoding
def random_image(rng, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: noise over a gradient, so that every filter tap matters."""
    gradient = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    noise = rng.integers(-60, 60, (height, width, 3))
    return np.clip(gradient + noise, 0, 255).astype(np.uint8)


SIZES = [((40, 30), (32, 32)), ((17, 23), (32, 48)), ((100, 64), (24, 24)), ((5, 7), (3, 2))]  # (w, h) -> (w, h)


def test_resize_matches_pillow_bit_for_bit(node, tmp_path):
    rng = np.random.default_rng(0)
    tasks, expected = [], []
    for i, ((w, h), (ow, oh)) in enumerate(SIZES):
        pixels = random_image(rng, w, h)
        pixels.tofile(tmp_path / f"in{i}.raw")
        for name, code in RESAMPLE.items():
            out = tmp_path / f"out{i}-{name}.raw"
            tasks.append({"kind": "resize", "input": str(tmp_path / f"in{i}.raw"), "width": w, "height": h,
                          "out_width": ow, "out_height": oh, "resample": name, "output": str(out)})
            expected.append((out, np.asarray(Image.fromarray(pixels).resize((ow, oh), resample=code))))
    run_tasks(node, tmp_path, tasks)
    for (out, want), task in zip(expected, tasks):
        got = np.fromfile(out, dtype=np.uint8).reshape(want.shape)
        assert np.array_equal(got, want), f"{task['resample']} {task['width']}x{task['height']} differs from Pillow"


SETTINGS = {"size": [32, 32], "do_resize": True, "resample": "bilinear", "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.48, 0.46, 0.41],
            "image_std": [0.27, 0.26, 0.28]}


@pytest.mark.parametrize("size, settings", [
    ((40, 30), SETTINGS),
    ((32, 32), SETTINGS),  # already at the model's size: no resize
    ((50, 20), {**SETTINGS, "resample": "bicubic", "size": [24, 40]}),
    ((32, 32), {**SETTINGS, "do_rescale": False, "do_normalize": False}),
])
def test_pixel_values_match_python_exactly(node, tmp_path, size, settings):
    pixels = random_image(np.random.default_rng(1), *size)
    pixels.tofile(tmp_path / "in.raw")
    task = {"kind": "preprocess", "input": str(tmp_path / "in.raw"), "width": size[0], "height": size[1],
            "image": settings, "output": str(tmp_path / "out.f32")}
    run_tasks(node, tmp_path, [task])
    want = preprocess_one(Image.fromarray(pixels), settings)
    got = np.fromfile(tmp_path / "out.f32", dtype=np.float32).reshape(want.shape)
    assert np.array_equal(got, want)


BPE_TEXTS = ["a red circle left of a blue square", "the image shows a small green triangle.",
             "café, naïve: über 🙂 — «quoted» 'tis", "a dog's photo isn't a cat's"]


def make_bpe_tokenizer(path: Path, clean_up: bool = False, image_token: bool = True):
    """A GPT-2/SmolLM-style byte-level BPE tokenizer (ByteLevel pre-tokenizer and decoder), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(BPE_TEXTS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|im_start|>",
                                        clean_up_tokenization_spaces=clean_up)
    if image_token:
        tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.save_pretrained(path)
    return tokenizer


def make_word_tokenizer(path: Path, clean_up: bool = False):
    """The tiny models' word-level tokenizer, with ``<image>`` and the given ``clean_up_tokenization_spaces``."""
    tokenizer = make_tokenizer(path)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "clean_up_tokenization_spaces": clean_up}))
    return tokenizer


@pytest.mark.parametrize("kind, clean_up", [("word", False), ("word", True), ("bpe", False), ("bpe", True)])
def test_caption_decoding_matches_transformers(node, tmp_path, kind, clean_up):
    from transformers import AutoTokenizer

    folder = tmp_path / "tokenizer"
    (make_bpe_tokenizer if kind == "bpe" else make_word_tokenizer)(folder, clean_up)
    tokenizer = AutoTokenizer.from_pretrained(folder)  # as a trained model's processor loads it
    rng = np.random.default_rng(2)
    sequences = [rng.integers(0, len(tokenizer), rng.integers(0, 30)).tolist() for _ in range(40)]
    sequences += [tokenizer(text, add_special_tokens=False).input_ids for text in BPE_TEXTS]
    sequences += [[tokenizer.eos_token_id], []]
    got = run_tasks(node, tmp_path, [{"kind": "decode", "tokenizer_dir": str(folder), "sequences": sequences}])[0]
    want = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in sequences]
    assert got == want
    if kind == "word":  # the clean-up setting is honoured (" ." -> ".") for word-level vocabularies
        assert any(" ." in text for text in want) != clean_up


# ---------------------------------------------------------------- end to end in headless Chromium
@pytest.fixture(scope="module")
def browser(node) -> str:
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        _missing("playwright-core in web/node_modules (run `npm ci` in web/)")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    return node


def serve_module():
    """web/serve.py, imported from its path (web/ is not a Python package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("distilvit_web_serve", WEB / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_bpe_lm(path: Path) -> Path:
    """A tiny Llama LM (SmolLM's architecture) over the byte-level BPE tokenizer."""
    import torch
    from tiny_models import LM_BUILDERS

    tokenizer = make_bpe_tokenizer(path, image_token=False)
    torch.manual_seed(0)
    common = {"initializer_range": 0.4, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": tokenizer.eos_token_id, "pad_token_id": None}
    LM_BUILDERS["llama"](common).save_pretrained(path)
    return path


def export_tiny_bundle(root: Path, lm: Path, encoder: Path) -> Path:
    """Build a tiny captioner from ``encoder`` + ``lm``, save it, export it (default int4 recipe)."""
    import torch

    from distilvit.export import export_bundle
    from distilvit.model import CaptionerSpec, build_captioner

    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder=str(encoder), decoder=str(lm)))
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    export_bundle(root / "model", root / "bundle", progress=False)
    return root / "bundle"


def float_activation_copy(bundle: Path, folder: Path) -> Path:
    """A copy of ``bundle`` with every ``MatMulNBits`` at ``accuracy_level`` 0: what onnxruntime-web computes.

    Its WebAssembly ``MatMulNBits`` has no int8-activation kernel and computes level-4 nodes in float32 (the
    int8 vision matmuls, ``MatMulInteger``, are integer arithmetic and equal everywhere), so on a level-4 bundle
    the page's captions are those of this copy (on a fragile random tiny model they differ from the native
    level-4 ones; on the trained demo model level 4 keeps 95-98.5% of captions: docs/export.md)."""
    import onnx

    shutil.copytree(bundle, folder)
    for graph in ("vision.onnx", "decoder.onnx"):
        model = onnx.load(str(folder / graph), load_external_data=False)
        for node in model.graph.node:
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend(kept)
        onnx.save(model, str(folder / graph))
    return folder


def sample_images(folder: Path) -> list[Path]:
    """Two noise images at the model's 32 px (no resize) and one 48x40 (resized by the page, Pillow-exact).

    PNG: lossless, so the browser's decoder and Pillow's give the same pixels (JPEG decoders may differ slightly).
    """
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(32, 32), (32, 32), (48, 40)]):
        paths.append(folder / f"image{i}.png")
        Image.fromarray(random_image(rng, w, h)).save(paths[-1])
    return paths


def run_page(node: str, bundle: Path | None, query: str, picked: list[Path], screenshot: Path,
             dropped: list[Path] = ()) -> dict:
    """Serve web/ (+ ``bundle``), open the page with ``query`` in headless Chromium, caption the ``picked`` images
    (file input) then the ``dropped`` ones (drop zone)."""
    server, url = serve_module().start_in_thread(bundle)
    try:
        args = ["--url", url + query, "--screenshot", str(screenshot), "--chromium", CHROMIUM, "--timeout", "60000"]
        for image in picked:
            args += ["--image", str(image)]
        for image in dropped:
            args += ["--drop", str(image)]
        return run_node(node, "e2e.mjs", *args, timeout=180)
    finally:
        server.shutdown()
        server.server_close()


# word level: captions stop at EOS by themselves; byte-level BPE: 12 tokens forced (min = max), random bytes
@pytest.mark.parametrize("kind, query, forced", [
    pytest.param("word", "", None, id="word-level-until-eos"),
    pytest.param("bpe", "&min_tokens=12&max_tokens=12", 12, id="byte-level-bpe-12-tokens"),
])
def test_page_captions_like_the_python_runtime(browser, tmp_path, tiny_lm, tiny_encoder, kind, query, forced):
    from distilvit.export import OnnxCaptioner
    from distilvit.export.preprocess import preprocess

    lm = tiny_lm if kind == "word" else make_bpe_lm(tmp_path / "bpe-lm")
    bundle = export_tiny_bundle(tmp_path, lm, tiny_encoder)
    images = sample_images(tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = run_page(browser, bundle, "?bundle=bundle/" + query, images[:2], ARTIFACTS / f"page-{kind}.png",
                    dropped=images[2:])
    assert "results" in page, page

    captioner = OnnxCaptioner(float_activation_copy(bundle, tmp_path / "as-in-the-browser"))
    # the int4 bundle's tied table is in table.bin, read by two graphs: the page passes it as externalData
    assert captioner.manifest["external_data"] == {"embed_tokens": ["table.bin"], "decoder": ["table.bin"]}
    pil = [Image.open(p) for p in images]
    lengths = {"min_new_tokens": forced, "max_new_tokens": forced} if forced else {}
    want_ids = [captioner.generate_ids(preprocess([im], captioner.manifest["image"]), **lengths)[0] for im in pil]
    # one image at a time, as the page captions them (a batch's matmuls may round differently, and this random
    # tiny model has near-ties that such rounding flips)
    want_text = [captioner.caption([im], **lengths)[0] for im in pil]
    got = page["results"]
    assert [r["ids"] for r in got] == want_ids
    assert [r["text"] for r in got] == want_text
    assert [r["shown"] for r in got] == want_text  # what the page shows
    assert [r["resized"] for r in got] == [False, False, True]
    assert sum(len(ids) for ids in want_ids) >= 10  # enough tokens for the comparison to mean something
    if forced:
        assert all(len(ids) == forced for ids in want_ids)
    assert not [line for line in page["console"] if line.startswith(("error", "pageerror"))], page["console"]


def test_page_reports_a_missing_bundle(browser, tmp_path):
    page = run_page(browser, None, "?bundle=no-such-bundle/", [], tmp_path / "error.png")
    assert "manifest.json" in page["error"] and "HTTP 404" in page["error"], page


@pytest.mark.slow
def test_caption_decoding_matches_transformers_for_the_real_smollm2(node, tmp_path):
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    from distilvit.model.gguf import convert_gguf

    tokenizer = AutoTokenizer.from_pretrained(convert_gguf("smollm2-gguf"))
    tokenizer.save_pretrained(tmp_path / "tokenizer")  # as an exported bundle carries it
    rng = np.random.default_rng(3)
    texts = BPE_TEXTS + ["A man riding a wave on top of a surfboard.", "  two cats\n\tsleeping  ", "日本の猫 🐈‍⬛"]
    sequences = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    sequences += [rng.integers(0, len(tokenizer), rng.integers(1, 30)).tolist() for _ in range(40)]
    got = run_tasks(node, tmp_path, [{"kind": "decode", "tokenizer_dir": str(tmp_path / "tokenizer"),
                                      "sequences": sequences}])[0]
    assert got == [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in sequences]
