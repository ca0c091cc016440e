"""Seeded, per-image train/validation/test splits and reproducible sampling.

Sources that do not say which split an image belongs to get one from a hash of the seed and the
image id: ``train`` 90 %, ``validation`` 5 %, ``test`` 5 %. The split of an image depends only on
``(seed, image_id)``, so adding rows to a source, removing rows, or changing ``sample`` never moves
an image from one split to another, and the same image can never be in two splits.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Fractions of the seeded split, in order; they sum to 1.
SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (
    ("train", 0.90),
    ("validation", 0.05),
    ("test", 0.05),
)

#: Split names found in sources, mapped to ours (Karpathy: ``val`` and ``restval``).
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "restval": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


def canonical_split(name: object) -> str | None:
    """Map a split name found in a source (``val``, ``restval``, ...) to ours, or ``None``."""
    if not isinstance(name, str):
        return None
    return SPLIT_ALIASES.get(name.strip().lower())


def hash_fraction(seed: int, key: str) -> float:
    """A number in ``[0, 1)`` that depends only on ``seed`` and ``key`` (stable across runs)."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def seeded_split(image_id: str, seed: int) -> str:
    """The split of ``image_id`` under ``seed`` (90/5/5, see :data:`SPLIT_FRACTIONS`)."""
    value = hash_fraction(seed, image_id)
    cumulative = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        cumulative += fraction
        if value < cumulative:
            return name
    return SPLIT_FRACTIONS[-1][0]


def resolve_split(given: object, image_id: str, seed: int) -> str:
    """The split of one row: the source's own split if it names a known one, else the seeded one."""
    return canonical_split(given) or seeded_split(image_id, seed)


def sample_order(num_rows: int, sample: int | None, seed: int) -> list[int]:
    """The order in which rows are considered for the result.

    Without ``sample`` it is the natural order. With ``sample`` it is a seeded permutation; the
    first ``sample`` usable rows of it are kept, so a larger sample always contains a smaller one.
    """
    if sample is None:
        return list(range(num_rows))
    rng = np.random.default_rng(seed)
    return rng.permutation(num_rows).tolist()
