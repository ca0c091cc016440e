"""`distilvit shapes-encoder`: attribute labels, augmentation that never shows a held-out pair, training that
learns, and an encoder folder that `train --encoder-model DIR` loads (frozen) like any pretrained encoder."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from distilvit.cli.main import main
from distilvit.data.shapes import (
    BACKGROUND,
    COLOURS,
    HELD_OUT_PAIRS,
    PRETRAINING_SHAPES,
    Scene,
    ShapeObject,
    ShapesConfig,
    render_scene,
    shapes_scenes,
)
from distilvit.errors import DistilViTError
from distilvit.training.shapes_encoder import (
    ATTRIBUTES,
    IGNORE,
    OFF_PALETTE_DISTANCE,
    ShapesEncoderArgs,
    _augment,
    off_palette_colour,
    pretrain_shapes_encoder,
    scene_labels,
)

SMALL = ShapesConfig(train_size=300, validation_size=40, test_size=10)


def test_scene_labels_name_each_columns_object():
    scene = Scene((ShapeObject("small", "red", "circle", 2, 5, 10), ShapeObject("large", "blue", "triangle", 44, 0, 19)))
    labels = scene_labels(scene, 64)
    colour, shape, size = (ATTRIBUTES[k] for k in ("colour", "shape", "size"))
    assert labels.tolist() == [
        [colour.index("red"), shape.index("circle"), size.index("small")],
        [0, 0, 0],  # empty middle column
        [colour.index("blue"), shape.index("triangle"), size.index("large")],
    ]


def test_augmentation_never_shows_a_held_out_pair_and_unlabels_what_it_changes():
    rng = random.Random(0)
    scenes = shapes_scenes(SMALL, "train")
    repainted = reshaped = 0
    for scene in scenes[:200]:
        labels = scene_labels(scene, 64)
        new_scene, fills = _augment(scene, labels, rng, 0.5, 64)
        for obj, new, fill, column in zip(scene.objects, new_scene.objects, fills, _columns(scene)):
            if fill is not None:  # repainted: off-palette, colour not labelled, shape kept and labelled
                repainted += 1
                assert min(math.dist(fill, c) for c in [*COLOURS.values(), BACKGROUND]) >= OFF_PALETTE_DISTANCE
                assert labels[column, 0] == IGNORE and labels[column, 1] > 0 and new.shape == obj.shape
            elif new.shape != obj.shape:  # redrawn as a shape outside the caption vocabulary, colour kept
                reshaped += 1
                assert new.shape in PRETRAINING_SHAPES and labels[column, 1] == IGNORE and labels[column, 0] > 0
            else:
                assert (obj.colour, obj.shape) not in HELD_OUT_PAIRS
                assert labels[column].min() > 0
    assert repainted > 50 and reshaped > 20


def _columns(scene: Scene) -> list[int]:
    return [min(int((o.left + o.side / 2) * 3 / 64), 2) for o in scene.objects]


def test_off_palette_colours_are_far_from_every_named_colour():
    rng = random.Random(1)
    for _ in range(100):
        colour = off_palette_colour(rng)
        assert all(math.dist(colour, named) >= OFF_PALETTE_DISTANCE for named in COLOURS.values())


@pytest.mark.parametrize("shape", PRETRAINING_SHAPES)
def test_pretraining_shapes_are_drawn_inside_their_box(shape):
    scene = Scene((ShapeObject("large", "green", shape, 10, 10, 20),))
    pixels = np.asarray(render_scene(scene, 64, fills=[(10, 20, 30)]))
    painted = np.argwhere((pixels == (10, 20, 30)).all(-1))
    assert len(painted) > 100
    assert painted.min() >= 10 and painted.max() <= 29


def test_unknown_shape_is_a_clear_error():
    with pytest.raises(DistilViTError, match="cannot draw shape 'star'"):
        render_scene(Scene((ShapeObject("large", "green", "star", 10, 10, 20),)), 64)


def test_pretraining_learns_and_saves_an_encoder_that_train_loads_frozen(tmp_path, tiny_lm):
    out = tmp_path / "encoder"
    summary = pretrain_shapes_encoder(ShapesEncoderArgs(out=str(out), steps=40, batch_size=32, eval_size=40), SMALL)
    accuracy = summary["validation_accuracy"]
    assert summary["losses"][-1] < summary["losses"][0] / 2
    assert accuracy["colour"] > 0.6 and accuracy["size"] > 0.6  # chance: 1/5 and 1/2
    assert json.loads((out / "shapes_encoder.json").read_text())["validation_accuracy"] == accuracy
    assert (out / "shapes_encoder_loss.png").stat().st_size > 1000

    from distilvit.model import CaptionerSpec, build_captioner

    model, processor = build_captioner(CaptionerSpec(encoder=str(out), decoder=str(tiny_lm)))
    assert not any(p.requires_grad for p in model.vision_model.parameters())  # pretrained: frozen by default
    from safetensors.torch import load_file

    saved = load_file(out / "model.safetensors")
    loaded = model.vision_model.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved if k in loaded)
    pixels = processor.pixel_values([render_scene(shapes_scenes(SMALL, "test")[0], 64)])
    assert model.encode_images(pixels).shape[1:] == (9, 256)  # the 3x3 grid of the last stage


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--augment-rate", "1.5"], "--augment-rate must be between 0 and 1"),
        (["--steps", "0"], "must be positive integers"),
        (["--encoder", "google/siglip-base-patch16-224"], "must be a scratch: preset"),
        (["--feature-layer", "9"], "out of range"),
        (["--encoder", "scratch:siglip-tiny"], "must split into 3 columns"),
    ],
)
def test_bad_options_give_a_clear_error(tmp_path, argv, message, capsys):
    assert main(["shapes-encoder", "--out", str(tmp_path / "enc"), "--steps", "1", *argv]) != 0
    assert message in capsys.readouterr().err
