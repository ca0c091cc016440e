"""load_caption_dataset: arguments, combining several specs, sampling."""

from __future__ import annotations

import json

import datasets
import pytest

from distilvit.data import caption_features, load_caption_dataset
from distilvit.errors import DataError


@pytest.fixture
def folder(tmp_path, image_bytes):
    """An image folder of 200 images without split information (seeded split)."""
    root = tmp_path / "folder"
    root.mkdir()
    lines = []
    for i in range(200):
        name = f"{i:03d}.png"
        (root / name).write_bytes(image_bytes((i, 0, 0)))
        lines.append(json.dumps({"file_name": name, "caption": f"folder image {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines))
    return root


@pytest.fixture
def karpathy(tmp_path, image_bytes):
    """A Karpathy JSON with 10 train and 10 test images."""
    root = tmp_path / "karpathy"
    root.mkdir()
    entries = []
    for i in range(20):
        name = f"k{i}.png"
        (root / name).write_bytes(image_bytes((0, i, 0)))
        split = "train" if i < 10 else "test"
        entries.append({"filename": name, "split": split, "sentences": [{"raw": f"k {i}"}]})
    path = root / "dataset.json"
    path.write_text(json.dumps({"images": entries}))
    return path


def test_features_are_exactly_the_contract(folder):
    ds = load_caption_dataset([folder], "train")
    assert ds.features == caption_features()
    assert ds.column_names == ["image", "captions", "image_id", "source"]
    assert isinstance(ds.features["image"], datasets.Image)


def test_several_specs_are_concatenated_with_their_source(folder, karpathy):
    alone = load_caption_dataset([folder], "test")
    both = load_caption_dataset([str(folder), karpathy, "shapes"], "test")
    sources = both["source"]
    assert sources.count(str(folder)) == len(alone) > 0
    assert sources.count(str(karpathy)) == 10
    assert sources.count("shapes") == 200
    assert sources.index(str(karpathy)) > sources.index(str(folder))
    assert both.filter(lambda row: row["source"] == str(folder))["image_id"] == alone["image_id"]


def test_a_single_spec_may_be_a_string(karpathy):
    assert len(load_caption_dataset(str(karpathy), "test")) == 10


def test_duplicate_specs_are_loaded_once(karpathy):
    assert len(load_caption_dataset([karpathy, str(karpathy)], "test")) == 10


def test_sample_is_reproducible_and_nested(folder, karpathy):
    specs = [folder, karpathy]
    first = load_caption_dataset(specs, "train", sample=25)
    again = load_caption_dataset(specs, "train", sample=25)
    assert len(first) == 25
    assert first["image_id"] == again["image_id"]
    bigger = set(load_caption_dataset(specs, "train", sample=60)["image_id"])
    assert set(first["image_id"]) <= bigger
    other_seed = load_caption_dataset(specs, "train", sample=25, seed=1)
    assert set(other_seed["image_id"]) != set(first["image_id"])


def test_sample_draws_from_every_source(folder, karpathy):
    ds = load_caption_dataset([folder, karpathy], "train", sample=100)
    assert len(set(ds["source"])) == 2


def test_sample_larger_than_the_split_returns_everything(karpathy):
    assert len(load_caption_dataset([karpathy], "test", sample=1000)) == 10


def test_sampling_does_not_change_splits(folder):
    full = {
        split: set(load_caption_dataset([folder], split)["image_id"])
        for split in ("train", "validation", "test")
    }
    for split in full:
        sampled = set(load_caption_dataset([folder], split, sample=3)["image_id"])
        assert sampled <= full[split]
    assert not full["train"] & (full["validation"] | full["test"])


@pytest.mark.parametrize("sample", [0, -3, 2.5, "10", True])
def test_bad_sample_is_a_data_error(karpathy, sample):
    with pytest.raises(DataError, match="sample must be a positive number"):
        load_caption_dataset([karpathy], "train", sample=sample)


def test_bad_split_is_a_data_error(karpathy):
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_caption_dataset([karpathy], "dev")


def test_no_names_is_a_data_error():
    with pytest.raises(DataError, match="no dataset given"):
        load_caption_dataset([], "train")


def test_unreadable_images_do_not_reduce_a_sample(tmp_path, image_bytes):
    root = tmp_path / "half-broken"
    root.mkdir()
    lines = []
    for i in range(40):
        name = f"{i}.png"
        (root / name).write_bytes(image_bytes((i, 0, 0)) if i % 2 else b"broken")
        lines.append(json.dumps({"file_name": name, "text": "x", "split": "train"}))
    (root / "metadata.jsonl").write_text("\n".join(lines))
    ds = load_caption_dataset([root], "train", sample=15)
    assert len(ds) == 15
    assert all(int(i.split(".")[0]) % 2 for i in ds["image_id"])
