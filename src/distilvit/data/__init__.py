"""Caption datasets: the public Hub sets, local sources, the procedural ``shapes`` set.

The data contract is in ``docs/design.md``. Main entry points:

* :func:`load_caption_dataset` -- specs (registry names, ``all``, ``shapes``, local paths) to one
  :class:`datasets.Dataset` with the columns ``image``, ``captions``, ``image_id``, ``source``.
* :func:`available_datasets` -- the registered names.
* :func:`open_image` -- open one user image as RGB (clear
  :class:`~distilvit.errors.DataError` when it cannot be read).
* :class:`ShapesConfig`, :func:`generate_shapes`, :func:`parse_shapes_caption`,
  :data:`HELD_OUT_PAIRS` -- the ``shapes`` set.

Module map: ``schema`` (columns, captions), ``splits`` (seeded splits, sampling), ``images``
(opening and checking images), ``rows`` (per-source rows and image stores), ``validation``
(dropping unreadable images, sampling, assembling), ``registry`` and ``hub`` (Hub sets),
``imagefolder``, ``caption_json`` and ``saved`` (local sources), ``shapes``, ``loader``.
"""

from distilvit.data.images import DEFAULT_MAX_PIXELS, open_image
from distilvit.data.loader import load_caption_dataset
from distilvit.data.registry import REGISTRY, HubDataset, available_datasets
from distilvit.data.schema import COLUMNS, SPLITS, caption_features
from distilvit.data.shapes import (
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPES,
    SIZES,
    ShapesConfig,
    generate_shapes,
    parse_shapes_caption,
    shapes_scenes,
)

__all__ = [
    "COLOURS",
    "COLUMNS",
    "DEFAULT_MAX_PIXELS",
    "HELD_OUT_PAIRS",
    "REGISTRY",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "HubDataset",
    "ShapesConfig",
    "available_datasets",
    "caption_features",
    "generate_shapes",
    "load_caption_dataset",
    "open_image",
    "parse_shapes_caption",
    "shapes_scenes",
]
