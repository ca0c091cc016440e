"""Reading conversation files: LLaVA JSON/JSONL and the ``messages`` form of ``datasets`` chat sets.

Accepted records (one JSON list of records, or JSON Lines with one record per line):

* LLaVA: ``{"id": ..., "image": "path/in/folder.jpg", "conversations": [{"from": "human" | "gpt" | "system",
  "value": "<image>\\nWhat is ..."}, ...]}``; ``<image>`` first or last in a human turn;
* chat sets: ``{"messages": [{"role": "user" | "assistant" | "system", "content": ...}, ...], "image": ...}``
  (or ``"images": [one path]``); ``content`` is a string or a list of parts ``{"type": "text", "text": ...}`` /
  ``{"type": "image"}`` (an image part stands where the image goes).

A record with an image but no ``<image>`` placeholder gets one at the start of its first user turn (LLaVA's
convention); a record without an image is text-only. Image paths are relative to the image folder the user
gives (``--image-folder``); one that leaves it (``..``, an absolute path elsewhere, a symlink out) is refused.
Images are not opened here (see :mod:`distilvit.conversations.dataset`).
"""

from __future__ import annotations

import json
from pathlib import Path

from distilvit.conversations.template import check_messages, count_images
from distilvit.errors import DataError
from distilvit.model.configuration import IMAGE_TOKEN

LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def read_records(path: str | Path) -> list[dict]:
    """The records of a ``.json`` (a list) or ``.jsonl`` (one object per line) conversation file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"conversation file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON{' Lines' if path.suffix == '.jsonl' else ''}: {err}") from None
    if isinstance(records, dict) and isinstance(records.get("data"), list):
        records = records["data"]
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path} must hold a list of conversation records (JSON objects).")
    return records


def parse_record(record: dict, where: str) -> tuple[list[dict], str | None]:
    """``(messages, image path or None)`` of one record (LLaVA or chat-set form)."""
    if "conversations" in record:
        turns = record["conversations"]
        if not isinstance(turns, list):
            raise DataError(f"{where}: 'conversations' must be a list of turns.")
        messages = []
        for turn in turns:
            role = LLAVA_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
            if role is None or not isinstance(turn.get("value"), str):
                raise DataError(f"{where}: each turn needs 'from' (human, gpt or system) and a text 'value'; got {turn!r}.")
            messages.append({"role": role, "content": turn["value"]})
    elif "messages" in record:
        if not isinstance(record["messages"], list):
            raise DataError(f"{where}: 'messages' must be a list.")
        messages = [_chat_message(m, where) for m in record["messages"]]
    else:
        raise DataError(f"{where}: a record needs 'conversations' (LLaVA) or 'messages' (chat set).")
    return messages, _image_field(record, where)


def _chat_message(message, where: str) -> dict:
    if not isinstance(message, dict) or message.get("role") not in LLAVA_ROLES:
        raise DataError(f"{where}: each message needs a 'role' (user, assistant or system); got {message!r}.")
    content = message.get("content")
    if isinstance(content, list):  # parts: [{"type": "image"}, {"type": "text", "text": "..."}]
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind in ("image", "image_url"):
                texts.append(IMAGE_TOKEN)
            else:
                raise DataError(f"{where}: unknown message part {part!r} (use text or image parts).")
        content = "".join(texts)
    if not isinstance(content, str):
        raise DataError(f"{where}: message content must be text or a list of parts; got {content!r}.")
    return {"role": LLAVA_ROLES[message["role"]], "content": content}


def _image_field(record: dict, where: str) -> str | None:
    image = record.get("image")
    if image is None and "images" in record:
        images = record["images"] or []
        if not isinstance(images, list) or len(images) > 1:
            raise DataError(f"{where}: at most one image per conversation ('images' holds {images!r}).")
        image = images[0] if images else None
    if image is not None and not isinstance(image, str):
        raise DataError(f"{where}: 'image' must be a path relative to the image folder; got {image!r}.")
    return image or None


def with_placeholder(messages: list[dict], has_image: bool, where: str) -> list[dict]:
    """Check the messages; a record with an image but no ``<image>`` gets one before its first user turn's text."""
    placeholders = count_images(messages)
    if placeholders and not has_image:
        raise DataError(f"{where}: the text holds {IMAGE_TOKEN} but the record names no image.")
    if has_image and not placeholders:
        messages = [dict(m) for m in messages]
        first = next((m for m in messages if m["role"] == "user"), None)
        if first is not None:
            first["content"] = IMAGE_TOKEN + "\n" + first["content"]
    try:
        check_messages(messages, last="assistant")
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    return messages


def resolve_image(image: str, folder: str | Path | None, where: str) -> Path:
    """The image's path inside ``folder``; a path that leaves the folder is refused (:class:`DataError`)."""
    if folder is None:
        raise DataError(f"{where} names image {image!r}: pass the folder that holds the images with --image-folder.")
    root = Path(folder).expanduser().resolve()
    path = (root / image).resolve()
    if not path.is_relative_to(root):
        raise DataError(f"{where}: image path {image!r} leaves the image folder {root}; refused.")
    return path


def load_conversation_file(path: str | Path, image_folder: str | Path | None = None) -> list[dict]:
    """Samples ``{"id", "image": Path | None, "messages"}`` of one conversation file (see the module docstring)."""
    samples = []
    for index, record in enumerate(read_records(path)):
        where = f"{Path(path).name} record {index}" + (f" (id {record['id']!r})" if "id" in record else "")
        messages, image = parse_record(record, where)
        messages = with_placeholder(messages, image is not None, where)
        samples.append({
            "id": str(record.get("id", index)),
            "image": resolve_image(image, image_folder, where) if image is not None else None,
            "messages": messages,
        })
    return samples

