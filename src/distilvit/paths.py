"""Where distilvit keeps things on disk: its cache root and the folders under it, in one place.

* :func:`cache_root`: ``$DISTILVIT_CACHE``, else ``~/.cache/distilvit`` (converted GGUF models live in ``gguf/``);
* :func:`feature_cache_root`: ``$DISTILVIT_FEATURE_CACHE``, else ``<cache root>/features`` (docs/feature-cache.md);
* :func:`cache_subdir`: ``--cache-dir DIR`` of ``distilvit train`` splits into ``DIR/datasets`` and ``DIR/models``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The distilvit cache folder: ``cache_dir``, else ``$DISTILVIT_CACHE``, else ``~/.cache/distilvit``."""
    root = cache_dir or os.environ.get("DISTILVIT_CACHE") or Path.home() / ".cache" / "distilvit"
    return Path(root).expanduser()


def feature_cache_root(directory: str | Path | None = None) -> Path:
    """``directory``, else ``$DISTILVIT_FEATURE_CACHE``, else ``$DISTILVIT_CACHE/features``, else
    ``~/.cache/distilvit/features``."""
    directory = directory or os.environ.get("DISTILVIT_FEATURE_CACHE")
    return Path(directory).expanduser() if directory else cache_root() / "features"


def cache_subdir(cache_dir: str | Path | None, kind: str) -> str | None:
    """``<cache_dir>/datasets`` or ``<cache_dir>/models`` for ``train --cache-dir`` (None: the Hugging Face caches)."""
    return str(Path(cache_dir) / kind) if cache_dir else None
