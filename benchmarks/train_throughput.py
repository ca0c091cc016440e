"""Training throughput at the default architecture's real sizes, four designs side by side in one process.

* (a) straightforward: frozen encoder run on every step, all 196 patch tokens, captions padded to
  --max-length, vocabulary logits at every position, random batches;
* (b) cross-attention: transformers VisionEncoderDecoderModel, ViT-base + DistilGPT2-size decoder (6 layers,
  768 wide, vocab 50257), fresh cross-attention, every weight trained (the old system's starting point);
* (c) distilvit's default, first epoch: the encoder fills the feature cache, then training reads features,
  with the default prefix reduction, dynamic padding, length-grouped batches, caption-only logits;
* (d) the same, second epoch (cache warm).

Sizes: a SigLIP-base-size encoder (random weights; 768 wide, 12 layers, 224 px, patch 16), the real
SmolLM2-135M-Instruct with LoRA r16 on q/k/v/o, batch 8, captions of at most 30 tokens (EOS included).
Precision: what ``--precision auto`` picks on this machine. Captions: synthetic text whose token lengths are
spread evenly over 10..30 (mean ~20, like alt text); (a) pads each to 30, (c)/(d) to the longest in the batch.

    python benchmarks/train_throughput.py [--samples 64] [--steps 3] [--out benchmarks/results]

Writes train_throughput.json and train_throughput.md.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import datasets
import torch
from common import machine, reset_peak_rss, rss_mb
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config, SiglipVisionConfig, SiglipVisionModel, ViTConfig
from transformers.models.siglip.image_processing_pil_siglip import (
    SiglipImageProcessorPil,
)
from transformers.trainer_pt_utils import LengthGroupedSampler

from distilvit.features import cached_feature_sets
from distilvit.model import CaptionerSpec, build_captioner
from distilvit.model.encoder_decoder import build_encoder_decoder
from distilvit.model.reduction import DEFAULT_PREFIX_REDUCTION
from distilvit.training.collator import CaptionCollator
from distilvit.training.run import caption_lengths
from distilvit.training.trainer import pick_precision

ROOT = Path(__file__).resolve().parents[1]
BATCH = 8
MAX_LENGTH = 30
WORDS = ["a", "photo", "of", "the", "small", "red", "dog", "running", "across", "green", "grass", "near", "an", "old", "wooden", "fence", "while", "two", "children", "watch", "from", "a", "bench", "under", "tall", "trees", "on", "sunny", "afternoon", "in", "city", "park", "with", "people", "walking"]


# ------------------------------------------------------------------ inputs
def encoder_folder(root: Path) -> Path:
    """A SigLIP-base-size vision tower with random weights, saved like a Hub checkpoint (so it loads frozen)."""
    torch.manual_seed(0)
    config = SiglipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, image_size=224, patch_size=16)
    SiglipVisionModel(config).save_pretrained(root)
    SiglipImageProcessorPil(size={"height": 224, "width": 224}, image_mean=[0.5] * 3,
                            image_std=[0.5] * 3).save_pretrained(root)
    return root


def caption_of_length(tokenizer, tokens: int, rng: random.Random) -> str:
    """Text of exactly ``tokens`` tokens (EOS not counted) made of common words."""
    words = [rng.choice(WORDS) for _ in range(tokens * 2)]
    ids = tokenizer(" ".join(words), add_special_tokens=False).input_ids[:tokens]
    return tokenizer.decode(ids).strip()


def make_dataset(n: int, tokenizer, seed: int, fixed_length: int | None = None) -> datasets.Dataset:
    """``n`` distinct 320x240 photos-like images (noise over a colour) with captions of 9..29 tokens + EOS."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    images, captions = [], []
    for i in range(n):
        base = torch.tensor([rng.randrange(256) for _ in range(3)], dtype=torch.float32)
        pixels = (base + 40 * torch.randn(240, 320, 3, generator=gen)).clamp(0, 255).to(torch.uint8)
        images.append(Image.fromarray(pixels.numpy()))
        length = fixed_length if fixed_length is not None else 9 + (i * 21) // n  # 9..29 tokens, + EOS
        captions.append([caption_of_length(tokenizer, length, rng)])
    return datasets.Dataset.from_dict({"image": images, "captions": captions},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "captions": [datasets.Value("string")]}))


