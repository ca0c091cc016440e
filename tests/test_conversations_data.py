"""Conversation data: the three file forms, image paths, lazy/bad images, shapes-vqa, mixed batches."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from distilvit.conversations import shapes_vqa
from distilvit.conversations.collator import ConversationCollator
from distilvit.conversations.dataset import ConversationDataset, load_conversations, processor_image_size
from distilvit.conversations.formats import load_conversation_file
from distilvit.data.shapes import HELD_OUT_PAIRS, parse_shapes_caption
from distilvit.errors import DataError
from distilvit.model import CaptionerSpec, build_captioner
from distilvit.model.configuration import IMAGE_TOKEN

LLAVA = [
    {"id": "a", "image": "red.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "red"},
        {"from": "human", "value": "Is it a circle?"}, {"from": "gpt", "value": "no"}]},
    {"id": "b", "image": "sub/blue.png", "conversations": [
        {"from": "human", "value": "What colour is it?\n<image>"}, {"from": "gpt", "value": "blue"}]},
    {"id": "c", "conversations": [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]},
]
CHAT = [
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
                  {"role": "assistant", "content": "red"}], "images": ["red.png"]},
    {"messages": [{"role": "user", "content": "What colour?"}, {"role": "assistant", "content": "blue"}],
     "image": "sub/blue.png"},
]


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(images / "red.png")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(images / "sub" / "blue.png")
    return images


def write(path, records, jsonl=False):
    path.write_text("\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records))
    return path


@pytest.mark.parametrize("jsonl", [False, True])
def test_llava_json_and_jsonl(tmp_path, folder, jsonl):
    samples = load_conversation_file(write(tmp_path / ("d.jsonl" if jsonl else "d.json"), LLAVA, jsonl), folder)
    assert [s["id"] for s in samples] == ["a", "b", "c"]
    assert samples[0]["image"] == (folder / "red.png").resolve() and samples[2]["image"] is None
    assert samples[0]["messages"][0] == {"role": "user", "content": "<image>\nWhat colour is it?"}
    assert samples[1]["messages"][0]["content"].endswith(IMAGE_TOKEN)  # image last in the turn
    assert [m["role"] for m in samples[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert IMAGE_TOKEN not in json.dumps(samples[2]["messages"])  # text-only


def test_chat_set_messages_form(tmp_path, folder):
    samples = load_conversation_file(write(tmp_path / "chat.jsonl", CHAT, jsonl=True), folder)
    assert samples[0]["messages"][1]["content"] == IMAGE_TOKEN + "What colour?"
    assert samples[0]["messages"][0]["role"] == "system"
    # an image without a placeholder gets one at the start of the first user turn
    assert samples[1]["messages"][0]["content"] == IMAGE_TOKEN + "\nWhat colour?"
    assert samples[1]["image"] == (folder / "sub" / "blue.png").resolve()


@pytest.mark.parametrize("image", ["../secret.png", "/etc/passwd", "sub/../../x.png"])
def test_image_path_escaping_the_folder_is_refused(tmp_path, folder, image):
    record = {"id": "x", "image": image, "conversations": LLAVA[1]["conversations"]}
    with pytest.raises(DataError, match="leaves the image folder"):
        load_conversation_file(write(tmp_path / "d.json", [record]), folder)


def test_symlink_out_of_the_folder_is_refused(tmp_path, folder):
    (tmp_path / "outside.png").write_bytes(b"x")
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    record = {"id": "x", "image": "link.png", "conversations": LLAVA[1]["conversations"]}
    with pytest.raises(DataError, match="leaves the image folder"):
        load_conversation_file(write(tmp_path / "d.json", [record]), folder)


@pytest.mark.parametrize("record, message", [
    ({"id": "x", "conversations": [{"from": "robot", "value": "hi"}]}, "'from'"),
    ({"id": "x", "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "a"}]},
     "names no image"),
    ({"id": "x", "caption": "hi"}, "needs 'conversations'"),
    ({"id": "x", "conversations": [{"from": "human", "value": "hi"}]}, "end with a assistant turn"),
])
def test_bad_records_say_what_is_wrong(tmp_path, folder, record, message):
    with pytest.raises(DataError, match=message):
        load_conversation_file(write(tmp_path / "d.json", [record]), folder)


def test_images_need_an_image_folder(tmp_path):
    with pytest.raises(DataError, match="--image-folder"):
        load_conversation_file(write(tmp_path / "d.json", LLAVA[:1]), None)


def test_missing_and_corrupt_images_become_blank_and_are_counted(tmp_path, folder):
    (folder / "corrupt.png").write_bytes(b"not a png")
    records = [dict(LLAVA[0], id="ok"), dict(LLAVA[0], id="gone", image="missing.png"),
               dict(LLAVA[0], id="bad", image="corrupt.png")]
    samples = load_conversation_file(write(tmp_path / "d.json", records), folder)  # nothing opened yet
    data = ConversationDataset(samples, (32, 24))
    rows = [data[i] for i in range(3)] + [data[2]]
    assert rows[0]["image"].getpixel((0, 0)) == (255, 0, 0)
    assert rows[1]["image"].size == (24, 32) and rows[2]["image"].getpixel((0, 0)) == (0, 0, 0)
    assert set(data.bad_images) == {"gone", "bad"}
    assert data.report().startswith("2 image(s) could not be read")


def test_shapes_vqa_answers_are_true_of_the_scene():
    for sample in shapes_vqa.vqa_samples("test", sample=30):
        truth = sample["answer"]
        scene_caption = next(s["answer"] for s in shapes_vqa.vqa_samples("test", sample=30)
                             if s["id"].rsplit("-", 1)[0] == sample["id"].rsplit("-", 1)[0] and s["kind"] == "describe")
        objects = parse_shapes_caption(scene_caption)
        question = sample["question"]
        if sample["kind"] == "count":
            assert truth == shapes_vqa.NUMBERS[len(objects)]
        elif sample["kind"] == "colour":
            shape = question.split()[-1][:-1]
            assert [c for _, c, s in objects if s == shape] == [truth]
        elif sample["kind"] == "exists":
            assert truth == ("yes" if any(s == question.split()[-1][:-1] for _, _, s in objects) else "no")
        elif sample["kind"] == "left_of":
            colour, shape = question[:-1].split()[-2:]
            at = [(c, s) for _, c, s in objects].index((colour, shape))
            assert truth == ("nothing" if at == 0 else " ".join(objects[at - 1][1:]))
        assert sample["messages"][0]["content"] == IMAGE_TOKEN + question


def test_shapes_vqa_holds_pairs_out_of_training():
    train = shapes_vqa.vqa_samples("train", sample=300)
    text = json.dumps([s["messages"] for s in train])
    for colour, shape in HELD_OUT_PAIRS:
        assert f"{colour} {shape}" not in text
    test = shapes_vqa.vqa_samples("test", sample=60)
    assert any(s["held_out"] for s in test) and not all(s["held_out"] for s in test)
    assert {s["kind"] for s in test} == set(shapes_vqa.KINDS)
    assert {len(s["messages"]) for s in train} == {2, 4, 6}


def test_file_split_keeps_validation_apart(tmp_path, folder):
    records = [dict(LLAVA[2], id=str(i)) for i in range(40)]
    path = str(write(tmp_path / "d.json", records))
    train = load_conversations([path], "train", image_folder=folder)
    validation = load_conversations([path], "validation", image_folder=folder)
    assert len(train) + len(validation) == 40 and len(validation) == 2
    assert not {s["id"] for s in train} & {s["id"] for s in validation}


def test_mixed_batch_of_text_only_and_image_rows(tiny_encoder, tiny_lm, tmp_path, folder):
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder=str(tiny_encoder), decoder=str(tiny_lm)))
    model.eval()
    samples = load_conversation_file(write(tmp_path / "d.json", LLAVA), folder)
    data = ConversationDataset(samples, processor_image_size(processor))
    collate = ConversationCollator(processor)
    rows = [data[2], data[0], data[2], data[1]]  # text, image, text, image
    batch = collate(rows)
    assert batch["pixel_values"].shape[0] == 2
    counts = (batch["input_ids"] == processor.image_token_id).sum(1).tolist()
    assert counts == [0, processor.num_image_tokens, 0, processor.num_image_tokens]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=batch["pixel_values"]).logits
        for i, row in enumerate(rows):  # each row alone gives the same logits as inside the mixed batch
            alone = collate([row])
            width = alone["input_ids"].shape[1]
            single = model(input_ids=alone["input_ids"], pixel_values=alone.get("pixel_values")).logits
            torch.testing.assert_close(logits[i, :width], single[0], atol=1e-4, rtol=1e-4)
    model.train()
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert collate([data[2]]).get("pixel_values") is None  # an all-text batch has no pixels
