"""The registry code path, with local copies of every Hub set in its exact Hub schema.

Each fixture writes a tiny dataset laid out like the Hub repo (parquet ``data/<split>-*.parquet``,
or ``save_to_disk`` Arrow shards for ``coco``) and points the registry entry at it through
``DISTILVIT_HUB_OVERRIDE_<NAME>``; the loader then runs ``datasets.load_dataset`` on it exactly like
on the Hub id. Image ``k`` is a solid colour whose red channel is ``k`` and its caption mentions
``k``, so every test can check that images and captions stay aligned.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil

import datasets
import pytest
from PIL import Image

from distilvit.data import REGISTRY, available_datasets, load_caption_dataset
from distilvit.errors import DataError

SPLITS = ("train", "validation", "test")


def coded_png(k: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (k, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_cell(k: int) -> dict:
    return {"bytes": coded_png(k), "path": None}


def write_parquet(root, split_rows: dict, features: datasets.Features, shards: int = 1):
    """Hub parquet layout: data/<split>-0000i-of-0000n.parquet."""
    (root / "data").mkdir(parents=True)
    for split, rows in split_rows.items():
        table = datasets.Dataset.from_list(rows, features=features)
        for shard in range(shards):
            part = table.shard(shards, shard, contiguous=True)
            part.to_parquet(str(root / "data" / f"{split}-{shard:05d}-of-{shards:05d}.parquet"))
    return root


def assert_aligned(ds, number=re.compile(r"(\d+)")):
    """Every row's image red channel equals the number in its first caption."""
    assert len(ds) > 0
    for row in ds:
        k = int(number.search(row["captions"][0]).group(1))
        assert row["image"].convert("RGB").getpixel((1, 1))[0] == k


def load_all(name, cache, **kwargs):
    result = {}
    for split in SPLITS:
        try:
            result[split] = load_caption_dataset([name], split, cache_dir=cache, **kwargs)
        except DataError as err:
            assert "no usable rows" in str(err)
            result[split] = None
    return result


def assert_disjoint(by_split):
    ids = {split: set(ds["image_id"] if ds is not None else []) for split, ds in by_split.items()}
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    return ids


# ---------------------------------------------------------------- fixtures, one per Hub schema


@pytest.fixture
def flickr_dir(tmp_path, monkeypatch):
    """Mozilla/flickr30k-transformed-captions-gpt4o: one Hub split `test`, Karpathy `split` column."""
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "alt_text": datasets.Value("string"),
            "sentids": datasets.List(datasets.Value("string")),
            "split": datasets.Value("string"),
            "img_id": datasets.Value("string"),
            "filename": datasets.Value("string"),
            "original_alt_text": datasets.List(datasets.Value("string")),
        }
    )
    karpathy = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    rows = [
        {
            "image": image_cell(k),
            "alt_text": f"A photo number {k}.",
            "sentids": [str(5 * k + j) for j in range(5)],
            "split": karpathy[k % 10],
            "img_id": str(k),
            "filename": f"{1000 + k}.jpg",
            "original_alt_text": [f"human caption {k}"] * 5,
        }
        for k in range(30)
    ]
    root = write_parquet(tmp_path / "flickr", {"test": rows}, features)
    monkeypatch.setenv("DISTILVIT_HUB_OVERRIDE_FLICKR", str(root))
    return root


def coco_split_rows(split, start, count):
    return [
        {"image": image_cell(k), "alt_text": [f"coco {k} first", f"coco {k} second"], "image_id": k}
        for k in range(start, start + count)
    ]


