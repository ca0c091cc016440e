"""The lean training step: prefix reduction, caption-only logits, dynamic padding, length grouping,
activation checkpointing and the attention switch. Each must keep the maths (or say exactly how it changes it)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from test_training import small_run
from transformers.trainer_pt_utils import LengthGroupedSampler

from distilvit.cli.main import main as distilvit
from distilvit.errors import ModelError
from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.model.captioning import generate_captions
from distilvit.model.reduction import reduce_tokens, reduced_shape

CAPTIONS = ["a red circle", "a small blue square left of a large green triangle"]


def images(n=2):
    return [Image.new("RGB", (32, 32), (255 * (i % 2), 0, 200)) for i in range(n)]


def build(encoder, lm, **kwargs):
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder=str(encoder), decoder=str(lm), **kwargs))
    return model.eval(), processor


# ------------------------------------------------------------------ prefix reduction
def test_reduction_shapes_for_a_siglip_b16_grid():
    feats = torch.randn(2, 196, 768)
    assert reduce_tokens(feats, "pool2").shape == (2, 49, 768)
    assert reduce_tokens(feats, "shuffle2").shape == (2, 49, 3072)
    assert reduced_shape(196, 768, "pool2") == (49, 768) and reduced_shape(196, 768, "shuffle2") == (49, 3072)
    assert reduce_tokens(feats, "pool4").shape == (2, 16, 768)  # 4x4 windows, the last ones 2 wide
    torch.testing.assert_close(reduce_tokens(feats, "pool4")[:, 0], feats.reshape(2, 14, 14, 768)[:, :4, :4].mean((1, 2)))
    assert reduce_tokens(feats, "none") is feats


def test_pool2_averages_each_2x2_neighbourhood_and_shuffle2_keeps_every_value():
    grid = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid, row-major, width 1
    pooled = reduce_tokens(grid, "pool2").flatten().tolist()
    assert pooled == [(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4, (8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]
    shuffled = reduce_tokens(grid, "shuffle2")
    assert shuffled.shape == (1, 4, 4)
    assert sorted(shuffled[0, 0].tolist()) == [0, 1, 4, 5]  # the top-left token holds its 4 neighbours
    assert sorted(shuffled.flatten().tolist()) == list(range(16))


def test_odd_grids_are_padded_and_non_square_ones_rejected():
    feats = torch.ones(1, 9, 3)  # 3x3 (the demo's ResNet grid)
    assert reduce_tokens(feats, "pool2").shape == (1, 4, 3)
    assert torch.equal(reduce_tokens(feats, "pool2"), torch.ones(1, 4, 3))  # padding is not averaged in
    assert reduce_tokens(feats, "shuffle2").shape == (1, 4, 12)
    with pytest.raises(ModelError, match="square grid"):
        reduce_tokens(torch.ones(1, 17, 3), "pool2")  # e.g. a ViT with its CLS token kept


@pytest.mark.parametrize("kind,tokens", [("pool2", 4), ("shuffle2", 4)])
def test_reduced_model_trains_and_round_trips(tmp_path, tiny_encoder, tiny_lm, kind, tokens):
    model, processor = build(tiny_encoder, tiny_lm, prefix_reduction=kind)
    assert model.config.num_image_tokens == tokens == processor.num_image_tokens  # 4x4 grid -> 2x2
    batch = processor.training_batch(CAPTIONS, images())
    model.train()
    model(**batch).loss.backward()
    assert model.projection.layers[0].weight.grad is not None
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, reprocessor = load_captioner(tmp_path)
    assert reloaded.config.prefix_reduction == kind
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)
    assert generate_captions(model, processor, images(), max_new_tokens=4) == generate_captions(
        reloaded, reprocessor, images(), max_new_tokens=4)


def test_non_square_encoder_grid_is_a_clear_error_when_building(tiny_encoder, tiny_lm, monkeypatch):
    import distilvit.model.loading as loading

    monkeypatch.setattr(loading, "probe_vision_output", lambda *a, **k: (17, 32))  # e.g. CLS token kept
    with pytest.raises(ModelError, match="square grid"):
        build(tiny_encoder, tiny_lm, prefix_reduction="pool2")


# ------------------------------------------------------------------ loss-preserving switches
def test_full_logits_give_the_same_loss_as_caption_only_logits(tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm)
    batch = processor.training_batch(CAPTIONS, images())
    with torch.no_grad():
        lean = model(**batch)
        model.loss_logits = "full"
        full = model(**batch)
    torch.testing.assert_close(lean.loss, full.loss, rtol=1e-6, atol=1e-6)
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert lean.logits.shape[0] == labelled  # (L, V): only caption positions
    assert full.logits.shape[:2] == (2, batch["input_ids"].shape[1] - 1)  # (B, T - 1, V)


def test_padding_to_max_length_changes_width_not_loss(tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm, max_length=20)
    dynamic = processor.training_batch(CAPTIONS, images())
    padded = processor.training_batch(CAPTIONS, images(), pad_to_max_length=True)
    assert padded["input_ids"].shape[1] == len(processor.prompt_ids()) + 20 > dynamic["input_ids"].shape[1]
    with torch.no_grad():
        torch.testing.assert_close(model(**dynamic).loss, model(**padded).loss, rtol=1e-5, atol=1e-5)


def test_eager_attention_matches_sdpa(tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm)
    batch = processor.training_batch(CAPTIONS, images())
    with torch.no_grad():
        sdpa = model(**batch).loss
        model.language_model.set_attn_implementation("eager")
        eager = model(**batch).loss
    torch.testing.assert_close(sdpa, eager, rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_really_recomputes_after_from_pretrained(tmp_path, tiny_encoder, tiny_lm):
    model, processor = build(tiny_encoder, tiny_lm)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model, processor = load_captioner(tmp_path)  # eval mode, the trap: checkpointing is skipped in eval mode
    model.activation_checkpointing_enable({"use_reentrant": False})
    calls = []
    # a pre-hook: non-reentrant checkpointing stops recomputing once it has every tensor the backward needs
    model.language_model.model.layers[0].input_layernorm.register_forward_pre_hook(lambda *a: calls.append(1))
    batch = processor.training_batch(CAPTIONS, images())

    def step():
        calls.clear()
        model(**batch).loss.backward()
        return len(calls)

    assert step() == 1  # eval mode: no recomputation
    model.train()
    assert step() == 2  # train mode: the layer runs again in the backward pass


# ------------------------------------------------------------------ batching and the CLI
def test_length_grouped_batches_have_less_spread(tmp_path, tiny_lm):
    from distilvit.data import load_caption_dataset
    from distilvit.training.run import caption_lengths

    _, processor = build("scratch:siglip-tiny", tiny_lm)
    lengths = caption_lengths(load_caption_dataset(["shapes"], "train", sample=256), processor)
    assert len(lengths) == 256 and len(set(lengths)) >= 3  # 1, 2 or 3 shapes per scene
    torch.manual_seed(0)
    order = list(LengthGroupedSampler(8, lengths=lengths))
    grouped = [order[i : i + 8] for i in range(0, 256, 8)]
    randoms = [list(range(256))[i : i + 8] for i in range(0, 256, 8)]

    def spread(batches):
        return sum(max(lengths[j] for j in b) - min(lengths[j] for j in b) for b in batches) / len(batches)

    assert spread(grouped) < spread(randoms) / 2


def _record_training_forwards(monkeypatch) -> list[dict]:
    """Record, for every forward of a training step, the batch width, its padding and the logits' shape."""
    from distilvit.model.modeling import DistilViTForCaptioning

    calls, forward = [], DistilViTForCaptioning.forward

    def recording(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        out = forward(self, input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        if self.training and labels is not None:
            calls.append({"width": input_ids.shape[1], "batch": input_ids.shape[0],
                          "some_row_unpadded": bool(attention_mask.bool().all(dim=1).any()),
                          "labelled": int((labels[:, 1:] != -100).sum()), "logits": tuple(out.logits.shape),
                          "vocab": self.config.text_config.vocab_size, "attn": self.language_model.config._attn_implementation})
        return out

    monkeypatch.setattr(DistilViTForCaptioning, "forward", recording)
    return calls


def test_training_steps_use_the_switches_they_are_given(tmp_path, tiny_lm, monkeypatch):
    calls = _record_training_forwards(monkeypatch)
    spec = CaptionerSpec(encoder="scratch:siglip-tiny", decoder=str(tiny_lm), prefix_reduction="shuffle2", max_length=20)
    quick = {"max_steps": 2, "eval_captions": 2}
    result = small_run(tmp_path / "flipped", tiny_lm, model=spec, loss_logits="full", pad_to_max_length=True,
                       group_by_length=False, gradient_checkpointing=True, attn_implementation="eager", **quick)
    model, processor = load_captioner(result.save_dir)
    assert model.config.prefix_reduction == "shuffle2" and model.config.num_image_tokens == 4
    padded_width = len(processor.prompt_ids()) + 20
    flipped, calls[:] = list(calls), []
    assert flipped and all(  # every batch padded to --max-length, logits at every position, eager attention
        c["width"] == padded_width and not c["some_row_unpadded"] and c["attn"] == "eager"
        and c["logits"] == (c["batch"], padded_width - 1, c["vocab"]) for c in flipped)

    small_run(tmp_path / "default", tiny_lm, model=spec, **quick)
    assert calls and all(  # dynamic padding (to the longest caption) and logits only at the labelled positions
        c["width"] < padded_width and c["some_row_unpadded"] and c["attn"] == "sdpa"
        and c["logits"] == (c["labelled"], c["vocab"]) for c in calls)


def test_cli_accepts_the_speed_switches_and_rejects_bad_ones(tmp_path, tiny_lm, capsys):
    code = distilvit(["train", "--dataset", "shapes", "--encoder-model", "scratch:siglip-tiny", "--decoder-model",
                      str(tiny_lm), "--prefix-reduction", "pool2", "--max-steps", "1", "--sample", "8",
                      "--eval-sample", "4", "--eval-captions", "2", "--eval-steps", "1", "--save-steps", "1",
                      "--batch-size", "4", "--checkpoints-dir", str(tmp_path / "c"), "--save-dir", str(tmp_path / "m")])
    assert code == 0
    assert load_captioner(tmp_path / "m")[0].config.num_image_tokens == 4
    with pytest.raises(SystemExit):
        distilvit(["train", "--prefix-reduction", "pool3"])
    assert "pool3" in capsys.readouterr().err
