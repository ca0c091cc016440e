"""A small ``distilvit train`` command on tiny models (crash and reliability tests), and model comparison."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

# weights and losses of a resumed run must match an uninterrupted one within this (same machine, same threads)
TOLERANCE = 1e-5


COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "star", "ring"]


def make_captions_file(folder: Path) -> Path:
    """A Karpathy split file: 16 train and 4 validation images, three captions of different lengths each (so
    the caption drawn for a row and length grouping both matter)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(20):
        colour, shape = COLOURS[i % 4], SHAPES[i % 5]
        name = f"img{i}.png"
        Image.new("RGB", (32, 32), ((i * 53) % 256, (i * 97) % 256, (i * 31) % 256)).save(folder / name)
        captions = [f"a {colour} {shape}", f"one {shape} that is {colour} on a plain background",
                    f"picture {i} of a small {colour} {shape} in the middle"]
        images.append({"filename": name, "split": "train" if i < 16 else "val",
                       "sentences": [{"raw": c} for c in captions]})
    path = folder / "captions.json"
    path.write_text(json.dumps({"images": images}))
    return path


def train_argv(save_dir: Path, lm: Path, data: Path, *extra: str, max_steps: int = 6) -> list[str]:
    """16 images, batch 4 (4 steps an epoch, so 6 steps cross an epoch), eval and checkpoint every 2 steps."""
    return [
        "train", "--dataset", str(data), "--eval-sample", "4", "--eval-captions", "0",
        "--metric-for-best-model", "loss", "--encoder-model", "scratch:siglip-tiny", "--decoder-model", str(lm),
        "--max-steps", str(max_steps), "--batch-size", "4", "--eval-steps", "2", "--save-steps", "2",
        "--logging-steps", "1", "--warmup-steps", "1", "--device", "cpu", "--precision", "fp32",
        "--save-dir", str(save_dir), *extra,
    ]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def losses(folder: Path) -> dict[str, float]:
    """``loss@step`` and ``eval_loss@step`` from a saved model's training log."""
    log = json.loads((Path(folder) / "training_log.json").read_text())["log_history"]
    found = {}
    for entry in log:
        for key in ("loss", "eval_loss"):
            if key in entry:
                found[f"{key}@{entry['step']}"] = float(entry[key])
    return found


def assert_same_model(expected: Path, actual: Path, tolerance: float = TOLERANCE) -> float:
    """Same weights and the same per-step losses within ``tolerance``; returns the largest weight difference."""
    a, b = weights(expected), weights(actual)
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= tolerance, f"weights differ by {worst}"
    la, lb = losses(expected), losses(actual)
    assert la.keys() == lb.keys(), (sorted(la), sorted(lb))
    for key in la:
        assert abs(la[key] - lb[key]) <= tolerance, (key, la[key], lb[key])
    return worst
