"""Training from cached encoder features as the dataset grows: time and peak memory per epoch.

For every size, one fresh process writes that many feature entries into a feature store (random values of a
real encoder's shape: no encoder runs, this measures the features-only path) and another fresh process trains
one epoch from it with the real training path (``CachedFeatureDataset`` -> ``CaptionCollator`` ->
``CaptionTrainer``). Each process's peak resident memory (VmHWM) is its own, so no size inherits the peak of
another. Expected: seconds per 1k samples constant (linear time), peak memory flat while the store grows.

The model: a random-init Llama LM (hidden 128, 2 layers, 4 heads / 2 KV heads, FFN 512: 0.5M parameters, LoRA r16
on its attention projections) with a word-level caption vocabulary, a linear projection, and features of shape
49 x 512 stored as fp16 (a ResNet-18/34 at 224 px; 50 KB per image). The LM is small on purpose: the
benchmark is about the data path's scaling, and the real SmolLM2 would take hours per epoch at 16k on a CPU.

    python benchmarks/scaling.py [--sizes 1000 4000 16000] [--batch-size 32] [--threads N] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import rss_mb

ROOT = Path(__file__).resolve().parents[1]
COLOURS = ["red", "green", "blue", "yellow", "purple"]
SHAPES = ["circle", "square", "triangle"]


def build_model(folder: Path, tokens: int, width: int):
    """The benchmark captioner (see the module docstring) and its processor."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, ResNetConfig

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_tokenizer  # the word-level test tokenizer (its words cover the captions)

    from distilvit.model import CaptionProcessor, DistilViTConfig, DistilViTForCaptioning
    from distilvit.model.lora import default_target_modules
    from distilvit.model.presets import preset_encoder

    torch.manual_seed(0)
    tokenizer = make_tokenizer(folder)
    text = LlamaConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=128, vocab_size=len(tokenizer),
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    image_processor = preset_encoder("scratch:siglip-tiny")[1]  # never used: training reads features
    processor = CaptionProcessor(tokenizer, image_processor, num_image_tokens=tokens, max_length=20)
    config = DistilViTConfig(
        vision_config=ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], layer_type="basic"),
        text_config=text, vision_feature_dim=width, num_image_tokens=tokens,
        image_token_id=processor.image_token_id, lora_target_modules=default_target_modules(text),
    )
    return DistilViTForCaptioning(config, language_model=LlamaForCausalLM(text)), processor


def captions(size: int) -> list[list[str]]:
    """``size`` caption lists in the word-level vocabulary, e.g. ``["a small red circle left of a blue square"]``."""
    rows = []
    for i in range(size):
        first = f"a {'small' if i % 2 else 'large'} {COLOURS[i % 5]} {SHAPES[i % 3]}"
        rows.append([first + (f" left of a {COLOURS[(i // 5) % 5]} {SHAPES[(i // 3) % 3]}" if i % 4 else "")])
    return rows


def child_write(args) -> dict:
    """Write ``args.size`` random entries into the store (batches of 32, as encoding does)."""
    import torch

    from distilvit.features import FeatureStore, feature_key

    model, processor = build_model(Path(args.work) / "lm", args.tokens, args.width)
    store = FeatureStore.for_key(Path(args.work) / "features", feature_key(model, processor))
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with store.writer() as writer:
        for first in range(0, args.size, 32):
            count = min(32, args.size - first)
            digests = [hashlib.sha256(str(first + i).encode()).digest() for i in range(count)]
            writer.append(digests, torch.randn(count, args.tokens, args.width, generator=generator))
    return {"write_seconds": round(time.perf_counter() - start, 2), "write_peak_rss_mb": round(rss_mb(), 1),
            "store_mb": round(store.size_bytes() / 1e6, 1)}