@pytest.fixture
def coco_dir(tmp_path, monkeypatch):
    """Mozilla/coco-gpt4o: save_to_disk layout (dataset_dict.json, <split>/data-*.arrow)."""
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "alt_text": datasets.List(datasets.Value("string")),
            "image_id": datasets.Value("int64"),
        }
    )
    parts = {"train": (0, 12), "validation": (100, 4), "test": (200, 4)}
    dataset_dict = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(coco_split_rows(split, *span), features=features)
            for split, span in parts.items()
        }
    )
    root = tmp_path / "coco"
    dataset_dict.save_to_disk(str(root))
    monkeypatch.setenv("DISTILVIT_HUB_OVERRIDE_COCO", str(root))
    return root


@pytest.fixture
def coco_mixed_dir(tmp_path, monkeypatch):
    """coco-gpt4o shards whose alt_text is a string in one shard and a list in another."""
    string_features = datasets.Features(
        {"image": datasets.Image(), "alt_text": datasets.Value("string")}
    )
    list_features = datasets.Features(
        {"image": datasets.Image(), "alt_text": datasets.List(datasets.Value("string"))}
    )
    root = tmp_path / "coco-mixed"
    staging = tmp_path / "staging"
    for split, start in (("train", 0), ("validation", 100), ("test", 200)):
        as_string = datasets.Dataset.from_list(
            [{"image": image_cell(start + k), "alt_text": f"coco {start + k}"} for k in range(3)],
            features=string_features,
        )
        as_list = datasets.Dataset.from_list(
            [
                {"image": image_cell(start + k), "alt_text": [f"coco {start + k}", "more"]}
                for k in range(3, 6)
            ],
            features=list_features,
        )
        (root / split).mkdir(parents=True)
        for index, part in enumerate((as_string, as_list)):
            part.save_to_disk(str(staging / f"{split}{index}"))
            shutil.copy(
                staging / f"{split}{index}" / "data-00000-of-00001.arrow",
                root / split / f"data-0000{index}-of-00002.arrow",
            )
        shutil.copy(staging / f"{split}1" / "dataset_info.json", root / split / "dataset_info.json")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": list(SPLITS)}))
    monkeypatch.setenv("DISTILVIT_HUB_OVERRIDE_COCO", str(root))
    return root


@pytest.fixture
def pexels_dir(tmp_path, monkeypatch):
    """Mozilla/pexels-gpt4o: one Hub split `train`, string `alt_text`, no id column."""
    features = datasets.Features({"image": datasets.Image(), "alt_text": datasets.Value("string")})
    rows = [{"image": image_cell(k), "alt_text": f"pexels photo {k}"} for k in range(60)]
    rows.append({"image": image_cell(5), "alt_text": "pexels photo 5 again"})  # same image twice
    root = write_parquet(tmp_path / "pexels", {"train": rows}, features)
    monkeypatch.setenv("DISTILVIT_HUB_OVERRIDE_PEXELS", str(root))
    return root


@pytest.fixture
def docornot_dir(tmp_path, monkeypatch):
    """mozilla/docornot: train/validation/test, `is_document` class label, no caption column."""
    features = datasets.Features(
        {"image": datasets.Image(), "is_document": datasets.ClassLabel(names=["no", "yes"])}
    )
    split_rows = {
        split: [{"image": image_cell(base + k), "is_document": k % 2} for k in range(6)]
        for split, base in (("train", 0), ("validation", 50), ("test", 100))
    }
    root = write_parquet(tmp_path / "docornot", split_rows, features)
    monkeypatch.setenv("DISTILVIT_HUB_OVERRIDE_DOCORNOT", str(root))
    return root


@pytest.fixture
def validation_dir(tmp_path, monkeypatch):
    """Mozilla/alt-text-validation: one split `train` in 2 shards, `alt_text` + `gpt_alt_text`."""
    text = datasets.Value("string")
    features = datasets.Features({"image": datasets.Image(), "alt_text": text, "gpt_alt_text": text})
    rows = [
        {
            "image": image_cell(k),
            "alt_text": f"web alt {k}",
            "gpt_alt_text": f"gpt alt {k}" if k % 10 else "  ",
        }
        for k in range(40)
    ]
    root = write_parquet(tmp_path / "validation", {"train": rows}, features, shards=2)
    monkeypatch.setenv("DISTILVIT_HUB_OVERRIDE_VALIDATION", str(root))
    return root


