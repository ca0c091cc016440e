"""Pretrain a small vision encoder on the ``shapes`` scenes' attributes (``distilvit shapes-encoder``).

A captioner's encoder is normally pretrained (SigLIP, CLIP) and frozen; learning to see from caption
gradients alone, through a 135M LM, costs most of a CPU demo's budget. This gives the built-in data a
pretrained encoder of its own in about a minute: a ``scratch:`` preset is trained to name, for each of the
scene's three columns, the object's colour, shape and size (or that the column is empty), from the same
feature layer the captioner will read. Only the ``train`` split is used, so the held-out colour-shape
pairs stay unseen; the head reads colour and shape separately, so the encoder is pushed to represent them
separately. The result is a plain Hugging Face encoder folder (``save_pretrained`` + image processor) that
``distilvit train --encoder-model DIR`` loads like any pretrained encoder (frozen by default).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from distilvit.data.shapes import (
    BACKGROUND,
    COLOURS,
    HELD_OUT_PAIRS,
    NUM_COLUMNS,
    PRETRAINING_SHAPES,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    ShapesConfig,
    render_scene,
    shapes_scenes,
)
from distilvit.errors import DistilViTError
from distilvit.evaluation.plots import plot_training_curves
from distilvit.model.presets import is_preset, preset_encoder
from distilvit.model.vision import build_vision_model, extract_features, hidden_state_count

logger = logging.getLogger(__name__)

#: Attribute vocabularies; class 0 of each means "no object in this column".
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("none", *COLOURS),
    "shape": ("none", *SHAPES),
    "size": ("none", *SIZES),
}
#: Label of an attribute that is not to be learnt from an image (a repainted object's colour).
IGNORE = -100
#: Smallest RGB distance of a repainting colour from the named colours (the nearest two named ones are ~165 apart).
OFF_PALETTE_DISTANCE = 100.0


@dataclass
class ShapesEncoderArgs:
    """Options of ``distilvit shapes-encoder``."""

    out: str
    encoder: str = "scratch:resnet-tiny"
    feature_layer: int = -1
    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 3e-3
    eval_size: int = 200
    augment_rate: float = 0.5
    seed: int = 42


def _column(obj: ShapeObject, image_size: int) -> int:
    """The scene column (0, 1, 2) holding ``obj``'s centre."""
    return min(int((obj.left + obj.side / 2) * NUM_COLUMNS / image_size), NUM_COLUMNS - 1)


def scene_labels(scene: Scene, image_size: int) -> torch.Tensor:
    """``(columns, attributes)`` class indices of ``scene`` (0 where a column is empty).

    Attributes are in :data:`ATTRIBUTES` order (colour, shape, size).
    """
    labels = torch.zeros(NUM_COLUMNS, len(ATTRIBUTES), dtype=torch.long)
    for obj in scene.objects:
        column = _column(obj, image_size)
        values = (obj.colour, obj.shape, obj.size)
        for a, (vocab, value) in enumerate(zip(ATTRIBUTES.values(), values)):
            labels[column, a] = vocab.index(value)
    return labels


