"""fp32 vs bf16 autocast training-step time on this CPU, side by side in one run.

The real SmolLM2-135M-Instruct + LoRA (q/k/v/o) + `scratch:resnet-tiny`, batch 16 `shapes` captions. On CPUs
without native bf16 instructions (no AVX512-BF16/AMX) autocast emulates bf16 and is much slower; this is why
`--precision auto` picks fp32 there.

    python benchmarks/cpu_precision.py [--steps 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from distilvit.data import load_caption_dataset
from distilvit.model import CaptionerSpec, build_captioner
from distilvit.training.trainer import cpu_supports_bf16

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(model, batch, optimizer, bf16: bool, steps: int) -> float:
    """Median wall time of ``steps`` optimiser steps (after one warm-up step)."""
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per precision")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder="scratch:resnet-tiny", decoder="smollm2-gguf"))
    model.train()
    rows = load_caption_dataset(["shapes"], "train", sample=16)
    batch = processor.training_batch([c[0] for c in rows["captions"]], list(rows["image"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    fp32 = step_seconds(model, batch, optimizer, bf16=False, steps=args.steps)
    bf16 = step_seconds(model, batch, optimizer, bf16=True, steps=args.steps)
    result = {
        "cpu_has_native_bf16": cpu_supports_bf16(), "threads": torch.get_num_threads(), "batch": 16,
        "tokens_per_row": batch["input_ids"].shape[1], "fp32_seconds_per_step": round(fp32, 2),
        "bf16_autocast_seconds_per_step": round(bf16, 2), "bf16_over_fp32": round(bf16 / fp32, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_precision.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
