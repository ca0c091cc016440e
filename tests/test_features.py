"""The frozen-encoder feature cache: same training signal as pixels, never stale, crash safe, and the
``distilvit train`` / ``distilvit cache`` commands around it."""

from __future__ import annotations

import functools
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_encoder

from distilvit.cli.main import main
from distilvit.errors import DistilViTError
from distilvit.features import (
    FEATURE_DTYPES,
    FeatureStore,
    cached_feature_sets,
    encode_dataset,
    feature_key,
    use_feature_cache,
)
from distilvit.features.encode import encode_images_to_features
from distilvit.features.store import INDEX, RECORD, pack_record
from distilvit.model import CaptionerSpec, build_captioner
from distilvit.model.modeling import DistilViTForCaptioning
from distilvit.training.collator import CaptionCollator

CAPTIONS = ["a small red circle", "a large blue square left of a green triangle", "a purple triangle"]
# relative |loss(cached features) - loss(pixels)|, measured on the tiny models below over 5 random batches
# (loss ~5.5): fp32 0 (bit-identical), fp16 at most 8.5e-5, bf16 at most 2.6e-4; tolerances ~2-4x that
LOSS_RTOL = {"fp32": 0.0, "fp16": 2e-4, "bf16": 1e-3}


def random_image(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def image_dataset(n: int, seed: int = 0, replace: dict[int, Image.Image] | None = None) -> datasets.Dataset:
    """``n`` random 32 px images with captions (``replace``: row -> a different image)."""
    rng = np.random.default_rng(seed)
    images = [random_image(rng) for _ in range(n)]
    for row, image in (replace or {}).items():
        images[row] = image
    features = datasets.Features({"image": datasets.Image(), "captions": datasets.List(datasets.Value("string"))})
    captions = [[CAPTIONS[i % len(CAPTIONS)]] for i in range(n)]
    return datasets.Dataset.from_dict({"image": images, "captions": captions}, features=features)


def build(encoder: Path, lm: Path, **kwargs):
    torch.manual_seed(0)
    return build_captioner(CaptionerSpec(encoder=str(encoder), decoder=str(lm), **kwargs))


@pytest.fixture(scope="module")
def frozen(tiny_encoder, tiny_lm):
    """A captioner with the tiny (frozen, pretrained-style) SigLIP encoder: (model, processor)."""
    return build(tiny_encoder, tiny_lm)


def fresh_features(model, processor, dataset) -> torch.Tensor:
    """``(rows, N, D)`` fp32 features of every image of ``dataset``, encoded now, one at a time."""
    model.vision_model.eval()
    return torch.cat([encode_images_to_features(model, processor, [row["image"]], "cpu") for row in dataset])


def stored_features(store: FeatureStore, slots) -> torch.Tensor:
    reader = store.reader()
    return torch.stack([reader.read(int(s)) for s in slots]).float()


def assert_matches_fresh_encode(store, slots, model, processor, dataset):
    """Every row's stored features are its image's features (up to fp16 rounding), so none is stale."""
    assert torch.allclose(stored_features(store, slots), fresh_features(model, processor, dataset), atol=2e-3, rtol=1e-3)


# ---------------------------------------------------------------- same training signal as pixels
def test_cached_features_give_the_same_loss_and_gradients_as_pixels(frozen, tmp_path):
    model, processor = frozen
    data = image_dataset(8)
    model.eval()  # deterministic (LoRA dropout off); the encoder runs in eval mode when caching too

    def loss_and_grad(rows):
        model.zero_grad()
        batch = CaptionCollator(processor, train=True, seed=0)(rows)
        loss = model(**batch).loss
        loss.backward()
        return batch, loss.detach(), model.projection.layers[0].weight.grad.clone()

    _, reference, reference_grad = loss_and_grad([data[i] for i in range(8)])
    for dtype, rtol in LOSS_RTOL.items():
        view = cached_feature_sets(model, processor, [data], dtype=dtype, cache_dir=tmp_path, progress=False)[0]
        batch, loss, grad = loss_and_grad([view[i] for i in range(8)])
        assert "pixel_values" not in batch and batch["image_features"].shape == (8, 16, 32)
        assert batch["image_features"].dtype == FEATURE_DTYPES[dtype]
        assert abs(loss - reference) <= rtol * reference, (dtype, float(loss - reference))
        if dtype == "fp32":
            assert torch.equal(loss, reference) and torch.equal(grad, reference_grad)
    other_images = image_dataset(8, seed=1)  # same captions: the loss does depend on the image features
    assert abs(loss_and_grad([other_images[i] for i in range(8)])[1] - reference) > 1e-2
    assert len(list(tmp_path.iterdir())) == 3  # one store per storage dtype


# ---------------------------------------------------------------- never stale
def test_a_changed_image_is_encoded_again(frozen, tmp_path):
    model, processor = frozen
    store = FeatureStore.for_key(tmp_path, feature_key(model, processor))
    first = image_dataset(6)
    assert encode_dataset(model, processor, first, store, progress=False).encoded == 6
    edited = image_dataset(6, replace={2: random_image(np.random.default_rng(99))})
    report = encode_dataset(model, processor, edited, store, progress=False)
    assert report.encoded == 1 and report.slots[2] == 6  # only the changed image, into a new slot
    assert_matches_fresh_encode(store, report.slots, model, processor, edited)
    old, new = stored_features(store, [2, 6])
    assert not torch.allclose(old, new, atol=0.1)  # serving the old entry would have been caught


def test_an_encoder_changed_in_place_gets_new_features(tmp_path, tiny_lm):
    encoder = make_encoder(tmp_path / "encoder", seed=0)
    data = image_dataset(4)
    model, processor = build(encoder, tiny_lm)
    old_key = feature_key(model, processor)
    cached_feature_sets(model, processor, [data], cache_dir=tmp_path / "cache", progress=False)
    make_encoder(encoder, seed=1)  # same folder, new weights (e.g. a re-trained checkpoint)
    model, processor = build(encoder, tiny_lm)
    key = feature_key(model, processor)
    assert key.encoder == old_key.encoder and key.weights != old_key.weights and key.digest != old_key.digest
    store = FeatureStore.for_key(tmp_path / "cache", key)
    report = encode_dataset(model, processor, data, store, progress=False)
    assert report.encoded == 4
    assert_matches_fresh_encode(store, report.slots, model, processor, data)


def test_preprocessing_layer_and_dtype_are_part_of_the_key(frozen, tiny_encoder, tiny_lm):
    model, processor = frozen
    key = feature_key(model, processor)
    assert feature_key(model, processor) == key  # stable
    assert feature_key(model, processor, "bf16").digest != key.digest
    assert feature_key(build(tiny_encoder, tiny_lm, vision_feature_layer=-2)[0], processor).digest != key.digest
    processor.image_processor.image_mean = [0.4, 0.5, 0.5]
    try:
        assert feature_key(model, processor).digest != key.digest
    finally:
        processor.image_processor.image_mean = [0.5, 0.5, 0.5]


# ---------------------------------------------------------------- crash safety
CHILD = """
import os, signal, sys, time
sys.path.insert(0, {tests!r})
from test_features import build, image_dataset
from distilvit.features import FeatureStore, encode_dataset, feature_key
from distilvit.features.store import FeatureWriter, RECORD

model, processor = build({encoder!r}, {lm!r})
store = FeatureStore.for_key({cache!r}, feature_key(model, processor))
write_index, append, calls = FeatureWriter._write_index, FeatureWriter.append, []

def torn_index_write(self, records):  # the 3rd batch: one and a half index records reach the disk, then death
    calls.append(1)
    if len(calls) == 3:
        write_index(self, records[: RECORD.size + RECORD.size // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    write_index(self, records)

def slow_append(self, digests, features):  # gives the parent time to kill at a random moment
    append(self, digests, features)
    time.sleep(0.1)

if {mode!r} == "torn-index-record":
    FeatureWriter._write_index = torn_index_write
else:
    FeatureWriter.append = slow_append
encode_dataset(model, processor, image_dataset({rows}), store, batch_size=4, progress=False)
"""


@pytest.mark.parametrize("mode", ["torn-index-record", "random-moment"])
def test_a_writer_killed_mid_write_is_completed_by_the_next_run(frozen, tiny_encoder, tiny_lm, tmp_path, mode):
    model, processor = frozen
    rows = 48
    script = CHILD.format(tests=str(Path(__file__).parent), encoder=str(tiny_encoder), lm=str(tiny_lm),
                          cache=str(tmp_path), mode=mode, rows=rows)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    store = FeatureStore.for_key(tmp_path, feature_key(model, processor))
    if mode == "random-moment":
        deadline = time.monotonic() + 120
        while child.poll() is None and time.monotonic() < deadline:
            index = store.folder / INDEX
            if index.is_file() and index.stat().st_size >= 12 * RECORD.size:  # a few batches in
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    durable = len(store.index())
    assert 0 < durable < rows
    data = image_dataset(rows)
    report = encode_dataset(model, processor, data, store, batch_size=4, progress=False)
    assert report.encoded == rows - durable  # the entries that made it are reused, the rest redone
    assert sorted(report.slots) == list(range(rows))  # orphaned data was dropped, no slot is used twice
    assert (store.folder / INDEX).stat().st_size == rows * RECORD.size
    assert_matches_fresh_encode(store, report.slots, model, processor, data)


def test_torn_bad_and_dangling_index_records_are_ignored_and_dropped(frozen, tmp_path):
    model, processor = frozen
    store = FeatureStore.for_key(tmp_path, feature_key(model, processor))
    encode_dataset(model, processor, image_dataset(4), store, progress=False)
    good = (store.folder / INDEX).read_bytes()
    bad_crc = bytearray(pack_record(b"x" * 32, 1))
    bad_crc[-1] ^= 0xFF
    dangling = pack_record(b"y" * 32, 5)  # points past the end of the data: its data never reached the disk
    (store.folder / INDEX).write_bytes(good + bytes(bad_crc) + dangling + pack_record(b"z" * 32, 2)[:20])
    assert len(store.index()) == 4
    data = image_dataset(6)
    report = encode_dataset(model, processor, data, store, progress=False)
    assert report.encoded == 2 and list(report.slots) == list(range(6))
    assert (store.folder / INDEX).stat().st_size == 6 * RECORD.size and b"y" * 32 not in store.index()
    assert_matches_fresh_encode(store, report.slots, model, processor, data)


def test_features_that_overflow_fp16_are_an_error_not_infinities(frozen, tmp_path):
    model, processor = frozen
    store = FeatureStore.for_key(tmp_path, feature_key(model, processor))
    with store.writer() as writer, pytest.raises(DistilViTError, match="--feature-dtype bf16"):
        writer.append([b"a" * 32], torch.full((1, 16, 32), 1e6))
    assert store.index() == {}


def test_the_view_survives_pickling_for_dataloader_workers(frozen, tmp_path):
    model, processor = frozen
    view = cached_feature_sets(model, processor, [image_dataset(3)], cache_dir=tmp_path, progress=False)[0]
    first = view[1]["image_features"]  # opens the file in this process
    copy = pickle.loads(pickle.dumps(view))
    assert torch.equal(copy[1]["image_features"], first) and copy[1]["captions"] == [CAPTIONS[1]]


# ---------------------------------------------------------------- when caching is on
def test_caching_is_on_exactly_when_the_encoder_is_frozen(frozen, tiny_encoder, tiny_lm):
    model, _ = frozen
    assert use_feature_cache(None, model) and not use_feature_cache(False, model)
    for trainable in (build(tiny_encoder, tiny_lm, unfreeze_vision_layers=1)[0],
                      build("scratch:siglip-tiny", tiny_lm)[0]):
        assert not use_feature_cache(None, trainable)
        with pytest.raises(DistilViTError, match="needs a frozen encoder"):
            use_feature_cache(True, trainable)


# ---------------------------------------------------------------- the commands
def train_args(tmp_path, encoder, lm, run: str, *extra) -> list[str]:
    return [
        "train", "--dataset", "shapes", "--sample", "16", "--eval-sample", "4", "--eval-captions", "0",
        "--metric-for-best-model", "loss", "--encoder-model", str(encoder), "--decoder-model", str(lm),
        "--max-steps", "2", "--batch-size", "4", "--eval-steps", "2", "--save-steps", "2", "--warmup-steps", "0",
        "--feature-cache-dir", str(tmp_path / "features"), "--checkpoints-dir", str(tmp_path / run / "ckpt"),
        "--save-dir", str(tmp_path / run / "model"), *extra,
    ]


def test_train_uses_the_cache_and_cache_info_and_clear_work(tiny_encoder, tiny_lm, tmp_path, monkeypatch, capsys):
    forward, encode, calls = DistilViTForCaptioning.forward, DistilViTForCaptioning.encode_images, []

    @functools.wraps(forward)  # keeps the signature, from which the Trainer learns the label names
    def spy_forward(self, *args, pixel_values=None, image_features=None, **kwargs):
        calls.append(("forward", pixel_values is None and image_features is not None))
        return forward(self, *args, pixel_values=pixel_values, image_features=image_features, **kwargs)

    def spy_encode(self, pixel_values):
        calls.append(("encode", len(pixel_values)))
        return encode(self, pixel_values)

    monkeypatch.setattr(DistilViTForCaptioning, "forward", spy_forward)
    monkeypatch.setattr(DistilViTForCaptioning, "encode_images", spy_encode)
    assert main(train_args(tmp_path, tiny_encoder, tiny_lm, "first")) == 0
    assert sum(n for kind, n in calls if kind == "encode") == 20  # 16 training + 4 validation images, once
    assert all(from_features for kind, from_features in calls if kind == "forward")
    calls.clear()
    assert main(train_args(tmp_path, tiny_encoder, tiny_lm, "second")) == 0
    assert [kind for kind, _ in calls if kind == "encode"] == []  # the second run encodes nothing
    assert all(from_features for kind, from_features in calls if kind == "forward") and calls
    capsys.readouterr()

    assert main(["cache", "info", "--dir", str(tmp_path / "features"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    (entry,) = info["keys"]
    assert entry["entries"] == 20 and entry["feature_shape"] == [16, 32] and entry["dtype"] == "fp16"
    assert entry["encoder"] == str(tiny_encoder) and info["size_bytes"] >= 20 * 16 * 32 * 2
    assert main(["cache", "info", "--dir", str(tmp_path / "features")]) == 0
    assert f"{entry['key']}  20 entries of 16x32 fp16" in capsys.readouterr().out
    assert main(["cache", "clear", "--dir", str(tmp_path / "features"), "nokey"]) == 2
    assert "error: no cache key nokey" in capsys.readouterr().err
    assert main(["cache", "clear", "--dir", str(tmp_path / "features")]) == 0
    assert f"removed {entry['key']}" in capsys.readouterr().out
    assert not (tmp_path / "features" / entry["key"]).exists()
    assert main(["cache", "info", "--dir", str(tmp_path / "features"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["keys"] == []


@pytest.mark.parametrize("argv, message", [
    (["--encoder-model", "scratch:siglip-tiny", "--cache-features"], "--cache-features needs a frozen encoder"),
    (["--unfreeze-vision-layers", "1", "--cache-features"], "--cache-features needs a frozen encoder"),
    (["--feature-cache-dir", "FILE"], "is a file"),
    (["--feature-cache-dir", "FILE/features"], "cannot write the feature cache"),
])
def test_bad_cache_options_give_a_clear_error(tiny_encoder, tiny_lm, tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("not a folder")
    argv = [a.replace("FILE", str(tmp_path / "file")) for a in argv]
    assert main(train_args(tmp_path, tiny_encoder, tiny_lm, "run") + argv) == 2  # a repeated option: the last wins
    assert message in capsys.readouterr().err


def test_cache_clear_leaves_a_store_that_is_being_written(frozen, tmp_path, capsys):
    model, processor = frozen
    store = FeatureStore.for_key(tmp_path, feature_key(model, processor))
    encode_dataset(model, processor, image_dataset(2), store, progress=False)
    with store.writer():
        assert main(["cache", "clear", "--dir", str(tmp_path)]) == 2
    assert "being written by another process" in capsys.readouterr().err and len(store.index()) == 2


def test_an_unreadable_store_is_reported_and_can_be_cleared(tmp_path, capsys):
    folder = tmp_path / "0123456789abcdef"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"format": "distilvit-features/0"}))
    assert main(["cache", "info", "--dir", str(tmp_path)]) == 0
    assert "0123456789abcdef  unusable" in capsys.readouterr().out
    assert main(["cache", "clear", "--dir", str(tmp_path), "0123456789abcdef"]) == 0
    assert not folder.exists()


def test_cache_info_on_a_file_is_an_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["cache", "info", "--dir", str(tmp_path / "file")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["info", "clear"])
def test_cache_help_explains_every_option(action, capsys):
    from distilvit.cli.main import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    actions = next(a for a in commands["cache"]._actions if a.dest == "cache_command").choices
    for option in actions[action]._actions:
        assert option.help and len(option.help) > 5, f"cache {action} {option.option_strings or option.dest}"
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", action, "--help"])
    assert exit_info.value.code == 0
    assert "--dir" in capsys.readouterr().out


TRAIN_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from distilvit.features.store import FeatureWriter
from distilvit.cli.main import main

append = FeatureWriter.append

def slow_append(self, digests, features):  # a slow disk: the parent kills the run while the cache is written
    append(self, digests, features)
    time.sleep(0.2)

FeatureWriter.append = slow_append
sys.exit(main({argv!r}))
"""


def test_training_killed_while_caching_completes_when_started_again(tiny_encoder, tiny_lm, tmp_path, caplog):
    argv = train_args(tmp_path, tiny_encoder, tiny_lm, "run", "--sample", "64")
    child = subprocess.Popen([sys.executable, "-c", TRAIN_CHILD.format(tests=str(Path(__file__).parent), argv=argv)],
                             env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=subprocess.PIPE)
    index = None
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        found = list((tmp_path / "features").glob(f"*/{INDEX}"))
        if found and found[0].stat().st_size >= 32 * RECORD.size:  # the first batch of 32 images is stored
            index = found[0]
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL and index is not None, stderr.decode()[-2000:]
    assert not (tmp_path / "run" / "model").exists()
    partial = index.stat().st_size // RECORD.size
    assert 0 < partial < 64 + 4  # killed mid-way through the train + validation images

    with caplog.at_level("INFO", logger="distilvit.features"):
        assert main(argv) == 0  # the same command again
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert index.stat().st_size == (64 + 4) * RECORD.size  # every image cached exactly once
    encoded = [r.getMessage() for r in caplog.records if "images encoded" in r.getMessage()]
    assert encoded and f": {64 - partial} images encoded, {partial} read from the cache" in encoded[0]
