"""Does the instruct model answer by looking? Held-out `shapes-vqa` exact-match accuracy (per question kind, scenes
with seen vs held-out colour-shape pairs) of

* the instruct model (stage 2 of `make demo-instruct`),
* the stage-1 model (projection pretrained on captions) asked the same questions in the same chat template,
* the instruct model blind (image features zeroed),
* the most frequent training answer of each question kind (what a model that never looks can hope for).

    python benchmarks/instruct_accuracy.py [--train] [--work demo-instruct-output] [--out benchmarks/results]
                                           [--sample N] [--name NAME]

--train runs `make demo-instruct`'s two stages first (configs/instruct-*.args; the shapes encoder of
demo-output/encoder must exist: `distilvit shapes-encoder --out demo-output/encoder`); without it the models in
--work/stage1 and --work/model are scored. Writes NAME.json and NAME.md (default instruct_accuracy) to --out.
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
from distilvit.conversations.shapes_vqa import KINDS, vqa_samples
from distilvit.evaluation.qa import evaluate_qa, qa_metrics
from distilvit.model import load_captioner

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"stage1": (ROOT / "configs" / "instruct-pretrain.args", ["--prompt", "describe the image."]),
          "model": (ROOT / "configs" / "instruct-tune.args", [])}


def train(work: Path) -> dict:
    seconds = {}
    for name, (recipe, extra) in STAGES.items():
        args = shlex.split(recipe.read_text(), comments=True) + extra
        if name == "model":
            args += ["--base-model", str(work / "stage1")]
        start = time.perf_counter()
        if distilvit(["train", *args, "--checkpoints-dir", str(work / f"checkpoints-{name}"),
                      "--save-dir", str(work / name)]) != 0:
            raise SystemExit(f"training {name} failed")
        seconds[name] = round(time.perf_counter() - start, 1)
    return seconds


def majority_baseline(sample: int | None) -> dict:
    """The most frequent training answer of each kind, given to every test question of that kind."""
    counts: dict[str, Counter] = {kind: Counter() for kind in KINDS}
    for s in vqa_samples("train", single=True):
        counts[s["kind"]][s["answer"]] += 1
    guess = {kind: c.most_common(1)[0][0] for kind, c in counts.items()}
    test = vqa_samples("test")
    if sample is not None:
        import random

        test = random.Random(42).sample(test, min(sample, len(test)))
    records = [dict(s, prediction=guess[s["kind"]]) for s in test]
    return {"guesses": guess, "metrics": qa_metrics(records)}


def score(work: Path, out: Path, sample: int | None) -> dict:
    results = {}
    runs = {"instruct": (work / "model", False), "stage1": (work / "stage1", False), "blind": (work / "model", True)}
    for name, (path, blind) in runs.items():
        pair = load_captioner(path)
        start = time.perf_counter()
        metrics = evaluate_qa(str(path), ["shapes-vqa"], split="test", sample=sample, out_dir=out / f"qa-{name}",
                              fmt="md", batch_size=32, blind=blind, model=pair)
        results[name] = {"metrics": metrics, "seconds": round(time.perf_counter() - start, 1)}
    return results


def recipes(work: Path) -> dict:
    """Steps, batch size and learning rates each stage actually trained with (from its training_log.json)."""
    out = {}
    for name in ("stage1", "model"):
        options = json.loads((work / name / "training_log.json").read_text())["options"]
        keys = ("stage", "base_model", "max_steps", "batch_size", "projection_lr", "lora_lr", "seed")
        out[name] = {k: options[k] for k in keys}
    return out


def markdown(report: dict) -> str:
    names = ["instruct", "stage1", "blind", "majority"]
    metrics = {n: report["results"][n]["metrics"] for n in names}
    rows = ["exact_match", "exact_seen", "exact_held_out"] + [
        f"exact_{k}{part}" for k in KINDS for part in ("", "_seen", "_held_out")]
    lines = [
        "# shapes-vqa held-out accuracy (exact match)", "",
        f"Test split of shapes-vqa, {metrics['instruct']['questions']} questions "
        f"({metrics['instruct'].get('questions_held_out', 0)} about scenes holding a colour-shape pair never seen "
        "in training). Written by benchmarks/instruct_accuracy.py.", "",
        "| metric | instruct model | stage-1 model | blind (image zeroed) | majority answer |",
        "|---|---|---|---|---|",
    ]
    for key in rows:
        if key in metrics["instruct"]:
            cells = [f"{metrics[n][key] * 100:.1f}%" if key in metrics[n] else "-" for n in names]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "Recipes: " + "; ".join(f"{n}: {r['max_steps']} steps x batch {r['batch_size']} from "
                                          f"{r.get('base_model') or 'the pretrained parts'}"
                                          for n, r in report.get("recipes", {}).items()) + ".",
              f"Machine: {report['machine']['processor']}, {report['machine']['cores']} threads.",
              f"Training seconds: {report.get('train_seconds') or 'not measured (models given)'}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "demo-instruct-output", help="stage1/ and model/ folders")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    parser.add_argument("--train", action="store_true", help="train both stages first (the demo recipe)")
    parser.add_argument("--sample", type=int, default=None, help="score a seeded subset of N test questions")
    parser.add_argument("--name", default="instruct_accuracy", help="results file names (NAME.json, NAME.md)")
    args = parser.parse_args()
    seconds = train(args.work) if args.train else None
    results = score(args.work, args.work / "benchmark", args.sample)
    results["majority"] = majority_baseline(args.sample)
    report = {"machine": machine(), "train_seconds": seconds, "sample": args.sample, "recipes": recipes(args.work),
              "results": results}
    if seconds is None:
        try:
            report["train_seconds"] = {n: logged_train_seconds(args.work / n) for n in ("stage1", "model")}
        except (OSError, StopIteration, KeyError):
            pass
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
