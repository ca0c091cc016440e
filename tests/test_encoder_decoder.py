"""``--architecture encoder-decoder``: ViT + GPT-2 with new cross-attention, every weight trained, through the
same builders, Trainer run, save/load, ``eval`` and ``caption`` as the prefix architecture."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
)

from distilvit.cli.main import main
from distilvit.errors import DistilViTError, ModelError
from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.model.captioning import generate_captions
from distilvit.model.encoder_decoder import EncoderDecoderCaptioner, build_encoder_decoder
from distilvit.model.encoder_decoder_processing import EncoderDecoderProcessor
from distilvit.training.run import TrainOptions, run_training

CAPTIONS = ["a small red circle", "a large blue square left of a green triangle"]
IMAGES = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))]


def build(tiny_dirs, **kwargs):
    torch.manual_seed(0)
    spec = CaptionerSpec(architecture="encoder-decoder", encoder=str(tiny_dirs("vit")), decoder=str(tiny_dirs("gpt2")),
                         **kwargs)
    return build_captioner(spec)


@pytest.fixture(scope="module")
def trained(tiny_dirs):
    """A tiny ViT + GPT-2 trained on two captions: (model, processor, batch, losses)."""
    model, processor = build(tiny_dirs)
    batch = processor.training_batch(CAPTIONS, IMAGES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(80):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return model.eval(), processor, batch, losses


def test_built_from_pretrained_parts_with_new_cross_attention_and_all_weights_trainable(tiny_dirs):
    from transformers import AutoModelForCausalLM

    model, processor = build(tiny_dirs)
    assert isinstance(model, VisionEncoderDecoderModel) and isinstance(processor, EncoderDecoderProcessor)
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_dirs("gpt2"))
    assert torch.equal(model.decoder.transformer.wte.weight, pretrained.transformer.wte.weight)  # kept, not re-drawn
    assert any("crossattention" in name for name, _ in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not model.has_lora()


def test_labels_are_caption_tokens_ending_in_eos_with_masked_padding(tiny_dirs):
    _, processor = build(tiny_dirs)
    batch = processor.training_batch(CAPTIONS, IMAGES)
    assert set(batch) == {"labels", "pixel_values"} and batch["pixel_values"].shape == (2, 3, 32, 32)
    short, long = batch["labels"].tolist()
    eos = processor.tokenizer.eos_token_id
    assert long[-1] == eos and processor.decode([long]) == [CAPTIONS[1]]
    end = short.index(eos)
    assert processor.decode([short[:end]]) == [CAPTIONS[0]] and set(short[end + 1:]) == {-100}
    padded = processor.training_batch(CAPTIONS, pad_to_max_length=True)["labels"]
    assert padded.shape == (2, processor.max_length)


def test_training_lowers_the_loss_and_learns_captions_that_stop(trained):
    model, processor, _, losses = trained
    assert losses[-1] < 0.5 < losses[0] / 4
    ids = model.generate(pixel_values=processor.pixel_values(IMAGES), max_new_tokens=20)
    assert ids.shape[1] < 20  # both rows stopped at EOS
    assert processor.decode(ids) == CAPTIONS  # the image decides which caption


def test_loss_normalised_by_the_token_count_of_an_accumulated_batch(trained):
    model, _, batch, _ = trained
    tokens = int((batch["labels"] != -100).sum())
    with torch.no_grad():
        mean = model(**batch).loss
        summed = model(**batch, num_items_in_batch=2 * tokens).loss  # as if half of a 2-step accumulation
    torch.testing.assert_close(summed, mean / 2)


def test_save_and_reload_round_trip_exactly(trained, tmp_path):
    model, processor, batch, _ = trained
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "vision-encoder-decoder"
    loaded, loaded_processor = load_captioner(tmp_path)
    assert isinstance(loaded, EncoderDecoderCaptioner) and isinstance(loaded_processor, EncoderDecoderProcessor)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    assert generate_captions(loaded, loaded_processor, IMAGES) == CAPTIONS
    assert generate_captions(model, processor, IMAGES) == CAPTIONS
    plain = VisionEncoderDecoderModel.from_pretrained(tmp_path)  # a standard transformers checkpoint
    assert plain.generate(pixel_values=processor.pixel_values(IMAGES), max_new_tokens=3).shape[0] == 2
    (tmp_path / "distilvit_processor.json").unlink()  # as in a folder written by other tools
    assert generate_captions(*load_captioner(tmp_path), IMAGES) == CAPTIONS


def test_build_from_configs_with_random_weights(tiny_dirs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs("gpt2"))
    image_processor = AutoImageProcessor.from_pretrained(tiny_dirs("vit"))
    decoder_config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=len(tokenizer))
    encoder_config = ViTConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=8)
    model, processor = build_encoder_decoder(encoder_config, decoder_config, tokenizer, image_processor)
    assert not decoder_config.add_cross_attention  # the caller's config is not changed
    assert model.enc_to_dec_proj.in_features == 48  # widths differ: transformers adds a projection
    assert all(p.requires_grad for p in model.parameters())
    assert len(generate_captions(model, processor, IMAGES, max_new_tokens=3, num_beams=2)) == 2
    with pytest.raises(ModelError, match="gpt2"):
        build_encoder_decoder(encoder_config, LlamaConfig(), tokenizer, image_processor)


def test_decoder_without_cross_attention_is_rejected_naming_those_that_work(tiny_dirs):
    with pytest.raises(ModelError, match="no cross-attention.*gpt2.*--architecture prefix"):
        build_captioner(CaptionerSpec(architecture="encoder-decoder", encoder="scratch:siglip-tiny",
                                      decoder=str(tiny_dirs("llama"))))


def test_convolutional_encoder_is_rejected(tiny_dirs):
    with pytest.raises(ModelError, match="convolutional feature map"):
        build_captioner(CaptionerSpec(architecture="encoder-decoder", encoder="scratch:resnet-tiny",
                                      decoder=str(tiny_dirs("gpt2"))))


# ---------------------------------------------------------------- the CLI, end to end
@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, tiny_dirs):
    folder = tmp_path_factory.mktemp("ed-cli")
    code = main([
        "train", "--architecture", "encoder-decoder", "--encoder-model", "scratch:siglip-tiny",
        "--decoder-model", str(tiny_dirs("gpt2")), "--learning-rate", "1e-3", "--dataset", "shapes",
        "--sample", "16", "--eval-sample", "4", "--eval-captions", "4", "--max-steps", "2", "--batch-size", "4",
        "--eval-steps", "2", "--save-steps", "2", "--warmup-steps", "0",
        "--checkpoints-dir", str(folder / "ckpt"), "--save-dir", str(folder / "model"),
    ])
    assert code == 0
    return folder


def test_cli_train_saves_an_encoder_decoder_with_metrics_and_checkpoints(cli_model):
    log = json.loads((cli_model / "model" / "training_log.json").read_text())
    assert {"eval_loss", "eval_cider"} <= set(log["final_metrics"])
    assert log["options"]["model"]["architecture"] == "encoder-decoder"
    checkpoint = cli_model / "ckpt" / "checkpoint-2"
    assert (checkpoint / "distilvit_processor.json").is_file()
    model, _ = load_captioner(checkpoint)  # every checkpoint is a usable model
    assert isinstance(model, EncoderDecoderCaptioner)


def test_cli_caption_and_eval_on_an_encoder_decoder(cli_model, tmp_path, capsys):
    image = tmp_path / "red.png"
    IMAGES[0].save(image)
    model = str(cli_model / "model")
    assert main(["caption", model, str(image), str(image), "--json", "--max-new-tokens", "3"]) == 0
    captions = json.loads(capsys.readouterr().out)
    assert len(captions) == 2 and captions[0]["caption"] == captions[1]["caption"]
    out = tmp_path / "report"
    assert main(["eval", model, "--sample", "4", "--no-meteor", "--out", str(out), "--max-new-tokens", "4"]) == 0
    assert {"cider", "bleu_4"} <= set(json.loads((out / "metrics.json").read_text())["metrics"])
    capsys.readouterr()
    # the blind baseline zeroes prefix image tokens; this design has none: a clear error, not an internal one
    assert main(["eval", model, "--blind", "--sample", "4", "--no-meteor", "--out", str(tmp_path / "blind")]) == 2
    assert "has none" in capsys.readouterr().err


def test_continuing_training_of_a_saved_encoder_decoder(cli_model, tmp_path):
    result = run_training(TrainOptions(
        base_model=str(cli_model / "model"), learning_rate=1e-3, max_steps=1, batch_size=2, sample=8, eval_sample=2,
        eval_captions=0, metric_for_best_model="loss", eval_steps=1, save_steps=1, warmup_steps=0,
        save_dir=str(tmp_path / "m"), checkpoints_dir=str(tmp_path / "c"),
    ))
    assert isinstance(load_captioner(result.save_dir)[0], EncoderDecoderCaptioner)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--architecture", "encoder-decoder", "--lora-r", "8", "--no-lora"], "--no-lora, --lora-r only apply to"),
        (["--architecture", "encoder-decoder", "--lora-lr", "1e-3", "--merge-lora"], "no LoRA"),
        (["--architecture", "encoder-decoder", "--cache-features"], "--cache-features only apply"),
        (["--architecture", "encoder-decoder", "--no-projection-layernorm"], "--no-projection-layernorm only apply"),
        (["--learning-rate", "1e-3"], "--learning-rate applies to --architecture encoder-decoder"),
        (["--architecture", "encoder-decoder", "--decoder-model", "LLAMA"], "no cross-attention"),
    ],
)
def test_options_that_do_not_apply_give_a_clear_error(tiny_dirs, tmp_path, capsys, extra, message):
    argv = ["train", "--encoder-model", "scratch:siglip-tiny", "--decoder-model", str(tiny_dirs("gpt2")),
            "--sample", "8", "--max-steps", "1", "--checkpoints-dir", str(tmp_path / "c"),
            "--save-dir", str(tmp_path / "m")] + [str(tiny_dirs("llama")) if a == "LLAMA" else a for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err


def test_learning_rate_reaches_every_parameter_group(tiny_dirs):
    from distilvit.training import encoder_decoder
    from distilvit.training.trainer import parameter_groups

    model, _ = build(tiny_dirs)
    rates = encoder_decoder.learning_rates(TrainOptions(learning_rate=2e-4))
    groups = parameter_groups(model, weight_decay=0.0, **rates)
    assert {g["lr"] for g in groups} == {2e-4}
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    assert encoder_decoder.learning_rates(TrainOptions())["lora_lr"] == encoder_decoder.DEFAULT_LEARNING_RATE
    with pytest.raises(DistilViTError, match="unknown --architecture"):
        encoder_decoder.check_architecture_options(TrainOptions(model=CaptionerSpec(architecture="nope")))
