"""Helpers for the serving tests (API server, Gradio app, load test): fake backends, crafted uploads, ports."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

from PIL import Image


class RecordingBackend:
    """Captions an image with its size (``"WxH"``) and records the size of every batch it is given."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.delay_s = delay_s
        self.fail = fail
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def caption(self, images) -> list[str]:
        with self._lock:
            self.batches.append(len(images))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        return [f"{image.width}x{image.height}" for image in images]

    def describe(self) -> dict:
        return {"backend": "recording"}


def encode(size: tuple[int, int] = (16, 12), fmt: str = "PNG", colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb as far as the header goes)."""
    data = bytearray(encode((1, 1)))
    ihdr = 8  # after the signature: length(4) "IHDR"(4) width(4) height(4) ...
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13])) & 0xFFFFFFFF
    data[ihdr + 8 + 13 : ihdr + 8 + 17] = struct.pack(">I", crc)
    return bytes(data)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_model_dir(path: Path, encoder: Path, decoder: Path) -> Path:
    """Save an untrained tiny captioner (random projection) to ``path``: a model folder as `train` writes it."""
    from distilvit.model.loading import CaptionerSpec, build_captioner

    model, processor = build_captioner(CaptionerSpec(encoder=str(encoder), decoder=str(decoder)))
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
