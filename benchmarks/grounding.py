"""Does the demo model look at the image? Train the `make demo` recipe twice, once normally and once blind
(image features zeroed), evaluate both on the held-out `shapes` test split, and compare with a constant guess.
Both use the same pretrained shapes encoder (`distilvit shapes-encoder`, run first unless --encoder is given).

    python benchmarks/grounding.py [--out benchmarks/results] [--work /tmp/grounding] [--encoder DIR]

Writes grounding.json, grounding.md and grounding.png to --out. Takes about twice the demo's training time.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections import Counter
from pathlib import Path

from common import logged_train_seconds, machine

from distilvit.cli.main import main as distilvit
from distilvit.data import load_caption_dataset
from distilvit.evaluation import compute_caption_metrics, plot_metric_bars
from distilvit.evaluation.run import evaluate_model
from distilvit.evaluation.shapes_accuracy import shapes_accuracy

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "shapes-demo.args"
KEYS = ("cider", "bleu_4", "rouge_l", "exact_match", "seen_scene_accuracy", "held_out_scene_accuracy",
        "colour_accuracy", "shape_accuracy", "size_accuracy", "count_accuracy")


def pretrained_encoder(work: Path) -> Path:
    """The demo's first step: pretrain the shapes encoder (default options)."""
    out = work / "encoder"
    if distilvit(["shapes-encoder", "--out", str(out)]) != 0:
        raise SystemExit("pretraining the shapes encoder failed")
    return out


def train(work: Path, name: str, extra: list[str]) -> tuple[Path, float]:
    args = shlex.split(RECIPE.read_text(), comments=True)
    start = time.perf_counter()
    code = distilvit(["train", *args, *extra, "--checkpoints-dir", str(work / name / "checkpoints"),
                      "--save-dir", str(work / name / "model")])
    if code != 0:
        raise SystemExit(f"training {name} failed with exit code {code}")
    return work / name / "model", time.perf_counter() - start


def constant_guess() -> dict:
    """Predict the most frequent training caption for every test image."""
    train = load_caption_dataset(["shapes"], "train")
    guess = Counter(c for caps in train["captions"] for c in caps).most_common(1)[0][0]
    test = load_caption_dataset(["shapes"], "test")
    predictions = [guess] * len(test)
    metrics = compute_caption_metrics(predictions, test["captions"], use_meteor=False)
    metrics.update(shapes_accuracy(predictions, test["captions"]))
    return {"caption": guess, **metrics}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    parser.add_argument("--work", default="/tmp/distilvit-grounding", help="scratch folder for models and reports")
    parser.add_argument("--seeing-model", default=None,
                        help="reuse a model already trained with the recipe (e.g. make demo's demo-output/model) "
                        "instead of training the seeing model again")
    parser.add_argument("--blind-model", default=None,
                        help="reuse a blind model already trained with the recipe and --blind (same encoder)")
    parser.add_argument("--encoder", default=None,
                        help="the pretrained shapes encoder the models use (e.g. make demo's demo-output/encoder; "
                        "default: pretrain one into --work)")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = Path(args.encoder) if args.encoder else pretrained_encoder(work)
    results: dict = {"recipe": shlex.split(RECIPE.read_text(), comments=True), "encoder": str(encoder),
                     "machine": machine()}
    for name, extra in (("seeing", []), ("blind", ["--blind"])):
        extra = [*extra, "--encoder-model", str(encoder)]
        reuse = {"seeing": args.seeing_model, "blind": args.blind_model}[name]
        if reuse:
            model, seconds = Path(reuse), logged_train_seconds(Path(reuse))
        else:
            model, seconds = train(work, name, extra)
        metrics = evaluate_model(str(model), ["shapes"], split="test", out_dir=work / name / "report",
                                 use_meteor=False)
        results[name] = {"train_seconds": round(seconds, 1), **{k: round(metrics[k], 4) for k in KEYS}}
    results["constant_guess"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in constant_guess().items()}
    (out / "grounding.json").write_text(json.dumps(results, indent=2))
    rows = ["| model | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 1) + "|"]
    for name in ("seeing", "blind", "constant_guess"):
        rows.append(f"| {name} | " + " | ".join(f"{results[name][k]:.3f}" for k in KEYS) + " |")
    host = results["machine"]
    (out / "grounding.md").write_text(
        "# Grounding: demo recipe vs blind baseline (held-out shapes test split, 200 images)\n\n"
        f"Machine: {host['processor']}, {host['cores']} threads, torch {host['torch']}.\n\n"
        + "\n".join(rows) + "\n")
    plot_metric_bars({k: results[k] for k in ("seeing", "blind", "constant_guess")}, out / "grounding.png",
                     keys=("cider", "exact_match", "colour_accuracy", "shape_accuracy"))
    print((out / "grounding.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
