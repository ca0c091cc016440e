"""Rendering conversations into token ids: the LM's chat template, the ``<image>`` splice, the label mask.

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``: an
optional system message first, then user and assistant turns taking turns, starting with a user turn. An
``<image>`` substring (:data:`~distilvit.model.configuration.IMAGE_TOKEN`) inside a user turn marks where the
image goes (first turn, a later turn, mid-sentence); it becomes ``processor.num_image_tokens`` placeholder ids,
which the model fills with the projected image tokens. At most one image per conversation.

Text is rendered with the LM's own chat template when its tokenizer has one (SmolLM2-Instruct does), else with
a plain layout that is exactly the captioning layout (leading specials/BOS, then each turn's text, each reply
followed by EOS). A caption prompt is therefore the one-turn conversation ``[{"role": "user", "content":
"<image>" + prompt}]``: ``prompt_ids(processor, that)`` equals ``processor.prompt_ids()``.

Every assistant reply is tokenized on its own (as the model generates it after the prompt), so the ids of a
conversation's history are the same in training and at inference. Labels: the reply tokens and the template's
end-of-turn token that follows each reply are learned; everything else (system and user turns, image
placeholders, role headers and other template text) is ``-100``.

Only the processor's ``tokenizer``, ``num_image_tokens``, ``image_token_id`` and ``lead_ids()`` are used.
"""

from __future__ import annotations

from distilvit.errors import DataError, ModelError
from distilvit.model.configuration import IMAGE_TOKEN

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


def prompt_ids(processor, messages: list[dict]) -> list[int]:
    """Token ids to generate the next assistant reply from (the last message must be a user turn)."""
    check_messages(messages, last="user")
    ids, _ = _render(processor, messages, generation_prompt=True)
    return ids


def training_ids(processor, messages: list[dict]) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a whole conversation (the last message must be an assistant turn)."""
    check_messages(messages, last="assistant")
    return _render(processor, messages, generation_prompt=False)


def count_images(messages: list[dict]) -> int:
    """How many ``<image>`` placeholders the conversation holds."""
    return sum(str(m.get("content", "")).count(IMAGE_TOKEN) for m in messages)


def check_messages(messages: list[dict], *, last: str | None = None) -> None:
    """Raise :class:`DataError` unless ``messages`` is a well-formed conversation (see the module docstring)."""
    if not messages:
        raise DataError("empty conversation: it needs at least one user turn.")
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"message {index} has role {role!r}; use one of {ROLES}.")
        if not isinstance(content, str):
            raise DataError(f"message {index} ({role}) has no text content (got {type(content).__name__}).")
        if role == "system" and index != 0:
            raise DataError(f"message {index}: a system message may only come first.")
        if role != "user" and IMAGE_TOKEN in content:
            raise DataError(f"message {index} ({role}) contains {IMAGE_TOKEN}; only a user turn may hold the image.")
    turns = [m["role"] for m in messages if m["role"] != "system"]
    expected = ["user", "assistant"] * (len(turns) // 2 + 1)
    if not turns or turns != expected[: len(turns)]:
        raise DataError(f"conversation turns must alternate user, assistant, ... starting with user; got {turns}.")
    if last is not None and turns[-1] != last:
        raise DataError(f"the conversation must end with a {last} turn (it ends with a {turns[-1]} turn).")
    if count_images(messages) > 1:
        raise DataError(f"a conversation may hold at most one {IMAGE_TOKEN}; this one has {count_images(messages)}.")


# ---------------------------------------------------------------------------------------------- rendering
def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render(processor, messages: list[dict], *, generation_prompt: bool) -> tuple[list[int], list[int]]:
    if has_chat_template(processor.tokenizer):
        pieces = _chat_pieces(processor.tokenizer, messages, generation_prompt)
        return _chat_ids(processor, pieces)
    return _plain_ids(processor, messages)


def _chat_pieces(tokenizer, messages: list[dict], generation_prompt: bool) -> list[tuple[str, bool]]:
    """The rendered conversation as ``(text, is_reply)`` pieces: replies apart from the text around them."""

    def render(msgs, add_generation_prompt):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)

    text = render(messages, generation_prompt)
    pieces: list[tuple[str, bool]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        # the reply starts after the rendered history + the assistant header (the generation prompt)
        header = render(messages[:index], True)
        start = max(cursor, _common_prefix(text, header))
        reply = message["content"].strip()
        at = text.find(reply, start) if reply else start
        if at < 0:
            raise ModelError("the language model's chat template changes assistant replies; distilvit cannot tell "
                             "which tokens to learn with it.")
        pieces.append((text[cursor:at], False))
        pieces.append((reply, True))
        cursor = at + len(reply)
    pieces.append((text[cursor:], False))
    return pieces


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _chat_ids(processor, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    tokenizer = processor.tokenizer
    specials = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }
    specials.discard(processor.image_token_id)
    ids: list[int] = []
    labels: list[int] = []
    after_reply = False
    for text, is_reply in pieces:
        if is_reply:
            reply = _tokens(tokenizer, text)
            ids += reply
            labels += reply
            after_reply = True
            continue
        chunk = _with_image(processor, text)
        learned = 0
        if after_reply:  # the end-of-turn token after a reply is learned (the model must learn to stop)
            end = next((k for k, token in enumerate(chunk) if token in specials), None)
            if end is None:  # a template without an end-of-turn token: end the reply with EOS
                chunk = [tokenizer.eos_token_id, *chunk]
                end = 0
            learned = end + 1
        ids += chunk
        labels += chunk[:learned] + [IGNORE_INDEX] * (len(chunk) - learned)
        after_reply = False
    return ids, labels


def _plain_ids(processor, messages: list[dict]) -> tuple[list[int], list[int]]:
    """The captioning layout: leading specials/BOS, each turn's text, each reply followed by EOS."""
    tokenizer = processor.tokenizer
    ids = list(processor.lead_ids())
    labels = [IGNORE_INDEX] * len(ids)
    previous = ""
    for message in messages:
        content = message["content"]
        if message["role"] == "assistant":
            reply = content.strip()
            spaced = previous and not previous.endswith((" ", "\n"))
            tokens = _tokens(tokenizer, (" " + reply) if spaced else reply) + [tokenizer.eos_token_id]
            ids += tokens
            labels += tokens
            previous = ""
            continue
        text = content + "\n" if message["role"] == "system" else content
        chunk = _with_image(processor, text)
        ids += chunk
        labels += [IGNORE_INDEX] * len(chunk)
        previous = text.rpartition(IMAGE_TOKEN)[2]
    return ids, labels


def _with_image(processor, text: str) -> list[int]:
    """Tokens of ``text`` with its ``<image>`` (if any) expanded to ``num_image_tokens`` placeholder ids."""
    parts = text.split(IMAGE_TOKEN)
    ids = _tokens(processor.tokenizer, parts[0])
    for part in parts[1:]:
        ids += [processor.image_token_id] * processor.num_image_tokens
        ids += _tokens(processor.tokenizer, part)
    return ids


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids if text else []
