"""Answering conversations about an image: messages -> generation ids -> replies, streamed as they are made.

The one piece of inference glue behind ``distilvit chat``, ``distilvit caption --prompt`` and the server's
``POST /v1/chat/completions``: conversations are rendered by :func:`distilvit.conversations.template.prompt_ids`
(the LM's chat template, or the plain fallback), and :func:`generate_replies` runs one batched ``generate``
over several conversations (left-padded), handing each row's new text to its own callback while it is
generated.

A message is ``{"role": "system" | "user" | "assistant", "content": str}``; the image goes where the
:data:`~distilvit.model.configuration.IMAGE_TOKEN` placeholder stands in a user turn (:func:`image_turn`
puts it first). At most one image per conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.generation.streamers import BaseStreamer

from distilvit.conversations.template import count_images, prompt_ids
from distilvit.errors import DistilViTError, ModelError
from distilvit.model.captioning import generation_config
from distilvit.model.configuration import IMAGE_TOKEN
from distilvit.model.modeling import DistilViTForCaptioning

@dataclass
class Conversation:
    """One conversation to answer: its generation ids, its image (PIL or None) and where its text goes."""

    ids: list[int]
    image: object | None = None
    on_text: Callable[[str], None] | None = None  # called with each new piece of the reply, in order


@dataclass
class Reply:
    """A generated reply: its text, token counts and why it ended (``"stop"``: end of turn, ``"length"``)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def join_parts(parts: Sequence[str | None]) -> str:
    """A message's text from its parts, in order: strings, and ``None`` where the image stands (it becomes the
    ``<image>`` placeholder, right against the text around it, as in ``shapes-vqa`` and the caption layout);
    consecutive text parts are joined by a newline. Text that itself holds ``<image>`` is refused."""
    if any(part is not None and IMAGE_TOKEN in part for part in parts):
        raise DistilViTError(f"the text contains {IMAGE_TOKEN!r}, which marks where the image goes; remove it "
                             "(the image is attached separately).")
    text, after_text = "", False
    for part in parts:
        if part is None:
            text, after_text = text + IMAGE_TOKEN, False
        elif part:
            text, after_text = text + ("\n" if after_text else "") + part, True
    return text


def image_turn(text: str) -> str:
    """A user turn that shows the image first, then ``text``: ``<image>`` + ``text`` (the layout of the built-in
    ``shapes-vqa`` questions; with the model's caption prompt as ``text`` it is the caption layout)."""
    return join_parts([None, text])


def conversation_ids(processor, messages: Sequence[dict], *, has_image: bool) -> list[int]:
    """Generation ids of ``messages``, the image placeholder expanded; :class:`DistilViTError` for a malformed
    conversation, or when its ``<image>`` placeholders do not match ``has_image`` (one image, or none: text that
    itself contains ``<image>`` is refused)."""
    found = count_images(messages)
    if found != int(has_image):
        what = "one image" if has_image else "no image"
        raise DistilViTError(f"the conversation has {found} {IMAGE_TOKEN} placeholders for {what}; a conversation "
                             f"holds at most one image, and its text must not contain {IMAGE_TOKEN!r} itself.")
    return prompt_ids(processor, [{"role": m.get("role"), "content": m.get("content")} for m in messages])


def check_chat_model(model) -> None:
    if not isinstance(model, DistilViTForCaptioning):
        raise ModelError(f"{type(model).__name__} models cannot take prompts or conversations (only the prefix "
                         "architecture can); caption without --prompt, or train with --architecture prefix.")


