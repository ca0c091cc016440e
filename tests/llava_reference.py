"""Run converted LLaVA folders with plain transformers (no distilvit import): logits and greedy captions.

    python llava_reference.py OUT.json IMAGE.png ... -- MODEL_DIR ...

Writes ``{model_dir: {"logits": [...], "captions": [...], "class": name}}`` (logits of the prompt, nested lists).
"""

import json
import sys

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

MAX_NEW = 10


def run(folder: str, images: list) -> dict:
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    messages = [{"role": "user", "content": [{"type": "image"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=images, text=[text] * len(images), return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs, max_new_tokens=MAX_NEW)
    captions = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return {"logits": logits.tolist(), "captions": [c.strip() for c in captions], "class": type(model).__name__,
            "input_ids": inputs["input_ids"].tolist()}


def main() -> None:
    out, *rest = sys.argv[1:]
    split = rest.index("--")
    images = [Image.open(p).convert("RGB") for p in rest[:split]]
    results = {folder: run(folder, images) for folder in rest[split + 1:]}
    results["distilvit_imported"] = any(name.startswith("distilvit") for name in sys.modules)
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
