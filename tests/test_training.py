"""Training: the model learns non-empty captions that stop by themselves; the Trainer run saves, resumes,
skips bad data, and uses the right learning rates."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image

from distilvit.data import load_caption_dataset
from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.model.captioning import generate_captions
from distilvit.training.run import TrainOptions, run_training
from distilvit.training.trainer import parameter_groups, pick_device, pick_precision


def test_training_learns_captions_that_end_with_eos(tiny_lm):
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder="scratch:siglip-tiny", decoder=str(tiny_lm)))
    images = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))]
    captions = ["a small red circle", "a large blue square left of a green triangle"]
    batch = processor.training_batch(captions, images)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(150):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.1
    ids = model.eval().generate(pixel_values=processor.pixel_values(images), **processor.generation_inputs(2),
                                max_new_tokens=30)
    assert ids.shape[1] < 30  # both rows stopped at EOS, long before the limit
    assert processor.decode(ids) == captions  # the image decides which caption: it is not ignored


def small_run(tmp_path, tiny_lm, **overrides):
    options = dict(
        datasets=["shapes"], model=CaptionerSpec(encoder="scratch:siglip-tiny", decoder=str(tiny_lm)),
        save_dir=str(tmp_path / "model"), checkpoints_dir=str(tmp_path / "ckpt"), max_steps=4, batch_size=4,
        sample=32, eval_sample=8, eval_captions=4, eval_steps=2, save_steps=2, logging_steps=1, warmup_steps=1,
        projection_lr=1e-3, lora_lr=1e-3,
    )
    options.update(overrides)
    return run_training(TrainOptions(**options))


def test_trainer_run_saves_a_loadable_model_with_log_and_curves(tmp_path, tiny_lm):
    result = small_run(tmp_path, tiny_lm)
    assert {"eval_loss", "eval_cider", "eval_bleu_4", "eval_exact_match"} <= set(result.metrics)
    model, processor = load_captioner(result.save_dir)
    assert len(generate_captions(model, processor, [Image.new("RGB", (32, 32))], max_new_tokens=3)) == 1
    log = json.loads((result.save_dir / "training_log.json").read_text())
    assert any("eval_cider" in entry for entry in log["log_history"])
    assert (result.save_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = tmp_path / "ckpt" / "checkpoint-4"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "distilvit_processor.json").is_file()
    load_captioner(checkpoint)  # every checkpoint is a usable model


def test_training_resumes_from_the_last_checkpoint(tmp_path, tiny_lm, caplog):
    small_run(tmp_path, tiny_lm, max_steps=2)
    with caplog.at_level(logging.INFO):  # more steps: another run, so its checkpoint is named explicitly
        result = small_run(tmp_path, tiny_lm, max_steps=4, resume_from=str(tmp_path / "ckpt" / "checkpoint-2"),
                           overwrite_save_dir=True)
    assert "resuming from" in caplog.text and "checkpoint-2" in caplog.text
    assert "max_steps: 2 there, 4 now" in caplog.text  # the accepted difference is named
    assert "missing keys" not in caplog.text  # the tied LM head is re-tied, not reported
    train_steps = [e["step"] for e in result.log_history if "loss" in e]
    assert train_steps == [1, 2, 3, 4]  # steps 1-2 come from the first run's state and were not trained again


def test_corrupt_image_is_skipped_and_training_continues(tmp_path, tiny_lm, caplog):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for i in range(80):  # enough for non-empty 5% validation/test splits
        name = f"img{i}.png"
        if i == 5:
            (folder / name).write_bytes(b"not an image at all")
        else:
            Image.new("RGB", (32, 32), ((i * 40) % 256, 0, 0)).save(folder / name)
        rows.append({"file_name": name, "text": "" if i == 7 else f"a red circle number {i}"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with caplog.at_level(logging.WARNING, logger="distilvit.data"):
        result = small_run(tmp_path, tiny_lm, datasets=[str(folder)], sample=None, eval_sample=None, max_steps=2)
    assert "unreadable image" in caplog.text
    assert "img5.png" in caplog.text
    assert result.save_dir.is_dir()


def test_parameter_groups_get_their_own_learning_rates(tiny_lm):
    model, _ = build_captioner(CaptionerSpec(encoder="scratch:siglip-tiny", decoder=str(tiny_lm)))
    groups = {g["name"]: g for g in parameter_groups(model, projection_lr=1e-3, lora_lr=1e-4, vision_lr=5e-4,
                                                     weight_decay=0.0)}
    assert set(groups) == {"projection", "lora", "vision"}
    assert (groups["projection"]["lr"], groups["lora"]["lr"], groups["vision"]["lr"]) == (1e-3, 1e-4, 5e-4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == trainable
    frozen_lm = [p for n, p in model.language_model.named_parameters() if "lora_" not in n]
    assert not any(p.requires_grad for p in frozen_lm)


def test_blind_training_zeroes_the_image(tmp_path, tiny_lm):
    result = small_run(tmp_path, tiny_lm, blind=True, max_steps=2)
    model, processor = load_captioner(result.save_dir)
    assert model.config.ablate_image
    batch = processor.training_batch(["a red circle"] * 2, [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]])
    with torch.no_grad():
        logits = model(**batch).logits.view(2, -1, model.config.text_config.vocab_size)
    torch.testing.assert_close(logits[0], logits[1])  # different images, same output: it cannot see


def test_device_and_precision_choice(monkeypatch):
    from distilvit.errors import DistilViTError

    assert pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    with pytest.raises(DistilViTError, match="not available"):
        pick_device("cuda")
    assert pick_precision("fp32", "cpu") == "fp32"
    monkeypatch.setattr("distilvit.training.trainer.cpu_supports_bf16", lambda: False)
    assert pick_precision("auto", "cpu") == "fp32"  # bf16 autocast is ~20x slower without native bf16


def test_shapes_rows_feed_the_collator(tiny_lm):
    from distilvit.training.collator import CaptionCollator

    _, processor = build_captioner(CaptionerSpec(encoder="scratch:siglip-tiny", decoder=str(tiny_lm)))
    rows = [load_caption_dataset(["shapes"], "train", sample=4)[i] for i in range(4)]
    batch = CaptionCollator(processor)(rows)
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["input_ids"].shape == batch["labels"].shape


def test_prune_cache_removes_the_dataset_cache_only(tmp_path, tiny_lm):
    cache = tmp_path / "cache"
    (cache / "datasets" / "junk").mkdir(parents=True)
    (cache / "models").mkdir()
    small_run(tmp_path, tiny_lm, max_steps=1, cache_dir=str(cache), prune_cache=True)
    assert not (cache / "datasets").exists() and (cache / "models").is_dir()


def test_trainer_itself_never_pushes_checkpoints_to_the_hub(tmp_path):
    """--push-to-hub is distilvit.hub.push's job (the final folder only, tests/test_hub.py): Trainer's own push
    would upload the checkpoints folder with its optimizer state."""
    from distilvit.training.run import training_arguments

    args = training_arguments(TrainOptions(push_to_hub=True, hub_model_id="me/captioner",
                                           checkpoints_dir=str(tmp_path)), "cpu", "fp32")
    assert not args.push_to_hub and args.hub_model_id is None
    assert args.metric_for_best_model == "eval_cider" and args.greater_is_better
    assert args.lr_scheduler_type == "cosine" and args.load_best_model_at_end


def test_merge_lora_on_request_saves_a_merged_model(tmp_path, tiny_lm):
    result = small_run(tmp_path, tiny_lm, max_steps=1, merge_lora=True)
    model, _ = load_captioner(result.save_dir)
    assert model.config.lora_merged and not model.has_lora()
