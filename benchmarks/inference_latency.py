"""Per-image captioning latency at batch 1, one run, same machine: the default distilvit architecture in
PyTorch eager, as an fp32 ONNX bundle and as the default quantised bundle, and the old cross-attention
baseline (ViT-base + DistilGPT2-size decoder, `transformers` VisionEncoderDecoderModel `generate`).

    python benchmarks/inference_latency.py [--tokens 20] [--images 5] [--repeats 3] [--threads 1,2] [--quick]

The systems take turns image by image (a slow spell of a shared machine hits all of them). Every system greedily
decodes exactly --tokens new tokens (EOS is banned until then), so the numbers compare
the same work. Timings include preprocessing and decoding the ids to text. Weights are random (latency does
not depend on their values), except the real SmolLM2-135M (with LoRA merged). `--quick` is a smoke run with
tiny models. Each thread count in --threads (default: one thread, and all cores) times every system with that many
threads for torch and onnxruntime alike. Results: inference_latency.json and .md in --out. Run it on an otherwise
idle machine.
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
EAGER = "distilvit, PyTorch eager"


def scenes(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) for _ in range(count)]


def timed(systems: dict, images, repeats: int) -> dict:
    """``{name: milliseconds per image}`` (batch 1) over ``repeats`` passes through ``images``, after one warm-up
    call each. The systems take turns image by image, so a slow spell of a shared machine hits them all alike."""
    for fn in systems.values():
        fn(images[0])
    times = {name: [] for name in systems}
    for _ in range(repeats):
        for image in images:
            for name, fn in systems.items():
                start = time.perf_counter()
                fn(image)
                times[name].append((time.perf_counter() - start) * 1000)
    eager = times[EAGER]
    return {name: _summary(values, eager) for name, values in times.items()}


def _summary(times: list[float], eager: list[float]) -> dict:
    """Median/mean/p90 ms, and the speed-up over eager paired turn by turn (the median of ``eager_i / times_i``
    over the turns: the two ran seconds apart, so a slow spell of the machine cancels out)."""
    ordered = sorted(times)
    return {"median_ms": round(statistics.median(times), 1), "mean_ms": round(statistics.mean(times), 1),
            "p90_ms": round(ordered[int(0.9 * (len(times) - 1))], 1), "runs": len(times),
            "speedup_vs_eager": round(statistics.median(e / t for e, t in zip(eager, times)), 2)}


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


def distilvit_systems(work: Path, quick: bool, tokens: int) -> tuple[dict, dict]:
    """``({name: caption function or bundle folder}, bundle sizes)``: PyTorch eager, and the fp32 and default bundles
    (folders: :func:`onnx_system` opens them at each thread count)."""
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

    systems, sizes = {EAGER: eager}, {}
    for option in ("none", DEFAULT_QUANTIZE):
        bundle = work / f"bundle-{option}"
        sizes[option] = export_bundle(folder, bundle, quantize=option, progress=False)["sizes_mb"]
        systems[f"distilvit, ONNX {'fp32' if option == 'none' else option}"] = bundle
    return systems, sizes


def onnx_system(bundle: Path, tokens: int, threads: int):
    captioner = OnnxCaptioner(bundle, threads=threads)
    return lambda image: captioner.caption([image], max_new_tokens=tokens, min_new_tokens=tokens)


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
    counts = list(results["latency"])
    lines = [
        f"# Captioning latency per image (batch 1, greedy, {results['tokens']} new tokens)\n",
        (f"Machine: {host['processor']}, torch {host['torch']}, onnxruntime {host['onnxruntime']}; the same threads for "
         f"torch and onnxruntime in each column; load average before the run {results['load_average_before']}.\n"),
        ("Speed-up: the median over the turns of eager's time over the system's time for the same image, a few "
         "seconds apart (robust to the shared machine's slow spells); medians of each system's own times beside.\n"),
        "| system | " + " | ".join(f"{t} thread{'s' * (t != '1')}: median ms | speed-up vs PyTorch eager"
                                   for t in counts) + " |",
        "|---|" + "---|---|" * len(counts),
    ]
    for name in results["latency"][counts[0]]:
        cells = []
        for t in counts:
            row = results["latency"][t][name]
            cells += [f"{row['median_ms']} (p90 {row['p90_ms']})", f"{row['speedup_vs_eager']:.2f}x"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Bundle sizes (MB; shared: `table.bin`, read by embed_tokens and decoder, counted once):", "",
              "| --quantize | vision | embed_tokens | decoder | shared | total |", "|---|---|---|---|---|---|"]
    for option, sizes in results["bundle_sizes_mb"].items():
        lines.append(f"| {option} | {sizes['vision']} | {sizes['embed_tokens']} | {sizes['decoder']} | "
                     f"{sizes.get('shared', 0.0)} | {sizes['total']} |")
    return "\n".join(lines) + "\n"


def thread_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--threads takes positive integers separated by commas, got {text!r}")
    return list(dict.fromkeys(counts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per caption (fixed for every system)")
    parser.add_argument("--images", type=int, default=5, help="distinct images per pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the images")
    parser.add_argument("--threads", type=thread_counts, default=thread_counts(f"1,{os.cpu_count()}"),
                        help="thread counts to time, comma-separated; each is used for torch and onnxruntime alike "
                             "(default: 1 and all cores)")
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
    import onnxruntime

    images = scenes(args.images)
    systems, sizes = distilvit_systems(work, args.quick, args.tokens)
    systems["baseline: ViT-base + DistilGPT2-size (cross-attention), PyTorch generate"] = baseline_system(
        args.quick, args.tokens)
    results = {"tokens": args.tokens, "threads": args.threads, "quick": args.quick,
               "load_average_before": round(load, 2),
               "machine": {**machine(), "onnxruntime": onnxruntime.__version__},
               "latency": {}, "bundle_sizes_mb": sizes}
    for threads in args.threads:
        torch.set_num_threads(threads)
        fns = {name: onnx_system(system, args.tokens, threads) if isinstance(system, Path) else system
               for name, system in systems.items()}
        results["latency"][str(threads)] = timed(fns, images, args.repeats)
        for name, row in results["latency"][str(threads)].items():
            print(f"{threads} threads:", name, row, flush=True)
    (out / "inference_latency.json").write_text(json.dumps(results, indent=2))
    (out / "inference_latency.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
