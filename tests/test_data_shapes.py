"""The procedural ``shapes`` dataset: grammar, determinism, held-out pairs, pixels."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from distilvit.data import (
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPES,
    SIZES,
    ShapesConfig,
    generate_shapes,
    load_caption_dataset,
    parse_shapes_caption,
    shapes_scenes,
)
from distilvit.data.shapes import render_scene
from distilvit.errors import DataError

SMALL = ShapesConfig(train_size=600, validation_size=200, test_size=200)
OBJECT = r"a (small|large) (red|green|blue|yellow|purple) (circle|square|triangle)"
GRAMMAR = re.compile(rf"{OBJECT}( left of {OBJECT}){{0,2}}")


def test_default_config_and_vocabulary():
    config = ShapesConfig()
    sizes = (config.train_size, config.validation_size, config.test_size)
    assert (config.image_size, sizes, config.seed) == (64, (10000, 200, 200), 42)
    assert set(COLOURS) == {"red", "green", "blue", "yellow", "purple"}
    assert COLOURS["purple"] == (128, 0, 160)
    assert SHAPES == ("circle", "square", "triangle")
    assert set(SIZES) == {"small", "large"}
    assert HELD_OUT_PAIRS == (("purple", "circle"), ("yellow", "triangle"))


def test_captions_follow_the_grammar():
    for split in ("train", "validation", "test"):
        for scene in shapes_scenes(SMALL, split):
            caption = scene.caption
            assert GRAMMAR.fullmatch(caption), caption
            assert caption == caption.lower() and not caption.endswith(".")


def test_caption_lists_objects_left_to_right():
    for scene in shapes_scenes(SMALL, "train")[:200]:
        lefts = [obj.left for obj in scene.objects]
        assert lefts == sorted(lefts)
        assert parse_shapes_caption(scene.caption) == [(o.size, o.colour, o.shape) for o in scene.objects]


def test_object_counts_are_uniform_over_one_to_three():
    counts = Counter(len(scene.objects) for scene in shapes_scenes(SMALL, "train"))
    assert set(counts) == {1, 2, 3}
    assert all(150 < count < 250 for count in counts.values())


def test_objects_are_inside_their_own_column_and_the_canvas():
    size = SMALL.image_size
    for scene in shapes_scenes(SMALL, "train"):
        columns = []
        for obj in scene.objects:
            assert 0 <= obj.left and obj.left + obj.side <= size
            assert 0 <= obj.top and obj.top + obj.side <= size
            column = int(obj.left // (size / 3))
            assert obj.left + obj.side <= (column + 1) * size / 3 + 1e-9
            columns.append(column)
        assert len(set(columns)) == len(columns)


def test_scenes_are_deterministic_and_independent_of_split_size():
    again = shapes_scenes(ShapesConfig(train_size=600, validation_size=200, test_size=200), "train")
    assert shapes_scenes(SMALL, "train") == again
    shorter = shapes_scenes(ShapesConfig(train_size=50), "train")
    assert shorter == shapes_scenes(SMALL, "train")[:50]
    other_seed = shapes_scenes(ShapesConfig(train_size=50, seed=7), "train")
    assert other_seed != shorter


def test_held_out_pairs_never_in_train_and_about_half_of_test():
    for scene in shapes_scenes(ShapesConfig(), "train"):
        assert not scene.has_held_out_pair, scene.caption
    for split in ("validation", "test"):
        scenes = shapes_scenes(SMALL, split)
        share = sum(scene.has_held_out_pair for scene in scenes) / len(scenes)
        assert 0.35 < share < 0.65
        seen = {(o.colour, o.shape) for s in scenes for o in s.objects}
        assert set(HELD_OUT_PAIRS) <= seen


def test_splits_never_share_an_image():
    # With the default sizes some validation/test draws repeat a train scene; they must be redrawn.
    config = ShapesConfig()
    images = {
        split: {
            render_scene(scene, config.image_size).tobytes()
            for scene in shapes_scenes(config, split)
        }
        for split in ("train", "validation", "test")
    }
    assert not images["train"] & images["validation"]
    assert not images["train"] & images["test"]
    assert not images["validation"] & images["test"]


def test_pixels_match_the_caption():
    ds = generate_shapes("test", SMALL, sample=60)
    scenes = shapes_scenes(SMALL, "test")[:60]
    for row, scene in zip(ds, scenes):
        image = row["image"].convert("RGB")
        assert row["captions"] == [scene.caption]
        for obj, (size, colour, shape) in zip(scene.objects, parse_shapes_caption(row["captions"][0])):
            assert image.getpixel(obj.center) == COLOURS[colour]
            assert (obj.size, obj.shape) == (size, shape)
        coloured = sum(1 for pixel in image.getdata() if pixel != (255, 255, 255))
        area = sum(o.side * o.side for o in scene.objects)
        assert 0.4 * area <= coloured <= area


def test_shapes_are_distinguishable_by_pixel_area():
    def filled(shape, size):
        for scene in shapes_scenes(SMALL, "train"):
            for obj in scene.objects:
                if (obj.shape, obj.size) == (shape, size) and len(scene.objects) == 1:
                    image = render_scene(scene, SMALL.image_size)
                    return sum(1 for p in image.getdata() if p != (255, 255, 255)) / obj.side**2
        raise AssertionError("no such scene")

    for size in SIZES:
        assert filled("square", size) > 0.95
        assert 0.7 < filled("circle", size) < 0.9
        assert 0.4 < filled("triangle", size) < 0.65
    small = [o.side for s in shapes_scenes(SMALL, "train") for o in s.objects if o.size == "small"]
    large = [o.side for s in shapes_scenes(SMALL, "train") for o in s.objects if o.size == "large"]
    assert max(small) * 1.5 < min(large)


def test_parse_tolerates_case_spaces_and_final_period():
    assert parse_shapes_caption("  A Small RED circle  left of a large blue square. ") == [
        ("small", "red", "circle"),
        ("large", "blue", "square"),
    ]


@pytest.mark.parametrize(
    "caption",
    [
        "",
        "a red circle",
        "a small red circle right of a large blue square",
        "a tiny red circle",
        "a small red circle left of",
        "hello",
    ],
)
def test_parse_rejects_malformed_captions(caption):
    with pytest.raises(ValueError, match="not a shapes caption"):
        parse_shapes_caption(caption)


def test_load_caption_dataset_shapes_columns_and_ids():
    ds = load_caption_dataset(["shapes"], "validation")
    assert len(ds) == 200
    assert ds.column_names == ["image", "captions", "image_id", "source"]
    assert ds[0]["image_id"] == "shapes-validation-000000"
    assert set(ds["source"]) == {"shapes"}
    first = ds[0]["image"]
    assert first.format == "PNG" and first.size == (64, 64)
    assert ds[0]["captions"] == [shapes_scenes(ShapesConfig(), "validation")[0].caption]


def test_load_caption_dataset_shapes_sample_is_seeded_and_stable():
    first = load_caption_dataset(["shapes"], "train", sample=20)
    assert len(first) == 20
    assert first["image_id"] == load_caption_dataset(["shapes"], "train", sample=20)["image_id"]
    index = int(first[0]["image_id"].rsplit("-", 1)[1])
    assert first[0]["captions"] == [shapes_scenes(ShapesConfig(), "train")[index].caption]


def test_bad_config_is_a_data_error():
    with pytest.raises(DataError, match="image_size must be at least"):
        ShapesConfig(image_size=8)
    with pytest.raises(DataError, match="must not be negative"):
        ShapesConfig(test_size=-1)


def test_shapes_accuracy_counts_seen_and_held_out_scenes_apart():
    from distilvit.evaluation.shapes_accuracy import shapes_accuracy

    seen = "a small red circle left of a large blue square"
    held_out = "a small purple circle"  # purple circles never appear in train
    references = [[seen], [held_out], [held_out]]
    predictions = [seen, "a small purple square", held_out]
    result = shapes_accuracy(predictions, references)
    assert result["scene_accuracy"] == pytest.approx(2 / 3)
    assert (result["seen_scenes"], result["held_out_scenes"]) == (1, 2)
    assert result["seen_scene_accuracy"] == 1.0
    assert result["held_out_scene_accuracy"] == 0.5
    only_seen = shapes_accuracy([seen], [[seen]])
    assert only_seen["held_out_scene_accuracy"] is None and only_seen["held_out_scenes"] == 0
