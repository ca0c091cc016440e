"""Do ONNX bundles caption like the PyTorch model? Export a trained model with every `--quantize` option and
compare greedy captions on held-out `shapes` test images: fp32 ONNX against PyTorch (must be identical),
each quantised bundle against fp32 ONNX (agreement) and against the references (CIDEr), plus sizes per part.

    python benchmarks/export_quality.py --model demo-output/model [--count 100] [--default-architecture]

`--default-architecture` also exports an untrained captioner of the default real-size architecture
(SigLIP-base-size encoder + SmolLM2-135M + LoRA) with every option and records its sizes (MB per part).
Sizes: each graph file, `shared` (the external-data file that embed_tokens.onnx and decoder.onnx both read in
int8/int4 bundles: the tied embedding table / output head, stored once) and the total, every file counted once.
Writes export_quality.json and export_quality.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common import machine

from distilvit.data import load_caption_dataset
from distilvit.evaluation import compute_caption_metrics
from distilvit.export import OnnxCaptioner, export_bundle
from distilvit.export.manifest import QUANTIZE_OPTIONS
from distilvit.model import load_captioner
from distilvit.model.captioning import generate_captions

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("vision", "embed_tokens", "decoder", "shared", "total")  # shared: table.bin, read by two graphs


def test_images(count: int):
    data = load_caption_dataset(["shapes"], "test")
    if count > len(data):
        raise SystemExit(f"--count {count}: the shapes test split has only {len(data)} images")
    rows = data.select(range(count))
    return [row["image"].convert("RGB") for row in rows], [row["captions"] for row in rows]


def scores(captions: list[str], references) -> dict:
    metrics = compute_caption_metrics(captions, references, use_meteor=False)
    return {k: round(metrics[k], 4) for k in ("cider", "bleu_4", "exact_match")}


def onnx_run(model: str, option: str, work: Path, images) -> dict:
    folder = work / f"bundle-{option}"
    start = time.perf_counter()
    manifest = export_bundle(model, folder, quantize=option, progress=False)
    exported = time.perf_counter() - start
    start = time.perf_counter()
    captions = OnnxCaptioner(folder).caption(images, batch_size=8)
    return {"quantization": manifest["quantization"], "quantization_detail": manifest["quantization_detail"],
            "sizes_mb": manifest["sizes_mb"], "export_seconds": round(exported, 1),
            "caption_seconds": round(time.perf_counter() - start, 1), "captions": captions}


def default_architecture_sizes(work: Path, options) -> dict:
    """Sizes of the default architecture's bundles (random SigLIP-base-size encoder, real SmolLM2 + LoRA)."""
    from distilvit.model import CaptionerSpec, build_captioner

    model, processor = build_captioner(CaptionerSpec(encoder="scratch:siglip-base", decoder="smollm2-gguf"))
    folder = work / "default-architecture"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    return {option: export_bundle(folder, work / f"default-{option}", quantize=option, progress=False)["sizes_mb"]
            for option in options}


def markdown(results: dict) -> str:
    host, runs = results["machine"], results["onnx"]
    lines = [
        f"# ONNX bundles vs PyTorch ({results['count']} held-out shapes test images, greedy captions)\n",
        (f"Model: `{results['model']}`. Machine: {host['processor']}, torch {host['torch']} ({host['cores']} threads), "
         f"onnxruntime {host['onnxruntime']} (its default threads). Agreement and CIDEr do not depend on threads.\n"),
        (f"PyTorch: CIDEr {results['pytorch']['cider']:.4f}, BLEU-4 {results['pytorch']['bleu_4']:.4f}. "
         f"fp32 ONNX greedy captions identical to PyTorch: {results['fp32_identical_to_pytorch']:.1%}.\n"),
        "| --quantize | vision | embed_tokens | decoder | shared | total MB | same caption as fp32 ONNX | CIDEr | CIDEr vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for option, run in runs.items():
        q, s = run["quantization"], run["sizes_mb"]
        cells = [f"{q[p]} {s[p]:.1f} MB" for p in ("vision", "embed_tokens", "decoder")] + [f"{s.get('shared', 0):.1f} MB"]
        lines.append(f"| {option} | " + " | ".join(cells) + f" | {s['total']:.1f} | {run['agreement_with_fp32']:.1%} | "
                     f"{run['cider']:.4f} | {run['cider_change_vs_fp32']:+.2%} |")
    if "default_architecture_sizes_mb" in results:
        lines += ["", "Default architecture (SigLIP-base-size encoder + SmolLM2-135M), bundle sizes in MB:", "",
                  "| --quantize | " + " | ".join(PARTS) + " |", "|---" * (len(PARTS) + 1) + "|"]
        for option, sizes in results["default_architecture_sizes_mb"].items():
            lines.append(f"| {option} | " + " | ".join(f"{sizes.get(p, 0):.1f}" for p in PARTS) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained model folder (e.g. the `make demo` model)")
    parser.add_argument("--count", type=int, default=100, help="held-out shapes test images to caption (>= 50)")
    parser.add_argument("--options", nargs="+", default=list(QUANTIZE_OPTIONS), choices=QUANTIZE_OPTIONS,
                        help="--quantize options to export (none, the fp32 reference, is always included)")
    parser.add_argument("--default-architecture", action="store_true",
                        help="also record the bundle sizes of the default real-size architecture")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    parser.add_argument("--work", default="/tmp/distilvit-export-quality", help="scratch folder for bundles")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    images, references = test_images(args.count)
    model, processor = load_captioner(args.model)
    start = time.perf_counter()
    torch_captions = generate_captions(model, processor, images, batch_size=8)
    results = {"model": os.path.abspath(args.model), "count": args.count,
               "machine": {**machine(), "onnxruntime": onnxruntime.__version__},
               "pytorch": {**scores(torch_captions, references),
                           "caption_seconds": round(time.perf_counter() - start, 1)}}
    del model
    options = ["none", *[o for o in args.options if o != "none"]]
    runs = {option: onnx_run(args.model, option, work, images) for option in options}
    fp32 = runs["none"]["captions"]
    results["fp32_identical_to_pytorch"] = sum(a == b for a, b in zip(fp32, torch_captions)) / len(fp32)
    fp32_cider = scores(fp32, references)["cider"]
    for run in runs.values():
        run.update(scores(run["captions"], references))
        run["agreement_with_fp32"] = sum(a == b for a, b in zip(run["captions"], fp32)) / len(fp32)
        run["cider_change_vs_fp32"] = round(run["cider"] / fp32_cider - 1, 4)
        run["differences"] = [{"fp32": b, "bundle": a} for a, b in zip(run.pop("captions"), fp32) if a != b][:10]
    results["onnx"] = runs
    if args.default_architecture:
        results["default_architecture_sizes_mb"] = default_architecture_sizes(work, options)
    (out / "export_quality.json").write_text(json.dumps(results, indent=2))
    (out / "export_quality.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
