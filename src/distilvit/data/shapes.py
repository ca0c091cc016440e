"""``shapes``: a procedural caption dataset generated on the fly (no files shipped).

Each image is a plain white square with 1 to 3 objects. The canvas is split into three equal
vertical columns; every object sits in its own, randomly chosen column (its centre jittered a little
inside the column) at a random height, fully inside the canvas, so objects never overlap. An object
has a colour (:data:`COLOURS`), a shape (:data:`SHAPES`) and a size (``small`` ~ 0.16, ``large``
~ 0.30 of the image side, as diameter or side length).

The caption lists the objects from left to right, each as ``"a {size} {colour} {shape}"``, joined by
``" left of "``, lower case, without a final period::

    a small red circle left of a large blue square left of a small yellow triangle

Compositional generalisation: the colour-shape pairs in :data:`HELD_OUT_PAIRS` never appear in
``train``. In ``validation`` and ``test`` about half the scenes contain one held-out pair; the
others are drawn like ``train``.

Determinism: scene ``i`` of a split depends only on the seed, the split name and ``i`` (and, for
the rare scene that would repeat one of an earlier split, on the earlier splits: such scenes are
redrawn, so no image is shared between ``train``, ``validation`` and ``test``).
``generate_shapes(sample=N)`` gives the first N scenes; ``load_caption_dataset(["shapes"], split,
sample=N)`` a seeded subset.
"""

from __future__ import annotations

import functools
import io
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
from PIL import Image, ImageDraw

from distilvit.data.rows import SourceRows, build_dataset
from distilvit.data.schema import SPLITS, check_split
from distilvit.errors import DataError

#: Object colours (pure, saturated RGB).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 170, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 210, 0),
    "purple": (128, 0, 160),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: Object size as a fraction of the image side (diameter or side length).
SIZES: dict[str, float] = {"small": 0.16, "large": 0.30}

#: Colour-shape pairs never seen in ``train``.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (("purple", "circle"), ("yellow", "triangle"))

#: Colour-shape pairs of ``train`` scenes.
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (colour, shape)
    for colour in COLOURS
    for shape in SHAPES
    if (colour, shape) not in HELD_OUT_PAIRS
)

BACKGROUND = (255, 255, 255)
NUM_COLUMNS = 3
MIN_IMAGE_SIZE = 32
_JITTER = 0.15  # largest centre jitter, as a fraction of the column width
_HELD_OUT_RATE = 0.5
_MAX_ATTEMPTS = 1000

_OBJECT = re.compile(
    rf"a ({'|'.join(SIZES)}) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})"
)