# ------------------------------------------------------------------ measurement
def train_step(model, optimizer, batch, autocast: bool) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def timed_steps(model, batches, autocast: bool) -> tuple[float, int]:
    """Run one untimed warm-up step, then time the rest; returns ``(seconds, samples)`` of the timed steps."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = iter(batches)
    train_step(model, optimizer, next(batches), autocast)
    start, samples = time.perf_counter(), 0
    for batch in batches:
        train_step(model, optimizer, batch, autocast)
        samples += len(next(iter(batch.values())))
    return time.perf_counter() - start, samples


def step_flops(model, batches) -> tuple[float, int]:
    """``(FLOPs, samples)`` of forward + backward over ``batches`` (no optimizer step), counted by torch's
    ``FlopCounterMode`` in a separate untimed pass: its per-operator bookkeeping would distort the timing."""
    model.train()
    flops, samples = 0.0, 0
    for batch in batches:
        with FlopCounterMode(display=False) as counter:
            model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
        flops += counter.get_total_flops()
        samples += len(next(iter(batch.values())))
    return flops, samples


@torch.no_grad()
def encoder_flops_per_image(model, pixel_values: torch.Tensor) -> float:
    """FLOPs of encoding one image (the encoder's forward; what filling the feature cache costs per image)."""
    with FlopCounterMode(display=False) as counter:
        model.encode_images(pixel_values[:1])
    return counter.get_total_flops()


def batch_order(data, processor, *, grouped: bool, seed: int) -> list[int]:
    """Row order of one epoch: length-grouped batches (the default) or a random permutation."""
    if grouped:
        torch.manual_seed(seed)
        return list(LengthGroupedSampler(BATCH, lengths=caption_lengths(data, processor)))
    return random.Random(seed).sample(range(len(data)), len(data))


def prefix_captioner(encoder: Path, reduction: str):
    """The default architecture at real sizes: ``encoder`` + real SmolLM2 + LoRA r16, prefix ``reduction``."""
    return build_captioner(CaptionerSpec(encoder=str(encoder), decoder="smollm2-gguf", max_length=MAX_LENGTH,
                                         prefix_reduction=reduction))


def batches_of(rows, collate, order):
    for start in range(0, len(order) - BATCH + 1, BATCH):
        yield collate([rows[i] for i in order[start : start + BATCH]])


def result(name: str, seconds: float, samples: int, note: str, gflop_per_sample: float | None = None) -> dict:
    rate = samples / seconds
    row = {"design": name, "samples_per_s": round(rate, 3), "epoch_10k_s": round(10_000 / rate, 1),
           "peak_rss_mb": round(rss_mb("VmHWM"), 1), "samples_timed": samples, "note": note}
    if gflop_per_sample is not None:  # work per sample, and the arithmetic rate the step reached
        row["gflop_per_sample"] = round(gflop_per_sample, 2)
        row["achieved_gflop_s"] = round(gflop_per_sample * rate, 1)
    return row


def per_sample_gflop(model, batches) -> float:
    flops, samples = step_flops(model, batches)
    return flops / samples / 1e9


# ------------------------------------------------------------------ the four designs
def straightforward(encoder: Path, data, steps: int, autocast: bool) -> dict:
    """(a): pixels every step, 196 tokens, padding to 30, full logits, random order."""
    model, processor = prefix_captioner(encoder, "none")
    model.loss_logits = "full"
    collate = CaptionCollator(processor, pad_to_max_length=True)
    order = batch_order(data, processor, grouped=False, seed=0)[: (steps + 1) * BATCH]
    seconds, samples = timed_steps(model, batches_of(data, collate, order), autocast)
    gflop = per_sample_gflop(model, batches_of(data, collate, order[BATCH:]))
    return result("(a) straightforward", seconds, samples,
                  f"{model.config.num_image_tokens} image tokens, pad to {MAX_LENGTH}, full logits, encoder every step",
                  gflop)


def cross_attention(data, tokenizer, steps: int, autocast: bool) -> dict:
    """(b): ViT-base + DistilGPT2-size decoder with cross-attention, all weights trained."""
    torch.manual_seed(0)
    processor_224 = SiglipImageProcessorPil(size={"height": 224, "width": 224}, image_mean=[0.5] * 3,
                                            image_std=[0.5] * 3)
    model, processor = build_encoder_decoder(ViTConfig(), GPT2Config(n_layer=6, n_embd=768, n_head=12,
                                                                    vocab_size=50257), tokenizer, processor_224,
                                             max_length=MAX_LENGTH)
    collate = CaptionCollator(processor)
    order = batch_order(data, processor, grouped=False, seed=0)[: (steps + 1) * BATCH]
    seconds, samples = timed_steps(model, batches_of(data, collate, order), autocast)
    gflop = per_sample_gflop(model, batches_of(data, collate, order[BATCH:]))
    return result("(b) cross-attention", seconds, samples,
                  "ViT-base + 6-layer GPT-2 decoder, all weights trained, dynamic padding", gflop)


def distilvit_default(encoder: Path, data, cache: Path, autocast: bool, reduction: str,
                      names=("(c) distilvit default, epoch 1 (cache cold)", "(d) distilvit default, epoch 2 (cache warm)"),
                      ) -> list[dict]:
    """(c) cold cache: encode every image once, then train one epoch on features; (d) the second epoch."""
    model, processor = prefix_captioner(encoder, reduction)
    collate = CaptionCollator(processor)
    note = (f"{model.config.num_image_tokens} image tokens ({reduction}), cached fp16 features, dynamic padding, "
            "length-grouped batches, caption-only logits")
    rows = []
    encode_gflop = encoder_flops_per_image(model, collate([data[0]])["pixel_values"]) / 1e9
    for name in names:
        reset_peak_rss()
        start = time.perf_counter()
        (features,) = cached_feature_sets(model, processor, [data], cache_dir=cache, progress=False)
        encode_seconds = time.perf_counter() - start
        order = batch_order(data, processor, grouped=True, seed=len(rows))
        seconds, samples = timed_steps(model, batches_of(features, collate, order), autocast)
        # the epoch's share of encoding: every image, of which `samples` are timed in training steps
        total = seconds + encode_seconds * samples / len(data)
        gflop = per_sample_gflop(model, batches_of(features, collate, order[BATCH:]))
        if not rows:  # the cold epoch also encodes every image once
            gflop += encode_gflop
        rows.append(result(name, total, samples, note + f"; encoding {encode_seconds:.1f} s for {len(data)} images",
                           gflop))
    return rows


# one switch of the default flipped at a time (cache warm): the measurement behind each default
ABLATIONS = {
    "full logits": {"loss_logits": "full"},
    "pad to max length": {"pad_to_max_length": True},
    "random batches": {"group_by_length": False},
    "gradient checkpointing": {"checkpointing": True},
    "eager attention": {"attn": "eager"},
    "torch.compile": {"compile": True},
}


def ablation(encoder: Path, data, cache: Path, autocast: bool, reduction: str, name: str, switch: dict) -> dict:
    """Epoch time (cache warm) of the default with one switch flipped; the first step (compilation) untimed."""
    model, processor = prefix_captioner(encoder, reduction)
    model.loss_logits = switch.get("loss_logits", "caption")
    if switch.get("attn"):
        model.language_model.set_attn_implementation(switch["attn"])
    if switch.get("checkpointing"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    step_model = torch.compile(model) if switch.get("compile") else model
    collate = CaptionCollator(processor, pad_to_max_length=switch.get("pad_to_max_length", False))
    (features,) = cached_feature_sets(model, processor, [data], cache_dir=cache, progress=False)
    order = batch_order(data, processor, grouped=switch.get("group_by_length", True), seed=1)
    reset_peak_rss()
    seconds, samples = timed_steps(step_model, batches_of(features, collate, order), autocast)
    return result(f"(d) with {name}", seconds, samples, "the default, cache warm, with one switch flipped")


def write(results: dict, out: Path) -> None:
    (out / "train_throughput.json").write_text(json.dumps(results, indent=2))
    head = ("| design | samples/s | s per epoch of 10k images | GFLOP per sample | achieved GFLOP/s | peak RSS (MB) | what |\n"
            "|---|---|---|---|---|---|---|\n")
    lines = "".join(f"| {r['design']} | {r['samples_per_s']:.2f} | {r['epoch_10k_s']:.0f} | {r.get('gflop_per_sample', '')} | "
                    f"{r.get('achieved_gflop_s', '')} | {r['peak_rss_mb']:.0f} | {r['note']} |\n" for r in results["designs"])
    ratios = "".join(f"| {k} | {v:.2f}x |\n" for k, v in results["ratios"].items())
    host = results["machine"]
    (out / "train_throughput.md").write_text(
        "# Training throughput (real SmolLM2-135M + LoRA r16, SigLIP-base-size encoder, batch 8)\n\n"
        f"Machine: {host['processor']}, {host['cores']} threads, torch {host['torch']}; precision "
        f"{results['precision']}. One process, one run. GFLOP per sample: forward + backward (and, for (c), "
        "encoding), counted by torch's FlopCounterMode in a separate untimed pass over the same batches.\n\n"
        + head + lines + "\n| ratio | value |\n|---|---|\n" + ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64, help="images in the epoch of (c)/(d)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of (a) and (b) (after one warm-up)")
    parser.add_argument("--reduction", default=DEFAULT_PREFIX_REDUCTION, help="prefix reduction of (c)/(d)")
    parser.add_argument("--ablations", nargs="*", choices=list(ABLATIONS),
                        default=[name for name in ABLATIONS if name != "torch.compile"],
                        help="switches to flip one at a time against (d) (torch.compile: its compilation, minutes "
                        "on a CPU, and recompilation for new caption lengths make it a separate run)")
    parser.add_argument("--also", nargs="*", default=["pool4"], help="other prefix reductions to time (epoch 2)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    args = parser.parse_args()
    autocast = pick_precision("auto", "cpu") == "bf16"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        encoder = encoder_folder(Path(tmp) / "encoder")
        from transformers import AutoTokenizer

        from distilvit.model.gguf import convert_gguf

        tokenizer = AutoTokenizer.from_pretrained(convert_gguf("smollm2-gguf"))
        data = make_dataset(max(args.samples, (args.steps + 1) * BATCH), tokenizer, seed=0)
        designs = []
        for run in (lambda: straightforward(encoder, data, args.steps, autocast),
                    lambda: cross_attention(data, tokenizer, args.steps, autocast)):
            reset_peak_rss()
            designs.append(run())
            print(designs[-1], flush=True)
        for row in distilvit_default(encoder, data.select(range(args.samples)), Path(tmp) / "cache", autocast,
                                     args.reduction):
            designs.append(row)
            print(row, flush=True)
        for reduction in args.also:  # the prefix length lever: other reductions, cache warm
            rows = distilvit_default(encoder, data.select(range(args.samples)), Path(tmp) / "cache", autocast,
                                     reduction, names=(f"(e) {reduction}, epoch 1", f"(e) {reduction}, epoch 2"))
            designs.append(rows[-1])
            print(rows[-1], flush=True)
        for name in args.ablations:
            row = ablation(encoder, data.select(range(args.samples)), Path(tmp) / "cache", autocast,
                           args.reduction, name, ABLATIONS[name])
            designs.append(row)
            print(row, flush=True)
    rate = {r["design"][:3]: r["samples_per_s"] for r in designs[:4]}
    results = {"machine": machine(), "precision": "bf16 autocast" if autocast else "fp32", "batch": BATCH,
               "designs": designs, "ratios": {"c/a": rate["(c)"] / rate["(a)"], "d/a": rate["(d)"] / rate["(a)"],
                                              "c/b": rate["(c)"] / rate["(b)"], "d/b": rate["(d)"] / rate["(b)"]}}
    for row in designs[4:]:
        versus = "(a)" if row["design"].startswith("(e)") else "(d)"
        results["ratios"][f"{row['design']} / {versus[1]}"] = row["samples_per_s"] / rate[versus]
    work = {r["design"][:3]: r["gflop_per_sample"] for r in designs[:4]}
    # the work ratio: what the throughput ratio would be if every design ran at the same GFLOP/s
    results["ratios"].update({"FLOPs a/c": work["(a)"] / work["(c)"], "FLOPs a/d": work["(a)"] / work["(d)"]})
    write(results, out)
    print((out / "train_throughput.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
