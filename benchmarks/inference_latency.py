"""Per-image captioning latency at batch 1, one run, same machine: the default distilvit architecture in
PyTorch eager, as an fp32 ONNX bundle and as the default quantised bundle, and the old cross-attention
baseline (ViT-base + DistilGPT2-size decoder, `transformers` VisionEncoderDecoderModel `generate`).

    python benchmarks/inference_latency.py [--tokens 20] [--images 5] [--repeats 3] [--quick]

Every system greedily decodes exactly --tokens new tokens (EOS is banned until then), so the numbers compare
the same work. Timings include preprocessing and decoding the ids to text. Weights are random (latency does
not depend on their values), except the real SmolLM2-135M (with LoRA merged). `--quick` is a smoke run with
tiny models. Results: inference_latency.json and .md in --out. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import machine
from PIL import Image
from transformers import GenerationConfig

from distilvit.export import OnnxCaptioner, export_bundle
from distilvit.export.manifest import DEFAULT_QUANTIZE
from distilvit.model import CaptionerSpec, build_captioner

ROOT = Path(__file__).resolve().parents[1]


def scenes(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) for _ in range(count)]


def timed(fn, images, repeats: int) -> dict:
    """Milliseconds per image (batch 1) over ``repeats`` passes through ``images``, after one warm-up call."""
    fn(images[0])
    times = []
    for _ in range(repeats):
        for image in images:
            start = time.perf_counter()
            fn(image)
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 1), "mean_ms": round(statistics.mean(times), 1),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1), "runs": len(times)}


def fixed_length(config: GenerationConfig, tokens: int) -> GenerationConfig:
    config.update(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, num_beams=1)
    return config


def tiny_decoder(work: Path) -> str:
    """A 2-layer random Llama with SmolLM2's tokenizer (for --quick)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distilvit.model.gguf import convert_gguf

    tokenizer = AutoTokenizer.from_pretrained(convert_gguf("smollm2-gguf"))
    folder = work / "tiny-llama"
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def distilvit_systems(work: Path, quick: bool, tokens: int, threads: int) -> tuple[dict, dict]:
    """``{name: caption function}`` for PyTorch eager and the two bundles, and the bundles' sizes."""
    torch.manual_seed(0)
    spec = CaptionerSpec(encoder="scratch:siglip-tiny" if quick else "scratch:siglip-base",
                         decoder=tiny_decoder(work) if quick else "smollm2-gguf")
    model, processor = build_captioner(spec)
    folder = work / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    model.merge_lora()
    model.eval()
    config = fixed_length(model.default_generation_config(), tokens)

    @torch.no_grad()
    def eager(image):
        ids = model.generate(pixel_values=processor.pixel_values([image]), **processor.generation_inputs(1),
                             generation_config=config)
        assert ids.shape[1] == tokens
        return processor.decode(ids)

    systems, sizes = {"distilvit, PyTorch eager": eager}, {}
    for option in ("none", DEFAULT_QUANTIZE):
        bundle = work / f"bundle-{option}"
        sizes[option] = export_bundle(folder, bundle, quantize=option, progress=False)["sizes_mb"]
        captioner = OnnxCaptioner(bundle, threads=threads)
        label = "fp32" if option == "none" else option
        systems[f"distilvit, ONNX {label}"] = (
            lambda image, c=captioner: c.caption([image], max_new_tokens=tokens, min_new_tokens=tokens))
    return systems, sizes


def baseline_system(quick: bool, tokens: int):
    """The cross-attention baseline: ViT-base encoder + DistilGPT2-size decoder, random init, ``generate``."""
    from transformers import AutoTokenizer, GPT2Config, ViTConfig

    from distilvit.model.encoder_decoder import build_encoder_decoder
    from distilvit.model.gguf import convert_gguf
    from distilvit.model.presets import preset_encoder

    tokenizer = AutoTokenizer.from_pretrained(convert_gguf("smollm2-gguf"))  # ids fit GPT-2's 50257 rows
    if quick:
        vit = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                        image_size=32, patch_size=8)
        gpt = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=50257)
        image_processor = preset_encoder("scratch:siglip-tiny")[1]
    else:
        vit, gpt = ViTConfig(), GPT2Config(n_layer=6, n_embd=768, n_head=12, vocab_size=50257)
        image_processor = preset_encoder("scratch:siglip-base")[1]  # 224 px, mean/std 0.5 as ViT's
    torch.manual_seed(0)
    model, processor = build_encoder_decoder(vit, gpt, tokenizer, image_processor)
    model.eval()
    config = fixed_length(model.default_generation_config(), tokens)

    @torch.no_grad()
    def generate(image):
        ids = model.generate(pixel_values=processor.pixel_values([image]), generation_config=config)
        return processor.decode(ids)

    return generate


def markdown(results: dict) -> str:
    host = results["machine"]
    lines = [
        f"# Captioning latency per image (batch 1, greedy, {results['tokens']} new tokens)\n",
        (f"Machine: {host['processor']}, {results['threads']} threads, torch {host['torch']}, onnxruntime "
         f"{host['onnxruntime']}; load average before the run {results['load_average_before']}.\n"),
        "| system | median ms | mean ms | p90 ms | vs PyTorch eager |", "|---|---|---|---|---|",
    ]
    eager = results["latency"]["distilvit, PyTorch eager"]["median_ms"]
    for name, row in results["latency"].items():
        lines.append(f"| {name} | {row['median_ms']} | {row['mean_ms']} | {row['p90_ms']} | "
                     f"{eager / row['median_ms']:.2f}x |")
    lines += ["", "Bundle sizes (MB; shared: `table.bin`, read by embed_tokens and decoder, counted once):", "",
              "| --quantize | vision | embed_tokens | decoder | shared | total |", "|---|---|---|---|---|---|"]
    for option, sizes in results["bundle_sizes_mb"].items():
        lines.append(f"| {option} | {sizes['vision']} | {sizes['embed_tokens']} | {sizes['decoder']} | "
                     f"{sizes.get('shared', 0.0)} | {sizes['total']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per caption (fixed for every system)")
    parser.add_argument("--images", type=int, default=5, help="distinct images per pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the images")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for torch and onnxruntime")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny models, 5 tokens, 2 images, 1 pass")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results; --quick: a temp folder)")
    parser.add_argument("--work", default="/tmp/distilvit-latency", help="scratch folder for models and bundles")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.images, args.repeats = 5, 2, 1
    out = Path(args.out or ("/tmp/distilvit-latency-quick" if args.quick else ROOT / "benchmarks" / "results"))
    work = Path(args.work) / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    if load > 1.5:
        print(f"warning: load average {load:.1f}: other jobs are running, timings will be inflated")
    torch.set_num_threads(args.threads)
    import onnxruntime

    images = scenes(args.images)
    systems, sizes = distilvit_systems(work, args.quick, args.tokens, args.threads)
    systems["baseline: ViT-base + DistilGPT2-size (cross-attention), PyTorch generate"] = baseline_system(
        args.quick, args.tokens)
    results = {"tokens": args.tokens, "threads": args.threads, "quick": args.quick,
               "load_average_before": round(load, 2),
               "machine": {**machine(), "onnxruntime": onnxruntime.__version__},
               "latency": {}, "bundle_sizes_mb": sizes}
    for name, fn in systems.items():
        results["latency"][name] = timed(fn, images, args.repeats)
        print(name, results["latency"][name], flush=True)
    (out / "inference_latency.json").write_text(json.dumps(results, indent=2))
    (out / "inference_latency.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
