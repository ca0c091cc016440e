"""How close do 4-bit formats keep a SigLIP-base-size vision encoder to fp32? The measurement behind the int4
recipe's vision part (docs/export.md).

No trained SigLIP weights can be downloaded here, so the encoder has random weights (the default architecture
at real size: 768 wide, 12 layers, 224 px, patch 16) with an MLP projection to SmolLM2's 576; its fp32
``vision.onnx`` is stored as each recipe of ``distilvit.export.quantize`` says and run on held-out ``shapes`` test
images. Reported per format: the image tokens' error against fp32 relative to their RMS, the lowest and mean
token cosine, the graph size and the time per image (batch 1, one thread).

    python benchmarks/vision_quantization.py [--images 4] [--out benchmarks/results]

Writes vision_quantization.json and vision_quantization.md to --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from common import machine

from distilvit.data import load_caption_dataset
from distilvit.export import graphs
from distilvit.export.bundle import image_settings
from distilvit.export.preprocess import preprocess
from distilvit.export.quantize import RECIPES, PartRecipe, apply_recipe, exact_recipes
from distilvit.model import CaptionerSpec, build_captioner

ROOT = Path(__file__).resolve().parents[1]
# name -> how vision.onnx is stored (every variant with the int4 recipe's `rest: fp16`)
FORMATS = {
    "affine 8-bit, blocks of 32": PartRecipe("affine", bits=8, block_size=32, rest="fp16"),
    "affine 4-bit, blocks of 32": PartRecipe("affine", bits=4, block_size=32, rest="fp16"),
    "affine 4-bit, blocks of 64": PartRecipe("affine", bits=4, block_size=64, rest="fp16"),
    "symmetric 4-bit, blocks of 32": PartRecipe("symmetric", bits=4, block_size=32, rest="fp16"),
    "symmetric 4-bit, blocks of 64": PartRecipe("symmetric", bits=4, block_size=64, rest="fp16"),
    "int4 recipe, float activations (--exact-matmuls): symmetric 64 + affine projection 32":
        exact_recipes(RECIPES["int4"])["vision"],
    "int4 recipe (default): the same, encoder matmuls in int8": RECIPES["int4"]["vision"],
}


def image_tokens(model: onnx.ModelProto, pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """The image tokens and the median milliseconds per image (batch 1, one thread, 3 passes)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    tokens = session.run(None, {"pixel_values": pixels})[0]
    times = []
    for _ in range(3):
        for image in pixels:
            start = time.perf_counter()
            session.run(None, {"pixel_values": image[None]})
            times.append((time.perf_counter() - start) * 1000)
    return tokens, float(np.median(times))


def closeness(tokens: np.ndarray, reference: np.ndarray) -> dict:
    error = float(np.sqrt(((tokens - reference) ** 2).mean() / (reference**2).mean()))
    a, b = tokens.reshape(-1, tokens.shape[-1]), reference.reshape(-1, reference.shape[-1])
    cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    return {"token_error": round(error, 4), "min_cosine": round(float(cosine.min()), 5),
            "mean_cosine": round(float(cosine.mean()), 5)}


def markdown(results: dict) -> str:
    host = results["machine"]
    lines = ["# 4-bit formats for the vision encoder (random SigLIP-base-size weights)\n",
             (f"Machine: {host['processor']}, onnxruntime {results['onnxruntime']}. {results['images']} held-out shapes "
              "test images; token error = RMS of (tokens - fp32 tokens) / RMS of fp32 tokens.\n"),
             "| format | token error | min cosine | mean cosine | vision.onnx MB | ms per image (1 thread) |",
             "|---|---|---|---|---|---|"]
    for name, row in results["formats"].items():
        lines.append(f"| {name} | {row['token_error']:.2%} | {row['min_cosine']:.4f} | {row['mean_cosine']:.4f} | "
                     f"{row['mb']:.1f} | {row['ms']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="held-out shapes test images to encode")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder="scratch:siglip-base", decoder="smollm2-gguf"))
    settings = image_settings(processor.image_processor)
    rows = load_caption_dataset(["shapes"], "test").select(range(args.images))
    pixels = preprocess([row["image"].convert("RGB") for row in rows], settings)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vision.onnx"
        graphs.export_vision(model, path, tuple(settings["size"]))
        base = onnx.load(str(path))
    del model
    reference, ms = image_tokens(base, pixels)
    results = {"machine": machine(), "onnxruntime": ort.__version__, "images": args.images,
               "formats": {"fp32": {**closeness(reference, reference), "mb": round(base.ByteSize() / 1e6, 1),
                                    "ms": round(ms, 1)}}}
    for name, recipe in FORMATS.items():
        graph = apply_recipe(copy.deepcopy(base), recipe, "vision")
        tokens, ms = image_tokens(graph, pixels)
        results["formats"][name] = {**closeness(tokens, reference), "mb": round(graph.ByteSize() / 1e6, 1),
                                    "ms": round(ms, 1)}
        print(name, results["formats"][name], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vision_quantization.json").write_text(json.dumps(results, indent=2))
    (out / "vision_quantization.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
