"""The two-stage recipe with tiny models: pretrain (projection only), instruct (projection + LoRA on
conversations), reload in one call, QA evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from distilvit.cli.main import main
from distilvit.conversations.template import prompt_ids
from distilvit.evaluation.qa import answer_questions, qa_metrics
from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.model.configuration import IMAGE_TOKEN
from distilvit.training.instruct import stage_spec
from safetensors.torch import load_file

COMMON = ["--max-steps", "4", "--batch-size", "4", "--eval-steps", "2", "--save-steps", "2", "--logging-steps", "1",
          "--warmup-steps", "1", "--eval-sample", "4", "--no-group-by-length", "--projection-lr", "1e-2",
          "--lora-lr", "1e-2"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, tiny_encoder, tiny_lm):
    out = tmp_path_factory.mktemp("stage1")
    code = main(["train", "--stage", "pretrain", "--dataset", "shapes", "--sample", "16", "--encoder-model",
                 str(tiny_encoder), "--decoder-model", str(tiny_lm), "--eval-captions", "0", "--metric-for-best-model", "loss", "--save-dir",
                 str(out / "model"), "--checkpoints-dir", str(out / "ckpt"), *COMMON])
    assert code == 0
    return out / "model"


@pytest.fixture(scope="module")
def stage2(tmp_path_factory, stage1):
    out = tmp_path_factory.mktemp("stage2")
    code = main(["train", "--stage", "instruct", "--base-model", str(stage1), "--dataset", "shapes-vqa", "--sample",
                 "16", "--save-dir", str(out / "model"), "--checkpoints-dir", str(out / "ckpt"), *COMMON])
    assert code == 0
    return out / "model"


def test_pretrain_trains_the_projection_only(stage1, tiny_encoder, tiny_lm):
    model, _ = load_captioner(stage1)
    assert not model.has_lora() and model.config.use_lora is False
    # the LM and the encoder are the pretrained ones, untouched
    from transformers import AutoModel, AutoModelForCausalLM
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm).state_dict()
    assert all(torch.equal(v, lm[k]) for k, v in model.language_model.state_dict().items())
    vision = AutoModel.from_pretrained(tiny_encoder).state_dict()
    assert all(torch.equal(v, vision[k]) for k, v in model.vision_model.state_dict().items())
    # what the stage trains: the projection alone
    spec = stage_spec("pretrain", CaptionerSpec(encoder=str(tiny_encoder), decoder=str(tiny_lm)))
    fresh, _ = build_captioner(spec)
    assert {n.split(".")[0] for n, p in fresh.named_parameters() if p.requires_grad} == {"projection"}
    log = json.loads((stage1 / "training_log.json").read_text())
    assert log["options"]["stage"] == "pretrain" and log["options"]["model"]["use_lora"] is False


def test_instruct_trains_lora_and_projection_from_the_stage1_model(stage1, stage2):
    base, after = load_file(stage1 / "model.safetensors"), load_file(stage2 / "model.safetensors")
    lora = [k for k in after if "lora_" in k]
    assert lora and not any("lora_" in k for k in base)
    assert any(after[k].abs().sum() > 0 for k in lora if "lora_B" in k)  # the adapters learned
    projection = [k for k in base if k.startswith("projection.")]
    assert any(not torch.equal(base[k], after[k]) for k in projection)
    frozen = [k for k in base if k.startswith("language_model.") and k in after]
    assert frozen and all(torch.equal(base[k], after[k]) for k in frozen)  # LM base weights untouched
    model, processor = load_captioner(stage2)  # one call: projection + adapters + LM
    assert model.has_lora() and model.config.use_lora
    assert not model.training


def test_saved_instruct_model_answers_questions(stage2):
    model, processor = load_captioner(stage2)
    rows = [{"messages": [{"role": "user", "content": IMAGE_TOKEN + "how many shapes are there?"}],
             "image": Image.new("RGB", (32, 32), (255, 0, 0))},
            {"messages": [{"role": "user", "content": "is there a circle?"}], "image": None}]
    answers = answer_questions(model, processor, rows, max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # the same answers one by one (left padding and mixed image/text batches do not change them)
    assert [answer_questions(model, processor, [r], max_new_tokens=4)[0] for r in rows] == answers


def test_eval_scores_question_answering(stage2, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["eval", str(stage2), "--dataset", "shapes-vqa", "--sample", "12", "--out", str(out),
                 "--max-new-tokens", "4", "--format", "md"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["questions"] == 12 and 0 <= metrics["exact_match"] <= 1
    assert any(k.startswith("exact_count") or k.startswith("exact_colour") for k in metrics)
    assert metrics["questions_seen"] + metrics["questions_held_out"] == 12
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 12


def test_instruct_on_a_file_with_a_corrupt_image_finishes_and_counts_it(stage1, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(images / "red.png")
    (images / "broken.png").write_bytes(b"\x89PNG broken")
    records = [{"id": f"r{i}", "image": "broken.png" if i == 3 else "red.png",
                "conversations": [{"from": "human", "value": "<image>\nwhat colour is it?"},
                                  {"from": "gpt", "value": "red"}]} for i in range(8)]
    records.append({"id": "text", "conversations": [{"from": "human", "value": "say yes"}, {"from": "gpt", "value": "yes"}]})
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    code = main(["train", "--stage", "instruct", "--base-model", str(stage1), "--dataset", str(data), "--image-folder",
                 str(images), "--save-dir", str(tmp_path / "model"), "--checkpoints-dir", str(tmp_path / "ckpt"),
                 "--num-train-epochs", "2", *COMMON[2:]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 image(s) could not be read" in captured.out
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert log["final_metrics"]["unreadable_images"] == 1


def test_instruct_runs_have_the_run_identity_of_every_training_run(stage1, stage2, capsys):
    """The instruct stage goes through the same run as captioning: the finished command trains nothing, and a
    different instruct run meeting its checkpoints is refused with the differing option named."""
    out = stage2.parent
    args = ["train", "--stage", "instruct", "--base-model", str(stage1), "--dataset", "shapes-vqa", "--sample", "16",
            "--save-dir", str(out / "model"), "--checkpoints-dir", str(out / "ckpt"), *COMMON]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(args) == 0
    assert "already finished: nothing trained" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert (out / "ckpt" / "checkpoint-4" / "distilvit_run.json").is_file()
    other = [a if a != "16" else "12" for a in args]  # --sample 12: another run
    assert main(other) == 2
    assert "sample" in capsys.readouterr().err


def test_instruct_needs_a_base_model(tmp_path, capsys):
    assert main(["train", "--stage", "instruct", "--dataset", "shapes-vqa", "--save-dir", str(tmp_path)]) == 2
    assert "--base-model" in capsys.readouterr().err


def test_escaping_image_path_is_a_clear_cli_error(stage1, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"image": "../x.png", "conversations": [
        {"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "a"}]}))
    assert main(["train", "--stage", "instruct", "--base-model", str(stage1), "--dataset", str(data),
                 "--image-folder", str(tmp_path / "images"), "--save-dir", str(tmp_path / "m")]) == 2
    assert "leaves the image folder" in capsys.readouterr().err


def test_qa_metrics_on_a_hand_made_case():
    records = [
        {"prediction": "Red.", "answer": "red", "kind": "colour", "held_out": False},
        {"prediction": "blue", "answer": "red", "kind": "colour", "held_out": True},
        {"prediction": "purple", "answer": "purple", "kind": "colour", "held_out": True},
        {"prediction": " two ", "answer": "two", "kind": "count", "held_out": False},
        {"prediction": "three", "answer": "two", "kind": "count", "held_out": False},
        {"prediction": "yes", "answer": "yes"},
    ]
    m = qa_metrics(records)
    assert m["exact_match"] == pytest.approx(4 / 6) and m["questions"] == 6
    assert m["exact_colour"] == pytest.approx(2 / 3) and m["questions_colour"] == 3
    assert m["exact_count"] == pytest.approx(1 / 2)
    assert m["exact_all"] == 1.0 and m["questions_all"] == 1
    assert m["exact_seen"] == pytest.approx(2 / 3) and m["questions_seen"] == 3
    assert m["exact_held_out"] == pytest.approx(1 / 2) and m["questions_held_out"] == 2
    assert m["exact_colour_held_out"] == pytest.approx(1 / 2) and m["exact_colour_seen"] == 1.0
    assert m["exact_count_seen"] == pytest.approx(1 / 2) and "exact_count_held_out" not in m


def test_instruct_model_caption_prompt_is_a_user_turn(stage2):
    _, processor = load_captioner(stage2)
    messages = [{"role": "user", "content": IMAGE_TOKEN + processor.prompt}]
    assert processor.prompt_ids() == prompt_ids(processor, messages)


def test_instruct_trains_exactly_projection_and_adapters(stage1):
    from distilvit.training.instruct import ensure_lora
    from distilvit.training.run import TrainOptions

    model, _ = load_captioner(stage1)
    ensure_lora(model, TrainOptions())
    parts = {("lora" if "lora_" in n else n.split(".")[0]) for n, p in model.named_parameters() if p.requires_grad}
    assert parts == {"projection", "lora"}


def test_demo_instruct_recipes_are_valid_train_options():
    """`make demo-instruct` passes configs/instruct-*.args to `distilvit train` (stage 1 plus its prompt)."""
    import shlex
    from pathlib import Path

    from distilvit.cli.main import build_parser
    from distilvit.cli.train import options_from_args

    configs = Path(__file__).resolve().parents[1] / "configs"
    stage1 = build_parser().parse_args(["train", *shlex.split((configs / "instruct-pretrain.args").read_text(),
                                                              comments=True), "--prompt", "describe the image."])
    opts = options_from_args(stage1)
    assert opts.stage == "pretrain" and not opts.model.use_lora and opts.model.chat_template
    assert opts.model.prompt == "describe the image."
    assert stage1.encoder_model == "demo-output/encoder" and stage1.decoder_model == "smollm2-gguf"
    stage2 = build_parser().parse_args(["train", *shlex.split((configs / "instruct-tune.args").read_text(),
                                                              comments=True), "--base-model", "x"])
    opts = options_from_args(stage2)
    assert opts.stage == "instruct" and opts.datasets == ["shapes-vqa"] and opts.model.use_lora
    from distilvit.conversations.shapes_vqa import DESCRIBE
    assert DESCRIBE == "describe the image."  # stage 1's instruction is shapes-vqa's describe question


def test_show_prints_seen_and_held_out_answers(tmp_path, capsys):
    from distilvit.conversations.show import main as show

    lines = [{"image_id": "a", "question": "how many shapes are there?", "prediction": "two", "references": ["two"],
              "exact_match": True, "held_out": False},
             {"image_id": "b", "question": "what colour is the circle?", "prediction": "red", "references": ["purple"],
              "exact_match": False, "held_out": True}]
    path = tmp_path / "predictions.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    assert show([str(path), "--count", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[seen pairs] how many shapes are there? -> 'two'") and out[0].endswith("right)")
    assert out[1].startswith("[held-out pair]") and "WRONG" in out[1]
