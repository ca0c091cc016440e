"""``distilvit data merge``: dedup by image content, leak-free seeded split, save_to_disk + Parquet + card,
loading back through ``--dataset DIR`` (and training on it), the Hub push against the local stand-in."""

from __future__ import annotations

import subprocess
import sys

import datasets
import pytest
from datatools_fixtures import make_sources
from hub_standin import FakeHub

from distilvit.cli.main import main
from distilvit.data import load_caption_dataset
from distilvit.datatools.merge import merge
from distilvit.errors import DataError


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="module")
def merged(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "set"
    assert main(["data", "merge", "--dataset", *map(str, sources), "--out", str(out),
                 "--val-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    return out


def test_duplicates_dropped_and_counted_and_no_image_in_two_splits(merged, capsys):
    saved = datasets.load_from_disk(str(merged))
    assert set(saved) == {"train", "validation", "test"}
    assert sum(len(t) for t in saved.values()) == 35  # 30 + 10 rows, 5 byte-identical images
    hashes = [h for t in saved.values() for h in t["image_hash"]]
    assert len(hashes) == len(set(hashes)) == 35
    assert all(len(t) for t in saved.values())
    assert set(saved["train"].column_names) == {"image", "alt_text", "source", "source_id", "image_hash"}
    card = (merged / "README.md").read_text()
    assert "40 rows read, 5 duplicate images dropped" in card
    assert "| total | 35 |" in card and f"| train | {len(saved['train'])} |" in card


def test_duplicate_captions_are_merged_into_the_kept_row(merged, sources):
    rows = [r for t in datasets.load_from_disk(str(merged)).values() for r in t.select_columns(
        ["alt_text", "source", "source_id"])]
    first = next(r for r in rows if r["source"] == str(sources[0]) and r["source_id"] == "img0.png")
    assert first["alt_text"] == ["a man riding a bicycle", "a dog on the grass 0"]
    assert sum(r["source"] == str(sources[1]) for r in rows) == 5


def test_parquet_shards_hold_the_same_rows(merged):
    saved = datasets.load_from_disk(str(merged))
    parquet = datasets.load_dataset("parquet", data_dir=str(merged / "data"))
    for split in saved:
        assert sorted(parquet[split]["image_hash"]) == sorted(saved[split]["image_hash"])


def test_split_is_fixed_by_seed_and_content(sources):
    one = merge([str(s) for s in sources], seed=7, validation=0.2, test=0.2)
    two = merge([str(s) for s in reversed(sources)], seed=7, validation=0.2, test=0.2)
    for split in one.splits:
        assert sorted(one.splits[split]["image_hash"]) == sorted(two.splits[split]["image_hash"])
    other = merge([str(s) for s in sources], seed=8, validation=0.2, test=0.2)
    assert sorted(other.splits["test"]["image_hash"]) != sorted(one.splits["test"]["image_hash"])


def test_merged_folder_loads_back_as_a_dataset_spec(merged):
    saved = datasets.load_from_disk(str(merged))
    for split in ("train", "validation", "test"):
        loaded = load_caption_dataset(str(merged), split)
        assert sorted(loaded["image_id"]) == sorted(saved[split]["image_hash"])
    assert load_caption_dataset(str(merged), "train")[0]["captions"]


def test_merged_set_trains(merged, tmp_path, tiny_lm):
    from test_training import small_run

    result = small_run(tmp_path, tiny_lm, datasets=[str(merged)], sample=8, eval_sample=4, max_steps=2)
    assert "eval_loss" in result.metrics


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "/nonexistent/x"], "dataset path not found"),
    (["--dataset", "shapes", "--val-fraction", "0.6", "--test-fraction", "0.5"], "must leave rows for training"),
    (["--dataset", "shapes", "--test-fraction", "-0.1"], "--test-fraction must be at least 0"),
    (["--dataset", "shapes", "--private"], "--private only applies with --push-to-hub"),
    (["--dataset", "shapes", "--push-to-hub", "bad repo//id"], "--push-to-hub 'bad repo//id' is not a valid Hub"),
])
def test_bad_input_exits_2_with_a_clear_message(argv, message, tmp_path, capsys):
    assert main(["data", "merge", *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_existing_out_is_refused_without_overwrite(merged, sources, capsys):
    assert main(["data", "merge", "--dataset", str(sources[1]), "--out", str(merged)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


def test_push_uploads_card_and_parquet_to_a_private_dataset_repo(sources, tmp_path):
    from test_hub import hub_env

    with FakeHub() as hub:
        env = hub_env(hub, tmp_path / "hf-home")
        done = subprocess.run([sys.executable, "-m", "distilvit.cli.main", "data", "merge", "--dataset",
                               str(sources[1]), "--out", str(tmp_path / "out"), "--push-to-hub", "user/merged",
                               "--private"], env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        files = hub.files("user/merged")
        repo = hub.repos["user/merged"]
        assert repo.repo_type == "dataset" and repo.private is True
        local = {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes()
                 for p in [tmp_path / "out" / "README.md", *(tmp_path / "out" / "data").glob("*.parquet")]}
        assert files == local
        assert ("POST", "/api/datasets/user/merged/commit/main") in hub.requests
        offline = subprocess.run([sys.executable, "-m", "distilvit.cli.main", "data", "merge", "--dataset",
                                  str(sources[1]), "--out", str(tmp_path / "out2"), "--push-to-hub", "user/merged"],
                                 env=hub_env(hub, tmp_path / "hf-home", offline=True), capture_output=True, text=True,
                                 timeout=240)
        assert offline.returncode == 2 and "HF_HUB_OFFLINE" in offline.stderr
        assert not (tmp_path / "out2").exists()  # checked before any work


def test_a_saved_single_table_with_a_split_column_loads_as_a_dataset_spec(tmp_path, image_bytes):
    from distilvit.data.schema import string_list_feature

    folder = tmp_path / "saved"
    features = datasets.Features({"image": datasets.Image(), "captions": string_list_feature(),
                                  "split": datasets.Value("string"), "image_id": datasets.Value("string")})
    datasets.Dataset.from_dict({
        "image": [{"bytes": image_bytes((i * 40, 0, 0)), "path": None} for i in range(4)],
        "captions": [[f"caption {i}"] for i in range(4)], "split": ["train", "train", "val", "test"],
        "image_id": ["a", "b", "c", "d"]}, features=features).save_to_disk(str(folder))
    assert sorted(load_caption_dataset(str(folder), "train")["image_id"]) == ["a", "b"]
    assert load_caption_dataset(str(folder), "validation")["captions"] == [["caption 2"]]
    (folder / "state.json").write_text("{broken")
    with pytest.raises(DataError) as caught:
        load_caption_dataset(str(folder), "train")
    assert "cannot read the saved dataset" in str(caught.value)


def test_every_kind_of_source_is_normalised_and_deduplicated_across_kinds(sources, tmp_path, monkeypatch, capsys):
    """An image folder (10 images, fewer than --sample), a COCO captions JSON, a Hub set (through its local override)
    and ``shapes``; the COCO file and the Hub set each repeat one of the image folder's images byte for byte."""
    import io
    import json as json_module

    from PIL import Image

    a = sources[1]
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "img0.png").write_bytes((a / "img0.png").read_bytes())
    Image.new("RGB", (16, 16), (1, 2, 3)).save(coco / "other.png")
    (coco / "captions.json").write_text(json_module.dumps({
        "images": [{"id": 1, "file_name": "img0.png"}, {"id": 2, "file_name": "other.png"}],
        "annotations": [{"image_id": 1, "caption": "coco caption one"}, {"image_id": 2, "caption": "coco two"}]}))
    hub = tmp_path / "pexels" / "data"
    hub.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(buffer, format="PNG")
    features = datasets.Features({"image": datasets.Image(), "alt_text": datasets.Value("string")})
    datasets.Dataset.from_list([{"image": {"bytes": (a / "img1.png").read_bytes(), "path": None}, "alt_text": "px 1"},
                                {"image": {"bytes": buffer.getvalue(), "path": None}, "alt_text": "px 2"}],
                               features=features).to_parquet(str(hub / "train-00000-of-00001.parquet"))
    monkeypatch.setenv("DISTILVIT_HUB_OVERRIDE_PEXELS", str(tmp_path / "pexels"))
    result = merge([str(a), str(coco / "captions.json"), "pexels", "shapes"], sample=12)
    assert result.rows_read == 10 + 2 + 2 + 12 and result.duplicates_dropped == 2
    assert result.per_source == {str(a): 10, str(coco / "captions.json"): 1, "pexels": 1, "shapes": 12}
    rows = [r for t in result.splits.values() for r in t.select_columns(["alt_text", "source", "source_id"])]
    assert {"alt_text": ["a dog on the grass 0", "coco caption one"], "source": str(a), "source_id": "img0.png"} in rows
    assert {"alt_text": ["a dog on the grass 1", "px 1"], "source": str(a), "source_id": "img1.png"} in rows
    assert set(result.splits["train"].column_names) == {"image", "alt_text", "source", "source_id", "image_hash"}