class ColumnAttributeHead(nn.Module):
    """Pools a ``(batch, tokens, width)`` feature grid per column and classifies each column's attributes."""

    def __init__(self, width: int, grid: tuple[int, int]):
        super().__init__()
        rows, cols = grid
        if cols % NUM_COLUMNS:
            raise DistilViTError(
                f"the encoder's feature grid is {rows}x{cols}; its width must split into {NUM_COLUMNS} columns. "
                "Choose another --feature-layer."
            )
        self.grid = grid
        self.classifiers = nn.ModuleDict({name: nn.Linear(width, len(v)) for name, v in ATTRIBUTES.items()})

    @classmethod
    def for_encoder(cls, encoder: nn.Module, image_side: int, feature_layer: int) -> ColumnAttributeHead:
        """A head for ``encoder``'s features at ``feature_layer`` (its token grid must be square)."""
        states = hidden_state_count(encoder.config)
        if not -states <= feature_layer < states:
            raise DistilViTError(f"--feature-layer {feature_layer} is out of range for this encoder "
                                 f"(-1 = last, or an index into its {states} hidden states)")
        with torch.no_grad():
            probe = extract_features(encoder, torch.zeros(1, 3, image_side, image_side), feature_layer=feature_layer)
        tokens, width = probe.shape[1:]
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise DistilViTError(f"--feature-layer {feature_layer} gives {tokens} tokens, not a square grid; "
                                 "choose another layer")
        return cls(width, (side, side))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``features`` ``(batch, rows * cols, width)`` -> logits ``(batch, columns, classes)`` per attribute."""
        rows, cols = self.grid
        batch, _, width = features.shape
        grid = features.reshape(batch, rows, NUM_COLUMNS, cols // NUM_COLUMNS, width)
        pooled = grid.mean(dim=(1, 3))  # (batch, columns, width)
        return {name: layer(pooled) for name, layer in self.classifiers.items()}


def off_palette_colour(rng: random.Random, min_distance: float = OFF_PALETTE_DISTANCE) -> tuple[int, int, int]:
    """A random RGB colour at least ``min_distance`` away from every named colour and from the background."""
    avoid = [*COLOURS.values(), BACKGROUND]
    while True:
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if min(math.dist(colour, other) for other in avoid) >= min_distance:
            return colour


def _augment(scene: Scene, label: torch.Tensor, rng: random.Random, rate: float, image_size: int):
    """Repaint some objects off-palette (colour unlabelled) and redraw some as off-vocabulary shapes (shape unlabelled).

    Each object independently: with probability ``rate`` a random off-palette colour, else with probability
    ``rate`` a shape of :data:`PRETRAINING_SHAPES`. Neither makes a held-out colour-shape pair.
    """
    objects, fills = [], []
    for obj in scene.objects:
        column = _column(obj, image_size)
        fill = None
        if rng.random() < rate:
            fill = off_palette_colour(rng)
            label[column, 0] = IGNORE
        elif rng.random() < rate:
            obj = dataclasses.replace(obj, shape=rng.choice(PRETRAINING_SHAPES))
            label[column, 1] = IGNORE
        objects.append(obj)
        fills.append(fill)
    return Scene(tuple(objects)), fills


def _batch(scenes, indices, processor, image_size, rng: random.Random | None = None, augment_rate: float = 0.0):
    """Pixels and labels of ``scenes[indices]``, augmented by :func:`_augment` when ``rng`` is given."""
    images, labels = [], []
    for i in indices:
        scene, label = scenes[i], scene_labels(scenes[i], image_size)
        fills = None
        if rng is not None and augment_rate > 0:
            scene, fills = _augment(scene, label, rng, augment_rate, image_size)
        images.append(render_scene(scene, image_size, fills))
        labels.append(label)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    return pixels, torch.stack(labels)


def _loss(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    return sum(
        nn.functional.cross_entropy(logits[name].flatten(0, 1), labels[..., a].flatten())
        for a, name in enumerate(ATTRIBUTES)
    )


@torch.no_grad()
def attribute_accuracy(encoder, head, scenes, processor, image_size, feature_layer, batch_size=100) -> dict:
    """Per-attribute accuracy over occupied columns, overall and on objects of held-out pairs."""
    encoder.eval()
    correct = {name: 0 for name in ATTRIBUTES}
    held_correct = {name: 0 for name in ATTRIBUTES}
    total = held_total = 0
    for start in range(0, len(scenes), batch_size):
        indices = list(range(start, min(start + batch_size, len(scenes))))
        pixels, labels = _batch(scenes, indices, processor, image_size)
        logits = head(extract_features(encoder, pixels, feature_layer=feature_layer))
        occupied = labels[..., 0] > 0
        colours, shapes = ATTRIBUTES["colour"], ATTRIBUTES["shape"]
        held = torch.zeros_like(occupied)
        for pair in HELD_OUT_PAIRS:
            held |= (labels[..., 0] == colours.index(pair[0])) & (labels[..., 1] == shapes.index(pair[1]))
        total += int(occupied.sum())
        held_total += int(held.sum())
        for a, name in enumerate(ATTRIBUTES):
            right = logits[name].argmax(-1) == labels[..., a]
            correct[name] += int((right & occupied).sum())
            held_correct[name] += int((right & held).sum())
    encoder.train()
    result = {name: correct[name] / max(total, 1) for name in ATTRIBUTES}
    result.update({f"held_out_{name}": held_correct[name] / max(held_total, 1) for name in ATTRIBUTES})
    result.update(objects=total, held_out_objects=held_total)
    return result


def pretrain_shapes_encoder(args: ShapesEncoderArgs, shapes_config: ShapesConfig | None = None) -> dict:
    """Train ``args.encoder`` (a ``scratch:`` preset) on shapes attributes; save it to ``args.out``.

    Returns the summary also written to ``OUT/shapes_encoder.json``.
    """
    if not is_preset(args.encoder):
        raise DistilViTError(f"--encoder must be a scratch: preset (e.g. scratch:resnet-tiny), got {args.encoder!r}")
    if args.steps < 1 or args.batch_size < 1 or args.eval_size < 1:
        raise DistilViTError("--steps, --batch-size and --eval-size must be positive integers")
    if not 0.0 <= args.augment_rate <= 1.0:
        raise DistilViTError(f"--augment-rate must be between 0 and 1, got {args.augment_rate}")
    config = shapes_config or ShapesConfig()
    torch.manual_seed(args.seed)
    vision_config, processor = preset_encoder(args.encoder)
    encoder = build_vision_model(vision_config)
    side = processor.size["height"]
    head = ColumnAttributeHead.for_encoder(encoder, side, args.feature_layer)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.learning_rate, total_steps=args.steps,
                                                   pct_start=0.1)
    train = shapes_scenes(config, "train")
    rng = random.Random(args.seed)
    order: list[int] = []
    started = time.perf_counter()
    losses = []
    encoder.train()
    for _ in tqdm(range(args.steps), desc="shapes encoder", unit="step"):
        if len(order) < args.batch_size:
            order += rng.sample(range(len(train)), len(train))
        indices, order = order[: args.batch_size], order[args.batch_size :]
        pixels, labels = _batch(train, indices, processor, config.image_size, rng, args.augment_rate)
        loss = _loss(head(extract_features(encoder, pixels, feature_layer=args.feature_layer)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(round(loss.item(), 4))
    seconds = time.perf_counter() - started
    evaluation = shapes_scenes(config, "validation")[: args.eval_size]
    accuracy = attribute_accuracy(encoder, head, evaluation, processor, config.image_size, args.feature_layer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(out)
    processor.save_pretrained(out)
    summary = {"args": asdict(args), "train_seconds": round(seconds, 1), "final_loss": losses[-1],
               "validation_accuracy": accuracy, "losses": losses}
    (out / "shapes_encoder.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_training_curves([{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)],
                         out / "shapes_encoder_loss.png", title="shapes encoder pretraining (attribute loss)")
    logger.info("shapes encoder: %s", {k: round(v, 4) for k, v in accuracy.items()})
    return summary
