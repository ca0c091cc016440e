"""Captioning backends for the server and the Gradio app: one interface over PyTorch and ONNX models.

:func:`load_backend` picks the backend from what a folder holds:

* ``manifest.json`` -> :class:`OnnxBackend`: ``distilvit.export.OnnxCaptioner`` (onnxruntime, no torch at
  inference), which checks that it is a ``"distilvit-onnx"`` bundle (``docs/export.md``);
* ``config.json`` of a distilvit captioner -> :class:`TorchBackend` (``load_captioner`` + ``generate_captions``).

Both have ``caption(images) -> list[str]`` (PIL RGB images in, one caption per image, same order) and
``describe() -> dict`` (what is being served, for ``GET /health`` and the Gradio page). :class:`TorchBackend`
also answers conversations (``prepare_chat`` + ``chat``, for ``POST /v1/chat/completions``); an ONNX bundle
holds a fixed caption prompt and cannot, so the chat route answers 501 for it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from distilvit.errors import ModelError


class CaptionBackend(Protocol):
    """What the server needs from a model."""

    def caption(self, images: Sequence) -> list[str]:
        """One caption per PIL image, in order."""

    def describe(self) -> dict:
        """JSON-serialisable facts about the model being served."""


class TorchBackend:
    """A trained distilvit model folder run with PyTorch (greedy or beam search)."""

    def __init__(self, path: str | Path, *, max_new_tokens: int | None = None, num_beams: int = 1):
        from distilvit.model import load_captioner

        self.path = Path(path)
        self.model, self.processor = load_captioner(self.path)
        self.generation = {"num_beams": num_beams}
        if max_new_tokens is not None:
            self.generation["max_new_tokens"] = max_new_tokens
        self._lock = threading.Lock()  # generate() is not re-entrant on one model

    def caption(self, images: Sequence) -> list[str]:
        """Caption ``images`` (PIL, any size) in one batch; returns ``len(images)`` strings."""
        from distilvit.model.captioning import generate_captions

        if not images:
            return []
        with self._lock:
            return generate_captions(
                self.model, self.processor, list(images), batch_size=len(images), **self.generation
            )

    def prepare_chat(self, messages: Sequence[dict], image=None, on_text=None):
        """A conversation ready for :meth:`chat` (its ids built here); :class:`DistilViTError` if malformed.

        ``messages``: ``{"role", "content": [str, or None where the image stands, ...]}``; ``on_text`` receives
        the reply piece by piece while it is generated (from the generating thread)."""
        from distilvit.model.chat import Conversation, check_chat_model, conversation_ids, join_parts

        check_chat_model(self.model)
        messages = [{"role": m["role"], "content": join_parts(m["content"])} for m in messages]
        ids = conversation_ids(self.processor, messages, has_image=image is not None)
        return Conversation(ids, image, on_text)

    def chat(self, jobs: Sequence[tuple]) -> list:
        """Replies (``distilvit.model.chat.Reply``) to ``(conversation, generation options)`` jobs, in order;
        jobs with equal options share one batched ``generate`` call."""
        from distilvit.model.chat import generate_replies

        groups: dict[str, list[int]] = {}
        for index, (_, options) in enumerate(jobs):
            groups.setdefault(repr(sorted(options.items())), []).append(index)
        replies: list = [None] * len(jobs)
        with self._lock:
            for indices in groups.values():
                conversations, options = [jobs[i][0] for i in indices], jobs[indices[0]][1]
                answers = generate_replies(self.model, self.processor, conversations, **options)
                for index, reply in zip(indices, answers):
                    replies[index] = reply
        return replies

    def describe(self) -> dict:
        return {
            "backend": "pytorch",
            "path": str(self.path),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "generation": dict(self.generation),
        }


class OnnxBackend:
    """An exported ONNX bundle (``distilvit export``) run with onnxruntime."""

    def __init__(self, path: str | Path, *, max_new_tokens: int | None = None, num_beams: int = 1):
        try:
            from distilvit.export import OnnxCaptioner
        except ImportError as err:
            raise ModelError(
                f"cannot run the ONNX bundle {path}: {err}. Install onnxruntime (`pip install onnxruntime`)."
            ) from err
        self.path = Path(path)
        self.captioner = OnnxCaptioner(self.path)  # checks the manifest and files (BundleError, a ModelError)
        self.manifest = self.captioner.manifest
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self._lock = threading.Lock()

    def caption(self, images: Sequence) -> list[str]:
        """Caption ``images`` (PIL, any size) in one batch; returns ``len(images)`` strings."""
        if not images:
            return []
        with self._lock:
            return self.captioner.caption(
                list(images), num_beams=self.num_beams, max_new_tokens=self.max_new_tokens, batch_size=len(images)
            )

    def describe(self) -> dict:
        return {
            "backend": "onnx",
            "path": str(self.path),
            "quantization": self.manifest.get("quantization"),
            "size_mb": (self.manifest.get("sizes_mb") or {}).get("total"),
            "source_model": self.manifest.get("source_model"),
            "generation": {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens},
        }


def load_backend(path: str | Path, *, max_new_tokens: int | None = None, num_beams: int = 1,
                 revision: str | None = None) -> CaptionBackend:
    """The backend for ``path``: an ONNX bundle folder or a distilvit model folder (see the module docstring).

    ``path`` may be a Hub id (``owner/name``), downloaded at ``revision`` first (``distilvit.hub.resolve``).
    Raises :class:`ModelError` for a missing path, a file, or a folder that is neither.
    """
    from distilvit.hub.resolve import resolve_model

    path = resolve_model(path, revision, onnx=True)
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelError(f"{folder} does not exist. Pass a model folder (`distilvit train`) or an ONNX bundle "
                         "folder (`distilvit export`).")
    if not folder.is_dir():
        raise ModelError(f"{folder} is a file; pass the model folder (`distilvit train`) or the ONNX bundle "
                         "folder (`distilvit export`) that holds it.")
    if (folder / "manifest.json").is_file():
        return OnnxBackend(folder, max_new_tokens=max_new_tokens, num_beams=num_beams)
    if (folder / "config.json").is_file():
        return TorchBackend(folder, max_new_tokens=max_new_tokens, num_beams=num_beams)
    raise ModelError(
        f"{folder} is neither a distilvit model folder (no config.json) nor an ONNX bundle (no manifest.json). "
        "Pass the folder written by `distilvit train` or `distilvit export`."
    )
