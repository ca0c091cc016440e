"""Does a shorter prefix cost caption quality? The straightforward design vs the lean defaults, on `shapes`.

A frozen encoder with a real token grid is needed, and no pretrained vision weights can be downloaded here, so
the encoder is taken from a trained demo model (its from-scratch ResNet, trained on `shapes`) and frozen; its
second-to-last stage gives a 6x6 grid of 128-wide tokens at 96 px. Then, with the real SmolLM2-135M + LoRA and
otherwise the demo recipe, three runs of the same number of steps:

* ``straightforward``: 36 image tokens, encoder run on every step, captions padded to --max-length,
  vocabulary logits at every position;
* ``pool2`` and ``shuffle2``: 9 image tokens (2x2 pooling / 2x2 pixel shuffle), cached features, dynamic
  padding, caption-only logits; ``pool4``: the same with 4 image tokens (4x4 pooling).

    python benchmarks/prefix_quality.py --encoder-from demo-output/model [--steps 200]

Writes prefix_quality.json and prefix_quality.md to --out (held-out test split, 200 images).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from common import logged_train_seconds, machine

from distilvit.cli.main import main as distilvit
from distilvit.evaluation.run import evaluate_model
from distilvit.model import load_captioner

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "shapes-demo.args"
KEYS = ("cider", "bleu_4", "exact_match", "colour_accuracy", "shape_accuracy", "size_accuracy", "count_accuracy")
VARIANTS = {
    "straightforward": ["--prefix-reduction", "none", "--loss-logits", "full", "--pad-to-max-length",
                        "--no-cache-features"],
    "pool2": ["--prefix-reduction", "pool2"],
    "shuffle2": ["--prefix-reduction", "shuffle2"],
    "pool4": ["--prefix-reduction", "pool4"],
}


def frozen_encoder(model_dir: str, out: Path) -> Path:
    """Save the vision encoder (and image processor) of a trained distilvit model as a plain HF model folder."""
    model, processor = load_captioner(model_dir)
    model.vision_model.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    return out


def recipe(steps: int) -> list[str]:
    """The demo recipe with its encoder and schedule replaced."""
    args = shlex.split(RECIPE.read_text(), comments=True)
    drop = {"--encoder-model", "--max-steps", "--eval-steps", "--save-steps"}
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in drop:
            skip = True
            continue
        kept.append(arg)
    half = str(steps // 2)
    return [*kept, "--max-steps", str(steps), "--eval-steps", half, "--save-steps", half]


def run_variant(name: str, encoder: Path, work: Path, steps: int) -> dict:
    folder = work / name
    args = ["train", *recipe(steps), "--encoder-model", str(encoder), "--vision-feature-layer", "-2",
            *VARIANTS[name], "--checkpoints-dir", str(folder / "checkpoints"), "--save-dir", str(folder / "model")]
    if distilvit(args) != 0:
        raise SystemExit(f"training {name} failed")
    evaluate_model(str(folder / "model"), ["shapes"], split="test", out_dir=folder / "report", use_meteor=False)
    return collect_variant(folder, steps)


def collect_variant(folder: Path, steps: int) -> dict:
    """The result row of a finished variant, read back from its model and report folders."""
    train_runtime = logged_train_seconds(folder / "model")
    metrics = json.loads((folder / "report" / "metrics.json").read_text())
    metrics = metrics.get("metrics", metrics)
    config = load_captioner(folder / "model")[0].config
    return {"image_tokens": config.num_image_tokens, "train_seconds": round(float(train_runtime), 1),
            "seconds_per_step": round(float(train_runtime) / steps, 3), **{k: round(metrics[k], 4) for k in KEYS}}


def write_results(results: dict, out: Path) -> None:
    (out / "prefix_quality.json").write_text(json.dumps(results, indent=2))
    head = ["variant", "image tokens", "s/step", "train s", *KEYS]
    rows = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name in (v for v in VARIANTS if v in results):
        r = results[name]
        rows.append(f"| {name} | {r['image_tokens']} | {r['seconds_per_step']:.2f} | {r['train_seconds']:.0f} | "
                    + " | ".join(f"{r[k]:.3f}" for k in KEYS) + " |")
    host = results["machine"]
    (out / "prefix_quality.md").write_text(
        f"# Prefix reduction: speed and held-out quality on shapes ({results['steps']} steps each)\n\n"
        f"Machine: {host['processor']}, {host['cores']} threads, torch {host['torch']}. Frozen encoder: the trained "
        "demo ResNet's 6x6 stage; LM: real SmolLM2-135M-Instruct + LoRA; test split, 200 images. The s/step and "
        "train s columns are wall time on a machine shared with other jobs: quality is the measurement here, "
        "speed is train_throughput.md's.\n\n"
        + "\n".join(rows) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder-from", default=str(ROOT / "demo-output" / "model"),
                        help="trained distilvit model whose encoder is reused, frozen (e.g. make demo's)")
    parser.add_argument("--steps", type=int, default=200, help="training steps per variant")
    parser.add_argument("--variants", nargs="+", default=["straightforward", "pool2", "shuffle2"],
                        choices=list(VARIANTS), help="runs to make (pool4: 4 tokens on this 6x6 grid)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    parser.add_argument("--work", default="/tmp/distilvit-prefix-quality", help="scratch folder")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: write the results of the variants already finished in --work")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = work / "encoder" if args.collect else frozen_encoder(args.encoder_from, work / "encoder")
    results = {"machine": machine(), "steps": args.steps, "encoder_from": args.encoder_from}
    for name in args.variants:
        done = (work / name / "report" / "metrics.json").is_file()
        if args.collect and not done:
            continue
        results[name] = collect_variant(work / name, args.steps) if done else run_variant(name, encoder, work, args.steps)
    write_results(results, out)
    print((out / "prefix_quality.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