class _RowStreamer(BaseStreamer):
    """Fans the tokens of one batched ``generate`` out to per-row callbacks, as text.

    ``generate`` calls :meth:`put` first with the prompt (skipped), then with one new token per row per step.
    A row's text is re-decoded from all its tokens (word pieces and multi-byte characters join correctly) and
    only the new suffix is sent; text ending in an incomplete character (U+FFFD) waits for the next token.
    """

    def __init__(self, tokenizer, callbacks: list, stop_ids: set[int]):
        self.tokenizer = tokenizer
        self.callbacks = callbacks
        self.stop_ids = stop_ids
        self.ids: list[list[int]] = [[] for _ in callbacks]
        self.sent = [""] * len(callbacks)
        self.done = [False] * len(callbacks)
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if token in self.stop_ids:
                self.done[row] = True
                continue
            self.ids[row].append(token)
            text = decode_reply(self.tokenizer, self.ids[row])
            if not text.endswith("\ufffd"):
                self.send(row, text)

    def send(self, row: int, text: str) -> None:
        """Send what ``text`` adds to what row ``row`` has been sent (nothing if it does not extend it)."""
        if self.callbacks[row] is not None and text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
            self.callbacks[row](text[len(self.sent[row]):])
            self.sent[row] = text

    def end(self) -> None:
        pass


def decode_reply(tokenizer, ids: list[int]) -> str:
    """Reply text of generated ``ids`` (special tokens dropped, leading whitespace stripped)."""
    return tokenizer.decode(ids, skip_special_tokens=True).lstrip()


def _stop_ids(config) -> set[int]:
    eos = config.eos_token_id
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


@torch.no_grad()
def generate_replies(model: DistilViTForCaptioning, processor, conversations: Sequence[Conversation],
                     **generation) -> list[Reply]:
    """Answer ``conversations`` in one ``generate`` call (rows left-padded); ``generation`` as for
    :func:`distilvit.model.captioning.generate_captions`. Each conversation's ``on_text`` receives its reply
    piece by piece while it is generated (greedy or sampling; with beam search, once at the end); the pieces
    add up to the reply's text."""
    check_chat_model(model)
    if not conversations:
        return []
    config = generation_config(model, processor, **generation)
    stop_ids = _stop_ids(config)
    width = max(len(c.ids) for c in conversations)
    pad = processor.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(c.ids)) + list(c.ids) for c in conversations], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (width - len(c.ids)) + [1] * len(c.ids) for c in conversations],
                                  dtype=torch.long)
    images = [c.image for c in conversations if c.image is not None]
    device = next(model.parameters()).device
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    if images:
        inputs["pixel_values"] = processor.pixel_values(images).to(device)
    callbacks = [c.on_text for c in conversations]
    streamer = None
    if any(callbacks) and config.num_beams == 1:
        streamer = _RowStreamer(processor.tokenizer, callbacks, stop_ids)
    was_training = model.training
    model.eval()
    try:
        output = model.generate(generation_config=config, streamer=streamer, **inputs)
    finally:
        model.train(was_training)
    replies = []
    for row, conversation in enumerate(conversations):
        tokens = output[row].tolist()
        stop = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        text = decode_reply(processor.tokenizer, kept)
        if streamer is not None:
            streamer.send(row, text)  # whatever is still held back (an incomplete character at the end)
        elif conversation.on_text is not None and text:
            conversation.on_text(text)
        replies.append(Reply(text=text, prompt_tokens=len(conversation.ids),
                             completion_tokens=len(kept) + (stop is not None),
                             finish_reason="length" if stop is None else "stop"))
    return replies


def chat(model, processor, messages: Sequence[dict], image=None, *, on_text=None, **generation) -> Reply:
    """The reply to ``messages`` (about ``image``, placed where the user turn has ``<image>``)."""
    check_chat_model(model)
    ids = conversation_ids(processor, messages, has_image=image is not None)
    return generate_replies(model, processor, [Conversation(ids, image, on_text)], **generation)[0]


def answer_images(model, processor, images: Sequence, prompt: str, *, batch_size: int = 8,
                  **generation) -> list[str]:
    """One answer per image to the same instruction ``prompt`` (``distilvit caption --prompt``)."""
    check_chat_model(model)
    if not prompt.strip():
        raise DistilViTError("--prompt is empty; give the instruction or question to answer.")
    ids = conversation_ids(processor, [{"role": "user", "content": image_turn(prompt)}], has_image=True)
    answers: list[str] = []
    for start in range(0, len(images), batch_size):
        chunk = [Conversation(ids, image) for image in images[start:start + batch_size]]
        answers.extend(reply.text for reply in generate_replies(model, processor, chunk, **generation))
    return answers
