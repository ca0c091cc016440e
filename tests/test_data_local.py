"""Local sources: image folders (metadata.jsonl / metadata.csv), COCO captions JSON, Karpathy JSON."""

from __future__ import annotations

import csv
import json
import logging

import pytest

from distilvit.data import load_caption_dataset
from distilvit.errors import DataError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def write_images(folder, image_bytes, names, colour=RED):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        (folder / name).write_bytes(image_bytes(colour, fmt))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def all_splits(spec, **kwargs):
    """Rows of every split: {split: dataset}."""
    result = {}
    for split in ("train", "validation", "test"):
        try:
            result[split] = load_caption_dataset([spec], split, **kwargs)
        except DataError:
            result[split] = []
    return result


def ids_by_split(spec, **kwargs):
    by_split = all_splits(spec, **kwargs)
    return {split: set(ds["image_id"] if len(ds) else []) for split, ds in by_split.items()}


# ---------------------------------------------------------------- image folders


@pytest.fixture
def jsonl_folder(tmp_path, image_bytes):
    folder = tmp_path / "jsonl-folder"
    names = [f"img{i:02d}.png" if i % 2 else f"img{i:02d}.jpg" for i in range(40)]
    write_images(folder, image_bytes, names)
    rows = [{"file_name": name, "text": f"caption {name}"} for name in names]
    rows[0]["text"] = ["first caption", "second caption"]
    write_jsonl(folder / "metadata.jsonl", rows)
    return folder


def test_imagefolder_jsonl_has_contract_columns(jsonl_folder):
    spec = str(jsonl_folder)
    rows = {split: ds for split, ds in all_splits(spec).items() if len(ds)}
    total = sum(len(ds) for ds in rows.values())
    assert total == 40
    train = rows["train"]
    assert train.column_names == ["image", "captions", "image_id", "source"]
    example = train[0]
    assert example["image"].convert("RGB").getpixel((0, 0))[0] > 200
    assert example["source"] == spec
    assert all(isinstance(c, list) and c for c in train["captions"])
    by_id = {}
    for ds in rows.values():
        by_id.update(zip(ds["image_id"], ds["captions"]))
    assert by_id["img00.jpg"] == ["first caption", "second caption"]
    assert by_id["img01.png"] == ["caption img01.png"]


def test_imagefolder_csv_with_json_list_and_caption_columns(tmp_path, image_bytes):
    folder = tmp_path / "csv-folder"
    write_images(folder, image_bytes, ["a.png", "b.png", "c.png"])
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "alt_text", "split"])
        writer.writerow(["a.png", '["one", "two"]', "train"])
        writer.writerow(["b.png", "  padded  ", "train"])
        writer.writerow(["c.png", "held out", "test"])
    train = load_caption_dataset([folder], "train")
    by_id = dict(zip(train["image_id"], train["captions"]))
    assert by_id == {"a.png": ["one", "two"], "b.png": ["padded"]}
    test = load_caption_dataset([folder], "test")
    assert test["image_id"] == ["c.png"]


@pytest.mark.parametrize("column", ["text", "caption", "captions", "alt_text", "gpt_alt_text"])
def test_imagefolder_accepts_every_caption_column(tmp_path, image_bytes, column):
    folder = tmp_path / column
    write_images(folder, image_bytes, ["x.png"])
    row = {"file_name": "x.png", column: "a caption", "split": "validation"}
    write_jsonl(folder / "metadata.jsonl", [row])
    ds = load_caption_dataset([folder], "validation")
    assert ds["captions"] == [["a caption"]]


def test_imagefolder_split_subfolders_are_honoured(tmp_path, image_bytes):
    root = tmp_path / "split-folder"
    for split, folder in (("train", "train"), ("validation", "val"), ("test", "test")):
        write_images(root / folder, image_bytes, [f"{split}.png"])
        write_jsonl(root / folder / "metadata.jsonl", [{"file_name": f"{split}.png", "text": split}])
    for split, folder in (("train", "train"), ("validation", "val"), ("test", "test")):
        ds = load_caption_dataset([root], split)
        assert ds["image_id"] == [f"{folder}/{split}.png"]
        assert ds["captions"] == [[split]]


def test_imagefolder_merges_rows_of_the_same_image(tmp_path, image_bytes):
    folder = tmp_path / "dupes"
    write_images(folder, image_bytes, ["x.png"])
    write_jsonl(
        folder / "metadata.jsonl",
        [
            {"file_name": "x.png", "text": "one", "split": "train"},
            {"file_name": "x.png", "text": "two", "split": "train"},
        ],
    )
    ds = load_caption_dataset([folder], "train")
    assert len(ds) == 1
    assert ds["captions"] == [["one", "two"]]


