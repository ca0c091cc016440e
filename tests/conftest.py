"""Shared fixtures: small images and a private datasets cache (data tests), tiny models (model/training/CLI tests)."""

from __future__ import annotations

import io
import os

# tests never reach a model hub (set before anything imports huggingface_hub, which reads it at import)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# encoder features cached by tests go to a private folder, never to the user's ~/.cache/distilvit/features
if "DISTILVIT_FEATURE_CACHE" not in os.environ:
    import tempfile

    os.environ["DISTILVIT_FEATURE_CACHE"] = tempfile.mkdtemp(prefix="distilvit-test-features-")

import pytest
from java import check_java
from PIL import Image


def pytest_runtest_setup(item):
    check_java(item)  # Java metric tests: skip without Java, fail under CI (tests/java.py)


def encode_image(colour: tuple[int, int, int], fmt: str = "PNG", size: int = 16) -> bytes:
    """A tiny solid-colour image, encoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def image_bytes():
    """Factory: ``image_bytes((r, g, b), "PNG" | "JPEG")`` -> encoded bytes of a small image."""
    return encode_image


@pytest.fixture
def hf_cache(tmp_path):
    """A private ``datasets`` cache directory, so tests never touch the user's cache."""
    path = tmp_path / "hf-cache"
    path.mkdir()
    return str(path)


# ---------------------------------------------------------------- tiny models (model/training/CLI tests)
from pathlib import Path  # noqa: E402

from tiny_models import make_encoder, make_lm  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """Folder of a tiny Llama-architecture LM + word-level tokenizer."""
    return make_lm(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """Folder of a tiny SigLIP vision tower + image processor."""
    return make_encoder(tmp_path_factory.mktemp("tiny-siglip"), "siglip")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Factory ``tiny_dirs(kind)``: folders of tiny LMs (llama, gpt2, opt, qwen2) and encoders, built once."""
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            folder = tmp_path_factory.mktemp(kind)
            cache[kind] = make_lm(folder, kind) if kind in ("llama", "gpt2", "opt", "qwen2") else make_encoder(folder, kind)
        return cache[kind]

    return get
