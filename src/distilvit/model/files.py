"""Checks on a model folder before anything loads it: weights only as safetensors, readable files.

distilvit never unpickles model files: a pickle (``pytorch_model.bin``, ``*.pt``, ...) can run arbitrary code
when loaded, so a folder that holds weights only in such a file is refused with a message that says how to
convert it once, in an environment that trusts it. Every loader also passes ``use_safetensors=True`` to
``from_pretrained``, so transformers itself never falls back to a pickle.

:func:`check_model_folder` turns a broken folder (empty or invalid ``config.json``, no weights, a truncated or
0-byte ``model.safetensors``, a broken shard index) into one clear :class:`ModelError` line, instead of
whatever the library happens to raise deep inside ``from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from distilvit.errors import ModelError

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# pickles a transformers Trainer writes into checkpoints beside the safetensors weights (never model weights)
TRAINER_STATE = {"optimizer.pt", "scheduler.pt", "training_args.bin", "scaler.pt"}


def conversion_hint(folder: Path | str, auto_class: str = "AutoModel") -> str:
    """How to turn a trusted pickle-only model folder into a safetensors one (a shell one-liner)."""
    return (
        "If you trust where these files came from, convert them once with transformers: "
        f"python -c \"import distilvit.model, transformers; transformers.{auto_class}.from_pretrained("
        f"'{folder}', use_safetensors=False).save_pretrained('{folder}')\" "
        "(save_pretrained writes model.safetensors)."
    )


def pickle_files(folder: Path) -> list[str]:
    """Names of the pickle files in ``folder`` that may hold model weights (Trainer state files excluded)."""
    return sorted(
        p.name for p in folder.iterdir()
        if p.is_file() and p.name not in TRAINER_STATE and not p.name.startswith("rng_state")
        and (p.name.endswith(PICKLE_SUFFIXES) or p.name == "pytorch_model.bin.index.json")
    )


def refuse_pickles(folder: Path, names: list[str], what: str, auto_class: str = "AutoModel") -> ModelError:
    """The error for a folder whose weights are pickles only."""
    return ModelError(
        f"{what} {folder} holds its weights only as pickle files ({', '.join(names)}); distilvit loads weights "
        f"only from safetensors, because unpickling a file can run any code. {conversion_hint(folder, auto_class)}"
    )


def check_config(folder: Path, what: str) -> dict:
    """Parse ``folder/config.json``; raise :class:`ModelError` if it is missing, empty or not a JSON object."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelError(f"{what} {folder} has no config.json. Pass the folder written by `distilvit train` "
                         "(or a transformers model folder).")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        problem = "is empty" if path.stat().st_size == 0 else f"is not valid JSON ({err})"
        raise ModelError(f"{path} {problem}: the {what} is damaged. Re-save or re-download it.") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelError(f"{path} is not a transformers model config (no \"model_type\"): the {what} is damaged. "
                         "Re-save or re-download it.")
    return config


def check_safetensors(path: Path, what: str) -> None:
    """Raise :class:`ModelError` unless ``path`` is a complete safetensors file (header read, sizes checked)."""
    if not path.is_file():
        raise ModelError(f"{what} weights file {path} is missing. Re-save or re-download the model.")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path} is empty (0 bytes): the {what} was not saved completely. Re-save or re-download it.")
    try:
        # reads and validates the header (JSON, dtypes, offsets that cover exactly the rest of the file)
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{path} is not a readable safetensors file ({str(err).splitlines()[0]}): the {what} is "
                         "damaged or was not saved completely. Re-save or re-download it.") from None


def weight_files(folder: Path, what: str) -> list[Path]:
    """The safetensors files of ``folder``: ``model.safetensors``, or the shards its index names."""
    if (folder / SAFE_WEIGHTS).exists():
        return [folder / SAFE_WEIGHTS]
    index = folder / SAFE_INDEX
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ModelError(f"{index} is not a valid safetensors shard index: the {what} is damaged. "
                         "Re-save or re-download it.") from None
    return [folder / name for name in shards]


def check_model_folder(folder: str | Path, what: str = "model folder", auto_class: str = "AutoModel") -> dict:
    """Check that ``folder`` is a loadable model folder before ``from_pretrained`` reads it; return its config.

    Raises :class:`ModelError` (one line: what is wrong, what to do) when ``config.json`` is missing, empty or
    invalid, when there are no safetensors weights (with a conversion hint when only pickles are there), or
    when a weights file is empty, truncated or has an unreadable header. Nothing is unpickled.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ModelError(f"{what} {folder} does not exist.")
    if not folder.is_dir():
        raise ModelError(f"{what} {folder} is a file; pass the folder that holds config.json and model.safetensors.")
    config = check_config(folder, what)
    if not (folder / SAFE_WEIGHTS).exists() and not (folder / SAFE_INDEX).exists():
        pickles = pickle_files(folder)
        if pickles:
            raise refuse_pickles(folder, pickles, what, auto_class)
        raise ModelError(f"{what} {folder} has no weights (no {SAFE_WEIGHTS}). Re-save the model, or pass the "
                         "folder written by `distilvit train`.")
    for path in weight_files(folder, what):
        check_safetensors(path, what)
    return config


def load_config(folder: str | Path, what: str = "model folder"):
    """``AutoConfig.from_pretrained(folder)`` for a checked folder; a config transformers cannot use is a
    :class:`ModelError` (e.g. an unknown ``model_type``)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelError(f"cannot read the config.json of {what} {folder}: {str(err).splitlines()[0]}") from None


def load_checked(model_class, folder: str | Path, what: str = "model folder", **kwargs):
    """``model_class.from_pretrained(folder)`` for a folder :func:`check_model_folder` accepted: safetensors only,
    and every weight of the model must be in the file (a weights file of another model is refused rather than
    leaving the missing parts randomly initialised)."""
    try:
        model, info = model_class.from_pretrained(folder, use_safetensors=True, output_loading_info=True, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:
        raise ModelError(f"cannot load {what} {folder}: {str(err).splitlines()[0]}") from None
    missing = list(info.get("missing_keys") or []) + [str(k[0]) if isinstance(k, tuple) else str(k)
                                                       for k in info.get("mismatched_keys") or []]
    if missing:
        raise ModelError(
            f"the weights in {what} {folder} do not match its config.json: {len(missing)} tensors missing or of the "
            f"wrong shape (e.g. {', '.join(sorted(missing)[:3])}). The folder mixes files of different models; "
            "re-save or re-download it."
        )
    return model