def test_imagefolder_without_metadata_is_an_error(tmp_path):
    empty = tmp_path / "no-metadata"
    empty.mkdir()
    wanted = r"no-metadata is not an image folder: no metadata.jsonl or metadata.csv"
    with pytest.raises(DataError, match=wanted):
        load_caption_dataset([empty], "train")


def test_imagefolder_bad_jsonl_names_file_and_line(tmp_path):
    folder = tmp_path / "bad-jsonl"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match=r"metadata.jsonl: line 2 is not valid JSON"):
        load_caption_dataset([folder], "train")


def test_imagefolder_without_caption_column_is_an_error(tmp_path):
    folder = tmp_path / "no-captions"
    folder.mkdir()
    write_jsonl(folder / "metadata.jsonl", [{"file_name": "a.png", "label": 3}])
    with pytest.raises(DataError, match=r"no caption column; expected one of captions, caption, text"):
        load_caption_dataset([folder], "train")


def test_corrupt_and_missing_images_are_skipped_with_a_count(tmp_path, image_bytes, caplog):
    folder = tmp_path / "coco-fixture"
    names = [f"ok{i}.png" for i in range(18)]
    write_images(folder, image_bytes, names)
    (folder / "xyz.jpg").write_bytes(b"definitely not a jpeg")
    rows = [{"file_name": name, "text": "fine", "split": "train"} for name in names]
    rows.insert(3, {"file_name": "xyz.jpg", "text": "corrupt", "split": "train"})
    rows.insert(7, {"file_name": "gone.png", "text": "missing", "split": "train"})
    write_jsonl(folder / "metadata.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="distilvit.data"):
        ds = load_caption_dataset([folder], "train")
    assert len(ds) == 18
    assert "xyz.jpg" not in ds["image_id"] and "gone.png" not in ds["image_id"]
    messages = [r.getMessage() for r in caplog.records if r.name == "distilvit.data"]
    assert any(
        "skipped 2 of 20 rows from" in m
        and "coco-fixture" in m
        and "xyz.jpg: cannot identify image file" in m
        for m in messages
    ), messages


def test_empty_captions_are_removed_and_captionless_rows_dropped(tmp_path, image_bytes, caplog):
    folder = tmp_path / "empty-captions"
    write_images(folder, image_bytes, ["a.png", "b.png", "c.png"])
    write_jsonl(
        folder / "metadata.jsonl",
        [
            {"file_name": "a.png", "captions": ["good", "  ", ""], "split": "train"},
            {"file_name": "b.png", "captions": "   ", "split": "train"},
            {"file_name": "c.png", "captions": None, "split": "train"},
        ],
    )
    with caplog.at_level(logging.WARNING, logger="distilvit.data"):
        ds = load_caption_dataset([folder], "train")
    assert ds["image_id"] == ["a.png"]
    assert ds["captions"] == [["good"]]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "removed 3 empty caption(s)" in text
    assert "dropped 2 of 3 rows" in text and "no non-empty caption" in text


def test_nothing_left_is_a_data_error(tmp_path):
    folder = tmp_path / "all-broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"broken")
    write_jsonl(folder / "metadata.jsonl", [{"file_name": "a.png", "text": "x", "split": "train"}])
    with pytest.raises(DataError, match="no usable rows in the train split"):
        load_caption_dataset([folder], "train")


def test_folder_splits_without_split_info_are_seeded_and_disjoint(tmp_path, image_bytes):
    folder = tmp_path / "seeded"
    names = [f"{i:03d}.png" for i in range(120)]
    write_images(folder, image_bytes, names)
    write_jsonl(folder / "metadata.jsonl", [{"file_name": n, "text": "x"} for n in names])
    splits = ids_by_split(str(folder))
    assert set().union(*splits.values()) == set(names)
    assert not splits["train"] & splits["validation"]
    assert not splits["train"] & splits["test"]
    assert not splits["validation"] & splits["test"]
    assert len(splits["train"]) > 90
    # adding rows and sampling never move an image to another split
    more = [f"new{i}.png" for i in range(30)]
    write_images(folder, image_bytes, more)
    write_jsonl(folder / "metadata.jsonl", [{"file_name": n, "text": "x"} for n in names + more])
    grown = ids_by_split(str(folder))
    for split in splits:
        assert splits[split] <= grown[split]
    sampled = set(load_caption_dataset([folder], "train", sample=10)["image_id"])
    assert sampled <= grown["train"]


# ---------------------------------------------------------------- COCO captions JSON


def coco_json(path, images, annotations):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return path


@pytest.mark.parametrize("layout", ["beside", "images", "split-folder"])
def test_coco_json_one_row_per_image_with_all_captions(tmp_path, image_bytes, layout):
    if layout == "beside":
        json_path, image_dir = tmp_path / "coco" / "captions.json", tmp_path / "coco"
    elif layout == "images":
        json_path, image_dir = tmp_path / "coco" / "captions.json", tmp_path / "coco" / "images"
    else:
        json_path = tmp_path / "coco" / "annotations" / "captions_val2017.json"
        image_dir = tmp_path / "coco" / "val2017"
    names = [f"{i:012d}.jpg" for i in range(60)]
    write_images(image_dir, image_bytes, names, colour=BLUE)
    images = [{"id": i, "file_name": name, "width": 16, "height": 16} for i, name in enumerate(names)]
    annotations = [{"id": 1000 + k, "image_id": k % 60, "caption": f"caption {k}"} for k in range(180)]
    coco_json(json_path, images, annotations)
    rows = {split: ds for split, ds in all_splits(str(json_path)).items() if len(ds)}
    assert sum(len(ds) for ds in rows.values()) == 60
    train = rows["train"]
    first = train[0]
    assert first["captions"] == [f"caption {int(first['image_id']) + 60 * j}" for j in range(3)]
    assert first["image"].convert("RGB").getpixel((4, 4))[2] > 200


def test_coco_json_images_without_captions_and_orphans(tmp_path, image_bytes, caplog):
    json_path = tmp_path / "c.json"
    write_images(tmp_path, image_bytes, ["a.png", "b.png"])
    coco_json(
        json_path,
        [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        [{"image_id": 1, "caption": "a"}, {"image_id": 99, "caption": "lost"}],
    )
    with caplog.at_level(logging.WARNING, logger="distilvit.data"):
        for split in ("train", "validation", "test"):
            try:
                ds = load_caption_dataset([json_path], split)
            except DataError:
                continue
            assert "2" not in ds["image_id"]
    assert "ignored 1 caption(s) of image ids not in 'images'" in caplog.text


def test_unparseable_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(DataError, match=r"cannot parse .*broken\.json: invalid JSON at line 1"):
        load_caption_dataset([path], "train")


def test_unrecognised_json_structure(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(DataError, match=r"other\.json is neither a COCO captions JSON .* nor a Karpathy"):
        load_caption_dataset([path], "train")


def test_missing_path_is_an_error(tmp_path):
    missing = tmp_path / "nowhere" / "captions.json"
    wanted = r"dataset path not found: .*captions\.json \(no such file or directory\)"
    with pytest.raises(DataError, match=wanted):
        load_caption_dataset([missing], "train")


def test_other_file_types_are_refused(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="unsupported dataset file"):
        load_caption_dataset([path], "train")


# ---------------------------------------------------------------- Karpathy JSON


def test_karpathy_json_splits_are_honoured(tmp_path, image_bytes):
    entries = []
    for i, split in enumerate(["train", "val", "restval", "test", "train", "val"]):
        folder = "train2014" if split in ("train", "restval") else "val2014"
        name = f"COCO_{i}.jpg"
        write_images(tmp_path / folder, image_bytes, [name], colour=GREEN)
        entries.append(
            {
                "filepath": folder,
                "filename": name,
                "split": split,
                "cocoid": i,
                "sentences": [
                    {"raw": f"raw {i} a", "tokens": []},
                    {"raw": f"raw {i} b ", "tokens": []},
                ],
            }
        )
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": entries}))
    train = load_caption_dataset([path], "train")
    assert train["image_id"] == [f"train2014/COCO_{i}.jpg" for i in (0, 2, 4)]
    assert train["captions"][0] == ["raw 0 a", "raw 0 b"]
    validation = load_caption_dataset([path], "validation")
    assert validation["image_id"] == ["val2014/COCO_1.jpg", "val2014/COCO_5.jpg"]
    test = load_caption_dataset([path], "test")
    assert test["image_id"] == ["val2014/COCO_3.jpg"]
    assert test[0]["image"].convert("RGB").getpixel((2, 2))[1] > 200


def test_karpathy_images_found_in_images_folder_without_filepath(tmp_path, image_bytes):
    write_images(tmp_path / "images", image_bytes, ["1.jpg"])
    path = tmp_path / "dataset_flickr8k.json"
    entry = {"filename": "1.jpg", "split": "test", "sentences": [{"raw": "x"}]}
    path.write_text(json.dumps({"images": [entry]}))
    ds = load_caption_dataset([path], "test")
    assert ds["image_id"] == ["1.jpg"]
    assert len(ds) == 1
