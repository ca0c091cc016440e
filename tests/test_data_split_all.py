"""``split="all"`` (``distilvit eval --split all``): every row of the given sources, and the counts that say how
many rows were loaded out of how many."""

from __future__ import annotations

import json

import pytest

from distilvit.data.loader import RowCounts, load_caption_dataset, load_caption_rows
from distilvit.errors import DataError

SPLITS = ("train", "validation", "test")


def coco_captions_file(folder, image_bytes, count=40):
    """A COCO captions JSON file with ``count`` images (two captions each) beside it; it names no split."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        name = f"{i:012d}.png"
        (folder / name).write_bytes(image_bytes((10 * (i % 25), 0, 0), "PNG"))
        images.append({"id": i, "file_name": name})
        annotations += [{"id": 2 * i + k, "image_id": i, "caption": f"picture {i} caption {k}"} for k in range(2)]
    path = folder / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


@pytest.fixture
def coco40(tmp_path, image_bytes):
    return coco_captions_file(tmp_path / "coco40", image_bytes)


def test_all_is_every_row_of_a_coco_file(coco40):
    data, counts = load_caption_rows([str(coco40)], "all")
    assert counts == RowCounts(loaded=40, in_split=40, total=40)
    assert sorted(int(i) for i in data["image_id"]) == list(range(40))
    assert data[7]["captions"] == ["picture 7 caption 0", "picture 7 caption 1"]


def test_a_seeded_split_says_how_many_of_how_many(coco40):
    sizes = {}
    for split in SPLITS:
        try:
            data, counts = load_caption_rows([str(coco40)], split)
        except DataError:  # a 5 % split of 40 images may be empty
            sizes[split] = 0
            continue
        assert counts.total == 40 and counts.loaded == counts.in_split == len(data)
        sizes[split] = counts.loaded
    assert sum(sizes.values()) == 40 and sizes["train"] < 40  # the seeded split keeps only part of the file


def test_sample_and_unreadable_images_are_counted_apart(coco40):
    (coco40.parent / "000000000003.png").write_bytes(b"not an image")
    data, counts = load_caption_rows([str(coco40)], "all", sample=10)
    assert counts == RowCounts(loaded=10, in_split=40, total=40)
    data, counts = load_caption_rows([str(coco40)], "all")
    assert counts == RowCounts(loaded=39, in_split=40, total=40)


def test_imagefolder_split_folders_are_still_honoured(tmp_path, image_bytes):
    root = tmp_path / "folders"
    for folder, count in (("train", 6), ("test", 3)):
        (root / folder).mkdir(parents=True)
        rows = []
        for i in range(count):
            (root / folder / f"{i}.png").write_bytes(image_bytes((0, 0, 200), "PNG"))
            rows.append(json.dumps({"file_name": f"{i}.png", "text": f"{folder} {i}"}))
        (root / folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    test, counts = load_caption_rows([str(root)], "test")
    assert sorted(test["image_id"]) == ["test/0.png", "test/1.png", "test/2.png"]
    assert counts == RowCounts(loaded=3, in_split=3, total=9)
    everything, counts = load_caption_rows([str(root)], "all")
    assert counts == RowCounts(loaded=9, in_split=9, total=9)
    assert {i.split("/")[0] for i in everything["image_id"]} == {"train", "test"}


def test_shapes_all_is_its_three_splits(monkeypatch):
    import distilvit.data.loader as loader
    from distilvit.data.shapes import ShapesConfig

    monkeypatch.setattr(loader, "ShapesConfig",
                        lambda seed: ShapesConfig(seed=seed, train_size=5, validation_size=2, test_size=3))
    data, counts = load_caption_rows(["shapes"], "all")
    assert counts == RowCounts(loaded=10, in_split=10, total=10)
    assert len({i.split("-")[1] for i in data["image_id"]}) == 3
    _, counts = load_caption_rows(["shapes"], "test")
    assert counts == RowCounts(loaded=3, in_split=3, total=10)


def test_unknown_split_names_all():
    with pytest.raises(DataError, match="all"):
        load_caption_dataset(["shapes"], "everything")