# ---------------------------------------------------------------- registry


def test_registry_entries_and_names():
    assert available_datasets() == ["flickr", "coco", "pexels", "docornot", "validation", "shapes"]
    assert REGISTRY["flickr"].hub_id == "Mozilla/flickr30k-transformed-captions-gpt4o"
    assert REGISTRY["coco"].hub_id == "Mozilla/coco-gpt4o"
    assert REGISTRY["pexels"].hub_id == "Mozilla/pexels-gpt4o"
    assert REGISTRY["docornot"].hub_id == "mozilla/docornot"
    assert REGISTRY["validation"].hub_id == "Mozilla/alt-text-validation"
    assert REGISTRY["coco"].provided_split("validation") == "validation"
    assert REGISTRY["pexels"].provided_split("validation") is None
    assert REGISTRY["flickr"].provided_split("test") is None  # per-row split column instead


def test_override_variable_replaces_the_hub_id(monkeypatch):
    entry = REGISTRY["flickr"]
    monkeypatch.delenv(entry.override_variable, raising=False)
    assert entry.load_path() == entry.hub_id
    monkeypatch.setenv("DISTILVIT_HUB_OVERRIDE_FLICKR", "/some/copy")
    assert entry.load_path() == "/some/copy"


# ---------------------------------------------------------------- one test per Hub schema


def test_flickr_honours_the_karpathy_split_column(flickr_dir, hf_cache):
    by_split = load_all("flickr", hf_cache)
    for split, wanted in (("train", range(6)), ("validation", (6, 7)), ("test", (8, 9))):
        ds = by_split[split]
        assert ds.column_names == ["image", "captions", "image_id", "source"]
        assert sorted(int(i) % 10 for i in ds["image_id"]) == sorted(list(wanted) * 3)
        assert set(ds["source"]) == {"flickr"}
        assert_aligned(ds)
    assert by_split["train"][0]["captions"] == ["A photo number 0."]  # GPT caption, not the human ones


def test_coco_uses_the_hub_splits_and_list_captions(coco_dir, hf_cache):
    validation = load_caption_dataset(["coco"], "validation", cache_dir=hf_cache)
    assert sorted(validation["image_id"]) == ["100", "101", "102", "103"]
    assert validation[0]["captions"] == ["coco 100 first", "coco 100 second"]
    assert_aligned(validation)
    assert len(load_caption_dataset(["coco"], "train", cache_dir=hf_cache)) == 12


def test_coco_shards_with_string_and_list_captions(coco_mixed_dir, hf_cache):
    test = load_caption_dataset(["coco"], "test", cache_dir=hf_cache)
    assert len(test) == 6
    by_caption = {row["captions"][0]: row["captions"] for row in test}
    assert by_caption["coco 200"] == ["coco 200"]
    assert by_caption["coco 205"] == ["coco 205", "more"]
    assert_aligned(test)


def test_pexels_single_split_is_split_per_image_without_leaks(pexels_dir, hf_cache):
    by_split = load_all("pexels", hf_cache)
    ids = assert_disjoint(by_split)
    assert sum(len(v) for v in ids.values()) == 60  # 61 rows, one image twice
    assert all(i.startswith("sha1:") for i in ids["train"])
    for ds in by_split.values():
        if ds is not None:
            assert_aligned(ds)
    rows = [row for ds in by_split.values() if ds is not None for row in ds]
    merged = [row["captions"] for row in rows if len(row["captions"]) > 1]
    assert merged == [["pexels photo 5", "pexels photo 5 again"]]