@dataclass(frozen=True)
class ShapesConfig:
    """Size and seed of the ``shapes`` dataset."""

    image_size: int = 64
    train_size: int = 10000
    validation_size: int = 200
    test_size: int = 200
    seed: int = 42

    def __post_init__(self) -> None:
        if self.image_size < MIN_IMAGE_SIZE:
            raise DataError(
                f"shapes image_size must be at least {MIN_IMAGE_SIZE}, got {self.image_size}"
            )
        for split in SPLITS:
            if self.split_size(split) < 0:
                raise DataError(f"shapes {split}_size must not be negative")

    def split_size(self, split: str) -> int:
        """Number of scenes of ``split``."""
        sizes = {
            "train": self.train_size,
            "validation": self.validation_size,
            "test": self.test_size,
        }
        return sizes[check_split(split)]


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene; ``left``, ``top`` and ``side`` are in pixels (its bounding box)."""

    size: str
    colour: str
    shape: str
    left: int
    top: int
    side: int

    @property
    def center(self) -> tuple[int, int]:
        """A pixel inside the object (the centre of its bounding box)."""
        return self.left + self.side // 2, self.top + self.side // 2

    @property
    def phrase(self) -> str:
        """``"a {size} {colour} {shape}"``."""
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """The objects of one image, from left to right."""

    objects: tuple[ShapeObject, ...]

    @property
    def caption(self) -> str:
        """The caption of the scene (see the module docstring)."""
        return " left of ".join(obj.phrase for obj in self.objects)

    @property
    def has_held_out_pair(self) -> bool:
        """Whether an object has a colour-shape pair of :data:`HELD_OUT_PAIRS`."""
        return any((obj.colour, obj.shape) in HELD_OUT_PAIRS for obj in self.objects)


def parse_shapes_caption(caption: str) -> list[tuple[str, str, str]]:
    """The ``(size, colour, shape)`` of every object of a shapes caption, left to right.

    Case, surrounding and repeated whitespace and one final period are tolerated; anything else
    outside the grammar raises :class:`ValueError`.
    """
    text = " ".join(str(caption).split()).lower()
    if text.endswith("."):
        text = text[:-1].rstrip()
    if not text:
        raise ValueError("not a shapes caption: empty")
    objects = []
    for part in text.split(" left of "):
        match = _OBJECT.fullmatch(part)
        if match is None:
            raise ValueError(f"not a shapes caption: {caption!r} (cannot parse {part!r})")
        objects.append((match.group(1), match.group(2), match.group(3)))
    return objects


def shapes_scenes(config: ShapesConfig, split: str) -> tuple[Scene, ...]:
    """All scenes of ``split`` (cached)."""
    check_split(split)
    return _scenes(config, split)


@functools.lru_cache(maxsize=16)
def _scenes(config: ShapesConfig, split: str) -> tuple[Scene, ...]:
    """Scenes of ``split``, redrawing any that repeats a scene of an earlier split."""
    earlier: set[Scene] = set()
    for previous in SPLITS[: SPLITS.index(split)]:
        earlier.update(_scenes(config, previous))
    scenes = []
    for index in range(config.split_size(split)):
        rng = random.Random(f"distilvit-shapes/{config.seed}/{split}/{index}")
        held_out = split != "train" and rng.random() < _HELD_OUT_RATE
        scene = _sample_scene(rng, config.image_size, held_out)
        attempts = 1
        while scene in earlier:
            if attempts >= _MAX_ATTEMPTS:
                raise DataError(f"shapes: cannot draw {split} scene {index} unlike earlier splits")
            scene = _sample_scene(rng, config.image_size, held_out)
            attempts += 1
        scenes.append(scene)
    return tuple(scenes)


def _sample_scene(rng: random.Random, image_size: int, held_out: bool) -> Scene:
    """Draw a scene; with ``held_out`` one object gets a held-out colour-shape pair."""
    count = rng.randint(1, NUM_COLUMNS)
    columns = sorted(rng.sample(range(NUM_COLUMNS), count))
    pairs = [rng.choice(TRAIN_PAIRS) for _ in columns]
    if held_out:
        pairs[rng.randrange(count)] = rng.choice(HELD_OUT_PAIRS)
    objects = []
    for column, (colour, shape) in zip(columns, pairs):
        size = rng.choice(tuple(SIZES))
        objects.append(_place(rng, image_size, column, size, colour, shape))
    return Scene(tuple(objects))


def _place(
    rng: random.Random, image_size: int, column: int, size: str, colour: str, shape: str
) -> ShapeObject:
    """Put an object in ``column``: centre jittered inside the column, random height."""
    side = max(2, round(SIZES[size] * image_size))
    width = image_size / NUM_COLUMNS
    start, end = column * width, (column + 1) * width
    slack = (width - side) / 2
    jitter = rng.uniform(-1.0, 1.0) * min(_JITTER * width, slack)
    lowest, highest = math.ceil(start), math.floor(end) - side
    left = min(max(round(start + slack + jitter), lowest), highest)
    top = rng.randint(0, image_size - side)
    return ShapeObject(size, colour, shape, left, top, side)


def render_scene(
    scene: Scene, image_size: int, fills: Sequence[tuple[int, int, int] | None] | None = None
) -> Image.Image:
    """Draw ``scene`` on a white ``image_size`` x ``image_size`` RGB image.

    ``fills`` (one RGB or ``None`` per object) paints objects in other colours than their names say; objects
    may also have one of :data:`PRETRAINING_SHAPES`. Both serve encoder pretraining only
    (:mod:`distilvit.training.shapes_encoder`); dataset scenes use neither.
    """
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for index, obj in enumerate(scene.objects):
        fill = fills[index] if fills is not None and fills[index] is not None else COLOURS[obj.colour]
        _draw_object(draw, obj, tuple(fill))
    return image


#: Shapes outside the caption vocabulary, drawn only when pretraining encoders (to learn colour apart from shape).
PRETRAINING_SHAPES: tuple[str, ...] = ("diamond", "hexagon", "cross")


def _draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject, fill: tuple[int, int, int]) -> None:
    left, top, last = obj.left, obj.top, obj.side - 1
    right, bottom = left + last, top + last
    mid_x, mid_y = left + last / 2, top + last / 2
    if obj.shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((left, top, right, bottom), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(mid_x, top), (left, bottom), (right, bottom)], fill=fill)
    elif obj.shape == "diamond":
        draw.polygon([(mid_x, top), (right, mid_y), (mid_x, bottom), (left, mid_y)], fill=fill)
    elif obj.shape == "hexagon":
        draw.regular_polygon((mid_x, mid_y, last / 2), 6, fill=fill)
    elif obj.shape == "cross":
        third = last / 3
        draw.rectangle((left + third, top, right - third, bottom), fill=fill)
        draw.rectangle((left, top + third, right, bottom - third), fill=fill)
    else:
        raise DataError(f"cannot draw shape {obj.shape!r}")


def _png(scene: Scene, image_size: int) -> bytes:
    """The scene as PNG bytes."""
    buffer = io.BytesIO()
    render_scene(scene, image_size).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def shapes_image_id(split: str, index: int) -> str:
    """The image id of scene ``index`` of ``split`` (``shapes-train-000123``)."""
    return f"shapes-{split}-{index:06d}"


class ShapesImageStore:
    """Renders the scenes of one split only when their images are needed."""

    def __init__(self, config: ShapesConfig, split: str):
        self._config = config
        self._scenes = shapes_scenes(config, split)

    def values(self, positions: Sequence[int]) -> list[object]:
        size = self._config.image_size
        return [{"bytes": _png(self._scenes[p], size), "path": None} for p in positions]

    def dataset(self, positions, captions, image_ids, source) -> datasets.Dataset:
        return build_dataset(self.values(positions), captions, image_ids, source)


def load_shapes_rows(split: str, config: ShapesConfig, source: str = "shapes") -> SourceRows:
    """The rows of ``split`` for :func:`distilvit.data.load_caption_dataset`."""
    scenes = shapes_scenes(config, split)
    return SourceRows(
        source=source,
        store=ShapesImageStore(config, split),
        positions=list(range(len(scenes))),
        captions=[[scene.caption] for scene in scenes],
        image_ids=[shapes_image_id(split, index) for index in range(len(scenes))],
        verified=True,
        total=sum(config.split_size(name) for name in SPLITS),
    )


def generate_shapes(
    split: str = "train", config: ShapesConfig | None = None, *, sample: int | None = None
) -> datasets.Dataset:
    """The first ``sample`` scenes (all by default) of ``split`` as a caption dataset.

    Columns as in ``docs/design.md``: ``image`` (PNG), ``captions`` (one caption), ``image_id``
    (``shapes-<split>-<index>``) and ``source`` (``"shapes"``).
    """
    config = config or ShapesConfig()
    rows = load_shapes_rows(split, config)
    count = len(rows) if sample is None else max(0, min(sample, len(rows)))
    dataset = rows.to_dataset(list(range(count)))
    return dataset.cast_column("image", datasets.Image())
