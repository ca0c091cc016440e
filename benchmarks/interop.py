"""The interop layouts of one trained model: sizes, caption agreement with `OnnxCaptioner`, and per-caption latency in
transformers.js (Node, onnxruntime-node, one thread) beside `OnnxCaptioner`'s (one thread), same machine, one run.

    python benchmarks/interop.py --model demo-output/model --images demo-output/test-images/*.png \
        [--quantize int8] [--repeats 3] [--max-new-tokens 40] [--out benchmarks/results]

Exports the distilvit bundle, `--layout transformers.js` and `--layout image-to-text` at --quantize (int8 is the
`q8` files Firefox loads), captions every image one at a time with each (greedy), and counts the captions equal to
`OnnxCaptioner`'s. Latency: milliseconds per caption (preprocessing, generation, decoding), the median over
--repeats passes after one warm-up pass; captions stop at EOS, so the systems decode the same tokens exactly when
their captions agree. Needs node and `npm ci` in web/. Results: interop.json and interop.md in --out. Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import machine
from PIL import Image

from distilvit.export import OnnxCaptioner, export_bundle
from distilvit.export.image_to_text import export_image_to_text
from distilvit.export.transformers_js import export_transformers_js

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
SCRIPTS = {"transformers.js (AutoModelForImageTextToText)": ("transformers.js", "transformersjs.mjs"),
           "transformers.js image-to-text pipeline": ("image-to-text", "imagetotext.mjs")}


def onnx_captioner(bundle: Path, images: list[Path], repeats: int, max_new: int) -> tuple[list[str], list[float]]:
    captioner = OnnxCaptioner(bundle, threads=1)
    pictures = [Image.open(p).convert("RGB") for p in images]
    captions, times = [], []
    for i, picture in enumerate(pictures):
        for run in range(repeats + 1):
            start = time.perf_counter()
            caption = captioner.caption([picture], max_new_tokens=max_new, batch_size=1)[0]
            if run:
                times.append(1000 * (time.perf_counter() - start))
        captions.append(caption)
    return captions, times


def node_captions(script: str, folder: Path, images: list[Path], repeats: int, max_new: int, tmp: Path):
    job = tmp / f"{script}.json"
    job.write_text(json.dumps({"model_dir": str(folder), "images": [str(p) for p in images], "threads": 1,
                               "max_new_tokens": max_new, "repeat": repeats + 1}))
    done = subprocess.run(["node", str(WEB / "tests" / script), str(job)], capture_output=True, text=True, cwd=WEB,
                          check=True)
    out = json.loads(done.stdout)
    per_image = [out["ms"][i * (repeats + 1) + 1:(i + 1) * (repeats + 1)] for i in range(len(images))]
    return out["captions"], [t for runs in per_image for t in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained prefix model folder")
    parser.add_argument("--images", nargs="+", required=True, help="image files to caption")
    parser.add_argument("--quantize", default="int8", choices=["none", "fp16", "int8", "int4"])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per image (after one warm-up)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    images = [Path(p) for p in args.images]
    results = {"machine": machine(), "model": str(args.model), "quantize": args.quantize, "images": len(images),
               "repeats": args.repeats, "threads": 1, "systems": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        manifest = export_bundle(args.model, tmp / "bundle", quantize=args.quantize, progress=False)
        folders = {"transformers.js": tmp / "js", "image-to-text": tmp / "i2t"}
        sizes = {"transformers.js": export_transformers_js(args.model, folders["transformers.js"],
                                                           quantize=args.quantize, progress=False)["total_mb"],
                 "image-to-text": export_image_to_text(args.model, folders["image-to-text"],
                                                       quantize=args.quantize, progress=False)["total_mb"]}
        reference, times = onnx_captioner(tmp / "bundle", images, args.repeats, args.max_new_tokens)
        results["systems"]["OnnxCaptioner (distilvit bundle)"] = {
            "size_mb": manifest["sizes_mb"]["total"], "median_ms": round(statistics.median(times), 1),
            "agreeing_captions": len(images)}
        for name, (layout, script) in SCRIPTS.items():
            captions, times = node_captions(script, folders[layout], images, args.repeats, args.max_new_tokens, tmp)
            results["systems"][name] = {
                "size_mb": sizes[layout], "median_ms": round(statistics.median(times), 1),
                "agreeing_captions": sum(a == b for a, b in zip(captions, reference))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "interop.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Interop layouts: `{args.model}`, --quantize {args.quantize}, one thread",
             "", f"Machine: {results['machine']['processor']}. {len(images)} images, median of {args.repeats} "
             "timed passes per image after a warm-up.", "",
             "| system | size (MB) | ms per caption | captions equal to OnnxCaptioner's |", "|---|---|---|---|"]
    for name, row in results["systems"].items():
        lines.append(f"| {name} | {row['size_mb']} | {row['median_ms']} | {row['agreeing_captions']}/{len(images)} |")
    (out / "interop.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