def test_docornot_keeps_documents_with_a_fixed_caption(docornot_dir, hf_cache):
    train = load_caption_dataset(["docornot"], "train", cache_dir=hf_cache)
    assert len(train) == 3
    reds = sorted(row["image"].convert("RGB").getpixel((0, 0))[0] for row in train)
    assert reds == [1, 3, 5]  # the rows labelled is_document=1
    assert set(map(tuple, train["captions"])) == {("A scanned text document.",)}
    test = load_caption_dataset(["docornot"], "test", cache_dir=hf_cache)
    reds = sorted(row["image"].convert("RGB").getpixel((0, 0))[0] for row in test)
    assert reds == [101, 103, 105]


def test_validation_prefers_gpt_alt_text_and_drops_empty(validation_dir, hf_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="distilvit.data"):
        by_split = load_all("validation", hf_cache)
    assert_disjoint(by_split)
    rows = [row for ds in by_split.values() if ds is not None for row in ds]
    assert len(rows) == 36
    assert all(row["captions"][0].startswith("gpt alt") for row in rows)
    assert "no non-empty caption" in caplog.text


def test_missing_caption_column_is_a_data_error(tmp_path, monkeypatch, hf_cache):
    features = datasets.Features({"image": datasets.Image(), "description": datasets.Value("string")})
    rows = [{"image": image_cell(1), "description": "x"}]
    root = write_parquet(tmp_path / "odd", {"train": rows}, features)
    monkeypatch.setenv("DISTILVIT_HUB_OVERRIDE_PEXELS", str(root))
    wanted = r"'pexels' has none of the caption columns alt_text, gpt_alt_text"
    with pytest.raises(DataError, match=wanted):
        load_caption_dataset(["pexels"], "train", cache_dir=hf_cache)


def test_unreachable_hub_is_a_data_error(monkeypatch, hf_cache):
    monkeypatch.delenv("DISTILVIT_HUB_OVERRIDE_PEXELS", raising=False)

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    wanted = r"cannot load dataset 'pexels' from 'Mozilla/pexels-gpt4o'.*DISTILVIT_HUB_OVERRIDE_PEXELS"
    with pytest.raises(DataError, match=wanted):
        load_caption_dataset(["pexels"], "train", cache_dir=hf_cache)


# ---------------------------------------------------------------- names, all, combination


def test_unknown_name_lists_the_available_names():
    with pytest.raises(DataError) as info:
        load_caption_dataset(["flikr"], "train")
    message = str(info.value)
    assert "unknown dataset 'flikr'" in message
    for name in available_datasets():
        assert name in message
    assert "'all'" in message and "local path is also accepted" in message


def test_all_loads_every_registered_set(
    flickr_dir, coco_dir, pexels_dir, docornot_dir, validation_dir, hf_cache
):
    test = load_caption_dataset(["all"], "test", cache_dir=hf_cache)
    sources = set(test["source"])
    assert sources <= set(REGISTRY)
    assert {"flickr", "coco", "docornot"} <= sources  # sets with guaranteed test rows
    assert "shapes" not in sources
    train = load_caption_dataset(["all", "flickr"], "train", cache_dir=hf_cache)
    assert set(train["source"]) == set(REGISTRY)
    assert_aligned(train.select([i for i, s in enumerate(train["source"]) if s != "docornot"]))


def test_hub_local_and_shapes_sets_combine(pexels_dir, tmp_path, image_bytes, hf_cache):
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes((7, 40, 90)))
    (folder / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "text": "local 7", "split": "train"}) + "\n"
    )
    ds = load_caption_dataset(["pexels", folder, "shapes"], "train", cache_dir=hf_cache)
    counts = {source: ds["source"].count(source) for source in set(ds["source"])}
    assert counts[str(folder)] == 1 and counts["shapes"] == 10000 and counts["pexels"] > 40
    assert_aligned(ds.select([i for i, source in enumerate(ds["source"]) if source != "shapes"]))
    sampled = load_caption_dataset(["pexels", folder, "shapes"], "train", sample=30, cache_dir=hf_cache)
    assert len(sampled) == 30
