"""Rendering conversations: the <image> splice, the chat template, the label mask (tiny and real tokenizers)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from distilvit.conversations.template import IGNORE_INDEX, prompt_ids, training_ids
from distilvit.errors import DataError
from distilvit.model.configuration import IMAGE_TOKEN
from distilvit.model.processing import CaptionProcessor

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
N = 3


def processor_for(tokenizer, **kwargs):
    image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    return CaptionProcessor(tokenizer, image_processor, num_image_tokens=N, **kwargs)


@pytest.fixture
def plain(tiny_lm):
    return processor_for(AutoTokenizer.from_pretrained(tiny_lm))


@pytest.fixture
def chatml(tiny_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.add_tokens(["user", "assistant", "system", "\n"])
    tokenizer.chat_template = CHATML
    return processor_for(tokenizer)


def two_turns(image_at="first"):
    first = {"first": IMAGE_TOKEN + " is the circle red", "mid": "is the " + IMAGE_TOKEN + " circle red"}
    return [
        {"role": "user", "content": first.get(image_at, "is the circle red")},
        {"role": "assistant", "content": "a red circle"},
        {"role": "user", "content": ("the square " + IMAGE_TOKEN) if image_at == "later" else "the square"},
        {"role": "assistant", "content": "blue"},
    ]


def learned_text(processor, ids, labels):
    return [processor.tokenizer.decode([t]) for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]


@pytest.mark.parametrize("image_at", ["first", "mid", "later", "none"])
def test_image_placeholder_expands_wherever_it_stands(chatml, image_at):
    ids, labels = training_ids(chatml, two_turns(image_at))
    image = [i for i, t in enumerate(ids) if t == chatml.image_token_id]
    assert len(image) == (0 if image_at == "none" else N)
    assert image == list(range(image[0], image[0] + N)) if image else True  # one contiguous block
    assert all(labels[i] == IGNORE_INDEX for i in image)
    assert len(ids) == len(labels)


def test_chat_template_mask_learns_replies_and_end_of_turn_only(chatml):
    ids, labels = training_ids(chatml, two_turns())
    assert learned_text(chatml, ids, labels) == ["a", "red", "circle", "<|im_end|>", "blue", "<|im_end|>"]
    # every learned label is its own input token (no shift inside the processor)
    assert all(lab == t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX)


def test_prompt_ids_are_the_training_prefix(chatml, plain):
    for processor in (chatml, plain):
        messages = two_turns()
        ids, labels = training_ids(processor, messages)
        prompt = prompt_ids(processor, messages[:3])
        assert ids[: len(prompt)] == prompt
        assert labels[len(prompt)] != IGNORE_INDEX  # the reply starts right after the prompt
        assert all(lab == IGNORE_INDEX for lab in labels[: len(prompt)][-2:])


def test_plain_layout_is_the_captioning_layout(plain):
    for prompt in ("", "a picture of"):
        processor = processor_for(plain.tokenizer, prompt=prompt)
        messages = [{"role": "user", "content": IMAGE_TOKEN + prompt}]
        assert prompt_ids(processor, messages) == processor.prompt_ids()
        ids, labels = training_ids(processor, [*messages, {"role": "assistant", "content": "a red circle"}])
        batch = processor.training_batch(["a red circle"])
        assert ids == batch["input_ids"][0].tolist()
        assert labels == batch["labels"][0].tolist()


def test_chat_captioning_is_the_one_turn_conversation(chatml):
    processor = processor_for(chatml.tokenizer, prompt="the picture", chat_template=True)
    assert prompt_ids(processor, [{"role": "user", "content": IMAGE_TOKEN + "the picture"}]) == processor.prompt_ids()


@pytest.mark.parametrize("messages, message", [
    ([], "empty"),
    ([{"role": "assistant", "content": "red"}], "alternate"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
    ([{"role": "user", "content": IMAGE_TOKEN + IMAGE_TOKEN}], "at most one"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": IMAGE_TOKEN}], "only a user turn"),
    ([{"role": "bot", "content": "a"}], "role"),
])
def test_bad_conversations_are_refused(plain, messages, message):
    with pytest.raises(DataError, match=message):
        prompt_ids(plain, messages)


def test_prompt_needs_a_final_user_turn(plain):
    with pytest.raises(DataError, match="end with a user turn"):
        prompt_ids(plain, two_turns())
    with pytest.raises(DataError, match="end with a assistant turn"):
        training_ids(plain, two_turns()[:3])


@pytest.mark.slow
def test_real_smollm2_two_turn_mask_token_by_token():
    pytest.importorskip("gguf")
    from distilvit.model.gguf import convert_gguf

    tokenizer = AutoTokenizer.from_pretrained(convert_gguf("smollm2-gguf"))
    processor = processor_for(tokenizer)
    messages = [
        {"role": "user", "content": IMAGE_TOKEN + "\nWhat colour is the circle?"},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "How many shapes are there?"},
        {"role": "assistant", "content": "two"},
    ]
    ids, labels = training_ids(processor, messages)
    tokens = tokenizer.convert_ids_to_tokens([t if t != processor.image_token_id else 0 for t in ids])
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    red, two = tokenizer("red", add_special_tokens=False).input_ids, tokenizer("two", add_special_tokens=False).input_ids
    # the rendered text, with the image placeholder, is SmolLM2's own chat template
    expected_text = tokenizer.apply_chat_template(messages, tokenize=False)
    text = tokenizer.decode([t for t in ids if t != processor.image_token_id])
    assert text == expected_text.replace(IMAGE_TOKEN, "")
    assert ids.count(processor.image_token_id) == N
    # token by token: exactly "red" <|im_end|> and "two" <|im_end|> are learned, in that order
    learned = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    assert [ids[i] for i in learned] == red + [im_end] + two + [im_end]
    for i, (token, label) in enumerate(zip(ids, labels)):
        if i in learned:
            assert label == token
        else:
            assert label == IGNORE_INDEX, (i, tokens[i])
    # the learned runs follow "<|im_start|>assistant\n" headers, which are themselves masked
    start = learned[0]
    assert tokenizer.decode(ids[start - 4 : start]) == "<|im_start|>assistant\n"
    # the default system prompt (the template adds one) and both user turns are masked
    assert labels[: start] == [IGNORE_INDEX] * start
    # generation prompt = the training prefix of the second reply
    prompt = prompt_ids(processor, messages[:3])
    assert ids[: len(prompt)] == prompt and labels[len(prompt)] == two[0]
