"""Caption normalisation, seeded splits and sampling order."""

from __future__ import annotations

from collections import Counter

import pytest

from distilvit.data.schema import check_split, clean_captions, raw_captions
from distilvit.data.splits import canonical_split, sample_order, seeded_split
from distilvit.errors import DataError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("a dog", ["a dog"]),
        (["a dog", "a cat"], ["a dog", "a cat"]),
        (("a dog",), ["a dog"]),
        ('["a dog", "a cat"]', ["a dog", "a cat"]),
        ("[not json", ["[not json"]),
        ([{"raw": "a dog", "tokens": ["a", "dog"]}], ["a dog"]),
        ([["a", "b"], "c"], ["a", "b", "c"]),
    ],
)
def test_raw_captions_accepts_strings_lists_and_json(value, expected):
    assert raw_captions(value) == expected


def test_clean_captions_strips_and_counts_empty():
    kept, removed = clean_captions(["  a dog ", "", "   ", "\ta cat\n"])
    assert kept == ["a dog", "a cat"]
    assert removed == 2


def test_check_split_rejects_unknown_names():
    assert check_split("validation") == "validation"
    with pytest.raises(DataError, match="train, validation, test"):
        check_split("val")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("val", "validation"),
        ("restval", "train"),
        ("TEST", "test"),
        ("dev", "validation"),
        ("x", None),
        (None, None),
    ],
)
def test_canonical_split_maps_source_names(name, expected):
    assert canonical_split(name) == expected


def test_seeded_split_is_deterministic_and_roughly_90_5_5():
    ids = [f"image-{i}" for i in range(20000)]
    first = [seeded_split(i, 42) for i in ids]
    assert first == [seeded_split(i, 42) for i in ids]
    counts = Counter(first)
    assert 0.88 < counts["train"] / len(ids) < 0.92
    assert 0.04 < counts["validation"] / len(ids) < 0.06
    assert 0.04 < counts["test"] / len(ids) < 0.06


def test_seeded_split_depends_on_seed():
    ids = [f"image-{i}" for i in range(2000)]
    assert [seeded_split(i, 42) for i in ids] != [seeded_split(i, 7) for i in ids]


def test_sample_order_is_seeded_and_prefix_stable():
    assert sample_order(5, None, 42) == [0, 1, 2, 3, 4]
    order = sample_order(100, 10, 42)
    assert sorted(order) == list(range(100))
    assert order == sample_order(100, 50, 42)  # the sample size does not change the order
    assert order != sample_order(100, 10, 43)
