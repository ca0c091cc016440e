"""Chat inference (model/chat.py) and its commands: `distilvit chat` (one shot, multi-turn from stdin, streamed)
and `distilvit caption --prompt`, with a tiny model."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from serving_helpers import make_model_dir

from distilvit.cli.main import main
from distilvit.conversations.template import prompt_ids
from distilvit.errors import DistilViTError
from distilvit.model import load_captioner
from distilvit.model.captioning import generate_captions
from distilvit.model.chat import (
    Conversation,
    answer_images,
    chat,
    conversation_ids,
    generate_replies,
    image_turn,
    join_parts,
)

TOKENS = {"max_new_tokens": 6}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_encoder, tiny_lm):
    torch.manual_seed(0)  # the random projection, whatever ran before: the same replies every run
    return make_model_dir(tmp_path_factory.mktemp("chat-model"), tiny_encoder, tiny_lm)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_captioner(model_dir)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat-images")
    paths = []
    for name, colour in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
        Image.new("RGB", (30, 20), colour).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


def rgb(path):
    return Image.open(path).convert("RGB")


def test_a_batch_of_conversations_answers_as_each_alone_and_streams_its_text(loaded, images):
    model, processor = loaded
    tokenizer = processor.tokenizer
    short = conversation_ids(processor, [{"role": "user", "content": image_turn("the red")}], has_image=True)
    long = conversation_ids(processor, [{"role": "user", "content": image_turn("the red")},
                                        {"role": "assistant", "content": "a dog"},
                                        {"role": "user", "content": "is the circle left of the square"}],
                            has_image=True)
    text_only = tokenizer("a photo of", add_special_tokens=False).input_ids
    rows = [(short, rgb(images[0])), (long, rgb(images[1])), (text_only, None)]
    alone = [generate_replies(model, processor, [Conversation(ids, image)], **TOKENS)[0] for ids, image in rows]
    pieces: list[list[str]] = [[], [], []]
    together = generate_replies(model, processor, [Conversation(ids, image, pieces[i].append)
                                                   for i, (ids, image) in enumerate(rows)], **TOKENS)
    assert together == alone  # text, token counts, finish reasons
    assert all(r.text for r in together) and len({r.text for r in together}) > 1
    assert ["".join(p) for p in pieces] == [r.text for r in together]
    assert all(len(p) > 1 for p in pieces)  # piece by piece, not the whole reply at once
    assert [r.prompt_tokens for r in together] == [len(ids) for ids, _ in rows]
    for reply in together:
        ended = reply.finish_reason == "stop"
        assert reply.finish_reason in ("stop", "length") and (ended or reply.completion_tokens == 6)


def test_the_caption_prompt_as_a_conversation_gives_the_caption(loaded, images):
    model, processor = loaded
    image = rgb(images[0])
    assert prompt_ids(processor, [{"role": "user", "content": "<image>"}]) == processor.prompt_ids()
    reply = chat(model, processor, [{"role": "user", "content": "<image>"}], image, **TOKENS)
    assert reply.text == generate_captions(model, processor, [image], **TOKENS)[0]


def test_a_reply_that_reaches_the_end_token_stops(loaded, images):
    model, processor = loaded
    messages = [{"role": "user", "content": image_turn("the red")}]
    first = chat(model, processor, messages, rgb(images[0]), max_new_tokens=1)
    text_config = model.config.text_config
    eos = text_config.eos_token_id
    text_config.eos_token_id = processor.tokenizer(first.text, add_special_tokens=False).input_ids[0]
    try:
        reply = chat(model, processor, messages, rgb(images[0]), **TOKENS)
    finally:
        text_config.eos_token_id = eos
    assert (reply.text, reply.finish_reason, reply.completion_tokens) == ("", "stop", 1)


def test_image_placeholders_must_match_the_image(loaded):
    _, processor = loaded
    with pytest.raises(DistilViTError, match="text contains"):
        join_parts(["what is <image> here"])
    assert join_parts([None, "what", "", "colour"]) == "<image>what\ncolour"
    assert join_parts(["what", None, "here"]) == "what<image>here"
    with pytest.raises(DistilViTError, match="0 <image> placeholders for one image"):
        conversation_ids(processor, [{"role": "user", "content": "hello"}], has_image=True)
    with pytest.raises(DistilViTError, match="1 <image> placeholders for no image"):
        conversation_ids(processor, [{"role": "user", "content": "<image> hello"}], has_image=False)
    with pytest.raises(DistilViTError):  # ends with the assistant: nothing to answer
        conversation_ids(processor, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],
                         has_image=False)


# ---------------------------------------------------------------- the commands
def test_chat_one_shot_prints_the_reply(model_dir, loaded, images, capsys):
    model, processor = loaded
    assert main(["chat", str(model_dir), "--image", str(images[0]), "--prompt", "the red", "--max-new-tokens", "6"]) == 0
    expected = chat(model, processor, [{"role": "user", "content": image_turn("the red")}], rgb(images[0]), **TOKENS)
    assert capsys.readouterr().out == expected.text + "\n"


def test_chat_reads_turns_from_stdin_and_keeps_the_history(model_dir, loaded, images, capsys, monkeypatch):
    model, processor = loaded
    monkeypatch.setattr("sys.stdin", io.StringIO("the red\n\nis the circle left\n/exit\nnever asked\n"))
    argv = ["chat", str(model_dir), "--image", str(images[1]), "--system", "a photo", "--max-new-tokens", "6"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    image = rgb(images[1])
    history = [{"role": "system", "content": "a photo"}, {"role": "user", "content": image_turn("the red")}]
    first = chat(model, processor, history, image, **TOKENS).text
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "is the circle left"}]
    second = chat(model, processor, history, image, **TOKENS).text
    without_history = chat(model, processor, [{"role": "user", "content": image_turn("is the circle left")}],
                           image, **TOKENS).text
    assert lines == [first, second]
    assert second != without_history  # the second answer saw the first turn


def test_caption_prompt_answers_each_image(model_dir, loaded, images, capsys):
    model, processor = loaded
    argv = ["caption", str(model_dir), *map(str, images), "--prompt", "the red", "--max-new-tokens", "6"]
    assert main(argv) == 0
    answers = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    one_by_one = [chat(model, processor, [{"role": "user", "content": image_turn("the red")}], rgb(p), **TOKENS).text
                  for p in images]
    assert answers == one_by_one == answer_images(model, processor, [rgb(p) for p in images], "the red", **TOKENS)
    assert answers != generate_captions(model, processor, [rgb(p) for p in images], **TOKENS)


@pytest.mark.parametrize("argv,message", [
    (["chat", "MODEL", "--image", "IMG", "--prompt", "  "], "--prompt is empty"),
    (["chat", "MODEL", "--image", "IMG", "--prompt", "what <image>"], "text contains"),
    (["chat", "MODEL", "--image", "/no/such.png", "--prompt", "hi"], "/no/such.png"),
    (["chat", "MODEL", "--prompt", "hi", "--temperature", "0.5"], "--do-sample"),
    (["chat", "/no/such/model", "--prompt", "hi"], "does not exist"),
    (["caption", "MODEL", "IMG", "--prompt", "hi", "--onnx"], "--prompt cannot be used with --onnx"),
    (["caption", "MODEL", "IMG", "--prompt", ""], "--prompt is empty"),
])
def test_bad_chat_input_is_error_exit_2(argv, message, model_dir, images, capsys):
    names = {"MODEL": str(model_dir), "IMG": str(images[0])}
    assert main([names.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.slow
def test_streamed_pieces_add_up_with_the_real_smollm2_tokenizer():
    """Byte-level BPE splits multi-byte characters over several tokens: pieces must wait for whole characters."""
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    from distilvit.model.chat import _RowStreamer, decode_reply
    from distilvit.model.gguf import convert_gguf

    tokenizer = AutoTokenizer.from_pretrained(convert_gguf("smollm2-gguf"))
    text = "The circle is rouge foncé 🔴, left of the 大きい square.\n  Yes!"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    pieces: list[str] = []
    streamer = _RowStreamer(tokenizer, [pieces.append], {tokenizer.eos_token_id})
    streamer.put(torch.tensor([[1, 2]]))  # the prompt: skipped
    for token in ids + [tokenizer.eos_token_id, tokenizer.eos_token_id]:
        streamer.put(torch.tensor([token]))
    streamer.send(0, decode_reply(tokenizer, ids))
    assert "".join(pieces) == decode_reply(tokenizer, ids) == text
    assert all("\ufffd" not in piece for piece in pieces) and len(pieces) > len(text.split())
