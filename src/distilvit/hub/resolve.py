"""Turn a model name (a local folder or a Hugging Face Hub id, plus an optional revision) into a local folder.

A Hub id is downloaded with ``huggingface_hub.snapshot_download`` into the Hugging Face cache (``HF_HOME`` /
``HF_HUB_CACHE``), fetching only safe files: safetensors weights, JSON/text configs and tokenizer files, the
model card (and, for ONNX bundles, ``*.onnx`` graphs). Pickle files (``*.bin``, ``*.pt``, ...) are never
fetched. With ``HF_HUB_OFFLINE=1`` only the cache is read.

A name that exists on disk is always the local folder; a name that looks like a path (``./x``, ``/x``, ``~/x``,
``a/b/c``) or has no ``owner/`` part is never looked up on the Hub, so a mistyped folder keeps its
"does not exist" error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distilvit.errors import ModelError

logger = logging.getLogger("distilvit.hub")

# Files a distilvit model folder needs; never pickles (*.bin, *.pt, *.pth, *.pkl, *.ckpt).
MODEL_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.jinja", "*.model", "*.tiktoken", "README.md"]
ONNX_PATTERNS = ["*.onnx", "*.onnx.data", "*.onnx_data"]


def is_hub_id(name: str) -> bool:
    """True when ``name`` is not on disk and reads as ``owner/name`` (the only form looked up on the Hub)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if Path(name).expanduser().exists() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        return False
    if Path(name).suffix in {".gguf", ".json", ".safetensors", ".onnx"}:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_model(name: str | Path, revision: str | None = None, *, onnx: bool = False) -> Path:
    """The local folder for ``name``: itself when it is a path, else the downloaded Hub snapshot.

    ``onnx``: also fetch ONNX graphs (a bundle written by ``distilvit export`` and pushed to the Hub).
    Raises :class:`ModelError` for a revision given with a local folder and for every Hub failure (unknown
    repository or revision, offline and not cached, Hub unreachable).
    """
    text = str(name)
    if not is_hub_id(text):
        if revision is not None and Path(text).expanduser().exists():
            raise ModelError(f"--revision {revision!r} applies to Hub ids only; {text} is a local folder.")
        return Path(text).expanduser()
    return download(text, revision, onnx=onnx)


def download(repo_id: str, revision: str | None = None, *, onnx: bool = False) -> Path:
    """Download (or find in the cache) ``repo_id`` at ``revision``; return the snapshot folder."""
    from huggingface_hub import constants, snapshot_download

    patterns = MODEL_PATTERNS + (ONNX_PATTERNS if onnx else [])
    at = f"{repo_id!r} (revision {revision or constants.DEFAULT_REVISION!r})"
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except Exception as err:  # huggingface_hub and httpx errors: turned into one clear line below
        raise ModelError(_explain(err, repo_id, revision, at)) from err
    logger.info("model %s from the Hub cache: %s", at, folder)
    return Path(folder)


def _explain(err: Exception, repo_id: str, revision: str | None, at: str) -> str:
    from huggingface_hub import constants, is_offline_mode
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, RevisionNotFoundError):
        return (f"the Hub repository {repo_id!r} has no revision {revision!r}. Give an existing branch, tag or "
                "commit hash with --revision (or leave it out for the default branch).")
    if isinstance(err, GatedRepoError):
        return (f"the Hub repository {repo_id!r} is gated: accept its conditions on the Hub and set a token "
                "(HF_TOKEN or `hf auth login`).")
    if isinstance(err, RepositoryNotFoundError):
        return (f"{repo_id!r} is neither a local folder nor a model on the Hub ({constants.ENDPOINT}). Check the "
                "path or the Hub id; for a private repository set a token (HF_TOKEN or `hf auth login`).")
    if isinstance(err, LocalEntryNotFoundError):
        if is_offline_mode():
            return (f"{at} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. Download it once with "
                    "network access (unset HF_HUB_OFFLINE), or pass a local model folder.")
        return (f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} to download {at}, and it is not in "
                "the cache. Check the network (or HF_ENDPOINT), or pass a local model folder.")
    if isinstance(err, HfHubHTTPError):
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"the Hugging Face Hub refused to download {at}: {first}."
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f"cannot download {at} from the Hugging Face Hub at {constants.ENDPOINT}: {detail}. Check the "
            "network (or HF_ENDPOINT), or pass a local model folder.")