def child_train(args) -> dict:
    """One epoch over the store with the real training path; wall time and this process's memory."""
    import datasets
    import numpy as np
    import torch
    from transformers import TrainingArguments

    from distilvit.features import CachedFeatureDataset, FeatureStore, feature_key
    from distilvit.training.collator import CaptionCollator
    from distilvit.training.trainer import CaptionTrainer

    torch.set_num_threads(args.threads)
    model, processor = build_model(Path(args.work) / "lm", args.tokens, args.width)
    store = FeatureStore.for_key(Path(args.work) / "features", feature_key(model, processor))
    assert len(store.index()) == args.size, "the store does not hold the written entries"
    view = CachedFeatureDataset(store.reader(), np.arange(args.size, dtype=np.int64),
                                datasets.Dataset.from_dict({"captions": captions(args.size)}))
    training = TrainingArguments(
        output_dir=str(Path(args.work) / "run"), num_train_epochs=1, per_device_train_batch_size=args.batch_size,
        learning_rate=1e-4, save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=True, remove_unused_columns=False, seed=0, dataloader_num_workers=0,
    )
    trainer = CaptionTrainer(
        model=model.train(), args=training, train_dataset=view, data_collator=CaptionCollator(processor, seed=0),
        caption_processor=processor, learning_rates={"projection_lr": 1e-3, "lora_lr": 1e-4, "vision_lr": 0.0},
    )
    before = rss_mb("VmRSS")
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    return {"epoch_seconds": round(seconds, 2), "steps": result.global_step,
            "seconds_per_1k_samples": round(seconds * 1000 / args.size, 3),
            "rss_before_epoch_mb": round(before, 1), "peak_rss_mb": round(rss_mb(), 1),
            "final_loss": round(result.training_loss, 4)}


def run_child(role: str, size: int, work: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", role, "--size", str(size), "--work", str(work),
               "--tokens", str(args.tokens), "--width", str(args.width), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import torch

    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def write_results(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(result, indent=2))
    m, rows = result["machine"], result["sizes"]
    setup = (
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {result['threads']} thread(s). "
        f"Features {result['feature_shape'][0]}x{result['feature_shape'][1]} {result['dtype']}; "
        f"LM: {result['lm']}; batch {result['batch_size']}; one epoch; every size in fresh processes."
    )
    lines = [
        "# Cached-feature training: scaling with dataset size", "", setup, "",
        ("| samples | store MB | epoch s | s per 1k samples | peak RSS MB (train) | RSS before epoch MB "
         "| peak RSS MB (write) |"),
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['size']} | {r['store_mb']} | {r['epoch_seconds']} | {r['seconds_per_1k_samples']} | "
                     f"{r['peak_rss_mb']} | {r['rss_before_epoch_mb']} | {r['write_peak_rss_mb']} |")
    s = result["summary"]
    verdict = (
        f"Time: {s['samples_ratio']}x the samples took {s['epoch_time_ratio']}x the time. "
        f"Memory: peak RSS ranges over {s['peak_rss_spread_mb']} MB while the store grows by {s['store_growth_mb']} MB."
    )
    lines += ["", verdict, ""]
    (out / "scaling.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="dataset sizes (samples)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    parser.add_argument("--tokens", type=int, default=49, help="feature tokens per image")
    parser.add_argument("--width", type=int, default=512, help="feature width")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    parser.add_argument("--child", choices=["write", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps((child_write if args.child == "write" else child_train)(args)))
        return 0
    rows = []
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"distilvit-scaling-{size}-"))
        try:
            row = {"size": size, **run_child("write", size, work, args), **run_child("train", size, work, args)}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(row), flush=True)
        rows.append(row)
    first, last = rows[0], rows[-1]
    result = {
        "machine": machine(), "threads": args.threads, "batch_size": args.batch_size,
        "feature_shape": [args.tokens, args.width], "dtype": "fp16",
        "lm": "random-init Llama, hidden 128, 2 layers, FFN 512, 0.5M parameters, LoRA r16 on attention",
        "sizes": rows,
        "summary": {
            "samples_ratio": round(last["size"] / first["size"], 2),
            "epoch_time_ratio": round(last["epoch_seconds"] / first["epoch_seconds"], 2),
            "peak_rss_spread_mb": round(max(r["peak_rss_mb"] for r in rows) - min(r["peak_rss_mb"] for r in rows), 1),
            "store_growth_mb": round(last["store_mb"] - first["store_mb"], 1),
        },
    }
    write_results(result, Path(args.out))
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
